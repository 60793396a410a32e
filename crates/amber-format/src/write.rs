//! Writing an amber container: `mimetype` first, then the pickle stream and
//! the arrays, then `manifest.json`, then the zip directory.
//!
//! The manifest is composed by the caller (it knows the user's metadata and the
//! environment) from the entry records this writer returns; [`ContainerWriter::finish`]
//! checks it against what was actually written, so a file that a reader would
//! refuse is never produced.

use std::collections::VecDeque;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use rayon::prelude::*;

use crate::codec::{
    Choice, Encoder, Filter, PackedPayload, Piece, PieceSink, Settings, Summary, choose,
};
use crate::error::{FormatError, Result};
use crate::manifest::{
    EntryInfo, FORMAT_NAME, FORMAT_VERSION, MANIFEST_ENTRY, MIMETYPE, MIMETYPE_ENTRY, Manifest,
    content_hash_text,
};
use crate::zip::{ZipEntry, ZipWriter};

/// Small arrays are compressed together, in parallel, in groups of about this many bytes.
const SMALL_GROUP_BYTES: usize = 32 << 20;

/// One array for [`ContainerWriter::add_arrays`].
#[derive(Debug, Clone, Copy)]
pub struct ArrayItem<'a> {
    /// Entry name.
    pub name: &'a str,
    /// The `.npy` header.
    pub header: &'a [u8],
    /// The array's bytes.
    pub data: &'a [u8],
    /// Element size in bytes.
    pub itemsize: usize,
    /// Arrays of one kind (the caller's word: same dtype and trailing shape,
    /// say, like the node arrays of a forest's trees) are alike enough to
    /// share one choice of filter.
    pub kind: u64,
}

/// A group of small arrays and their compressed payloads, waiting to be written.
type PackedGroup<'g, 'a> = (&'g [ArrayItem<'a>], Vec<(Encoder, PackedPayload)>);

/// A kind with at least this many arrays in a group gets one [`Choice`]
/// (filter, level, probing) for all of them, made on windows of [`SHARED_FILTER_SAMPLES`] of them:
/// trying both layouts on every array of a 200-tree forest cost a quarter of
/// its compression time, and picked the same filter for every tree.
const SHARED_FILTER_MIN: usize = 8;
/// Arrays of a kind sampled for its shared filter choice.
const SHARED_FILTER_SAMPLES: usize = 8;
/// Bytes taken from each sampled array.
const SHARED_FILTER_WINDOW: usize = 16 << 10;

/// The choices shared by kinds, keyed by (kind, element size).
type SharedChoices = Vec<((u64, usize), Choice)>;

/// Adds to `known` the choice shared by each kind that has enough arrays in
/// `group` and none yet (made once for all the groups of one `add_arrays`:
/// the arrays of a kind are alike in every group), the kinds in parallel.
fn shared_filters(group: &[ArrayItem<'_>], settings: Settings, known: &mut SharedChoices) {
    let mut kinds: Vec<((u64, usize), Vec<&ArrayItem<'_>>)> = Vec::new();
    for item in group {
        let key = (item.kind, item.itemsize);
        if known.iter().any(|(k, _)| *k == key) {
            continue;
        }
        match kinds.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(item),
            None => kinds.push((key, vec![item])),
        }
    }
    kinds.retain(|(_, members)| members.len() >= SHARED_FILTER_MIN);
    let chosen: SharedChoices = kinds
        .into_par_iter()
        .map(|((kind, itemsize), members)| {
            // Windows spread over the kind's arrays and over their lengths.
            let step = itemsize.max(1);
            let mut sample = Vec::with_capacity(SHARED_FILTER_WINDOW * SHARED_FILTER_SAMPLES);
            for j in 0..SHARED_FILTER_SAMPLES {
                let Some(item) = members.get(j * members.len() / SHARED_FILTER_SAMPLES) else {
                    continue;
                };
                let window = (SHARED_FILTER_WINDOW.min(item.data.len()) / step) * step;
                let elements = (item.data.len() - window) / step;
                let start = elements * j / SHARED_FILTER_SAMPLES * step;
                sample.extend_from_slice(item.data.get(start..start + window).unwrap_or_default());
            }
            let s = Settings {
                itemsize,
                ..settings
            };
            ((kind, itemsize), choose(&s, &sample))
        })
        .collect();
    known.extend(chosen);
}

/// Compresses a group of small arrays in parallel, those of the kinds in
/// `shared` as chosen for their kind.
fn pack_group(
    group: &[ArrayItem<'_>],
    settings: Settings,
    shared: &[((u64, usize), Choice)],
) -> Vec<(Encoder, PackedPayload)> {
    group
        .par_iter()
        .map(|item| {
            let s = Settings {
                itemsize: item.itemsize,
                ..settings
            };
            let key = (item.kind, item.itemsize);
            let encoder = match shared.iter().find(|(k, _)| *k == key) {
                Some((_, choice)) => Encoder::with_choice(s, *choice),
                None => {
                    let data = item.data;
                    Encoder::new(
                        s,
                        data.get(..s.chunk_size.min(data.len())).unwrap_or_default(),
                    )
                }
            };
            let payload = encoder.pack_all(item.data);
            (encoder, payload)
        })
        .collect()
}

/// Writes an amber container into a seekable sink.
pub struct ContainerWriter<W: Write + Seek + Send> {
    zip: ZipWriter<W>,
    label: PathBuf,
    /// The compressed streamed entry being written, if any.
    streaming: Option<Streaming>,
    /// Summary of the last compressed streamed entry.
    last_summary: Option<Summary>,
}

/// A compressed streamed entry in progress (F-40). Each chunk, once full, is
/// compressed by a task on the current rayon pool while the caller goes on
/// producing the stream (the pickler, for amber's pickle entry), and written
/// in order as tasks finish: compression overlaps pickling instead of
/// following it. Streamed entries are never shuffled (their bytes are untyped).
///
/// The chunk size must be fixed before the first chunk is written, but a
/// stream's length is known only at its end. So a stream starts in chunks of
/// [`SHORT_STREAM_CHUNK`], compressed at once but held back; a stream that ends
/// within [`SHORT_STREAM_MAX`] bytes is written in those (a small model's
/// stream is then compressed while it is pickled, on every thread), and one
/// that grows past it takes its first bytes back, drops their compressed
/// form and goes on in chunks of the full size, which compress better.
struct Streaming {
    settings: Settings,
    /// The current chunk size: short at first, then `settings.chunk_size`.
    chunk_size: usize,
    /// Created when the first chunk is written, once the chunk size is final.
    encoder: Option<Encoder>,
    /// Bytes not yet handed over: less than one chunk.
    pending: Vec<u8>,
    /// Chunks being compressed (or held back, while short), oldest first.
    in_flight: VecDeque<Task>,
    /// At most this many full-size chunks are in flight (memory stays
    /// bounded): the caller waits for the oldest beyond it.
    max_in_flight: usize,
    /// A chunk buffer already written, reused for the next chunk.
    spare: Option<Vec<u8>>,
}

/// Chunk size of a stream while it is short.
const SHORT_STREAM_CHUNK: usize = 128 << 10;
/// A stream up to this long is written in chunks of [`SHORT_STREAM_CHUNK`].
const SHORT_STREAM_MAX: usize = 1 << 20;

impl Streaming {
    fn new(settings: Settings) -> Self {
        let full = settings.chunk_size.max(1);
        Self {
            settings,
            chunk_size: if full > SHORT_STREAM_MAX {
                SHORT_STREAM_CHUNK
            } else {
                full
            },
            encoder: None,
            pending: Vec::new(),
            in_flight: VecDeque::new(),
            max_in_flight: rayon::current_num_threads().max(1) * 2,
            spare: None,
        }
    }

    /// Whether the stream is still in short chunks that may be taken back.
    fn is_short(&self) -> bool {
        self.chunk_size < self.settings.chunk_size.max(1)
    }

    /// Hands every whole chunk of `pending` to a compression task; a short
    /// stream that outgrows [`SHORT_STREAM_MAX`] first goes over to full chunks.
    fn hand_over_full_chunks(&mut self, label: &Path) -> Result<()> {
        while self.pending.len() >= self.chunk_size {
            if self.is_short() && (self.in_flight.len() + 1) * self.chunk_size > SHORT_STREAM_MAX {
                self.take_back(label)?;
                continue;
            }
            let chunk = self.chunk_size;
            let mut next = self.spare.take().unwrap_or_default();
            next.clear();
            next.reserve(chunk);
            next.extend_from_slice(self.pending.get(chunk..).unwrap_or_default());
            self.pending.truncate(chunk);
            let full = std::mem::replace(&mut self.pending, next);
            let settings = Settings {
                chunk_size: chunk,
                ..self.settings
            };
            let (done, result) = mpsc::sync_channel(1);
            let chunk = Arc::new(Mutex::new(Some(full)));
            let claim = Arc::clone(&chunk);
            rayon::spawn(move || {
                // The writer packs the chunk itself if it needs it before a
                // pool thread got here (the pool was busy or asleep).
                let Some(full) = claim.lock().unwrap_or_else(PoisonError::into_inner).take() else {
                    return;
                };
                // A panic would abort the process from a spawned task: caught,
                // it drops `done` instead, and the writer reports the task died.
                let packed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Encoder::new(settings, &[]).pack_all(&full)
                }));
                if let Ok(packed) = packed {
                    // No receiver means the entry was abandoned: nothing to do.
                    let _ = done.send((full, packed));
                }
            });
            self.in_flight.push_back(Task {
                chunk,
                settings,
                result: Mutex::new(result),
            });
        }
        Ok(())
    }

    /// Goes over from short chunks to full ones: the short chunks' bytes go
    /// back in front of `pending`, their compressed forms are dropped.
    fn take_back(&mut self, label: &Path) -> Result<()> {
        let mut bytes = Vec::with_capacity(self.settings.chunk_size.max(1));
        while let Some(task) = self.in_flight.pop_front() {
            let data = match task.unstarted() {
                Some(data) => data,
                None => task.wait().ok_or_else(|| task_died(label))?.0,
            };
            bytes.extend_from_slice(&data);
        }
        bytes.extend_from_slice(&self.pending);
        self.pending = bytes;
        self.chunk_size = self.settings.chunk_size.max(1);
        Ok(())
    }

    /// Writes the chunks whose compression is done, in order; waits for the
    /// oldest ones while more than `keep` are in flight. A short stream's
    /// chunks are held back (it may still go over to full chunks).
    fn write_done(&mut self, keep: usize, sink: &mut PieceSink<'_>, label: &Path) -> Result<()> {
        if self.is_short() && keep > 0 {
            return Ok(());
        }
        while let Some(task) = self.in_flight.front() {
            let done = if self.in_flight.len() > keep {
                task.finish()
            } else {
                match task.try_take() {
                    Ok(done) => Some(done),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => None,
                }
            };
            let (data, packed) = done.ok_or_else(|| task_died(label))?;
            self.in_flight.pop_front();
            let settings = Settings {
                chunk_size: self.chunk_size,
                ..self.settings
            };
            self.encoder
                .get_or_insert_with(|| Encoder::new(settings, &[]))
                .write_packed(&data, &packed, sink)?;
            self.spare = Some(data);
        }
        Ok(())
    }

    /// Compresses and writes what is left, then the index and footer.
    fn finish(mut self, sink: &mut PieceSink<'_>, label: &Path) -> Result<Summary> {
        let settings = Settings {
            chunk_size: self.chunk_size,
            ..self.settings
        };
        // The last bytes are compressed while the chunks still in flight are
        // waited for and written: the pickler is done, so nothing else would
        // keep the pool's threads busy meanwhile.
        let rest = std::mem::take(&mut self.pending);
        // (Less than one chunk: `pack_all` packs it whole, as `encode` would.)
        let pack_rest = || Encoder::with_filter(settings, Filter::None).pack_all(&rest);
        let packed = if rayon::current_thread_index().is_some() {
            let (packed, written) = rayon::join(pack_rest, || self.write_done(0, sink, label));
            written?;
            packed
        } else {
            // Outside the pool (the Python caller's own thread), a join would
            // hand both halves to pool threads and sleep until they are done:
            // for a small model's stream, that wake-up and the one back cost
            // as much as packing the rest here while the pool finishes the
            // chunks in flight.
            let packed = pack_rest();
            self.write_done(0, sink, label)?;
            packed
        };
        let mut encoder = self
            .encoder
            .take()
            .unwrap_or_else(|| Encoder::new(settings, &[]));
        encoder.write_packed(&rest, &packed, sink)?;
        encoder.finish(sink)
    }
}

fn task_died(label: &Path) -> FormatError {
    FormatError::io(
        "write",
        label,
        std::io::Error::other("a compression task stopped without a result"),
    )
}

/// A chunk handed to a task, which sends back the chunk and its compressed
/// form. (The receiver is in a mutex only so that the writer, held by Python
/// objects, is `Sync`; one thread uses it.)
struct Task {
    /// The chunk, until the task starts on it (or the writer takes it back).
    chunk: Arc<Mutex<Option<Vec<u8>>>>,
    /// How the chunk is packed.
    settings: Settings,
    result: Mutex<mpsc::Receiver<(Vec<u8>, PackedPayload)>>,
}

impl Task {
    fn try_take(&self) -> std::result::Result<(Vec<u8>, PackedPayload), mpsc::TryRecvError> {
        self.result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_recv()
    }

    /// The chunk, if no thread has started on it: the task will find nothing to do.
    fn unstarted(&self) -> Option<Vec<u8>> {
        self.chunk
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The result, packed on this thread if no pool thread has started on
    /// it (a small model's last chunks would otherwise wait for a sleeping
    /// thread to wake while this one sleeps), else waited for.
    fn finish(&self) -> Option<(Vec<u8>, PackedPayload)> {
        match self.unstarted() {
            Some(chunk) => {
                let packed = Encoder::new(self.settings, &[]).pack_all(&chunk);
                Some((chunk, packed))
            }
            None => self.wait(),
        }
    }

    /// The result, `None` if the task died. On a pool thread, runs other tasks
    /// (perhaps this one) while waiting, so a pool of one thread cannot deadlock.
    fn wait(&self) -> Option<(Vec<u8>, PackedPayload)> {
        let result = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match result.try_recv() {
                Ok(done) => return Some(done),
                Err(mpsc::TryRecvError::Disconnected) => return None,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            // `Idle`: no task waits anywhere, so this one runs on another thread;
            // `None`: this thread is not in a pool, whose own threads will run it.
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => {}
                Some(rayon::Yield::Idle) | None => return result.recv().ok(),
            }
        }
    }
}

impl<W: Write + Seek + Send> ContainerWriter<W> {
    /// Starts a container; `label` names the destination in error messages.
    pub fn new(sink: W, label: impl Into<PathBuf>) -> Result<Self> {
        let mut writer = Self {
            zip: ZipWriter::new(sink),
            label: label.into(),
            streaming: None,
            last_summary: None,
        };
        writer
            .zip
            .add_entry(MIMETYPE_ENTRY, &[MIMETYPE])
            .map_err(|e| io_error(&writer.label, e))?;
        writer.zip.start_content_hash();
        Ok(writer)
    }

    /// Starts a streamed entry (the pickle stream).
    pub fn begin_entry(&mut self, name: &str) -> Result<()> {
        self.zip.begin_entry(name).map_err(|e| self.io(e))
    }

    /// Starts a streamed entry whose bytes are compressed in chunks (F-40),
    /// on the threads of the current rayon pool while the stream is written.
    pub fn begin_compressed_entry(&mut self, name: &str, settings: Settings) -> Result<()> {
        self.begin_entry(name)?;
        self.streaming = Some(Streaming::new(settings));
        Ok(())
    }

    /// Appends to the streamed entry.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some(stream) = self.streaming.as_mut() else {
            return self.zip.write(data).map_err(|e| self.io(e));
        };
        stream.pending.extend_from_slice(data);
        if stream.pending.len() >= stream.chunk_size {
            let label = &self.label;
            stream.hand_over_full_chunks(label)?;
            let zip = &mut self.zip;
            let mut sink =
                |pieces: &[Piece<'_>]| zip.write_pieces(pieces).map_err(|e| io_error(label, e));
            let keep = stream.max_in_flight;
            stream.write_done(keep, &mut sink, label)?;
        }
        Ok(())
    }

    /// Ends the streamed entry.
    pub fn end_entry(&mut self) -> Result<ZipEntry> {
        if let Some(stream) = self.streaming.take() {
            let zip = &mut self.zip;
            let label = &self.label;
            let mut sink =
                |pieces: &[Piece<'_>]| zip.write_pieces(pieces).map_err(|e| io_error(label, e));
            self.last_summary = Some(stream.finish(&mut sink, label)?);
        }
        match self.zip.end_entry() {
            Ok(entry) => Ok(entry.clone()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Writes a whole entry from borrowed parts (an `.npy` header and the array data).
    pub fn add_entry(&mut self, name: &str, parts: &[&[u8]]) -> Result<ZipEntry> {
        match self.zip.add_entry(name, parts) {
            Ok(entry) => Ok(entry.clone()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Writes entry `name` as `header` followed by `data` compressed in chunks (F-40).
    pub fn add_compressed_entry(
        &mut self,
        name: &str,
        header: &[u8],
        data: &[u8],
        settings: Settings,
    ) -> Result<(ZipEntry, Summary)> {
        self.begin_entry(name)?;
        self.zip.write(header).map_err(|e| self.io(e))?;
        let sample = data
            .get(..settings.chunk_size.min(data.len()))
            .unwrap_or_default();
        let mut encoder = Encoder::with_choice(settings, choose(&settings, sample));
        let zip = &mut self.zip;
        let label = &self.label;
        let mut sink =
            |pieces: &[Piece<'_>]| zip.write_pieces(pieces).map_err(|e| io_error(label, e));
        encoder.encode(data, &mut sink)?;
        let summary = encoder.finish(&mut sink)?;
        let entry = self.end_entry()?;
        Ok((entry, summary))
    }

    /// Writes many array entries (`name`, `.npy` header, data, element size) in
    /// order; with `settings`, compresses them on every thread of the current
    /// pool: small arrays several at a time, large ones chunk by chunk. A group
    /// of small arrays is written while the next group is being compressed.
    pub fn add_arrays(
        &mut self,
        items: &[ArrayItem<'_>],
        settings: Option<Settings>,
    ) -> Result<Vec<(ZipEntry, Option<Summary>)>> {
        let Some(settings) = settings else {
            let parts: Vec<[&[u8]; 2]> = items.iter().map(|i| [i.header, i.data]).collect();
            let entries: Vec<(&str, &[&[u8]])> = items
                .iter()
                .zip(&parts)
                .map(|(item, parts)| (item.name, &parts[..]))
                .collect();
            let written = self.zip.add_entries(&entries).map_err(|e| self.io(e))?;
            return Ok(written.into_iter().map(|e| (e, None)).collect());
        };
        let mut out = Vec::with_capacity(items.len());
        let mut rest = items;
        let mut previous: Option<PackedGroup<'_, '_>> = None;
        let mut choices = SharedChoices::new();
        while let Some((item, tail)) = rest.split_first() {
            if item.data.len() >= SMALL_GROUP_BYTES / 4 {
                if let Some(group) = previous.take() {
                    self.write_group(group, &mut out)?;
                }
                let item_settings = Settings {
                    itemsize: item.itemsize,
                    ..settings
                };
                out.push(
                    self.add_compressed_entry(item.name, item.header, item.data, item_settings)
                        .map(|(e, s)| (e, Some(s)))?,
                );
                rest = tail;
                continue;
            }
            let mut end = 0;
            let mut bytes = 0;
            while let Some(next) = rest.get(end) {
                let n = next.data.len();
                if end > 0 && (bytes + n > SMALL_GROUP_BYTES || n >= SMALL_GROUP_BYTES / 4) {
                    break;
                }
                bytes += n;
                end += 1;
            }
            let group = rest.get(..end).unwrap_or_default();
            shared_filters(group, settings, &mut choices);
            let (packed, written) = rayon::join(
                || pack_group(group, settings, &choices),
                || {
                    previous
                        .take()
                        .map_or(Ok(()), |done| self.write_group(done, &mut out))
                },
            );
            written?;
            previous = Some((group, packed));
            rest = rest.get(end..).unwrap_or_default();
        }
        if let Some(group) = previous {
            self.write_group(group, &mut out)?;
        }
        Ok(out)
    }

    /// Writes a group of arrays compressed by [`pack_group`], in order.
    fn write_group(
        &mut self,
        (group, packed): PackedGroup<'_, '_>,
        out: &mut Vec<(ZipEntry, Option<Summary>)>,
    ) -> Result<()> {
        for (item, (mut encoder, payload)) in group.iter().zip(packed) {
            self.begin_entry(item.name)?;
            self.zip.write(item.header).map_err(|e| self.io(e))?;
            let zip = &mut self.zip;
            let label = &self.label;
            let mut sink =
                |pieces: &[Piece<'_>]| zip.write_pieces(pieces).map_err(|e| io_error(label, e));
            encoder.write_packed(item.data, &payload, &mut sink)?;
            let summary = encoder.finish(&mut sink)?;
            let entry = self.end_entry()?;
            out.push((entry, Some(summary)));
        }
        Ok(())
    }

    /// The summary of the last compressed streamed entry, once ended.
    pub fn take_summary(&mut self) -> Option<Summary> {
        self.last_summary.take()
    }

    /// The content hash (F-16) of the entries written so far, as the manifest
    /// records it (`blake3:<hex>`).
    #[must_use]
    pub fn content_hash(&self) -> String {
        self.zip
            .content_hash()
            .map(|h| content_hash_text(&h))
            .unwrap_or_default()
    }

    /// The entries written so far after `mimetype`.
    pub fn entries(&self) -> &[ZipEntry] {
        self.zip.entries().get(1..).unwrap_or_default()
    }

    /// Checks `manifest` against the entries written, appends it and the zip
    /// directory, and returns the sink.
    pub fn finish(mut self, manifest: &[u8]) -> Result<W> {
        let parsed: Manifest =
            serde_json::from_slice(manifest).map_err(|e| FormatError::Manifest {
                reason: format!("{e}"),
            })?;
        self.check_manifest(&parsed)?;
        self.zip
            .add_entry(MANIFEST_ENTRY, &[manifest])
            .map_err(|e| io_error(&self.label, e))?;
        let label = self.label.clone();
        self.zip
            .finish()
            .map_err(|e| FormatError::io("write", label, e))
    }

    fn check_manifest(&self, manifest: &Manifest) -> Result<()> {
        let bad = |reason: String| Err(FormatError::Usage { what: reason });
        if manifest.format != FORMAT_NAME || manifest.format_version != FORMAT_VERSION {
            return bad(format!(
                "manifest must say format `{FORMAT_NAME}` version {FORMAT_VERSION}"
            ));
        }
        if let Some(recorded) = manifest.content_hash() {
            let actual = self.content_hash();
            if recorded != actual {
                return bad(format!(
                    "manifest content hash {recorded} differs from {actual}, the hash of what was written"
                ));
            }
        }
        let written = self.entries();
        if written.len() != manifest.entries.len() {
            return bad(format!(
                "manifest lists {} entries, {} were written",
                manifest.entries.len(),
                written.len()
            ));
        }
        for (w, info) in written.iter().zip(&manifest.entries) {
            if w.name != info.name() || w.size != info.size() || w.crc32 != info.crc32() {
                return bad(format!(
                    "manifest record for `{}` does not match what was written",
                    w.name
                ));
            }
            if let EntryInfo::Array(a) = info
                && !a.is_compressed()
                && a.data_offset.checked_add(a.nbytes) != Some(a.size)
            {
                return bad(format!("manifest sizes for `{}` do not add up", a.name));
            }
        }
        Ok(())
    }

    fn io(&self, e: std::io::Error) -> FormatError {
        io_error(&self.label, e)
    }
}

/// Argument errors from the zip layer are usage errors; the rest are I/O on the destination.
fn io_error(label: &Path, e: std::io::Error) -> FormatError {
    if e.kind() == std::io::ErrorKind::InvalidInput {
        FormatError::Usage {
            what: e.to_string(),
        }
    } else {
        FormatError::io("write", label, e)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use std::io::Cursor;

    use serde_json::json;

    use super::*;
    use crate::Container;
    use crate::codec::{Codec, read_layout};

    /// Bytes that compress somewhat (a counter with noise), deterministic.
    fn data(n: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if x >> 28 == 0 {
                    (x >> 20) as u8
                } else {
                    (i / 64) as u8
                }
            })
            .collect()
    }

    /// A `.npy` 1.0 header for `n` bytes, padded to 64 bytes or a multiple.
    fn npy_header(n: usize) -> Vec<u8> {
        let mut text = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({n},), }}");
        while (10 + text.len() + 1) % 64 != 0 {
            text.push(' ');
        }
        text.push('\n');
        let mut h = b"\x93NUMPY\x01\x00".to_vec();
        h.extend_from_slice(&(text.len() as u16).to_le_bytes());
        h.extend_from_slice(text.as_bytes());
        h
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    fn settings(chunk_size: usize) -> Settings {
        Settings {
            codec: Codec::Zstd(3),
            itemsize: 1,
            chunk_size,
        }
    }

    fn manifest(w: &ContainerWriter<Cursor<Vec<u8>>>, entries: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "content_hash": w.content_hash(),
            "entries": entries,
        }))
        .unwrap()
    }

    /// Writes `stream` as a compressed pickle entry in pieces of the given
    /// sizes (cycled) and returns the file.
    fn write_stream(stream: &[u8], pieces: &[usize], chunk_size: usize) -> Vec<u8> {
        let mut w = ContainerWriter::new(Cursor::new(Vec::new()), "<test>").unwrap();
        w.begin_compressed_entry("model.pklc", settings(chunk_size))
            .unwrap();
        let mut rest = stream;
        for n in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*n).min(rest.len()));
            w.write(piece).unwrap();
            rest = tail;
        }
        let entry = w.end_entry().unwrap();
        let summary = w.take_summary().unwrap();
        assert_eq!(summary.raw_size, stream.len() as u64);
        let m = manifest(
            &w,
            vec![json!({
                "kind": "pickle", "name": entry.name, "size": entry.size, "crc32": entry.crc32,
                "protocol": 5, "buffers": 0, "codec": "zstd", "raw_size": stream.len(),
            })],
        );
        w.finish(&m).unwrap().into_inner()
    }

    fn chunk_layout(file: &[u8]) -> crate::codec::Layout {
        let container = Container::parse(file.to_vec()).unwrap();
        let entry = &container.zip_entries()[1];
        let range = entry.data_range();
        read_layout(
            &file[range.start as usize..range.end as usize],
            "model.pklc",
        )
        .unwrap()
    }

    #[test]
    fn a_stream_compressed_while_written_reads_back_whole() {
        // Chunks of 16 KiB: a 200 KiB stream keeps more chunks in flight than
        // the writer allows, so it also waits for the oldest ones (or packs
        // them itself, when no pool thread has started on them). Threads 0:
        // written from outside any pool, as Python's thread does.
        let chunk = 16 << 10;
        for threads in [0, 1, 2, 3] {
            for n in [0, 1, chunk - 1, chunk, chunk + 1, 200 << 10] {
                let stream = data(n);
                for pieces in [&[1 << 20][..], &[1, 7, 4093, 65_536, 3]] {
                    let file = if threads == 0 {
                        write_stream(&stream, pieces, chunk)
                    } else {
                        pool(threads).install(|| write_stream(&stream, pieces, chunk))
                    };
                    let container = Container::parse(file.clone()).unwrap();
                    assert_eq!(container.pickle().unwrap().as_ref(), stream.as_slice());
                    let layout = chunk_layout(&file);
                    assert_eq!(layout.raw_size, n as u64);
                    if n > chunk {
                        assert_eq!(layout.chunk_size, chunk as u64, "{n} bytes");
                    }
                }
            }
        }
    }

    #[test]
    fn a_short_stream_is_written_in_short_chunks_a_long_one_in_full_ones() {
        let full = 4 << 20;
        let short = SHORT_STREAM_CHUNK as u64;
        for (n, chunk_size, chunks) in [
            (1000, short, 1),
            (300 << 10, short, 3),
            (SHORT_STREAM_MAX + 5, short, 9),
            // Past the limit: the short chunks are taken back.
            (SHORT_STREAM_MAX + SHORT_STREAM_CHUNK, full as u64, 1),
            (9 << 20, full as u64, 3),
        ] {
            let stream = data(n);
            for threads in [0, 1, 2] {
                let write = || write_stream(&stream, &[65_536, 100], full);
                let file = if threads == 0 {
                    write()
                } else {
                    pool(threads).install(write)
                };
                let layout = chunk_layout(&file);
                assert_eq!(
                    (layout.chunk_size, layout.chunks.len()),
                    (chunk_size, chunks),
                    "{n} bytes"
                );
                let container = Container::parse(file).unwrap();
                assert!(container.pickle().unwrap().as_ref() == stream.as_slice());
            }
        }
    }

    #[test]
    fn a_stream_abandoned_with_chunks_in_flight_is_dropped_cleanly() {
        let mut w = ContainerWriter::new(Cursor::new(Vec::new()), "<test>").unwrap();
        w.begin_compressed_entry("model.pklc", settings(4096))
            .unwrap();
        w.write(&data(100_000)).unwrap();
        drop(w);
    }

    #[test]
    fn groups_of_small_arrays_are_written_in_order() {
        // Over 32 MiB of small arrays: several groups, each written while the
        // next is compressed, plus one large array between them.
        let arrays: Vec<(String, Vec<u8>, Vec<u8>, usize)> = (0..37)
            .map(|i| {
                let n = if i == 20 { 9 << 20 } else { (1 << 20) + i * 8 };
                let mut d = data(n);
                d[0] = i as u8;
                (format!("arrays/{i:06}.npyc"), npy_header(n), d, 8)
            })
            .collect();
        let items: Vec<ArrayItem<'_>> = arrays
            .iter()
            .map(|(n, h, d, s)| ArrayItem {
                name: n.as_str(),
                header: h.as_slice(),
                data: d.as_slice(),
                itemsize: *s,
                kind: 0,
            })
            .collect();
        let mut w = ContainerWriter::new(Cursor::new(Vec::new()), "<test>").unwrap();
        w.begin_entry("model.pkl").unwrap();
        let pickle = w.end_entry().unwrap();
        let records = pool(2)
            .install(|| w.add_arrays(&items, Some(settings(4 << 20))))
            .unwrap();
        let mut entries = vec![json!({
            "kind": "pickle", "name": pickle.name, "size": 0, "crc32": pickle.crc32,
            "protocol": 5, "buffers": arrays.len(),
        })];
        for ((name, header, d, _), (entry, summary)) in arrays.iter().zip(&records) {
            assert_eq!(&entry.name, name);
            entries.push(json!({
                "kind": "array", "name": name, "size": entry.size, "crc32": entry.crc32,
                "data_offset": header.len(), "nbytes": d.len(), "dtype": "|u1",
                "shape": [d.len()], "order": "C", "codec": "zstd",
                "filter": summary.unwrap().filter.name(),
            }));
        }
        let m = manifest(&w, entries);
        let file = w.finish(&m).unwrap().into_inner();
        let container = Container::parse(file).unwrap();
        let mut copies: Vec<Vec<u8>> = arrays.iter().map(|a| vec![0; a.2.len()]).collect();
        container
            .copy_arrays_into(
                copies
                    .iter_mut()
                    .map(Vec::as_mut_slice)
                    .enumerate()
                    .collect(),
            )
            .unwrap();
        for (copy, (_, _, d, _)) in copies.iter().zip(&arrays) {
            assert!(copy == d);
        }
    }

    /// A compressed array of many chunks splits into one piece per chunk,
    /// which decode in any order to the array, and a damaged chunk is
    /// refused by the piece holding it, naming the chunk.
    #[test]
    fn a_many_chunk_array_splits_into_pieces_by_chunk() {
        let d = data((5 << 20) + 123);
        let header = npy_header(d.len());
        let items = [ArrayItem {
            name: "arrays/000000.npyc",
            header: &header,
            data: &d,
            itemsize: 8,
            kind: 0,
        }];
        let mut w = ContainerWriter::new(Cursor::new(Vec::new()), "<test>").unwrap();
        w.begin_entry("model.pkl").unwrap();
        let pickle = w.end_entry().unwrap();
        let records = pool(2)
            .install(|| w.add_arrays(&items, Some(settings(1 << 20))))
            .unwrap();
        let (entry, summary) = &records[0];
        let m = manifest(
            &w,
            vec![
                json!({
                    "kind": "pickle", "name": pickle.name, "size": 0, "crc32": pickle.crc32,
                    "protocol": 5, "buffers": 1,
                }),
                json!({
                    "kind": "array", "name": entry.name, "size": entry.size, "crc32": entry.crc32,
                    "data_offset": header.len(), "nbytes": d.len(), "dtype": "|u1",
                    "shape": [d.len()], "order": "C", "codec": "zstd",
                    "filter": summary.unwrap().filter.name(),
                }),
            ],
        );
        let mut file = w.finish(&m).unwrap().into_inner();
        let decode = |file: &[u8], split: bool| {
            let container = Container::parse(file).unwrap();
            let mut out = vec![0u8; d.len()];
            let pieces = container
                .pieces(vec![(0, out.as_mut_slice(), split)])
                .unwrap();
            let count = pieces.len();
            let result = pieces
                .into_iter()
                .rev()
                .try_for_each(|p| container.decode_piece(p).map(|_| ()));
            (count, result, out)
        };
        let (count, result, out) = decode(&file, true);
        assert_eq!(count, 6);
        result.unwrap();
        assert!(out == d);
        let (count, result, out) = decode(&file, false);
        assert_eq!(count, 1);
        result.unwrap();
        assert!(out == d);
        // Damage the middle of the fourth chunk's stored bytes.
        let container = Container::parse(file.as_slice()).unwrap();
        let range = container
            .zip_entries()
            .iter()
            .find(|e| e.name == "arrays/000000.npyc")
            .unwrap()
            .data_range();
        let payload = &file[range.start as usize + header.len()..range.end as usize];
        let layout = read_layout(payload, "arrays/000000.npyc").unwrap();
        let (offset, stored, _, _) = layout.chunks[3];
        let at = range.start as usize + header.len() + (offset + stored / 2) as usize;
        file[at] ^= 0x40;
        let (_, result, _) = decode(&file, true);
        assert!(
            matches!(result, Err(FormatError::Checksum { chunk: Some(3), .. })),
            "{result:?}"
        );
    }

    #[test]
    fn arrays_of_one_kind_share_the_filter_their_data_calls_for() {
        // Small integers in int32: shuffling wins. The same bytes called 1-byte
        // elements cannot be byte-shuffled, but their bit planes still pay.
        let ints: Vec<u8> = (0..40_000u32)
            .flat_map(|i| (i * 7 % 1000).to_le_bytes())
            .collect();
        let header = npy_header(ints.len());
        let items: Vec<ArrayItem<'_>> = (0..16)
            .map(|i| ArrayItem {
                name: "a",
                header: &header,
                data: &ints,
                itemsize: if i % 2 == 0 { 4 } else { 1 },
                kind: i % 2,
            })
            .collect();
        let filters = |items: &[ArrayItem<'_>]| -> Vec<((u64, usize), Filter)> {
            let mut known = SharedChoices::new();
            shared_filters(items, settings(4 << 20), &mut known);
            known
                .into_iter()
                .map(|(key, choice)| (key, choice.filter))
                .collect()
        };
        let shared = filters(&items);
        assert_eq!(
            shared,
            vec![
                ((0, 4), Filter::Shuffle(4)),
                ((1, 1), Filter::BitShuffle(1))
            ]
        );
        assert!(
            filters(&items[..12]).is_empty(),
            "kinds of 6 arrays decide array by array"
        );
        // One kind of two element sizes is two kinds.
        let all: Vec<ArrayItem<'_>> = items.iter().map(|i| ArrayItem { kind: 0, ..*i }).collect();
        let shared = filters(&all);
        assert_eq!(
            shared,
            vec![
                ((0, 4), Filter::Shuffle(4)),
                ((0, 1), Filter::BitShuffle(1))
            ]
        );
        // Kinds already chosen for (in an earlier group) are not chosen again.
        let mut known = SharedChoices::new();
        shared_filters(&items, settings(4 << 20), &mut known);
        let earlier = known.clone();
        shared_filters(&all, settings(4 << 20), &mut known);
        assert_eq!(known.len(), 3);
        assert_eq!(known[..2], earlier[..]);
        assert_eq!(known[2].0, (0, 1));
        let packed = pack_group(&all, settings(4 << 20), &known);
        for (item, (encoder, _)) in all.iter().zip(&packed) {
            let expected = if item.itemsize == 4 {
                Filter::Shuffle(4)
            } else {
                Filter::BitShuffle(1)
            };
            assert_eq!(encoder.filter(), expected);
        }
    }
}
