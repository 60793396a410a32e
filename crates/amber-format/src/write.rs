//! Writing an amber container: `mimetype` first, then the pickle stream and
//! the arrays, then `manifest.json`, then the zip directory.
//!
//! The manifest is composed by the caller (it knows the user's metadata and the
//! environment) from the entry records this writer returns; [`ContainerWriter::finish`]
//! checks it against what was actually written, so a file that a reader would
//! refuse is never produced.

use std::io::{Seek, Write};
use std::path::PathBuf;

use rayon::prelude::*;

use crate::codec::{Encoder, Settings, Summary};

/// Small arrays are compressed together, in parallel, in groups of about this many bytes.
const SMALL_GROUP_BYTES: usize = 32 << 20;
use crate::error::{FormatError, Result};
use crate::manifest::{
    EntryInfo, FORMAT_NAME, FORMAT_VERSION, MANIFEST_ENTRY, MIMETYPE, MIMETYPE_ENTRY, Manifest,
    content_hash_text,
};
use crate::zip::{ZipEntry, ZipWriter};

/// Writes an amber container into a seekable sink.
pub struct ContainerWriter<W: Write + Seek + Send> {
    zip: ZipWriter<W>,
    label: PathBuf,
    /// For a compressed streamed entry: its encoder and the bytes not yet encoded.
    encoding: Option<(Encoder, Vec<u8>, usize)>,
    /// Summary of the last compressed streamed entry.
    last_summary: Option<Summary>,
}

impl<W: Write + Seek + Send> ContainerWriter<W> {
    /// Starts a container; `label` names the destination in error messages.
    pub fn new(sink: W, label: impl Into<PathBuf>) -> Result<Self> {
        let mut writer = Self {
            zip: ZipWriter::new(sink),
            label: label.into(),
            encoding: None,
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

    /// Starts a streamed entry whose bytes are compressed in chunks (F-40).
    pub fn begin_compressed_entry(&mut self, name: &str, settings: Settings) -> Result<()> {
        self.begin_entry(name)?;
        // Encode a few chunks per thread at a time: parallel, with bounded memory.
        let batch = settings.chunk_size.max(1) * rayon::current_num_threads().max(1) * 2;
        self.encoding = Some((
            Encoder::new(settings, &[]),
            Vec::with_capacity(batch),
            batch,
        ));
        Ok(())
    }

    /// Appends to the streamed entry.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some((encoder, pending, batch)) = self.encoding.as_mut() else {
            return self.zip.write(data).map_err(|e| self.io(e));
        };
        pending.extend_from_slice(data);
        if pending.len() >= *batch {
            // Only whole chunks: every chunk but the payload's last must be full (F-42).
            let whole = pending.len() / encoder.chunk_size() * encoder.chunk_size();
            let zip = &mut self.zip;
            let label = &self.label;
            let head = pending.get(..whole).unwrap_or_default();
            encoder.encode(head, &mut |b| zip.write(b).map_err(|e| io_error(label, e)))?;
            pending.drain(..whole);
        }
        Ok(())
    }

    /// Ends the streamed entry.
    pub fn end_entry(&mut self) -> Result<ZipEntry> {
        if let Some((mut encoder, pending, _)) = self.encoding.take() {
            let zip = &mut self.zip;
            let label = &self.label;
            let mut sink = |b: &[u8]| zip.write(b).map_err(|e| io_error(label, e));
            encoder.encode(&pending, &mut sink)?;
            self.last_summary = Some(encoder.finish(&mut sink)?);
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
        let mut encoder = Encoder::new(settings, sample);
        let zip = &mut self.zip;
        let label = &self.label;
        let mut sink = |b: &[u8]| zip.write(b).map_err(|e| io_error(label, e));
        encoder.encode(data, &mut sink)?;
        let summary = encoder.finish(&mut sink)?;
        let entry = self.end_entry()?;
        Ok((entry, summary))
    }

    /// Writes many array entries (`name`, `.npy` header, data, element size) in
    /// order; with `settings`, compresses them on every thread of the current
    /// pool: small arrays several at a time, large ones chunk by chunk.
    pub fn add_arrays(
        &mut self,
        items: &[(&str, &[u8], &[u8], usize)],
        settings: Option<Settings>,
    ) -> Result<Vec<(ZipEntry, Option<Summary>)>> {
        let Some(settings) = settings else {
            return items
                .iter()
                .map(|(name, header, data, _)| {
                    self.add_entry(name, &[header, data]).map(|e| (e, None))
                })
                .collect();
        };
        let mut out = Vec::with_capacity(items.len());
        let mut rest = items;
        while let Some(((name, header, data, itemsize), tail)) = rest.split_first() {
            let item_settings = Settings {
                itemsize: *itemsize,
                ..settings
            };
            if data.len() >= SMALL_GROUP_BYTES / 4 {
                out.push(
                    self.add_compressed_entry(name, header, data, item_settings)
                        .map(|(e, s)| (e, Some(s)))?,
                );
                rest = tail;
                continue;
            }
            // A group of small arrays: compressed in parallel, written in order.
            let mut end = 0;
            let mut bytes = 0;
            while let Some((_, _, d, _)) = rest.get(end) {
                if end > 0
                    && (bytes + d.len() > SMALL_GROUP_BYTES || d.len() >= SMALL_GROUP_BYTES / 4)
                {
                    break;
                }
                bytes += d.len();
                end += 1;
            }
            let group = rest.get(..end).unwrap_or_default();
            let packed: Vec<(Encoder, crate::codec::PackedPayload)> = group
                .par_iter()
                .map(|(_, _, data, itemsize)| {
                    let s = Settings {
                        itemsize: *itemsize,
                        ..settings
                    };
                    let sample = data.get(..s.chunk_size.min(data.len())).unwrap_or_default();
                    let encoder = Encoder::new(s, sample);
                    let payload = encoder.pack_all(data);
                    (encoder, payload)
                })
                .collect();
            for ((name, header, data, _), (mut encoder, payload)) in group.iter().zip(packed) {
                self.begin_entry(name)?;
                self.zip.write(header).map_err(|e| self.io(e))?;
                let zip = &mut self.zip;
                let label = &self.label;
                let mut sink = |b: &[u8]| zip.write(b).map_err(|e| io_error(label, e));
                encoder.write_packed(data, &payload, &mut sink)?;
                let summary = encoder.finish(&mut sink)?;
                let entry = self.end_entry()?;
                out.push((entry, Some(summary)));
            }
            rest = rest.get(end..).unwrap_or_default();
        }
        Ok(out)
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
fn io_error(label: &std::path::Path, e: std::io::Error) -> FormatError {
    if e.kind() == std::io::ErrorKind::InvalidInput {
        FormatError::Usage {
            what: e.to_string(),
        }
    } else {
        FormatError::io("write", label, e)
    }
}
