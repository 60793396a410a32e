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

use std::fs::File;
use std::io::{BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{FormatError, Result};

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

impl crate::read::Source for Mapping {
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
    if meta.len() == 0 {
        return Ok(Mapping::Empty);
    }
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
            MapMode::ReadOnly => memmap2::Mmap::map(file).map(Mapping::ReadOnly),
            MapMode::CopyOnWrite => memmap2::MmapOptions::new()
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
