//! A stored-only zip64 writer and a strict reader, just large enough for amber.
//!
//! Why not the `zip` crate: amber needs three things it does not offer together.
//! Every entry's data must start on a 64-byte boundary in the file (so arrays can
//! be memory-mapped and SIMD-loaded in place); an entry's bytes come from several
//! borrowed buffers (an `.npy` header and a NumPy array owned by Python) and must
//! be written without first being copied into the library; and the content hash
//! of a large entry is computed on the other cores *while* one writes (and takes
//! each block's CRC-32 just after writing it, from cache), which is what lets a
//! 1 GiB dump run near page-cache speed. All entries are stored
//! (method 0): amber's own compression, when asked for, lives *inside* stored
//! entries, so alignment and memory-mapping keep working.
//!
//! The reader is deliberately strict, in the spirit of safetensors' "no holes"
//! rule: entries must follow one another with no gap or overlap from byte 0 to
//! the central directory, the central directory must end the file, names must be
//! plain relative UTF-8 paths, and local and central headers must agree. A file
//! that passes is exactly what the writer produces, which closes the door on
//! polyglots, hidden payloads and the many disagreements between zip readers.

use std::io::{Seek, SeekFrom, Write};

use crate::error::{FormatError, Result};
use crate::read::Source;

/// Every entry's data starts on a multiple of this many bytes in the file.
pub const ALIGNMENT: u64 = 64;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;

const LOCAL_LEN: u64 = 30;
const CENTRAL_LEN: u64 = 46;
const EOCD_LEN: u64 = 22;
const ZIP64_EOCD_LEN: u64 = 56;
const ZIP64_LOCATOR_LEN: u64 = 20;

/// General-purpose flag bit 11: names are UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
/// 1980-01-01 in MS-DOS date format: a fixed timestamp keeps output deterministic.
const DOS_DATE: u16 = (1 << 5) | 1;
const DOS_TIME: u16 = 0;
/// Version 4.5 of the zip specification introduced zip64.
const VERSION_NEEDED: u16 = 45;
/// "Made by" Unix (3), spec version 4.5, so the external attributes hold a mode.
const VERSION_MADE_BY: u16 = (3 << 8) | 45;
/// A regular file with mode 0644, in the high half of the external attributes.
const EXTERNAL_ATTRS: u32 = 0o100_644 << 16;
const EXTRA_ZIP64: u16 = 0x0001;
/// Extra-field id used for alignment padding (readers skip unknown ids).
const EXTRA_PADDING: u16 = 0xa11e;
const U32_MAX: u64 = 0xFFFF_FFFF;
const U16_MAX: u64 = 0xFFFF;

/// Above this size, an entry's content hash is computed on other threads while it is written.
const PARALLEL_CRC_MIN: usize = 4 << 20;

/// The most entries a reader accepts; a bound on memory for a hostile central directory.
pub const MAX_ENTRIES: u64 = 1 << 24;

/// One entry as the writer recorded it or the reader found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    /// Path inside the archive.
    pub name: String,
    /// CRC-32 (ISO-HDLC, as zip uses) of the entry's bytes.
    pub crc32: u32,
    /// Size of the entry's data in bytes.
    pub size: u64,
    /// Offset of the local file header.
    pub header_offset: u64,
    /// Offset of the first data byte; always a multiple of [`ALIGNMENT`].
    pub data_offset: u64,
}

impl ZipEntry {
    /// The byte range of the entry's data in the file.
    #[must_use]
    pub fn data_range(&self) -> std::ops::Range<u64> {
        self.data_offset..self.data_offset.saturating_add(self.size)
    }
}

struct OpenEntry {
    name: String,
    header_offset: u64,
    data_offset: u64,
    hasher: crc32fast::Hasher,
    size: u64,
}

/// Writes a stored-only, 64-byte-aligned zip64 archive to any seekable sink.
///
/// Entries are either streamed ([`begin_entry`](Self::begin_entry),
/// [`write`](Self::write), [`end_entry`](Self::end_entry)), whose sizes are
/// unknown when their header is written, or written whole from borrowed parts
/// ([`add_entry`](Self::add_entry)). Headers are patched in place once the CRC is
/// known, so no data descriptor is needed and the output is identical either way.
pub struct ZipWriter<W: Write + Seek> {
    sink: W,
    pos: u64,
    entries: Vec<ZipEntry>,
    open: Option<OpenEntry>,
    /// BLAKE3 of every entry's bytes since [`Self::start_content_hash`], in order.
    content: Option<blake3::Hasher>,
}

impl<W: Write + Seek + Send> ZipWriter<W> {
    /// Starts an archive at the sink's current position, which must be its start.
    pub fn new(sink: W) -> Self {
        Self {
            sink,
            pos: 0,
            entries: Vec::new(),
            open: None,
            content: None,
        }
    }

    /// From now on, every entry's bytes also feed one BLAKE3 hash, in write order
    /// (the content hash of F-16, computed while writing: no second pass).
    pub fn start_content_hash(&mut self) {
        self.content = Some(blake3::Hasher::new());
    }

    /// The BLAKE3 hash of the entry bytes written since [`Self::start_content_hash`].
    #[must_use]
    pub fn content_hash(&self) -> Option<blake3::Hash> {
        self.content.as_ref().map(blake3::Hasher::finalize)
    }

    /// The entries written so far, in order.
    #[must_use]
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// Starts a streamed entry. Its header always carries a zip64 field, since
    /// its final size is not known yet.
    pub fn begin_entry(&mut self, name: &str) -> std::io::Result<()> {
        self.check_idle()?;
        let header_offset = self.pos;
        let data_offset = self.write_local_header(name, 0, 0, true)?;
        self.open = Some(OpenEntry {
            name: name.to_owned(),
            header_offset,
            data_offset,
            hasher: crc32fast::Hasher::new(),
            size: 0,
        });
        Ok(())
    }

    /// Appends bytes to the streamed entry.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write_piece(data, None)
    }

    /// Appends bytes to the streamed entry; `crc`, when given, is their CRC-32
    /// (known to the caller), combined into the entry's instead of computed.
    pub fn write_piece(&mut self, data: &[u8], crc: Option<u32>) -> std::io::Result<()> {
        let Some(open) = self.open.as_mut() else {
            return Err(usage("no entry is open for writing"));
        };
        self.sink.write_all(data)?;
        match crc {
            Some(crc) => open
                .hasher
                .combine(&crc32fast::Hasher::new_with_initial_len(
                    crc,
                    data.len() as u64,
                )),
            None => open.hasher.update(data),
        }
        if let Some(content) = self.content.as_mut() {
            content.update(data);
        }
        open.size += data.len() as u64;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Appends pieces to the streamed entry, as [`Self::write_piece`] one by
    /// one; when they are large, another thread of the pool feeds them to the
    /// content hash meanwhile (the hash would otherwise take as long as the
    /// write, on the thread a compressed entry's chunks wait for).
    pub fn write_pieces(&mut self, pieces: &[(&[u8], Option<u32>)]) -> std::io::Result<()> {
        let total: usize = pieces.iter().map(|(p, _)| p.len()).sum();
        if total < PARALLEL_HASH_MIN {
            return pieces
                .iter()
                .try_for_each(|(p, crc)| self.write_piece(p, *crc));
        }
        let mut content = self.content.take();
        let (written, ()) = rayon::join(
            || {
                pieces
                    .iter()
                    .try_for_each(|(p, crc)| self.write_piece(p, *crc))
            },
            || {
                if let Some(hasher) = content.as_mut() {
                    pieces.iter().for_each(|(p, _)| {
                        hasher.update(p);
                    });
                }
            },
        );
        self.content = content;
        written
    }

    /// Closes the streamed entry and patches its header with the CRC and sizes.
    pub fn end_entry(&mut self) -> std::io::Result<&ZipEntry> {
        let Some(open) = self.open.take() else {
            return Err(usage("no entry is open"));
        };
        let crc32 = open.hasher.finalize();
        let name_len = open.name.len() as u64;
        self.sink.seek(SeekFrom::Start(open.header_offset + 14))?;
        self.sink.write_all(&crc32.to_le_bytes())?;
        // The zip64 extra field is the first one, right after the name.
        self.sink.seek(SeekFrom::Start(
            open.header_offset + LOCAL_LEN + name_len + 4,
        ))?;
        self.sink.write_all(&open.size.to_le_bytes())?;
        self.sink.write_all(&open.size.to_le_bytes())?;
        self.sink.seek(SeekFrom::Start(self.pos))?;
        Ok(self.push(ZipEntry {
            name: open.name,
            crc32,
            size: open.size,
            header_offset: open.header_offset,
            data_offset: open.data_offset,
        }))
    }

    /// Writes a whole entry whose bytes are the concatenation of `parts`.
    ///
    /// For large entries the CRC is computed on a second thread while this one
    /// writes; both only read `parts`.
    pub fn add_entry(&mut self, name: &str, parts: &[&[u8]]) -> std::io::Result<&ZipEntry> {
        self.check_idle()?;
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let header_offset = self.pos;
        let crc32 = if total >= PARALLEL_CRC_MIN {
            // Large: write (and CRC each block just written, still in cache)
            // while the pool's other threads hash, then patch the header.
            let data_offset = self.write_local_header(name, 0, size, size >= U32_MAX)?;
            let sink = &mut self.sink;
            let content = self.content.as_mut();
            let (crc32, ()) = rayon::join(
                || write_with_crc(sink, parts),
                || {
                    if let Some(hasher) = content {
                        parts.iter().for_each(|p| hash_part(hasher, p));
                    }
                },
            );
            let crc32 = crc32?;
            self.pos += size;
            self.sink.seek(SeekFrom::Start(header_offset + 14))?;
            self.sink.write_all(&crc32.to_le_bytes())?;
            self.sink.seek(SeekFrom::Start(self.pos))?;
            (crc32, data_offset)
        } else {
            // Small: the CRC first, so the header is written once and the sink
            // is never sought (seeking would flush its buffer on every entry).
            let crc32 = crc_of(parts);
            let data_offset = self.write_local_header(name, crc32, size, size >= U32_MAX)?;
            parts.iter().try_for_each(|p| self.sink.write_all(p))?;
            if let Some(content) = self.content.as_mut() {
                for p in parts {
                    content.update(p);
                }
            }
            self.pos += size;
            (crc32, data_offset)
        };
        Ok(self.push(ZipEntry {
            name: name.to_owned(),
            crc32: crc32.0,
            size,
            header_offset,
            data_offset: crc32.1,
        }))
    }

    /// Writes whole entries in order, each the concatenation of its parts (as
    /// [`Self::add_entry`]), while another thread of the pool feeds their bytes
    /// to the content hash: for many small entries, written one at a time, the
    /// hash would otherwise take half the time. Below [`PARALLEL_HASH_MIN`]
    /// bytes in all, this thread does both.
    pub fn add_entries(&mut self, entries: &[(&str, &[&[u8]])]) -> std::io::Result<Vec<ZipEntry>> {
        let total: usize = entries
            .iter()
            .flat_map(|(_, parts)| parts.iter())
            .map(|p| p.len())
            .sum();
        if total < PARALLEL_HASH_MIN {
            // A few small entries (or none) hash in less time than waking a
            // pool thread takes: each is hashed as it is written.
            return entries
                .iter()
                .map(|(name, parts)| self.add_entry(name, parts).cloned())
                .collect();
        }
        let mut content = self.content.take();
        let (written, ()) = rayon::join(
            || {
                entries
                    .iter()
                    .map(|(name, parts)| self.add_entry(name, parts).cloned())
                    .collect::<std::io::Result<Vec<_>>>()
            },
            || {
                if let Some(hasher) = content.as_mut() {
                    for part in entries.iter().flat_map(|(_, parts)| parts.iter()) {
                        hash_part(hasher, part);
                    }
                }
            },
        );
        self.content = content;
        written
    }

    /// Writes the central directory and end records and returns the sink.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.check_idle()?;
        let cd_offset = self.pos;
        let mut cd = Vec::with_capacity(self.entries.len() * 96);
        for entry in &self.entries {
            central_header(&mut cd, entry);
        }
        let cd_size = cd.len() as u64;
        let count = self.entries.len() as u64;
        let mut tail = Vec::with_capacity(128);
        let needs_zip64 = count >= U16_MAX || cd_size >= U32_MAX || cd_offset >= U32_MAX;
        if needs_zip64 {
            let zip64_offset = cd_offset + cd_size;
            put32(&mut tail, ZIP64_EOCD_SIG);
            put64(&mut tail, ZIP64_EOCD_LEN - 12);
            put16(&mut tail, VERSION_MADE_BY);
            put16(&mut tail, VERSION_NEEDED);
            put32(&mut tail, 0);
            put32(&mut tail, 0);
            put64(&mut tail, count);
            put64(&mut tail, count);
            put64(&mut tail, cd_size);
            put64(&mut tail, cd_offset);
            put32(&mut tail, ZIP64_LOCATOR_SIG);
            put32(&mut tail, 0);
            put64(&mut tail, zip64_offset);
            put32(&mut tail, 1);
        }
        put32(&mut tail, EOCD_SIG);
        put16(&mut tail, 0);
        put16(&mut tail, 0);
        put16(&mut tail, clamp16(count));
        put16(&mut tail, clamp16(count));
        put32(&mut tail, clamp32(cd_size));
        put32(&mut tail, clamp32(cd_offset));
        put16(&mut tail, 0);
        self.sink.write_all(&cd)?;
        self.sink.write_all(&tail)?;
        self.sink.flush()?;
        Ok(self.sink)
    }

    fn check_idle(&self) -> std::io::Result<()> {
        match &self.open {
            Some(open) => Err(usage(&format!("entry `{}` is still open", open.name))),
            None => Ok(()),
        }
    }

    fn push(&mut self, entry: ZipEntry) -> &ZipEntry {
        self.entries.push(entry);
        let last = self.entries.len() - 1;
        #[expect(clippy::indexing_slicing, reason = "the element was pushed just above")]
        &self.entries[last]
    }

    /// Writes a local header (with a placeholder CRC if not known yet); returns the data offset.
    fn write_local_header(
        &mut self,
        name: &str,
        crc32: u32,
        size: u64,
        zip64: bool,
    ) -> std::io::Result<u64> {
        check_name(name).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let name_len = name.len() as u64;
        let zip64_len = if zip64 { 20 } else { 0 };
        let unpadded = self.pos + LOCAL_LEN + name_len + zip64_len;
        let mut pad = (ALIGNMENT - unpadded % ALIGNMENT) % ALIGNMENT;
        if pad != 0 && pad < 4 {
            pad += ALIGNMENT;
        }
        let extra_len = zip64_len + pad;
        let mut h = Vec::with_capacity((LOCAL_LEN + name_len + extra_len) as usize);
        put32(&mut h, LOCAL_SIG);
        put16(&mut h, VERSION_NEEDED);
        put16(&mut h, FLAG_UTF8);
        put16(&mut h, 0);
        put16(&mut h, DOS_TIME);
        put16(&mut h, DOS_DATE);
        put32(&mut h, crc32);
        let small = if zip64 { 0xFFFF_FFFF } else { clamp32(size) };
        put32(&mut h, small);
        put32(&mut h, small);
        put16(&mut h, name.len() as u16);
        put16(&mut h, extra_len as u16);
        h.extend_from_slice(name.as_bytes());
        if zip64 {
            put16(&mut h, EXTRA_ZIP64);
            put16(&mut h, 16);
            put64(&mut h, size);
            put64(&mut h, size);
        }
        if pad != 0 {
            put16(&mut h, EXTRA_PADDING);
            put16(&mut h, (pad - 4) as u16);
            h.resize(h.len() + (pad - 4) as usize, 0);
        }
        self.sink.write_all(&h)?;
        self.pos += h.len() as u64;
        Ok(self.pos)
    }
}

/// Bytes written per call for large entries: at least the sink's buffer (1 MiB),
/// which a write of this size bypasses instead of copying into.
const WRITE_BLOCK: usize = 2 << 20;

/// Parts of at least this size are hashed on every thread of the pool.
const PARALLEL_HASH_MIN: usize = 1 << 20;

/// Writes `parts` block by block, each block's CRC computed right after its write.
fn write_with_crc(sink: &mut impl Write, parts: &[&[u8]]) -> std::io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    for block in parts.iter().flat_map(|p| p.chunks(WRITE_BLOCK)) {
        sink.write_all(block)?;
        hasher.update(block);
    }
    Ok(hasher.finalize())
}

/// Feeds `part` to the content hash: large parts split over the pool's threads
/// (the same hash: BLAKE3 is a tree), so it keeps up with the write.
fn hash_part(hasher: &mut blake3::Hasher, part: &[u8]) {
    if part.len() >= PARALLEL_HASH_MIN {
        hasher.update_rayon(part);
    } else {
        hasher.update(part);
    }
}

fn crc_of(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

fn usage(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned())
}

fn central_header(out: &mut Vec<u8>, e: &ZipEntry) {
    let mut extra = Vec::new();
    if e.size >= U32_MAX {
        put64(&mut extra, e.size);
        put64(&mut extra, e.size);
    }
    if e.header_offset >= U32_MAX {
        put64(&mut extra, e.header_offset);
    }
    put32(out, CENTRAL_SIG);
    put16(out, VERSION_MADE_BY);
    put16(out, VERSION_NEEDED);
    put16(out, FLAG_UTF8);
    put16(out, 0);
    put16(out, DOS_TIME);
    put16(out, DOS_DATE);
    put32(out, e.crc32);
    put32(out, clamp32(e.size));
    put32(out, clamp32(e.size));
    put16(out, e.name.len() as u16);
    let extra_len = if extra.is_empty() { 0 } else { extra.len() + 4 };
    put16(out, extra_len as u16);
    put16(out, 0);
    put16(out, 0);
    put16(out, 0);
    put32(out, EXTERNAL_ATTRS);
    put32(out, clamp32(e.header_offset));
    out.extend_from_slice(e.name.as_bytes());
    if !extra.is_empty() {
        put16(out, EXTRA_ZIP64);
        put16(out, extra.len() as u16);
        out.extend_from_slice(&extra);
    }
}

/// Checks that an entry name is a plain relative path that every unzip tool
/// extracts inside its target directory.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 1024 {
        return Err(format!(
            "entry name must have 1 to 1024 bytes, `{name}` has {}",
            name.len()
        ));
    }
    // Byte by byte (each character tested is ASCII, which in UTF-8 is
    // never part of another character): one pass instead of a search each.
    let bytes = name.as_bytes();
    if bytes.first() == Some(&b'/') || bytes.iter().any(|b| matches!(b, b'\\' | 0 | b':')) {
        return Err(format!("entry name `{name}` is not a plain relative path"));
    }
    if bytes
        .split(|&b| b == b'/')
        .any(|part| part.is_empty() || part == b"." || part == b"..")
    {
        return Err(format!(
            "entry name `{name}` has an empty, `.` or `..` component"
        ));
    }
    Ok(())
}

fn clamp32(v: u64) -> u32 {
    u32::try_from(v).map_or(0xFFFF_FFFF, |v| v)
}

fn clamp16(v: u64) -> u16 {
    u16::try_from(v).map_or(0xFFFF, |v| v)
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Bounds-checked little-endian reads over the whole file, through
/// [`Source::range`] (so a source that reads its file in pieces serves the
/// directory and the local headers without mapping the file).
struct Bytes<'a> {
    data: &'a dyn Source,
    len: u64,
    /// The last range [`Bytes::hold`] got, and where it starts: the fields
    /// of a record are read from it, not asked of the source one by one.
    held: std::cell::Cell<(u64, &'a [u8])>,
}

impl<'a> Bytes<'a> {
    fn new(data: &'a dyn Source, len: u64) -> Self {
        Bytes {
            data,
            len,
            held: std::cell::Cell::new((0, &[])),
        }
    }

    /// Asks the source for `offset..offset + len` once, for the reads
    /// within it that follow; a range it cannot give changes nothing (each
    /// read then asks for itself, with its own error).
    fn hold(&self, offset: u64, len: u64) {
        if offset.checked_add(len).is_some_and(|end| end <= self.len)
            && let Some(bytes) = self.data.range(offset, len)
        {
            self.held.set((offset, bytes));
        }
    }

    fn slice(&self, offset: u64, len: u64, what: &'static str) -> Result<&'a [u8]> {
        let (start, held) = self.held.get();
        if let Some(from) = offset.checked_sub(start)
            && let (Ok(from), Ok(len)) = (usize::try_from(from), usize::try_from(len))
            && let Some(bytes) = from.checked_add(len).and_then(|to| held.get(from..to))
        {
            return Ok(bytes);
        }
        let total = self.len;
        let available = total.saturating_sub(offset);
        let truncated = FormatError::Truncated {
            what,
            offset,
            needed: len,
            available,
        };
        match offset.checked_add(len).filter(|&end| end <= total) {
            Some(_) => self.data.range(offset, len).ok_or(truncated),
            None => Err(truncated),
        }
    }

    fn u16(&self, offset: u64, what: &'static str) -> Result<u16> {
        let b = self.slice(offset, 2, what)?;
        Ok(u16::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ]))
    }

    fn u32(&self, offset: u64, what: &'static str) -> Result<u32> {
        let b = self.slice(offset, 4, what)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&self, offset: u64, what: &'static str) -> Result<u64> {
        let b = self.slice(offset, 8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Reads and validates the directory of an archive written by [`ZipWriter`].
///
/// Returns the entries in file order. Any departure from the strict layout is
/// an error naming the offset where it was found.
pub fn read_directory(data: &[u8]) -> Result<Vec<ZipEntry>> {
    read_directory_in(&data)
}

/// [`read_directory`] over any [`Source`], reading only the end records,
/// the central directory and the local headers.
pub fn read_directory_in(data: &dyn Source) -> Result<Vec<ZipEntry>> {
    let len = data.size();
    let b = Bytes::new(data, len);
    if len < EOCD_LEN {
        return Err(FormatError::Truncated {
            what: "end of central directory record",
            offset: 0,
            needed: EOCD_LEN,
            available: len,
        });
    }
    let eocd = len - EOCD_LEN;
    if b.u32(eocd, "end of central directory record")? != EOCD_SIG {
        let window = len.saturating_sub(EOCD_LEN + U16_MAX);
        let found = b
            .slice(window, len - window, "file tail")?
            .windows(4)
            .rposition(|w| w == EOCD_SIG.to_le_bytes());
        return Err(match found {
            Some(at) => FormatError::corrupt(
                "bytes after the end-of-central-directory record (a comment or appended data)",
                window + at as u64,
            ),
            None => FormatError::corrupt(
                "no end-of-central-directory record: the file is truncated or is not a zip archive",
                eocd,
            ),
        });
    }
    let disk = b.u16(eocd + 4, "end of central directory record")?;
    let cd_disk = b.u16(eocd + 6, "end of central directory record")?;
    let count16 = b.u16(eocd + 8, "end of central directory record")?;
    let total16 = b.u16(eocd + 10, "end of central directory record")?;
    let cd_size32 = b.u32(eocd + 12, "end of central directory record")?;
    let cd_offset32 = b.u32(eocd + 16, "end of central directory record")?;
    let comment_len = b.u16(eocd + 20, "end of central directory record")?;
    // amber never writes these; a file that has them is damaged, not newer.
    if disk != 0 || cd_disk != 0 || count16 != total16 {
        return Err(FormatError::corrupt(
            "disk numbers or entry counts of a multi-disk archive",
            eocd + 4,
        ));
    }
    if comment_len != 0 {
        return Err(FormatError::corrupt(
            "archive comment is not allowed",
            eocd + 20,
        ));
    }
    let zip64 = u64::from(count16) == U16_MAX
        || u64::from(cd_size32) == U32_MAX
        || u64::from(cd_offset32) == U32_MAX;
    let (count, cd_size, cd_offset, cd_end) = if zip64 {
        let locator = eocd
            .checked_sub(ZIP64_LOCATOR_LEN)
            .ok_or_else(|| FormatError::corrupt("zip64 locator missing", 0))?;
        if b.u32(locator, "zip64 locator")? != ZIP64_LOCATOR_SIG {
            return Err(FormatError::corrupt("zip64 locator missing", locator));
        }
        let record = b.u64(locator + 8, "zip64 locator")?;
        if b.u32(locator + 4, "zip64 locator")? != 0 || b.u32(locator + 16, "zip64 locator")? != 1 {
            return Err(FormatError::corrupt(
                "zip64 locator names several disks",
                locator,
            ));
        }
        if record.checked_add(ZIP64_EOCD_LEN) != Some(locator) {
            return Err(FormatError::corrupt(
                "zip64 end record does not sit right before its locator",
                record,
            ));
        }
        if b.u32(record, "zip64 end record")? != ZIP64_EOCD_SIG
            || b.u64(record + 4, "zip64 end record")? != ZIP64_EOCD_LEN - 12
        {
            return Err(FormatError::corrupt("bad zip64 end record", record));
        }
        let count = b.u64(record + 24, "zip64 end record")?;
        if b.u64(record + 32, "zip64 end record")? != count {
            return Err(FormatError::corrupt(
                "zip64 end record counts differ",
                record,
            ));
        }
        (
            count,
            b.u64(record + 40, "zip64 end record")?,
            b.u64(record + 48, "zip64 end record")?,
            record,
        )
    } else {
        (
            u64::from(count16),
            u64::from(cd_size32),
            u64::from(cd_offset32),
            eocd,
        )
    };
    if count > MAX_ENTRIES {
        return Err(FormatError::Limit {
            what: "number of zip entries",
            value: count,
            limit: MAX_ENTRIES,
        });
    }
    if cd_offset.checked_add(cd_size) != Some(cd_end) {
        return Err(FormatError::corrupt(
            format!(
                "central directory ({cd_size} bytes at {cd_offset:#x}) does not end where the end record starts"
            ),
            cd_end,
        ));
    }
    // Each central record takes at least 46 bytes, which bounds `count` by the file size.
    if count.saturating_mul(CENTRAL_LEN) > cd_size {
        return Err(FormatError::corrupt(
            format!("central directory of {cd_size} bytes cannot hold {count} entries"),
            cd_offset,
        ));
    }
    // The records are read from the whole directory, asked for once (a
    // source reading its file in pieces reads it in one).
    b.hold(cd_offset, cd_size);
    let directory = b.held.get();
    let mut entries = Vec::with_capacity(count as usize);
    // Names seen, for a directory too long to compare each name with those
    // before it (a short one does that instead of copying every name).
    let long = count > SHORT_DIRECTORY;
    let mut names = std::collections::HashSet::with_capacity(if long { count as usize } else { 0 });
    let mut at = cd_offset;
    let mut expected_header = 0u64;
    for _ in 0..count {
        let entry = read_central(&b, at)?;
        at = entry.1;
        let entry = entry.0;
        let duplicate = if long {
            !names.insert(entry.name.clone())
        } else {
            entries.iter().any(|e: &ZipEntry| e.name == entry.name)
        };
        if duplicate {
            return Err(FormatError::corrupt(
                format!("duplicate entry `{}`", entry.name),
                at,
            ));
        }
        if entry.header_offset != expected_header {
            return Err(FormatError::corrupt(
                format!(
                    "entry `{}` starts at {:#x}, but the previous entry ends at {expected_header:#x} (gap or overlap)",
                    entry.name, entry.header_offset
                ),
                entry.header_offset,
            ));
        }
        let entry = check_local(&b, entry)?;
        b.held.set(directory);
        expected_header = entry.data_offset.checked_add(entry.size).ok_or_else(|| {
            FormatError::corrupt(
                format!("entry `{}` size overflows", entry.name),
                entry.data_offset,
            )
        })?;
        entries.push(entry);
    }
    if at != cd_end {
        return Err(FormatError::corrupt(
            "central directory has trailing bytes",
            at,
        ));
    }
    if expected_header != cd_offset {
        return Err(FormatError::corrupt(
            format!(
                "entries end at {expected_header:#x}, but the central directory starts at {cd_offset:#x}"
            ),
            expected_header,
        ));
    }
    Ok(entries)
}

/// Entries up to which [`read_directory_in`] finds a duplicate name by
/// comparing with the names before it.
const SHORT_DIRECTORY: u64 = 32;

/// Parses one central-directory record at `at`; returns it and the next offset.
fn read_central(b: &Bytes<'_>, at: u64) -> Result<(ZipEntry, u64)> {
    const WHAT: &str = "central directory record";
    if b.u32(at, WHAT)? != CENTRAL_SIG {
        return Err(FormatError::corrupt("bad central directory signature", at));
    }
    let flags = b.u16(at + 8, WHAT)?;
    let method = b.u16(at + 10, WHAT)?;
    let crc32 = b.u32(at + 16, WHAT)?;
    let csize = u64::from(b.u32(at + 20, WHAT)?);
    let usize_ = u64::from(b.u32(at + 24, WHAT)?);
    let name_len = u64::from(b.u16(at + 28, WHAT)?);
    let extra_len = u64::from(b.u16(at + 30, WHAT)?);
    let comment_len = u64::from(b.u16(at + 32, WHAT)?);
    let disk = b.u16(at + 34, WHAT)?;
    let offset32 = u64::from(b.u32(at + 42, WHAT)?);
    check_flags_method(flags, method, at)?;
    if disk != 0 && disk != 0xFFFF {
        return Err(FormatError::corrupt("entry on another disk", at));
    }
    let name = read_name(b, at + CENTRAL_LEN, name_len)?;
    let extra = b.slice(at + CENTRAL_LEN + name_len, extra_len, WHAT)?;
    // zip64 values appear in a fixed order, only for the fields that overflowed.
    let mut wanted = Vec::new();
    if usize_ == U32_MAX {
        wanted.push("uncompressed size");
    }
    if csize == U32_MAX {
        wanted.push("compressed size");
    }
    if offset32 == U32_MAX {
        wanted.push("header offset");
    }
    let values = zip64_values(extra, wanted.len(), at)?;
    let mut it = values.into_iter();
    let usize_ = if usize_ == U32_MAX {
        it.next().unwrap_or(0)
    } else {
        usize_
    };
    let csize = if csize == U32_MAX {
        it.next().unwrap_or(0)
    } else {
        csize
    };
    let header_offset = if offset32 == U32_MAX {
        it.next().unwrap_or(0)
    } else {
        offset32
    };
    if csize != usize_ {
        return Err(FormatError::corrupt(
            format!("entry `{name}` is compressed; amber entries are stored"),
            at,
        ));
    }
    let next = at + CENTRAL_LEN + name_len + extra_len + comment_len;
    Ok((
        ZipEntry {
            name,
            crc32,
            size: usize_,
            header_offset,
            data_offset: 0,
        },
        next,
    ))
}

/// Checks the local header of `entry` against its central record; fills `data_offset`.
fn check_local(b: &Bytes<'_>, mut entry: ZipEntry) -> Result<ZipEntry> {
    const WHAT: &str = "local file header";
    let at = entry.header_offset;
    b.hold(at, LOCAL_LEN);
    if b.u32(at, WHAT)? != LOCAL_SIG {
        return Err(FormatError::corrupt(
            format!("bad local header signature for entry `{}`", entry.name),
            at,
        ));
    }
    let flags = b.u16(at + 6, WHAT)?;
    let method = b.u16(at + 8, WHAT)?;
    let crc32 = b.u32(at + 14, WHAT)?;
    let csize = u64::from(b.u32(at + 18, WHAT)?);
    let usize_ = u64::from(b.u32(at + 22, WHAT)?);
    let name_len = u64::from(b.u16(at + 26, WHAT)?);
    let extra_len = u64::from(b.u16(at + 28, WHAT)?);
    check_flags_method(flags, method, at)?;
    b.hold(at, LOCAL_LEN + name_len + extra_len);
    // The central record's name passed every check `read_name` makes: the
    // same bytes here need none of them again.
    let same_name = b.slice(at + LOCAL_LEN, name_len, "entry name")? == entry.name.as_bytes();
    let name = if same_name {
        None
    } else {
        Some(read_name(b, at + LOCAL_LEN, name_len)?)
    };
    let extra = b.slice(at + LOCAL_LEN + name_len, extra_len, WHAT)?;
    let mismatch =
        |what: &str| FormatError::corrupt(format!("local header of `{}` {what}", entry.name), at);
    if let Some(name) = name
        && name != entry.name
    {
        return Err(mismatch(&format!("names `{name}`")));
    }
    if crc32 != entry.crc32 {
        return Err(mismatch(
            "has a different CRC-32 from the central directory",
        ));
    }
    let (lu, lc) = if usize_ == U32_MAX && csize == U32_MAX {
        let values = zip64_values(extra, 2, at)?;
        (
            values.first().copied().unwrap_or(0),
            values.get(1).copied().unwrap_or(0),
        )
    } else {
        (usize_, csize)
    };
    if lu != entry.size || lc != entry.size {
        return Err(mismatch("has a different size from the central directory"));
    }
    entry.data_offset = at + LOCAL_LEN + name_len + extra_len;
    if !entry.data_offset.is_multiple_of(ALIGNMENT) {
        return Err(mismatch(&format!(
            "puts data at {:#x}, not on a 64-byte boundary",
            entry.data_offset
        )));
    }
    let available = b.len.saturating_sub(entry.data_offset);
    if entry.size > available {
        return Err(FormatError::Truncated {
            what: "entry data",
            offset: entry.data_offset,
            needed: entry.size,
            available,
        });
    }
    Ok(entry)
}

fn check_flags_method(flags: u16, method: u16, at: u64) -> Result<()> {
    if flags & 1 != 0 {
        return Err(FormatError::corrupt(
            "entry marked encrypted (amber entries never are)",
            at,
        ));
    }
    if flags & !FLAG_UTF8 != 0 {
        return Err(FormatError::corrupt(
            format!("unexpected zip flags {flags:#06x}"),
            at,
        ));
    }
    if method != 0 {
        return Err(FormatError::corrupt(
            format!("zip compression method {method} (amber entries are stored)"),
            at,
        ));
    }
    Ok(())
}

fn read_name(b: &Bytes<'_>, at: u64, len: u64) -> Result<String> {
    let raw = b.slice(at, len, "entry name")?;
    let name = std::str::from_utf8(raw)
        .map_err(|_| FormatError::corrupt("entry name is not UTF-8", at))?
        .to_owned();
    check_name(&name).map_err(|what| FormatError::corrupt(what, at))?;
    Ok(name)
}

/// Finds the zip64 extra field and returns its first `n` values.
fn zip64_values(extra: &[u8], n: usize, at: u64) -> Result<Vec<u64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut rest = extra;
    while rest.len() >= 4 {
        let (head, tail) = rest.split_at(4);
        let id = u16::from_le_bytes([
            head.first().copied().unwrap_or(0),
            head.get(1).copied().unwrap_or(0),
        ]);
        let len = usize::from(u16::from_le_bytes([
            head.get(2).copied().unwrap_or(0),
            head.get(3).copied().unwrap_or(0),
        ]));
        let Some(body) = tail.get(..len) else { break };
        if id == EXTRA_ZIP64 {
            if body.len() < n * 8 {
                break;
            }
            return Ok(body
                .chunks_exact(8)
                .take(n)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    u64::from_le_bytes(a)
                })
                .collect());
        }
        rest = tail.get(len..).unwrap_or_default();
    }
    Err(FormatError::corrupt(
        "zip64 extra field missing or too short",
        at,
    ))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn build(entries: &[(&str, &[u8])], stream_first: bool) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        for (i, (name, data)) in entries.iter().enumerate() {
            if stream_first && i == 0 {
                w.begin_entry(name).unwrap();
                for chunk in data.chunks(3) {
                    w.write(chunk).unwrap();
                }
                w.end_entry().unwrap();
            } else {
                let (a, b) = data.split_at(data.len() / 2);
                w.add_entry(name, &[a, b]).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn pieces_written_with_their_crc_give_the_entry_crc_of_their_bytes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        w.begin_entry("x").unwrap();
        for (i, piece) in data.chunks(777).enumerate() {
            let crc = (i % 2 == 0).then(|| crc32fast::hash(piece));
            w.write_piece(piece, crc).unwrap();
        }
        assert_eq!(w.end_entry().unwrap().crc32, crc32fast::hash(&data));
        let bytes = w.finish().unwrap().into_inner();
        let entries = read_directory(&bytes).unwrap();
        assert_eq!(entries[0].crc32, crc32fast::hash(&data));
    }

    #[test]
    fn round_trip_and_alignment() {
        let big = vec![7u8; PARALLEL_CRC_MIN + 5];
        let data = build(&[("a", b"hello"), ("dir/b.npy", &big), ("c", b"")], true);
        let entries = read_directory(&data).unwrap();
        assert_eq!(entries.len(), 3);
        for e in &entries {
            assert_eq!(e.data_offset % ALIGNMENT, 0);
            let bytes = &data[e.data_offset as usize..(e.data_offset + e.size) as usize];
            assert_eq!(crc32fast::hash(bytes), e.crc32);
        }
        assert_eq!(&data[entries[0].data_offset as usize..][..5], b"hello");
        assert_eq!(entries[1].size, big.len() as u64);
    }

    #[test]
    fn a_large_entry_is_hashed_and_checked_as_written() {
        // Parts that cross write blocks unevenly, one hashed in parallel, one not.
        let big: Vec<u8> = (0..WRITE_BLOCK * 3 + 12_345)
            .map(|i| (i * 31 / 7) as u8)
            .collect();
        let parts: [&[u8]; 3] = [b"header", &big, &big[..PARALLEL_HASH_MIN - 1]];
        let whole = parts.concat();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (data, hash) = pool.install(|| {
                let mut w = ZipWriter::new(Cursor::new(Vec::new()));
                w.start_content_hash();
                w.add_entry("a.npy", &parts).unwrap();
                let hash = w.content_hash().unwrap();
                (w.finish().unwrap().into_inner(), hash)
            });
            assert_eq!(hash, blake3::hash(&whole));
            let entry = &read_directory(&data).unwrap()[0];
            let range = entry.data_range();
            assert_eq!(
                &data[range.start as usize..range.end as usize],
                whole.as_slice()
            );
            assert_eq!(entry.crc32, crc32fast::hash(&whole));
        }
    }

    #[test]
    fn entries_written_together_are_the_entries_written_one_by_one() {
        let big: Vec<u8> = (0..PARALLEL_CRC_MIN + 99)
            .map(|i| (i % 251) as u8)
            .collect();
        // Large enough for the hash to run on another thread, and small
        // enough (below PARALLEL_HASH_MIN in all) for this one to do it.
        let large: [(&str, &[&[u8]]); 4] = [
            ("a", &[b"head", b"small"]),
            ("b", &[b"h", &big]),
            ("c", &[]),
            ("d", &[&big[..1000]]),
        ];
        let small: [(&str, &[&[u8]]); 3] = [
            ("a", &[b"head", b"small"]),
            ("c", &[]),
            ("d", &[b"h", &big[..1000]]),
        ];
        for entries in [&large[..], &small[..]] {
            let write = |together: bool| {
                let mut w = ZipWriter::new(Cursor::new(Vec::new()));
                w.start_content_hash();
                if together {
                    assert_eq!(w.add_entries(entries).unwrap().len(), entries.len());
                } else {
                    for (name, parts) in entries {
                        w.add_entry(name, parts).unwrap();
                    }
                }
                let hash = w.content_hash().unwrap();
                (w.finish().unwrap().into_inner(), hash)
            };
            let (one_by_one, hash) = write(false);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            assert_eq!(pool.install(|| write(true)), (one_by_one.clone(), hash));
            assert_eq!(write(true), (one_by_one, hash));
            let all: Vec<u8> = entries.iter().flat_map(|(_, p)| p.concat()).collect();
            assert_eq!(hash, blake3::hash(&all));
        }
    }

    #[test]
    fn deterministic() {
        let a = build(&[("x", b"1234"), ("y", b"5678")], false);
        let b = build(&[("x", b"1234"), ("y", b"5678")], false);
        assert_eq!(a, b);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let data = build(&[("a", b"hello world"), ("b", b"more data here")], true);
        for cut in 0..data.len() {
            assert!(read_directory(&data[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_single_byte_flip_in_headers_is_caught_or_harmless() {
        let data = build(&[("a", b"hello world"), ("b", b"more data here")], true);
        let entries = read_directory(&data).unwrap();
        for i in 0..data.len() {
            let in_data = entries.iter().any(|e| e.data_range().contains(&(i as u64)));
            if in_data {
                continue;
            }
            let mut bad = data.clone();
            bad[i] ^= 0x5a;
            // Flips in padding bytes may be accepted; anything else must not be.
            if let Ok(found) = read_directory(&bad) {
                assert_eq!(found, entries, "flip at {i} changed the result");
            }
        }
    }

    #[test]
    fn zip64_end_records_for_many_entries() {
        // 70,000 entries is more than the 16-bit count of the classic end record.
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..70_000u32 {
            w.add_entry(&format!("e/{i}"), &[&i.to_le_bytes()]).unwrap();
        }
        let data = w.finish().unwrap().into_inner();
        if let Ok(path) = std::env::var("AMBER_DUMP_ZIP64") {
            std::fs::write(path, &data).unwrap();
        }
        let eocd = data.len() - EOCD_LEN as usize;
        assert_eq!(
            &data[eocd + 8..eocd + 10],
            &[0xFF, 0xFF],
            "classic count must be saturated"
        );
        let entries = read_directory(&data).unwrap();
        assert_eq!(entries.len(), 70_000);
        let last = &entries[69_999];
        assert_eq!(last.name, "e/69999");
        let at = last.data_offset as usize;
        assert_eq!(&data[at..at + 4], &69_999u32.to_le_bytes());
    }

    #[test]
    fn trailing_data_and_gaps_are_refused() {
        let mut data = build(&[("a", b"x")], false);
        data.extend_from_slice(b"junk");
        assert_eq!(read_directory(&data).unwrap_err().code(), "format.corrupt");
    }

    #[test]
    fn a_name_twice_is_refused_in_short_and_long_directories() {
        for count in [
            3,
            SHORT_DIRECTORY as usize,
            SHORT_DIRECTORY as usize + 1,
            80,
        ] {
            let names: Vec<String> = (0..count).map(|i| format!("n{i:03}")).collect();
            let entries: Vec<(&str, &[u8])> =
                names.iter().map(|n| (n.as_str(), &b"xyz"[..])).collect();
            let good = build(&entries, false);
            assert_eq!(read_directory(&good).unwrap().len(), count);
            // The last entry renamed after the second one, in its local and central headers.
            let (from, to) = (names[count - 1].as_bytes(), names[1].as_bytes());
            let mut bad = good.clone();
            let mut at = 0;
            while let Some(i) = bad[at..].windows(4).position(|w| w == from) {
                bad[at + i..at + i + 4].copy_from_slice(to);
                at += i + 4;
            }
            let err = read_directory(&bad).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("duplicate entry `{}`", names[1])),
                "{count}: {text}"
            );
            // Reported after the duplicate's central record: the end of the directory.
            let end = good.len() as u64 - EOCD_LEN;
            assert!(
                matches!(err, FormatError::Corrupt { offset, .. } if offset == end),
                "{count}: {err:?}"
            );
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "/abs", "a/../b", "a\\b", "c:x", "a//b", "./a"] {
            assert!(check_name(name).is_err(), "{name}");
        }
        assert!(check_name("arrays/0001.npy").is_ok());
        // Which rule a name breaks first, when it breaks several.
        let plain = "is not a plain relative path";
        let component = "has an empty, `.` or `..` component";
        for (name, broken) in [
            ("/a", plain),
            ("a:b", plain),
            ("a\0", plain),
            ("a/..\\b", plain),
            ("//x:", plain),
            ("a/../b", component),
            ("a//b", component),
            ("./a", component),
            ("a/.", component),
            ("a/", component),
        ] {
            let err = check_name(name).unwrap_err();
            assert!(err.contains(broken), "{name:?}: {err}");
        }
        for name in ["\u{e9}/\u{fc}.npy", "a/.b", "..a", "a/b..", "x"] {
            assert!(check_name(name).is_ok(), "{name:?}");
        }
    }
}
