//! Opening an amber container: structure, manifest and checksums.
//!
//! [`Container::parse`] does the work that must happen before any byte is
//! trusted: the strict zip layout, the `mimetype` signature, the manifest's
//! CRC, JSON and schema, and the agreement between manifest and archive (same
//! entries in the same order with the same sizes and CRCs, valid `.npy`
//! headers, aligned array data). It reads only headers, so it is O(number of
//! entries), not O(file size): that is what makes memory-mapped loads instant.
//! Entry contents are checked on demand: [`Container::pickle`] verifies the
//! pickle stream, [`Container::copy_arrays_into`] verifies arrays while
//! copying them out, and [`Container::verify`] checks everything.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::codec;
use crate::error::{FormatError, Result};
use crate::manifest::{
    ArrayInfo, EntryInfo, FORMAT_NAME, FORMAT_VERSION, MANIFEST_ENTRY, MAX_MANIFEST_BYTES,
    MIMETYPE, MIMETYPE_ENTRY, Manifest, content_hash_text,
};
use crate::npy;
use crate::sniff;
use crate::zip::{self, ZipEntry};

/// Largest pickle stream a reader decompresses into memory.
pub const MAX_PICKLE_RAW_SIZE: u64 = 64 << 30;

/// Where the content of the `mimetype` entry starts (F-2).
const MIMETYPE_DATA_OFFSET: usize = 64;

/// Chunk size for parallel copying and checksumming.
const CHUNK: usize = 4 << 20;
/// Bytes of an entry hashed at a time for the content hash (then released).
const HASH_PIECE: usize = 64 << 20;

/// Bytes a container can be read from.
///
/// `release` says a range has been consumed: a file map drops those pages from
/// the process's resident set (they stay in the page cache), so reading a large
/// file never holds more than a few chunks of it resident. Memory sources ignore it.
///
/// `range` and `size` are what [`Container::parse`] and [`Container::pickle`]
/// read through: a source that reads its file in pieces
/// ([`crate::file::Pieces`]) serves them without mapping the whole file.
pub trait Source: AsRef<[u8]> + Sync {
    /// The range `offset..offset + len` will not be read again soon.
    fn release(&self, offset: usize, len: usize) {
        let _ = (offset, len);
    }

    /// The bytes `offset..offset + len`, or `None` if they run past the end.
    fn range(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = usize::try_from(offset.checked_add(len)?).ok()?;
        self.as_ref().get(usize::try_from(offset).ok()?..end)
    }

    /// The length of the whole file.
    fn size(&self) -> u64 {
        self.as_ref().len() as u64
    }
}

impl Source for &[u8] {}
impl Source for Vec<u8> {}

/// A parsed amber container over bytes the caller owns (a map, a vector, …).
pub struct Container<B> {
    data: B,
    zip_entries: Vec<ZipEntry>,
    manifest: Manifest,
    manifest_bytes: std::ops::Range<usize>,
}

/// An entry written out as a standalone file: a header (empty for the pickle) and data.
pub type Extracted<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Where an array's data lies in the file, for zero-copy views and copies.
#[derive(Debug, Clone)]
pub struct ArrayLocation {
    /// Index of the array among the array entries (its out-of-band buffer number).
    pub index: usize,
    /// Entry name.
    pub name: String,
    /// Absolute offset of the array data in the file (a multiple of 64).
    pub offset: u64,
    /// Bytes of array data.
    pub nbytes: u64,
    /// Whether the data is compressed (then it cannot be mapped in place).
    pub compressed: bool,
}

impl<B: Source> Container<B> {
    /// Validates the structure and manifest of an amber file held in `data`.
    pub fn parse(data: B) -> Result<Self> {
        Self::parse_with(data, true)
    }

    /// [`Container::parse`] for a reader of the entries only (a scan): the
    /// same checks and errors, but the manifest's free fields are checked,
    /// not kept ([`Manifest::extra`] is empty).
    pub fn parse_entries(data: B) -> Result<Self> {
        Self::parse_with(data, false)
    }

    fn parse_with(data: B, keep_extra: bool) -> Result<Self> {
        let size = data.size();
        // F-2: the signature is at fixed offsets, so "some other zip" is told
        // apart from "a damaged amber file" before the directory is read.
        let signature_end = MIMETYPE_DATA_OFFSET + MIMETYPE.len();
        let head = data
            .range(0, size.min(signature_end as u64))
            .unwrap_or_default();
        if !head.starts_with(b"PK\x03\x04") {
            return Err(FormatError::NotAmber {
                reason: sniff::describe(data.as_ref()),
            });
        }
        if size < signature_end as u64 {
            return Err(FormatError::Truncated {
                what: "amber signature",
                offset: 0,
                needed: signature_end as u64,
                available: size,
            });
        }
        if head.get(30..38) != Some(MIMETYPE_ENTRY.as_bytes())
            || head.get(MIMETYPE_DATA_OFFSET..signature_end) != Some(MIMETYPE)
        {
            return Err(FormatError::NotAmber {
                reason: "a zip archive, but not an amber file (its first entry is not amber's `mimetype`)".into(),
            });
        }
        let zip_entries = zip::read_directory_in(&data)?;
        let first = zip_entries.first().ok_or_else(|| FormatError::NotAmber {
            reason: "an empty zip archive".into(),
        })?;
        if first.name != MIMETYPE_ENTRY || entry_bytes(&data, first) != MIMETYPE {
            return Err(FormatError::NotAmber {
                reason: "a zip archive, but its first entry is not amber's `mimetype`".into(),
            });
        }
        let last = zip_entries
            .last()
            .filter(|e| e.name == MANIFEST_ENTRY)
            .ok_or_else(|| FormatError::Manifest {
                reason: format!("the last entry must be `{MANIFEST_ENTRY}`"),
            })?;
        if last.size > MAX_MANIFEST_BYTES {
            return Err(FormatError::Limit {
                what: "manifest size",
                value: last.size,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let raw = entry_bytes(&data, last);
        check_crc(raw, last)?;
        let manifest = if keep_extra {
            crate::manifest_fast::parse(raw)
        } else {
            crate::manifest_fast::parse_entries(raw)
        };
        let manifest = manifest.map_err(|e| FormatError::Manifest {
            reason: format!("{e}"),
        })?;
        if manifest.format != FORMAT_NAME {
            return Err(FormatError::Manifest {
                reason: format!(
                    "`format` is `{}`, expected `{FORMAT_NAME}`",
                    manifest.format
                ),
            });
        }
        if manifest.format_version > FORMAT_VERSION || manifest.format_version == 0 {
            return Err(FormatError::Unsupported {
                what: format!(
                    "format version {} (this amber reads up to version {FORMAT_VERSION}; upgrade amber)",
                    manifest.format_version
                ),
            });
        }
        let manifest_bytes = last.data_offset as usize..(last.data_offset + last.size) as usize;
        let container = Self {
            data,
            zip_entries,
            manifest,
            manifest_bytes,
        };
        container.check_entries()?;
        Ok(container)
    }

    /// Checks that the manifest lists exactly the archive's inner entries.
    fn check_entries(&self) -> Result<()> {
        let inner = self.inner_zip_entries();
        let listed = &self.manifest.entries;
        if inner.len() != listed.len() {
            return Err(FormatError::Manifest {
                reason: format!(
                    "it lists {} entries, the archive holds {} (besides `mimetype` and `manifest.json`)",
                    listed.len(),
                    inner.len()
                ),
            });
        }
        let mut pickles = 0;
        let mut arrays = 0u64;
        let mut buffers = 0u64;
        for (zip_entry, info) in inner.iter().zip(listed) {
            let mismatch = |what: String| FormatError::Mismatch {
                entry: zip_entry.name.clone(),
                what,
            };
            if zip_entry.name != info.name() {
                return Err(mismatch(format!(
                    "the manifest lists `{}` at this position",
                    info.name()
                )));
            }
            if zip_entry.size != info.size() {
                return Err(mismatch(format!(
                    "size is {}, the manifest says {}",
                    zip_entry.size,
                    info.size()
                )));
            }
            if zip_entry.crc32 != info.crc32() {
                return Err(mismatch("CRC-32 differs from the manifest".into()));
            }
            match info {
                EntryInfo::Pickle {
                    buffers: b,
                    codec,
                    raw_size,
                    ..
                } => {
                    pickles += 1;
                    buffers = *b;
                    if codec.as_deref().is_some_and(|c| c != "none") {
                        let layout = codec::read_layout(
                            entry_bytes(&self.data, zip_entry),
                            &zip_entry.name,
                        )?;
                        check_codec(&zip_entry.name, &layout, codec.as_deref(), None)?;
                        if Some(layout.raw_size) != *raw_size {
                            return Err(mismatch(
                                "decompressed size differs from the manifest".into(),
                            ));
                        }
                        if layout.raw_size > MAX_PICKLE_RAW_SIZE {
                            return Err(FormatError::Limit {
                                what: "decompressed pickle size",
                                value: layout.raw_size,
                                limit: MAX_PICKLE_RAW_SIZE,
                            });
                        }
                    }
                }
                EntryInfo::Array(array) if array.is_compressed() => {
                    arrays += 1;
                    let entry = entry_bytes(&self.data, zip_entry);
                    let payload = entry.get(array.data_offset as usize..).ok_or_else(|| {
                        mismatch("the header runs past the end of the entry".into())
                    })?;
                    let layout = codec::read_layout(payload, &zip_entry.name)?;
                    check_codec(
                        &zip_entry.name,
                        &layout,
                        array.codec.as_deref(),
                        array.filter.as_deref(),
                    )?;
                    if layout.raw_size != array.nbytes {
                        return Err(mismatch(format!(
                            "payload decompresses to {} bytes, the manifest says {}",
                            layout.raw_size, array.nbytes
                        )));
                    }
                    let header = npy::parse_header(entry, &zip_entry.name)?;
                    npy::check_against(&header, array)?;
                }
                EntryInfo::Array(array) => {
                    arrays += 1;
                    if array.data_offset.checked_add(array.nbytes) != Some(array.size) {
                        return Err(mismatch(format!(
                            "header ({}) and data ({}) do not add up to the entry size ({})",
                            array.data_offset, array.nbytes, array.size
                        )));
                    }
                    if (zip_entry.data_offset + array.data_offset) % zip::ALIGNMENT != 0 {
                        return Err(mismatch("array data is not 64-byte aligned".into()));
                    }
                    let header =
                        npy::parse_header(npy_prefix(&self.data, zip_entry), &zip_entry.name)?;
                    npy::check_against(&header, array)?;
                }
            }
        }
        if pickles != 1 {
            return Err(FormatError::Manifest {
                reason: format!("it lists {pickles} pickle entries, expected exactly one"),
            });
        }
        if buffers != arrays {
            return Err(FormatError::Manifest {
                reason: format!(
                    "the pickle takes {buffers} buffers, but there are {arrays} array entries"
                ),
            });
        }
        Ok(())
    }

    fn inner_zip_entries(&self) -> &[ZipEntry] {
        let n = self.zip_entries.len();
        self.zip_entries
            .get(1..n.saturating_sub(1))
            .unwrap_or_default()
    }

    /// The source the container reads from.
    pub fn source(&self) -> &B {
        &self.data
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    /// The decoded manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest exactly as stored (already checked against its CRC).
    pub fn manifest_bytes(&self) -> &[u8] {
        let range = &self.manifest_bytes;
        self.data
            .range(range.start as u64, range.len() as u64)
            .unwrap_or_default()
    }

    /// Every zip entry, including `mimetype` and `manifest.json`, in file order.
    pub fn zip_entries(&self) -> &[ZipEntry] {
        &self.zip_entries
    }

    /// The pickle stream, after checking its CRC.
    ///
    /// A compressed stream is decompressed into memory (after its CRC is checked).
    pub fn pickle(&self) -> Result<Cow<'_, [u8]>> {
        if let Some(size) = self.compressed_pickle_size()? {
            let mut out = vec![0u8; size];
            self.decode_pickle_into(&mut out)?;
            return Ok(Cow::Owned(out));
        }
        let (entry, _) = self.pickle_entry()?;
        let data = entry_bytes(&self.data, entry);
        // The stream is read again while unpickling; until then it need not stay resident.
        check_crc_parallel(data, entry, &|c| self.release_in(entry, data, c))?;
        Ok(Cow::Borrowed(data))
    }

    /// The size of the decoded pickle stream when its entry is compressed
    /// (decode it with [`Self::decode_pickle_into`]); `None` when it is
    /// stored, and [`Self::pickle`] gives it in place.
    ///
    /// # Errors
    /// No pickle entry, or a decoded size this machine cannot address.
    pub fn compressed_pickle_size(&self) -> Result<Option<usize>> {
        match self.pickle_entry()? {
            (
                _,
                EntryInfo::Pickle {
                    codec: Some(c),
                    raw_size: Some(raw),
                    ..
                },
            ) if c != "none" => usize::try_from(*raw)
                .map(Some)
                .map_err(|_| FormatError::Limit {
                    what: "decompressed pickle size",
                    value: *raw,
                    limit: usize::MAX as u64,
                }),
            _ => Ok(None),
        }
    }

    /// Decodes the compressed pickle stream into `out`, exactly
    /// [`Self::compressed_pickle_size`] bytes, checking every CRC.
    ///
    /// # Errors
    /// A damaged entry, a stored (uncompressed) one, or `out` of another size.
    pub fn decode_pickle_into(&self, out: &mut [u8]) -> Result<()> {
        let (entry, _) = self.pickle_entry()?;
        if self.compressed_pickle_size()? != Some(out.len()) {
            return Err(FormatError::Usage {
                what: format!(
                    "a buffer of {} bytes for the pickle stream, which is not compressed to that size",
                    out.len()
                ),
            });
        }
        let data = entry_bytes(&self.data, entry);
        // The chunk CRCs, checked while decoding, and the footer CRC cover
        // every byte: the entry CRC is combined from them (one pass).
        let layout = codec::read_layout(data, &entry.name)?;
        expect_crc(codec::entry_crc(&[], data, &layout), entry)?;
        codec::decode_into_with(data, &entry.name, out, &|c| {
            self.release_in(entry, data, c);
        })
    }

    /// Releases `piece`, a part of `data`, the bytes of `entry` (see [`Source::release`]).
    fn release_in(&self, entry: &ZipEntry, data: &[u8], piece: &[u8]) {
        let at = usize::try_from(entry.data_offset).unwrap_or(usize::MAX);
        self.data
            .release(at.saturating_add(offset_in(data, piece)), piece.len());
    }

    fn pickle_entry(&self) -> Result<(&ZipEntry, &EntryInfo)> {
        self.inner_zip_entries()
            .iter()
            .zip(&self.manifest.entries)
            .find(|(_, info)| matches!(info, EntryInfo::Pickle { .. }))
            .ok_or_else(|| FormatError::Manifest {
                reason: "no pickle entry".into(),
            })
    }

    /// The array entries in buffer order, with their manifest records.
    pub fn arrays(&self) -> Vec<(&ArrayInfo, ArrayLocation)> {
        let mut out = Vec::new();
        for (z, info) in self.inner_zip_entries().iter().zip(&self.manifest.entries) {
            if let EntryInfo::Array(array) = info {
                out.push((
                    array,
                    ArrayLocation {
                        index: out.len(),
                        name: array.name.clone(),
                        offset: z.data_offset + array.data_offset,
                        nbytes: array.nbytes,
                        compressed: array.is_compressed(),
                    },
                ));
            }
        }
        out
    }

    /// Copies array data into caller-provided buffers, checking every CRC.
    ///
    /// `dests` pairs an array index (as in [`Self::arrays`]) with a buffer of
    /// exactly its `nbytes`. Work is spread over all threads of the current
    /// rayon pool, by array and by chunk. On error the buffers hold partial
    /// data and must be discarded.
    pub fn copy_arrays_into(&self, dests: Vec<(usize, &mut [u8])>) -> Result<()> {
        let arrays = self.array_zip_entries();
        let bytes = self.data.as_ref();
        let mut jobs = Vec::with_capacity(dests.len());
        for (index, dest) in dests {
            let (zip_entry, info) =
                arrays
                    .get(index)
                    .copied()
                    .ok_or_else(|| FormatError::Usage {
                        what: format!("array index {index} out of range"),
                    })?;
            if dest.len() as u64 != info.nbytes {
                return Err(FormatError::Usage {
                    what: format!(
                        "buffer for `{}` has {} bytes, the array has {}",
                        info.name,
                        dest.len(),
                        info.nbytes
                    ),
                });
            }
            jobs.push((zip_entry, info, dest));
        }
        jobs.into_par_iter()
            .try_for_each(|(zip_entry, info, dest)| {
                let entry = slice(bytes, zip_entry);
                if info.is_compressed() {
                    let (header, payload) =
                        entry.split_at((info.data_offset as usize).min(entry.len()));
                    let layout = codec::read_layout(payload, &zip_entry.name)?;
                    expect_crc(codec::entry_crc(header, payload, &layout), zip_entry)?;
                    return codec::decode_into_with(payload, &zip_entry.name, dest, &|c| {
                        self.data.release(offset_in(bytes, c), c.len());
                    });
                }
                let (header, data) = raw_array_parts(entry, zip_entry, info)?;
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(header);
                let parts: Vec<crc32fast::Hasher> = dest
                    .par_chunks_mut(CHUNK)
                    .zip(data.par_chunks(CHUNK))
                    .map(|(d, s)| {
                        d.copy_from_slice(s);
                        let mut h = crc32fast::Hasher::new();
                        h.update(d);
                        self.data.release(offset_in(bytes, s), s.len());
                        h
                    })
                    .collect();
                for part in &parts {
                    hasher.combine(part);
                }
                expect_crc(hasher.finalize(), zip_entry)
            })
    }

    /// The data of each uncompressed array of `indices` (as in [`Self::arrays`])
    /// where it lies in the file, once its entry's CRC is checked, for
    /// readers that hand out views of the file rather than copies.
    ///
    /// # Errors
    /// [`FormatError::Usage`] for an index out of range or a compressed
    /// array; a damaged entry as [`Self::copy_arrays_into`] reports it.
    pub fn checked_arrays(&self, indices: &[usize]) -> Result<Vec<&[u8]>> {
        let arrays = self.array_zip_entries();
        let bytes = self.data.as_ref();
        let mut entries = Vec::with_capacity(indices.len());
        for &index in indices {
            let (zip_entry, info) = arrays
                .get(index)
                .copied()
                .filter(|(_, info)| !info.is_compressed())
                .ok_or_else(|| FormatError::Usage {
                    what: format!("array {index} is not an uncompressed array of this file"),
                })?;
            entries.push((zip_entry, info));
        }
        entries
            .into_par_iter()
            .map(|(zip_entry, info)| {
                let (header, data) = raw_array_parts(slice(bytes, zip_entry), zip_entry, info)?;
                let mut crc = crc32fast::Hasher::new();
                crc.update(header);
                crc.combine(&crc_parallel(data, &|_| {}));
                expect_crc(crc.finalize(), zip_entry)?;
                Ok(data)
            })
            .collect()
    }

    /// Splits copying compressed arrays out into [`Piece`]s that any thread
    /// can decode on its own ([`Self::decode_piece`]), for callers that
    /// schedule the work themselves (a load that decodes ahead of the
    /// unpickler and lets the waiting thread help).
    ///
    /// `dests` pairs an array index with a buffer of exactly its `nbytes`
    /// and whether the array may be split into one piece per chunk (else it
    /// is one piece, so that the whole array can be checked once decoded).
    /// Each array's entry CRC is checked here against its chunk index (see
    /// [`codec::entry_crc`]); each chunk is checked as it is decoded.
    ///
    /// # Errors
    /// [`FormatError::Usage`] for an index out of range, an uncompressed
    /// array or a buffer of the wrong size; a damaged entry as
    /// [`Self::copy_arrays_into`] reports it.
    pub fn pieces<'d>(&self, dests: Vec<(usize, &'d mut [u8], bool)>) -> Result<Vec<Piece<'d>>> {
        let arrays = self.array_zip_entries();
        let bytes = self.data.as_ref();
        let mut pieces = Vec::with_capacity(dests.len());
        for (index, dest, split) in dests {
            let (zip_entry, info) = arrays
                .get(index)
                .copied()
                .filter(|(_, info)| info.is_compressed())
                .ok_or_else(|| FormatError::Usage {
                    what: format!("array {index} is not a compressed array of this file"),
                })?;
            let entry = slice(bytes, zip_entry);
            let (header, payload) = entry.split_at((info.data_offset as usize).min(entry.len()));
            let layout = codec::read_layout(payload, &zip_entry.name)?;
            if dest.len() as u64 != info.nbytes || layout.raw_size != info.nbytes {
                return Err(FormatError::Mismatch {
                    entry: zip_entry.name.clone(),
                    what: format!(
                        "payload decompresses to {} bytes, the array needs {} (buffer: {})",
                        layout.raw_size,
                        info.nbytes,
                        dest.len()
                    ),
                });
            }
            expect_crc(codec::entry_crc(header, payload, &layout), zip_entry)?;
            let chunk = usize::try_from(layout.chunk_size).unwrap_or(usize::MAX);
            let layout = std::sync::Arc::new(layout);
            let name: std::sync::Arc<str> = zip_entry.name.as_str().into();
            if split && layout.chunks.len() > 1 {
                for (first, part) in dest.chunks_mut(chunk).enumerate() {
                    pieces.push(Piece {
                        array: index,
                        whole: false,
                        first,
                        layout: std::sync::Arc::clone(&layout),
                        name: std::sync::Arc::clone(&name),
                        payload_at: offset_in(bytes, payload),
                        dest: part,
                    });
                }
            } else {
                pieces.push(Piece {
                    array: index,
                    whole: true,
                    first: 0,
                    layout,
                    name,
                    payload_at: offset_in(bytes, payload),
                    dest,
                });
            }
        }
        Ok(pieces)
    }

    /// Decodes `piece`, checking each chunk's CRC; gives back its array
    /// index and memory. A piece of one chunk is decoded on this thread
    /// alone (no work is handed to the pool); the chunks of a larger one are
    /// spread over the current pool.
    ///
    /// # Errors
    /// A damaged or undecodable chunk, as [`codec::decode_chunk`] reports it.
    pub fn decode_piece<'d>(&self, piece: Piece<'d>) -> Result<(usize, &'d mut [u8])> {
        let bytes = self.data.as_ref();
        let payload = bytes.get(piece.payload_at..).unwrap_or_default();
        let chunk = usize::try_from(piece.layout.chunk_size).unwrap_or(usize::MAX);
        let release = |c: &[u8]| self.data.release(offset_in(bytes, c), c.len());
        let one = |(k, out): (usize, &mut [u8])| {
            let i = piece.first.saturating_add(k);
            codec::decode_chunk(payload, &piece.name, &piece.layout, i, out, false, &release)
        };
        // A piece of several chunks is a whole array that could not be split
        // (it is checked once decoded): its chunks still go to the pool.
        if piece.dest.len() > chunk {
            piece
                .dest
                .par_chunks_mut(chunk)
                .enumerate()
                .try_for_each(one)?;
        } else {
            piece.dest.chunks_mut(chunk).enumerate().try_for_each(one)?;
        }
        Ok((piece.array, piece.dest))
    }

    fn array_zip_entries(&self) -> Vec<(&ZipEntry, &ArrayInfo)> {
        self.inner_zip_entries()
            .iter()
            .zip(&self.manifest.entries)
            .filter_map(|(z, info)| match info {
                EntryInfo::Array(a) => Some((z, a)),
                EntryInfo::Pickle { .. } => None,
            })
            .collect()
    }

    /// The bytes of entry `name` as a standalone file: for an array, the `.npy`
    /// file (header and decompressed data); for the pickle entry, the stream.
    /// Every CRC is checked.
    pub fn extract(&self, name: &str) -> Result<Extracted<'_>> {
        let bytes = self.data.as_ref();
        let found = self
            .inner_zip_entries()
            .iter()
            .zip(&self.manifest.entries)
            .find(|(z, _)| z.name == name);
        let Some((zip_entry, info)) = found else {
            let names: Vec<&str> = self.manifest.entries.iter().map(EntryInfo::name).collect();
            return Err(FormatError::Usage {
                what: format!("no entry `{name}`; entries are: {}", names.join(", ")),
            });
        };
        match info {
            EntryInfo::Pickle { .. } => Ok((Cow::Borrowed(&[][..]), self.pickle()?)),
            EntryInfo::Array(array) => {
                let entry = slice(bytes, zip_entry);
                let header = entry.get(..array.data_offset as usize).unwrap_or_default();
                let index = self
                    .arrays()
                    .iter()
                    .position(|(a, _)| a.name == array.name)
                    .unwrap_or_default();
                if array.is_compressed() {
                    let mut out = vec![0u8; usize::try_from(array.nbytes).unwrap_or(usize::MAX)];
                    self.copy_arrays_into(vec![(index, out.as_mut_slice())])?;
                    Ok((Cow::Borrowed(header), Cow::Owned(out)))
                } else {
                    check_crc_parallel(entry, zip_entry, &|_| {})?;
                    Ok((
                        Cow::Borrowed(header),
                        Cow::Borrowed(entry.get(header.len()..).unwrap_or_default()),
                    ))
                }
            }
        }
    }

    /// Checks the CRC of every entry, calling `progress` with byte counts as it goes.
    ///
    /// Reports the first damaged entry in file order. When the manifest records
    /// a `content_hash` (F-16), it is recomputed in the same pass (each piece of
    /// an entry is hashed while its CRC is computed, then its pages are
    /// released) and checked once every CRC has matched.
    pub fn verify(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
        let Some(expected) = self.manifest.content_hash() else {
            return self.verify_crcs(progress);
        };
        let bytes = self.data.as_ref();
        let mut hasher = blake3::Hasher::new();
        let last = self.zip_entries.len().saturating_sub(1);
        for (index, entry) in self.zip_entries.iter().enumerate() {
            let listed = index > 0 && index < last;
            let mut crc = crc32fast::Hasher::new();
            for piece in slice(bytes, entry).chunks(HASH_PIECE) {
                let part = if listed {
                    rayon::join(
                        || crc_parallel(piece, &|_| {}),
                        || hash_piece(&mut hasher, piece),
                    )
                    .0
                } else {
                    crc_parallel(piece, &|_| {})
                };
                crc.combine(&part);
                self.data.release(offset_in(bytes, piece), piece.len());
                progress(piece.len() as u64);
            }
            expect_crc(crc.finalize(), entry)?;
        }
        let actual = content_hash_text(&hasher.finalize());
        if actual == expected {
            Ok(())
        } else {
            Err(FormatError::ContentHash {
                expected: expected.to_owned(),
                actual,
            })
        }
    }

    /// [`Container::verify`] for files without a content hash: every entry's CRC, entries in parallel.
    fn verify_crcs(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
        let bytes = self.data.as_ref();
        let results: Vec<Result<()>> = self
            .zip_entries
            .par_iter()
            .map(|entry| {
                check_crc_parallel(slice(bytes, entry), entry, &|c| {
                    self.data.release(offset_in(bytes, c), c.len());
                    progress(c.len() as u64);
                })
            })
            .collect();
        results.into_iter().collect()
    }

    /// The content hash (F-16) of this file's entries, computed from their bytes:
    /// BLAKE3 over the stored bytes of every entry the manifest lists, in order.
    #[must_use]
    pub fn content_hash(&self) -> String {
        let bytes = self.data.as_ref();
        let mut hasher = blake3::Hasher::new();
        let listed = self
            .zip_entries
            .get(1..self.zip_entries.len().saturating_sub(1))
            .unwrap_or_default();
        for entry in listed {
            for piece in slice(bytes, entry).chunks(HASH_PIECE) {
                hash_piece(&mut hasher, piece);
                self.data.release(offset_in(bytes, piece), piece.len());
            }
        }
        content_hash_text(&hasher.finalize())
    }

    /// Gives the bytes back.
    pub fn into_inner(self) -> B {
        self.data
    }
}

/// Whole chunks of one compressed array and the memory they decode into:
/// see [`Container::pieces`].
pub struct Piece<'d> {
    /// Index of the array (as in [`Container::arrays`]).
    pub array: usize,
    /// Whether the piece is the whole array.
    pub whole: bool,
    first: usize,
    layout: std::sync::Arc<codec::Layout>,
    name: std::sync::Arc<str>,
    payload_at: usize,
    dest: &'d mut [u8],
}

/// Offset of `part` within `whole` (a sub-slice of it).
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// The data of `entry`, read through [`Source::range`] (`read_directory`
/// checked every entry lies inside the file).
fn entry_bytes<'a, B: Source>(data: &'a B, entry: &ZipEntry) -> &'a [u8] {
    data.range(entry.data_offset, entry.size)
        .unwrap_or_default()
}

/// The start of an uncompressed array entry that [`npy::parse_header`]
/// reads: its preamble and header, as far as the header says it runs (or
/// the whole entry, if shorter), so a large array's data is not read.
fn npy_prefix<'a, B: Source>(data: &'a B, entry: &ZipEntry) -> &'a [u8] {
    const PREAMBLE: u64 = 12;
    let at = entry.data_offset;
    let start = data.range(at, entry.size.min(PREAMBLE)).unwrap_or_default();
    let field = |range: std::ops::Range<usize>| start.get(range).unwrap_or_default();
    let header_end = match start.get(6) {
        Some(1) => <[u8; 2]>::try_from(field(8..10))
            .ok()
            .map(|b| 10 + u64::from(u16::from_le_bytes(b))),
        Some(2 | 3) => <[u8; 4]>::try_from(field(8..12))
            .ok()
            .map(|b| 12 + u64::from(u32::from_le_bytes(b))),
        _ => None,
    };
    let len = header_end.unwrap_or(PREAMBLE).min(entry.size);
    data.range(at, len).unwrap_or_default()
}

fn slice<'a>(bytes: &'a [u8], entry: &ZipEntry) -> &'a [u8] {
    // `read_directory` checked every entry lies inside the file.
    bytes
        .get(entry.data_offset as usize..(entry.data_offset + entry.size) as usize)
        .unwrap_or_default()
}

fn check_codec(
    name: &str,
    layout: &codec::Layout,
    codec: Option<&str>,
    filter: Option<&str>,
) -> Result<()> {
    if codec != Some(layout.codec.name()) || filter.is_some_and(|f| f != layout.filter.name()) {
        return Err(FormatError::Mismatch {
            entry: name.to_owned(),
            what: format!(
                "payload is {} with filter {}, the manifest says {} with {}",
                layout.codec.name(),
                layout.filter.name(),
                codec.unwrap_or("none"),
                filter.unwrap_or("none")
            ),
        });
    }
    Ok(())
}

/// The CRC-32 state of `data`, computed on every thread of the pool; `done` is
/// told about each chunk once it has been read.
/// The `.npy` header and data of uncompressed array entry `entry` (its
/// bytes), refusing data that is not the array's `nbytes` long.
fn raw_array_parts<'b>(
    entry: &'b [u8],
    zip_entry: &ZipEntry,
    info: &ArrayInfo,
) -> Result<(&'b [u8], &'b [u8])> {
    let (header, data) = entry.split_at((info.data_offset as usize).min(entry.len()));
    if data.len() as u64 != info.nbytes {
        return Err(FormatError::Mismatch {
            entry: zip_entry.name.clone(),
            what: format!(
                "holds {} bytes of data, the array needs {}",
                data.len(),
                info.nbytes
            ),
        });
    }
    Ok((header, data))
}

fn crc_parallel(data: &[u8], done: &(dyn Fn(&[u8]) + Sync)) -> crc32fast::Hasher {
    let parts: Vec<crc32fast::Hasher> = data
        .par_chunks(CHUNK)
        .map(|c| {
            let mut h = crc32fast::Hasher::new();
            h.update(c);
            done(c);
            h
        })
        .collect();
    let mut hasher = crc32fast::Hasher::new();
    for part in &parts {
        hasher.combine(part);
    }
    hasher
}

/// Feeds `piece` to the content hash: on every thread of the pool when it is large.
fn hash_piece(hasher: &mut blake3::Hasher, piece: &[u8]) {
    if piece.len() >= CHUNK {
        hasher.update_rayon(piece);
    } else {
        hasher.update(piece);
    }
}

/// Checks an entry's CRC using every thread of the current pool; `done` is
/// told about each chunk once it has been read.
fn check_crc_parallel(data: &[u8], entry: &ZipEntry, done: &(dyn Fn(&[u8]) + Sync)) -> Result<()> {
    if data.len() < CHUNK {
        let checked = check_crc(data, entry);
        done(data);
        return checked;
    }
    expect_crc(crc_parallel(data, done).finalize(), entry)
}

fn check_crc(data: &[u8], entry: &ZipEntry) -> Result<()> {
    expect_crc(crc32fast::hash(data), entry)
}

/// Compares a computed CRC-32 with the one the archive records for `entry`.
fn expect_crc(actual: u32, entry: &ZipEntry) -> Result<()> {
    if actual == entry.crc32 {
        Ok(())
    } else {
        Err(FormatError::Checksum {
            entry: entry.name.clone(),
            chunk: None,
            expected: entry.crc32,
            actual,
        })
    }
}
