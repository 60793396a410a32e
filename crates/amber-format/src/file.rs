//! Files: atomic destinations for writing and memory maps for reading.
//!
//! Writing never touches the target path until the archive is complete: bytes
//! go to a temporary file in the same directory (same filesystem, so the final
//! rename is atomic), which is renamed over the target only at [`Sink::commit`].
//! Dropping an uncommitted [`Sink`] deletes the temporary file, so an error or
//! an exception at any point leaves the previous content of the target, and no
//! stray file. A process killed outright can leave a `.NAME.*.amber-tmp` file
//! beside the target; the target itself is always whole.
//!
//! This is the one module that needs `unsafe`: mapping a file is unsafe because
//! another process could truncate it underneath us (see `map_file`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::{FormatError, Result};
use crate::read::Source;

/// Size of the write buffer in front of files. The pickler writes frames of
/// about 64 KiB, which pass straight through; headers and small entries are
/// gathered. A larger buffer would mostly be fresh memory a small file's
/// dump faults in page by page, only to copy its frames once more.
const WRITE_BUFFER: usize = 64 << 10;

/// Where a container is written.
#[derive(Debug, Clone)]
pub enum Output {
    /// A file path, replaced atomically.
    Path {
        /// The final path.
        target: PathBuf,
        /// Whether an existing target may be replaced.
        overwrite: bool,
        /// Whether to fsync the file and its directory before returning.
        sync: bool,
    },
    /// A growable buffer in memory.
    Memory,
    /// An unnamed temporary file (for copying into a caller's file object).
    Anonymous,
}

enum Inner {
    Temp {
        file: BufWriter<tempfile::NamedTempFile>,
        target: PathBuf,
        overwrite: bool,
        sync: bool,
    },
    Memory(Cursor<Vec<u8>>),
    Anonymous(BufWriter<File>),
}

/// A seekable byte sink for [`crate::ContainerWriter`].
pub struct Sink {
    inner: Inner,
}

/// What a committed sink leaves.
pub enum Committed {
    /// The target path now holds the file.
    Path(PathBuf),
    /// The bytes, for [`Output::Memory`].
    Memory(Vec<u8>),
    /// The file, rewound to its start, for [`Output::Anonymous`].
    Anonymous(File),
}

impl Sink {
    /// Opens a sink. For a path, checks the target and creates the temporary file.
    pub fn create(output: &Output) -> Result<Self> {
        let inner = match output {
            Output::Path {
                target,
                overwrite,
                sync,
            } => {
                let (dir, name) = split_target(target)?;
                match std::fs::symlink_metadata(target) {
                    Ok(meta) if meta.is_dir() => {
                        return Err(FormatError::io(
                            "write",
                            target.clone(),
                            std::io::Error::from(std::io::ErrorKind::IsADirectory),
                        ));
                    }
                    Ok(_) if !overwrite => {
                        return Err(FormatError::io(
                            "write",
                            target.clone(),
                            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                        ));
                    }
                    _ => {}
                }
                let prefix = format!(".{name}.");
                let mut builder = tempfile::Builder::new();
                builder.prefix(&prefix).suffix(".amber-tmp");
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    // Keep the mode of a file being replaced; otherwise 0666 less the umask,
                    // as `open()` would give, rather than tempfile's private 0600.
                    let mode = std::fs::metadata(target)
                        .map_or(0o666, |m| m.permissions().mode() & 0o7777);
                    builder.permissions(std::fs::Permissions::from_mode(mode));
                }
                let temp = builder
                    .tempfile_in(&dir)
                    .map_err(|e| FormatError::io("create a temporary file in", dir.clone(), e))?;
                Inner::Temp {
                    file: BufWriter::with_capacity(WRITE_BUFFER, temp),
                    target: target.clone(),
                    overwrite: *overwrite,
                    sync: *sync,
                }
            }
            Output::Memory => Inner::Memory(Cursor::new(Vec::new())),
            Output::Anonymous => Inner::Anonymous(BufWriter::with_capacity(
                WRITE_BUFFER,
                tempfile::tempfile()
                    .map_err(|e| FormatError::io("create", "<anonymous temporary file>", e))?,
            )),
        };
        Ok(Self { inner })
    }

    /// A name for error messages.
    #[must_use]
    pub fn label(&self) -> PathBuf {
        match &self.inner {
            Inner::Temp { target, .. } => target.clone(),
            Inner::Memory(_) => PathBuf::from("<memory>"),
            Inner::Anonymous(_) => PathBuf::from("<temporary file>"),
        }
    }

    /// Makes the written bytes visible: renames the temporary file over the target.
    pub fn commit(self) -> Result<Committed> {
        match self.inner {
            Inner::Temp {
                file,
                target,
                overwrite,
                sync,
            } => {
                let temp = file
                    .into_inner()
                    .map_err(|e| FormatError::io("write", target.clone(), e.into_error()))?;
                if sync {
                    temp.as_file()
                        .sync_all()
                        .map_err(|e| FormatError::io("sync", target.clone(), e))?;
                }
                let persisted = if overwrite {
                    temp.persist(&target)
                } else {
                    temp.persist_noclobber(&target)
                };
                persisted.map_err(|e| FormatError::io("rename into", target.clone(), e.error))?;
                if sync {
                    let (dir, _) = split_target(&target)?;
                    File::open(&dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| FormatError::io("sync directory", dir, e))?;
                }
                Ok(Committed::Path(target))
            }
            Inner::Memory(cursor) => Ok(Committed::Memory(cursor.into_inner())),
            Inner::Anonymous(file) => {
                let mut file = file
                    .into_inner()
                    .map_err(|e| FormatError::io("write", "<temporary file>", e.into_error()))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| FormatError::io("seek", "<temporary file>", e))?;
                Ok(Committed::Anonymous(file))
            }
        }
    }
}

fn split_target(target: &Path) -> Result<(PathBuf, String)> {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| FormatError::Usage {
            what: format!("`{}` does not name a file", target.display()),
        })?
        .to_owned();
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.inner {
            Inner::Temp { file, .. } => file.write(buf),
            Inner::Memory(c) => c.write(buf),
            Inner::Anonymous(f) => f.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Temp { file, .. } => file.write_all(buf),
            Inner::Memory(c) => c.write_all(buf),
            Inner::Anonymous(f) => f.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Temp { file, .. } => file.flush(),
            Inner::Memory(c) => c.flush(),
            Inner::Anonymous(f) => f.flush(),
        }
    }
}

impl Seek for Sink {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match &mut self.inner {
            Inner::Temp { file, .. } => file.seek(pos),
            Inner::Memory(c) => c.seek(pos),
            Inner::Anonymous(f) => f.seek(pos),
        }
    }
}

/// How to map a file for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapMode {
    /// Shared and read-only.
    ReadOnly,
    /// Private copy-on-write: writes stay in this process and never reach the file.
    CopyOnWrite,
}

/// A mapped (or empty) file.
pub enum Mapping {
    /// A read-only map.
    ReadOnly(memmap2::Mmap),
    /// A copy-on-write map.
    CopyOnWrite(memmap2::MmapMut),
    /// A small file read into memory, where setting up and tearing down a
    /// map's page tables would cost more than the copy (see [`open_file`]).
    Read(Vec<u8>),
    /// A zero-length file, which cannot be mapped.
    Empty,
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::ReadOnly(m) => m,
            Self::CopyOnWrite(m) => m,
            Self::Read(v) => v,
            Self::Empty => &[],
        }
    }
}

impl Source for Mapping {
    fn release(&self, offset: usize, len: usize) {
        if let Self::ReadOnly(map) = self {
            #[expect(
                unsafe_code,
                reason = "madvise(MADV_DONTNEED) is unchecked advice; see the SAFETY note"
            )]
            // SAFETY: this is a read-only *shared* file map. DONTNEED only drops page
            // table entries: the next access faults the same bytes back in from the
            // page cache, so no reader ever sees different data. It is never applied
            // to the copy-on-write map, where it would discard private changes.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
        }
    }
}

impl Mapping {
    /// Start of the mapping, for handing out views of it.
    #[must_use]
    pub fn as_ptr(&self) -> *const u8 {
        self.as_ref().as_ptr()
    }

    /// Length of the mapping.
    #[must_use]
    pub fn len(&self) -> usize {
        self.as_ref().len()
    }

    /// Whether the file was empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether views of this mapping may be written to.
    #[must_use]
    pub fn is_writable(&self) -> bool {
        matches!(self, Self::CopyOnWrite(_))
    }
}

/// Files up to this size are read by [`open_file`] rather than mapped:
/// measured here, reading and checksumming a 300 kB file costs about 60% of
/// mapping it, faulting its pages in and unmapping it; from about 1 MB on
/// the fresh memory a read needs costs more than the map.
pub const READ_BELOW: u64 = 512 << 10;

/// The file at `path` for reading once through (a load that copies its
/// arrays out, a scan): read into memory when it is small ([`READ_BELOW`]),
/// mapped read-only otherwise. Callers that hand out views of the file's
/// pages use [`map_file`].
pub fn open_file(path: &Path) -> Result<Mapping> {
    match open_read_once(path)? {
        ReadOnce::Small(file) if file.size() == 0 => Ok(Mapping::Empty),
        ReadOnce::Small(file) => {
            let mut data = vec![0u8; file.size()];
            file.read_into(&mut data)?;
            Ok(Mapping::Read(data))
        }
        ReadOnce::Mapped(mapping) => Ok(mapping),
    }
}

/// A file opened by [`open_read_once`]: a small one still to be read, or a map.
pub enum ReadOnce {
    /// A file of at most [`READ_BELOW`] bytes, open, not read yet.
    Small(SmallFile),
    /// A larger file (or something other than a regular file), mapped read-only.
    Mapped(Mapping),
}

/// A small regular file, open for reading into memory the caller allocates.
pub struct SmallFile {
    file: File,
    len: usize,
    path: PathBuf,
}

impl SmallFile {
    /// Its size in bytes when it was opened.
    #[must_use]
    pub fn size(&self) -> usize {
        self.len
    }

    /// Fills `buf` (exactly [`Self::size`] bytes) with the file's content.
    ///
    /// # Errors
    /// An I/O error, or `UnexpectedEof` if the file shrank since it was opened.
    pub fn read_into(&self, buf: &mut [u8]) -> Result<()> {
        (&self.file)
            .read_exact(buf)
            .map_err(|e| FormatError::io("read", self.path.clone(), e))
    }
}

/// [`open_file`] for callers that read a small file into memory of their own
/// (a Python `bytes` object the load then reads in place, so the file's bytes
/// are copied once): a small file is opened and sized, a larger one mapped.
///
/// # Errors
/// The file cannot be opened or mapped.
pub fn open_read_once(path: &Path) -> Result<ReadOnce> {
    let file = File::open(path).map_err(|e| FormatError::io("open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| FormatError::io("open", path, e))?;
    if meta.is_file() && meta.len() <= READ_BELOW {
        return Ok(ReadOnce::Small(SmallFile {
            file,
            len: usize::try_from(meta.len()).unwrap_or(0),
            path: path.to_path_buf(),
        }));
    }
    map_stat(&file, &meta, path, MapMode::ReadOnly).map(ReadOnce::Mapped)
}

/// Pieces in the first block of a [`Pieces`] table; each next block (allocated
/// as needed) is twice as large. A scan of a file of few entries reads a
/// handful of pieces, so its table costs one small allocation.
const FIRST_BLOCK: usize = 8;
/// Blocks of a table: room for more than [`MAX_PIECES`].
const BLOCKS: usize = 10;
/// Most pieces: a [`Pieces`] maps its file rather than read more (the local
/// headers of that many entries).
const MAX_PIECES: usize = 4096;
const _: () = assert!(FIRST_BLOCK * ((1 << BLOCKS) - 1) >= MAX_PIECES);
/// Largest range a [`Pieces`] reads as one piece; a larger one maps the file.
const MAX_PIECE: u64 = 1 << 20;
// [`Table::find`] looks no further back than the longest piece, which a
// small file read whole must not exceed.
const _: () = assert!(READ_BELOW <= MAX_PIECE);
/// Smallest piece read: a zip local header with the `.npy` header after it
/// (a few hundred bytes).
const MIN_PIECE: u64 = 1 << 10;
/// Bytes read from the start of the file on opening.
const HEAD: u64 = 4 << 10;
/// Bytes read from the end of the file on opening: the zip end records,
/// the central directory and the manifest of a file of a few dozen entries
/// (a longer directory is read as one more piece).
const TAIL: u64 = 8 << 10;

/// A file opened for one pass through [`crate::Container::parse`] and a scan
/// (see [`open_pieces`]): what the open reads through [`Source::range`] (the
/// head, the directory, local and `.npy` headers, the manifest, the pickle)
/// comes from a few `pread`s, and the file is mapped only when something
/// needs more (a validator reading array bytes, a large entry, many
/// entries). For a large file of few entries this is a handful of system
/// calls instead of setting up, faulting in and tearing down a map.
///
/// [`Source::range`]: crate::read::Source::range
pub struct Pieces {
    file: File,
    path: PathBuf,
    len: u64,
    pieces: Table,
    map: OnceLock<Mapping>,
}

/// Bytes read from a [`Pieces`] file: where they start, and the bytes.
type Piece = (u64, Vec<u8>);

/// The slots of one block of a [`Table`].
type Block = Box<[OnceLock<Piece>]>;

/// The pieces read so far, in the order read: blocks allocated as needed,
/// each slot set once (while `filling` is held) and never moved, so the
/// bytes handed out stay valid for as long as the [`Pieces`] lives.
struct Table {
    /// Block `b` holds slots `FIRST_BLOCK * (2^b - 1)` on, `FIRST_BLOCK * 2^b` of them.
    blocks: Box<[OnceLock<Block>; BLOCKS]>,
    filling: Mutex<()>,
    /// Slots set.
    filled: AtomicUsize,
    /// The slots of the last two hits, tried first: the open reads the
    /// file front to back, going between the directory and each entry's
    /// local header, so one of them is usually the one wanted.
    hints: [AtomicUsize; 2],
    /// Each piece's slot by where it starts (of pieces starting at one
    /// offset, the last read, which is at least as long as need be).
    by_start: Mutex<BTreeMap<u64, usize>>,
}

impl Table {
    fn new() -> Self {
        Table {
            blocks: Box::new([const { OnceLock::new() }; BLOCKS]),
            filling: Mutex::new(()),
            filled: AtomicUsize::new(0),
            hints: [AtomicUsize::new(0), AtomicUsize::new(0)],
            by_start: Mutex::new(BTreeMap::new()),
        }
    }

    /// Slot `i`'s block, its size and the slot's place in it.
    fn place(i: usize) -> (usize, usize, usize) {
        let b = (i / FIRST_BLOCK).saturating_add(1).ilog2() as usize;
        let first = FIRST_BLOCK * ((1 << b) - 1);
        (b, FIRST_BLOCK << b, i.saturating_sub(first))
    }

    fn slot(&self, i: usize) -> Option<&OnceLock<Piece>> {
        if i >= MAX_PIECES {
            return None;
        }
        let (b, size, at) = Self::place(i);
        let block = self.blocks.get(b)?;
        let block = block.get_or_init(|| (0..size).map(|_| OnceLock::new()).collect());
        block.get(at)
    }

    fn get(&self, i: usize) -> Option<&Piece> {
        let (b, _, at) = Self::place(i);
        self.blocks.get(b)?.get()?.get(at)?.get()
    }

    /// `offset..offset + len` from the piece holding it, if one was read:
    /// the last two hits first, then the pieces starting at most
    /// [`MAX_PIECE`] bytes before `offset` (no piece is longer).
    fn find(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let filled = self.filled.load(Ordering::Acquire);
        let covering = |i: usize| {
            let (start, bytes) = self.get(i)?;
            let from = usize::try_from(offset.checked_sub(*start)?).ok()?;
            let to = from.checked_add(usize::try_from(len).ok()?)?;
            Some((i, bytes.get(from..to)?))
        };
        let hints = self.hints.each_ref().map(|h| h.load(Ordering::Relaxed));
        let (i, found) = match hints.into_iter().filter(|&i| i < filled).find_map(covering) {
            Some(hit) => hit,
            None => {
                let by_start = self.by_start.lock().ok()?;
                let from = offset.saturating_sub(MAX_PIECE);
                by_start
                    .range(from..=offset)
                    .rev()
                    .find_map(|(_, &i)| covering(i))?
            }
        };
        self.hit(i);
        Some(found)
    }

    fn hit(&self, i: usize) {
        let [last, before] = &self.hints;
        let previous = last.swap(i, Ordering::Relaxed);
        if previous != i {
            before.store(previous, Ordering::Relaxed);
        }
    }

    /// Stores the piece `read()` makes in the next slot; `Ok(None)` when the
    /// table is full.
    fn push(&self, read: impl FnOnce() -> Result<Piece>) -> Result<Option<&Piece>> {
        let _filling = self.filling.lock().map_err(|_| FormatError::Usage {
            what: "a reader of this file panicked".into(),
        })?;
        let i = self.filled.load(Ordering::Acquire);
        let Some(slot) = self.slot(i) else {
            return Ok(None);
        };
        let piece = read()?;
        let piece = slot.get_or_init(|| piece);
        if let Ok(mut by_start) = self.by_start.lock() {
            by_start.insert(piece.0, i);
        }
        self.filled.store(i.saturating_add(1), Ordering::Release);
        self.hit(i);
        Ok(Some(piece))
    }

    /// The first piece, taken out.
    fn take_first(&mut self) -> Option<Piece> {
        self.blocks.first_mut()?.get_mut()?.first_mut()?.take()
    }

    /// Every piece left, taken out.
    fn take_all(&mut self) -> impl Iterator<Item = Piece> + '_ {
        self.blocks
            .iter_mut()
            .filter_map(OnceLock::get_mut)
            .flat_map(|block| block.iter_mut().filter_map(OnceLock::take))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.filled.load(Ordering::Acquire)
    }
}

/// Opens `path` for [`Pieces`]: a file up to [`READ_BELOW`] is read whole
/// (as [`open_file`] does), a larger one has its first and last bytes read;
/// something that is not a regular file is mapped at once, with the errors
/// [`open_file`] gives.
pub fn open_pieces(path: &Path) -> Result<Pieces> {
    open_pieces_below(path, READ_BELOW)
}

/// [`open_pieces`], reading the file whole up to `read_below` bytes.
fn open_pieces_below(path: &Path, read_below: u64) -> Result<Pieces> {
    let file = File::open(path).map_err(|e| FormatError::io("open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| FormatError::io("open", path, e))?;
    let pieces = Pieces {
        len: meta.len(),
        path: path.to_path_buf(),
        pieces: Table::new(),
        map: OnceLock::new(),
        file,
    };
    if !meta.is_file() {
        let map = map_stat(&pieces.file, &meta, path, MapMode::ReadOnly)?;
        let _ = pieces.map.set(map);
        return Ok(pieces);
    }
    let len = pieces.len;
    if len <= read_below {
        pieces.read_whole()?;
    } else {
        pieces.read_piece(0, HEAD)?;
        pieces.read_piece(len - TAIL.min(len), TAIL.min(len))?;
    }
    Ok(pieces)
}

impl Pieces {
    /// The first bytes of the file (all of it, if small): enough to tell what it is.
    #[must_use]
    pub fn head(&self) -> &[u8] {
        self.range(0, self.len.min(HEAD)).unwrap_or_default()
    }

    /// Whether the file had to be mapped (for tests and timing).
    #[must_use]
    pub fn is_mapped(&self) -> bool {
        self.map.get().is_some()
    }

    /// Reads the whole (small) file as the first piece, into this thread's
    /// spare buffer ([`SPARE`]).
    fn read_whole(&self) -> Result<()> {
        let size = usize::try_from(self.len).unwrap_or(usize::MAX);
        let mut buf = SPARE.take();
        buf.clear();
        buf.try_reserve_exact(size)
            .map_err(|_| FormatError::Limit {
                what: "file size",
                value: self.len,
                limit: READ_BELOW,
            })?;
        // A fresh `File` reads from its start; `take` stops at the size
        // `stat` gave, so a file growing meanwhile is read as it was.
        let read = (&self.file)
            .take(self.len)
            .read_to_end(&mut buf)
            .map_err(|e| FormatError::io("read", &self.path, e))?;
        if read != size {
            return Err(FormatError::io(
                "read",
                &self.path,
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            ));
        }
        self.pieces.push(|| Ok((0, buf)))?;
        Ok(())
    }

    /// Reads `offset..offset + len` (at least [`MIN_PIECE`] bytes, within the
    /// file) into the next free piece; `Ok(None)` when none is left.
    fn read_piece(&self, offset: u64, len: u64) -> Result<Option<&[u8]>> {
        let read = || {
            let end = offset.saturating_add(len.max(MIN_PIECE)).min(self.len);
            let size = usize::try_from(end.saturating_sub(offset)).unwrap_or(0);
            let mut buf = piece_buffer(size);
            read_at(&self.file, &mut buf, offset)
                .map_err(|e| FormatError::io("read", &self.path, e))?;
            Ok((offset, buf))
        };
        let Some((start, bytes)) = self.pieces.push(read)? else {
            return Ok(None);
        };
        let from = usize::try_from(offset.saturating_sub(*start)).unwrap_or(usize::MAX);
        let to = usize::try_from(len).map_or(usize::MAX, |l| from.saturating_add(l));
        Ok(bytes.get(from..to))
    }

    /// The whole file, mapped on first use (or the one piece holding it).
    fn whole(&self) -> &[u8] {
        if let Some(map) = self.map.get() {
            return map.as_ref();
        }
        // A small file is read whole into the first piece.
        if let Some((0, all)) = self.pieces.get(0)
            && all.len() as u64 == self.len
        {
            return all;
        }
        let map = self.map.get_or_init(|| {
            // A map that fails (the file shrank or vanished, no address
            // space) reads as an empty file: what follows is refused as
            // truncated, never read past its end.
            map_len(&self.file, self.len, &self.path, MapMode::ReadOnly).unwrap_or(Mapping::Empty)
        });
        map.as_ref()
    }
}

/// Piece buffers a thread keeps for its next [`Pieces`] (see [`piece_buffer`]).
const KEEP_PIECES: usize = 8;
/// Largest piece buffer kept: the head, tail and header pieces of a scan.
const KEEP_PIECE_BYTES: usize = 16 << 10;

/// A buffer of `size` bytes for a piece about to be read over it whole:
/// one this thread's last [`Pieces`] left (see its `Drop`), if any, so
/// opening a file after another writes no fresh memory before the read
/// (zeroing the head and tail pieces cost a scan of a small model about a
/// tenth of its time).
fn piece_buffer(size: usize) -> Vec<u8> {
    let kept = KEPT_PIECES.with_borrow_mut(|kept| {
        // The smallest that holds `size` bytes already, else the largest.
        let best = kept
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| (b.len() < size, b.len().abs_diff(size)))
            .map(|(i, _)| i)?;
        Some(kept.swap_remove(best))
    });
    match kept {
        Some(mut buf) if buf.len() >= size => {
            buf.truncate(size);
            buf
        }
        Some(mut buf) => {
            buf.resize(size, 0);
            buf
        }
        None => vec![0u8; size],
    }
}

thread_local! {
    /// Buffers of pieces of this thread's last [`Pieces`] (see [`piece_buffer`]).
    static KEPT_PIECES: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };

    /// The buffer the last small file this thread read whole was read into,
    /// kept for the next: a scan loop over small files then copies each into
    /// memory already mapped, instead of faulting fresh pages in every time.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Keeps `buf` for this thread's next piece, if it is small and there is room.
fn keep_piece(buf: Vec<u8>) {
    if buf.capacity() <= KEEP_PIECE_BYTES {
        KEPT_PIECES.with_borrow_mut(|kept| {
            if kept.len() < KEEP_PIECES {
                kept.push(buf);
            }
        });
    }
}

/// Maps of at least this size are unmapped on a pool thread (see [`Pieces`]'s `Drop`).
const UNMAP_BEHIND: usize = 8 << 20;

impl Drop for Pieces {
    fn drop(&mut self) {
        // Tearing down the page tables of a large map a scan walked (a
        // forest's node arrays: ~15k pages for 60 MB) takes milliseconds; a
        // pool thread does it while the caller goes on with the report.
        if let Some(map) = self.map.take()
            && map.len() >= UNMAP_BEHIND
        {
            rayon::spawn(move || drop(map));
        }
        if let Some(first) = self.pieces.take_first() {
            if first.1.capacity() as u64 <= READ_BELOW && first.1.len() as u64 == self.len {
                SPARE.set(first.1);
            } else {
                keep_piece(first.1);
            }
        }
        for (_, buf) in self.pieces.take_all() {
            keep_piece(buf);
        }
    }
}

impl AsRef<[u8]> for Pieces {
    fn as_ref(&self) -> &[u8] {
        self.whole()
    }
}

impl Source for Pieces {
    fn release(&self, offset: usize, len: usize) {
        if let Some(map) = self.map.get() {
            map.release(offset, len);
        }
    }

    fn range(&self, offset: u64, len: u64) -> Option<&[u8]> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        if self.map.get().is_none() {
            if let Some(found) = self.pieces.find(offset, len) {
                return Some(found);
            }
            if len <= MAX_PIECE
                && let Ok(Some(read)) = self.read_piece(offset, len)
            {
                return Some(read);
            }
        }
        let whole = self.whole();
        whole.get(usize::try_from(offset).ok()?..usize::try_from(offset + len).ok()?)
    }

    fn size(&self) -> u64 {
        self.len
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// Maps the file at `path`.
pub fn map_file(path: &Path, mode: MapMode) -> Result<Mapping> {
    let file = File::open(path).map_err(|e| FormatError::io("open", path, e))?;
    map_with(&file, path, mode)
}

/// Maps an already open file read-only; `path` names it in errors.
pub fn map_open_file(file: &File, path: &Path) -> Result<Mapping> {
    map_with(file, path, MapMode::ReadOnly)
}

fn map_with(file: &File, path: &Path, mode: MapMode) -> Result<Mapping> {
    let meta = file
        .metadata()
        .map_err(|e| FormatError::io("open", path, e))?;
    map_stat(file, &meta, path, mode)
}

/// [`map_with`] for a file whose metadata the caller already has.
fn map_stat(file: &File, meta: &std::fs::Metadata, path: &Path, mode: MapMode) -> Result<Mapping> {
    if meta.is_dir() {
        return Err(FormatError::io(
            "open",
            path,
            std::io::Error::from(std::io::ErrorKind::IsADirectory),
        ));
    }
    map_len(file, meta.len(), path, mode)
}

/// Maps the first `len` bytes of `file` (its length, from the caller's `stat`).
fn map_len(file: &File, len: u64, path: &Path, mode: MapMode) -> Result<Mapping> {
    if len == 0 {
        return Ok(Mapping::Empty);
    }
    let len = usize::try_from(len).map_err(|_| FormatError::Limit {
        what: "file size",
        value: len,
        limit: usize::MAX as u64,
    })?;
    #[expect(
        unsafe_code,
        reason = "mapping a file is unsafe by nature; see the SAFETY note"
    )]
    // SAFETY: the map is valid for as long as the `Mapping` lives. The one hazard
    // is another process truncating or rewriting the file while it is mapped
    // (SIGBUS or changed bytes). amber itself never modifies a file in place (it
    // replaces files by rename, which leaves existing maps on the old inode), and
    // `docs/FORMAT.md` tells users not to edit amber files in place.
    let mapping = unsafe {
        match mode {
            MapMode::ReadOnly => memmap2::MmapOptions::new()
                .len(len)
                .map(file)
                .map(Mapping::ReadOnly),
            MapMode::CopyOnWrite => memmap2::MmapOptions::new()
                .len(len)
                .map_copy(file)
                .map(Mapping::CopyOnWrite),
        }
    };
    mapping.map_err(|e| FormatError::io("map", path, e))
}

/// Reads a whole file into memory (for callers that cannot keep a map).
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(FormatError::io(
            "open",
            path,
            std::io::Error::from(std::io::ErrorKind::IsADirectory),
        ));
    }
    std::fs::read(path).map_err(|e| FormatError::io("read", path, e))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::read::Container;

    fn vector(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/vectors")
            .join(name)
    }

    /// Everything the open and the pickle read, or the error, in full; and
    /// the source, if it opened.
    fn outcome<B: Source>(parsed: Result<Container<B>>) -> (String, Option<B>) {
        outcome_with(parsed, true)
    }

    /// [`outcome`], the manifest's free fields left out unless `extra`.
    fn outcome_with<B: Source>(parsed: Result<Container<B>>, extra: bool) -> (String, Option<B>) {
        match parsed {
            Ok(c) => {
                let mut manifest = c.manifest().clone();
                if !extra {
                    manifest.extra.clear();
                }
                let text = format!(
                    "{:?} {:?} {:?} {:?}",
                    c.zip_entries(),
                    manifest,
                    c.manifest_bytes(),
                    c.pickle().map(std::borrow::Cow::into_owned)
                );
                (text, Some(c.into_inner()))
            }
            Err(e) => (format!("{e:?}"), None),
        }
    }

    /// The file at `path` opened in pieces gives exactly what its bytes give.
    fn same_as_bytes(path: &Path) -> Option<Pieces> {
        let bytes = std::fs::read(path).unwrap();
        let (expected, _) = outcome(Container::parse(bytes.as_slice()));
        let pieces = open_pieces_below(path, 0).unwrap();
        assert_eq!(pieces.size(), bytes.len() as u64);
        let (got, pieces) = outcome(Container::parse(pieces));
        assert_eq!(got, expected, "{}", path.display());
        // What a scan opens: the same but for the free fields it never reads.
        let (expected, _) = outcome_with(Container::parse(bytes.as_slice()), false);
        let scanned = open_pieces_below(path, 0).unwrap();
        let (got, _) = outcome_with(Container::parse_entries(scanned), false);
        assert_eq!(got, expected, "{}", path.display());
        pieces
    }

    #[test]
    fn every_vector_opens_in_pieces_as_from_its_bytes() {
        for kind in ["valid", "invalid"] {
            for entry in std::fs::read_dir(vector(kind)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "amber") {
                    same_as_bytes(&path);
                }
            }
        }
    }

    #[test]
    fn a_file_of_few_entries_is_read_not_mapped() {
        let pieces = same_as_bytes(&vector("valid/arrays.amber")).unwrap();
        assert!(!pieces.is_mapped());
        assert!(pieces.pieces.len() > 2);
        // Asking for all of it maps it; the pieces read before stay valid.
        let head = pieces.head().to_vec();
        assert_eq!(pieces.as_ref().len() as u64, pieces.size());
        assert!(pieces.is_mapped());
        assert_eq!(pieces.head(), head.as_slice());
        assert_eq!(pieces.range(pieces.size(), 1), None);
    }

    #[test]
    #[cfg(unix)]
    fn damaged_files_give_the_same_errors_in_pieces() {
        let good = std::fs::read(vector("valid/arrays.amber")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged.amber");
        let n = good.len();
        // Spread over the file, through each local and `.npy` header, and
        // through the manifest and directory.
        let headers = Container::parse(good.as_slice())
            .unwrap()
            .zip_entries()
            .iter()
            .flat_map(|e| (e.header_offset as usize..e.data_offset as usize + 160).step_by(3))
            .collect::<Vec<_>>();
        let tail = n.saturating_sub(2400);
        let positions: Vec<usize> = (0..n)
            .step_by(8191)
            .chain(headers)
            .chain((tail..n).step_by(3))
            .filter(|&at| at < n)
            .collect();
        // Cuts rewrite the file, so fewer of them; flips change one byte in place.
        for &at in positions.iter().step_by(7) {
            std::fs::write(&path, &good[..at]).unwrap();
            same_as_bytes(&path);
        }
        std::fs::write(&path, &good).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for &at in &positions {
            std::os::unix::fs::FileExt::write_all_at(&file, &[good[at] ^ 0x21], at as u64).unwrap();
            same_as_bytes(&path);
            std::os::unix::fs::FileExt::write_all_at(&file, &good[at..=at], at as u64).unwrap();
        }
    }

    #[test]
    fn pieces_are_read_into_the_buffers_the_last_open_left() {
        let path = vector("valid/arrays.amber");
        let bytes = std::fs::read(&path).unwrap();
        KEPT_PIECES.with_borrow_mut(Vec::clear);
        drop(same_as_bytes(&path));
        let kept = KEPT_PIECES.with_borrow(|k| k.iter().map(Vec::len).collect::<Vec<_>>());
        assert!(kept.len() > 2 && kept.len() <= KEEP_PIECES, "{kept:?}");
        // Opened again over what the first left there, with the same outcome.
        let pieces = same_as_bytes(&path).unwrap();
        assert_eq!(pieces.head(), &bytes[..pieces.head().len()]);
        assert!(KEPT_PIECES.with_borrow(Vec::len) < kept.len());
        for size in [0, 10, 5000, 20000] {
            assert_eq!(piece_buffer(size).len(), size);
        }
    }

    #[test]
    fn table_slots_fill_each_block_in_turn() {
        let mut next = (0, 0);
        for i in 0..MAX_PIECES {
            let (b, size, at) = Table::place(i);
            assert_eq!((b, at), next, "slot {i}");
            assert!(at < size && b < BLOCKS);
            next = if at + 1 == size {
                (b + 1, 0)
            } else {
                (b, at + 1)
            };
        }
        let table = Table::new();
        assert!(table.slot(MAX_PIECES - 1).is_some() && table.slot(MAX_PIECES).is_none());
    }

    #[test]
    fn what_is_not_a_regular_file_fails_as_open_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let a = open_pieces(dir.path()).err().unwrap().to_string();
        let b = open_file(dir.path()).err().unwrap().to_string();
        assert_eq!(a, b);
        assert!(open_pieces(&dir.path().join("missing")).is_err());
    }
}
