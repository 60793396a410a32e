//! Reading files amber did not write: plain pickles and every joblib format.
//!
//! Users arrive with `.pkl` and `.joblib` files written by `pickle.dump` and
//! by every joblib since 0.8. This crate recognises them by content (never
//! by file extension), undoes whole-file compression (zlib, gzip, bz2, lzma,
//! xz, lz4, the legacy `ZF` container) with strict end-of-stream checks and
//! an output bound, parses the pickle once with [`amber_pickle`]'s
//! [`JoblibHook`](amber_pickle::joblib::JoblibHook) (nothing is executed),
//! and locates every array's bytes: inline after a `NumpyArrayWrapper`, a
//! nested pickle for object arrays, or a companion `.npy` / `.npy.z` file of
//! a pre-0.10 dump (opened only by bare name in the same directory).
//!
//! CPython's C unpickler cannot read joblib's inline bytes, so
//! [`Legacy::load_stream`] is a rewritten stream: every `FRAME` is dropped
//! (frames are optional and change nothing), each array's bytes are cut out,
//! and right after its wrapper's `BUILD` come `BININT k`, `TUPLE2`,
//! `BINPERSID`, so the unpickler calls `persistent_load((wrapper, k))` and
//! the caller builds array `k` from [`Legacy::arrays`]. The original
//! (decompressed) stream stays available as [`Legacy::stream`] for a safety
//! analyser; plain pickles are loaded unchanged.
//!
//! ```no_run
//! let legacy = amber_legacy::open_path("model.joblib".as_ref(), &amber_legacy::Limits::default())?;
//! println!("{:?}: {} arrays", legacy.kind(), legacy.arrays().len());
//! # Ok::<(), amber_legacy::LegacyError>(())
//! ```

mod companion;
mod decompress;
mod error;
mod rewrite;

use std::path::{Path, PathBuf};

use amber_format::Mapping;
use amber_format::sniff::{self, Kind};
use amber_pickle::joblib::{JoblibHook, class_among, str_of};
use amber_pickle::{BuildContext, Hook, HookAction, NodeKind, Opcode, Parser, PickleError};

pub use decompress::{Codec, decompress, read_zfile};
pub use error::{LegacyError, Result};

/// Bounds for opening untrusted files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most bytes any one decompressed stream or companion may hold.
    pub max_decompressed: u64,
    /// Most companion files a pre-0.10 dump may name.
    pub max_companions: usize,
    /// Bounds for the pickle parser.
    pub pickle: amber_pickle::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed: 64 << 30,
            max_companions: 100_000,
            pickle: amber_pickle::Limits::default(),
        }
    }
}

impl Limits {
    /// These limits with another decompressed-size bound.
    #[must_use]
    pub fn with_max_decompressed(mut self, max: u64) -> Self {
        self.max_decompressed = max;
        self
    }
}

/// What kind of file was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LegacyKind {
    /// An uncompressed pickle with no joblib array wrappers.
    Pickle {
        /// Highest protocol used (a `PROTO` opcode, else implied by the opcodes).
        protocol: u8,
    },
    /// A joblib file (>= 0.10): inline arrays and/or whole-file compression.
    Joblib {
        /// The whole-file compressor, if any.
        compression: Option<Codec>,
    },
    /// A joblib < 0.10 compressed dump: one `ZF` container (arrays inline or
    /// in `ZF` companion files).
    JoblibZf,
    /// A joblib < 0.10 uncompressed dump with companion `.npy` files.
    JoblibMultiFile,
}

impl LegacyKind {
    /// `pickle`, `joblib`, `joblib-zf` or `joblib-multifile`: the format label
    /// every front end (scan reports, `amber info`, Python) shows.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Pickle { .. } => "pickle",
            Self::Joblib { .. } => "joblib",
            Self::JoblibZf => "joblib-zf",
            Self::JoblibMultiFile => "joblib-multifile",
        }
    }

    /// The whole-file compressor's name (`zlib`, …, `zf` for the legacy
    /// container), or `None` for an uncompressed file.
    #[must_use]
    pub fn compression(self) -> Option<&'static str> {
        match self {
            Self::Joblib { compression } => compression.map(Codec::name),
            Self::JoblibZf => Some("zf"),
            Self::Pickle { .. } | Self::JoblibMultiFile => None,
        }
    }
}

/// The wrapper class an array was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WrapperClass {
    /// `joblib.numpy_pickle.NumpyArrayWrapper` (joblib >= 0.10).
    NumpyArrayWrapper,
    /// `joblib.numpy_pickle.NDArrayWrapper` (companion `.npy`).
    NdArrayWrapper,
    /// `joblib.numpy_pickle.ZNDArrayWrapper` (companion `ZF` file).
    ZndArrayWrapper,
}

/// Where array `k`'s bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArraySource {
    /// Raw bytes in [`Legacy::stream`]; dtype, shape and order come from the
    /// wrapper's state.
    Inline {
        /// Offset in the stream (after any padding).
        offset: u64,
        /// Length.
        len: u64,
    },
    /// A complete pickle of an object array in [`Legacy::stream`].
    NestedPickle {
        /// Offset in the stream.
        offset: u64,
        /// Length, through its `STOP`.
        len: u64,
    },
    /// Raw data of a companion `.npy` file (its header gives dtype and shape).
    Npy {
        /// Index into [`Legacy::companions`].
        file: usize,
        /// Offset of the data in that file.
        offset: u64,
        /// Length of the data.
        len: u64,
        /// The header's `descr`.
        descr: String,
        /// The header's `shape`.
        shape: Vec<u64>,
        /// The header's `fortran_order`.
        fortran_order: bool,
    },
    /// A companion `.npy` file holding a pickled object array.
    NpyPickle {
        /// Index into [`Legacy::companions`].
        file: usize,
        /// Offset of the pickle in that file.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// The decompressed content of a companion `ZF` file: the raw data of a
    /// `ZNDArrayWrapper` array (dtype and shape are in its state).
    Zfile {
        /// Index into [`Legacy::companions`].
        file: usize,
    },
}

impl ArraySource {
    /// Whether the bytes are a pickle (which a safety analyser must read too).
    #[must_use]
    pub fn is_pickle(&self) -> bool {
        matches!(self, Self::NestedPickle { .. } | Self::NpyPickle { .. })
    }

    /// The wrapper class that points at this source.
    #[must_use]
    pub fn wrapper(&self) -> WrapperClass {
        match self {
            Self::Inline { .. } | Self::NestedPickle { .. } => WrapperClass::NumpyArrayWrapper,
            Self::Npy { .. } | Self::NpyPickle { .. } => WrapperClass::NdArrayWrapper,
            Self::Zfile { .. } => WrapperClass::ZndArrayWrapper,
        }
    }
}

/// Bytes kept alive: a file map (with the open file, for copies that do not
/// fault the map's pages in) or an owned buffer.
enum Backing {
    Map(Mapping, std::fs::File),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Map(m, _) => m.as_ref(),
            Self::Owned(v) => v,
        }
    }
}

impl Backing {
    /// Copies `dst.len()` bytes at `offset` into `dst`: a `memcpy` from a
    /// buffer; from a file, positioned reads (the page cache copies straight
    /// into `dst`, and the map's pages never join the process's resident
    /// set). Large reads ([`PARALLEL_ABOVE`]) run in [`COPY_CHUNK`] pieces
    /// on the current rayon pool.
    fn copy_into(&self, offset: u64, dst: &mut [u8]) -> std::io::Result<()> {
        use rayon::prelude::*;
        use std::os::unix::fs::FileExt;
        match self {
            Self::Map(_, file) if dst.len() >= PARALLEL_ABOVE => dst
                .par_chunks_mut(COPY_CHUNK)
                .enumerate()
                .try_for_each(|(i, piece)| {
                    let at = offset.saturating_add(to_u64(i.saturating_mul(COPY_CHUNK)));
                    file.read_exact_at(piece, at)
                }),
            Self::Map(_, file) => file.read_exact_at(dst, offset),
            Self::Owned(v) => {
                let src = slice(v, offset, to_u64(dst.len()))
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
                dst.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// Reads of at least this many bytes from a file run in parallel.
const PARALLEL_ABOVE: usize = 8 << 20;
/// Bytes each task of a parallel read moves.
const COPY_CHUNK: usize = 4 << 20;

/// A companion file of a pre-0.10 dump.
pub struct Companion {
    name: String,
    bytes: Backing,
}

impl Companion {
    /// The bare file name stored in the pickle.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bytes (decompressed for `ZF` files).
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// Whether the bytes are a map of the file (so views share its pages).
    #[must_use]
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Backing::Map(..))
    }
}

impl std::fmt::Debug for Companion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Companion")
            .field("name", &self.name)
            .field("len", &self.bytes().len())
            .finish()
    }
}

/// An opened pickle or joblib file.
pub struct Legacy {
    stream: Backing,
    load_stream: LoadStream,
    arrays: Vec<ArraySource>,
    companions: Vec<Companion>,
    kind: LegacyKind,
    protocol: u8,
    py2: bool,
    file_size: u64,
}

impl std::fmt::Debug for Legacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Legacy")
            .field("kind", &self.kind)
            .field("protocol", &self.protocol)
            .field("py2", &self.py2)
            .field("stream_len", &self.stream().len())
            .field("arrays", &self.arrays.len())
            .field("companions", &self.companions)
            .finish_non_exhaustive()
    }
}

impl Legacy {
    /// The original pickle stream, decompressed: what a safety analyser reads.
    #[must_use]
    pub fn stream(&self) -> &[u8] {
        self.stream.as_ref()
    }

    /// The stream to give CPython's unpickler (see the crate docs); the
    /// original stream for plain pickles. A file opened for a scan only
    /// ([`scan_open_path`]) has it made on first use; should that fail
    /// (it cannot for a stream the open parsed), it is empty, which no
    /// unpickler loads.
    #[must_use]
    pub fn load_stream(&self) -> &[u8] {
        match &self.load_stream {
            LoadStream::Original => self.stream(),
            LoadStream::Rewritten(v) => v,
            LoadStream::Deferred {
                spans,
                end,
                limits,
                made,
            } => made.get_or_init(|| {
                rewrite::rewrite(self.stream(), *end, spans, *limits).unwrap_or_default()
            }),
        }
    }

    /// Whether [`Self::load_stream`] differs from [`Self::stream`].
    #[must_use]
    pub fn is_rewritten(&self) -> bool {
        !matches!(self.load_stream, LoadStream::Original)
    }

    /// Where each array's bytes are, indexed by the `k` of `persistent_load((wrapper, k))`.
    #[must_use]
    pub fn arrays(&self) -> &[ArraySource] {
        &self.arrays
    }

    /// Companion files opened (pre-0.10 dumps).
    #[must_use]
    pub fn companions(&self) -> &[Companion] {
        &self.companions
    }

    /// The bytes of array `k` (raw data or a pickle).
    #[must_use]
    pub fn array_bytes(&self, k: usize) -> Option<&[u8]> {
        match self.arrays.get(k)? {
            ArraySource::Inline { offset, len } | ArraySource::NestedPickle { offset, len } => {
                self.inline(*offset, *len)
            }
            ArraySource::Npy {
                file, offset, len, ..
            }
            | ArraySource::NpyPickle { file, offset, len } => {
                slice(self.companions.get(*file)?.bytes(), *offset, *len)
            }
            ArraySource::Zfile { file } => Some(self.companions.get(*file)?.bytes()),
        }
    }

    /// Whether array `k`'s bytes are a view of a mapped file (uncompressed
    /// files opened by path), so they can be handed out without copying.
    #[must_use]
    pub fn array_is_mapped(&self, k: usize) -> bool {
        match self.arrays.get(k) {
            Some(ArraySource::Inline { .. }) => matches!(self.stream, Backing::Map(..)),
            Some(ArraySource::Npy { file, .. }) => {
                self.companions.get(*file).is_some_and(Companion::is_mapped)
            }
            _ => false,
        }
    }

    /// Whether array `k`'s raw bytes lie in memory this value owns privately
    /// (a decompressed stream): the caller may then hand them out as a
    /// writable view instead of copying them, provided nothing reads the
    /// stream afterwards.
    #[must_use]
    pub fn array_is_owned(&self, k: usize) -> bool {
        matches!(self.arrays.get(k), Some(ArraySource::Inline { .. }))
            && matches!(self.stream, Backing::Owned(_))
    }

    /// Copies array `k`'s bytes into `dst`, which must have exactly their length.
    /// From a file opened by path, arrays of 8 MiB or more are read on the
    /// current rayon pool in 4 MiB pieces.
    ///
    /// # Errors
    /// [`LegacyError::ArraySize`] for a wrong length, [`LegacyError::Io`] if the file cannot be read.
    pub fn copy_array(&self, k: usize, dst: &mut [u8]) -> Result<()> {
        let len = self.array_bytes(k).map_or(0, <[u8]>::len);
        if dst.len() != len {
            return Err(LegacyError::ArraySize {
                index: k,
                offset: 0,
                declared: to_u64(dst.len()),
                available: to_u64(len),
            });
        }
        let (backing, offset) = match self.arrays.get(k) {
            Some(ArraySource::Inline { offset, .. }) => (&self.stream, *offset),
            Some(ArraySource::Npy { file, offset, .. }) => match self.companions.get(*file) {
                Some(c) => (&c.bytes, *offset),
                None => return Ok(()),
            },
            _ => {
                if let Some(src) = self.array_bytes(k) {
                    dst.copy_from_slice(src);
                }
                return Ok(());
            }
        };
        backing
            .copy_into(offset, dst)
            .map_err(|source| LegacyError::Io {
                action: "read",
                path: PathBuf::from(format!("array {k}")),
                source,
            })
    }

    /// Copies arrays `first`, `first + 1`, ... one after another into `dst`
    /// (each at a multiple of `align` bytes), as [`Self::copy_array`] would
    /// one by one, while they fit and each holds raw data (not a pickle) of
    /// fewer than `below` bytes; returns where each went (empty if array
    /// `first` is not such an array or does not fit). A loader of many small
    /// arrays makes one call per block of them instead of one per array.
    /// Arrays under [`MEMCPY_BELOW`] bytes are copied with `memcpy` rather
    /// than read: they share their pages with the opcodes around them,
    /// which the open has read already, and a positioned read would be a
    /// system call each.
    ///
    /// # Errors
    /// [`LegacyError::Io`] if the file cannot be read.
    pub fn pack_arrays(
        &self,
        first: usize,
        dst: &mut [u8],
        below: usize,
        align: usize,
    ) -> Result<Vec<usize>> {
        let align = align.max(1);
        let mut offsets = Vec::new();
        let mut used = 0usize;
        for k in first..self.arrays.len() {
            let Some(src) = self.packable(k).filter(|b| b.len() < below) else {
                break;
            };
            let Some(slot) = used
                .checked_add(src.len())
                .and_then(|end| dst.get_mut(used..end))
            else {
                break;
            };
            if src.len() < MEMCPY_BELOW {
                slot.copy_from_slice(src);
            } else {
                self.copy_array(k, slot)?;
            }
            offsets.push(used);
            used = used
                .saturating_add(src.len())
                .div_ceil(align)
                .saturating_mul(align);
        }
        Ok(offsets)
    }

    /// Array `k`'s raw data, if it is raw data.
    fn packable(&self, k: usize) -> Option<&[u8]> {
        match self.arrays.get(k)? {
            ArraySource::NestedPickle { .. } | ArraySource::NpyPickle { .. } => None,
            _ => self.array_bytes(k),
        }
    }

    /// `len` bytes of the stream at `offset`, if in range (for content validators).
    #[must_use]
    pub fn inline(&self, offset: u64, len: u64) -> Option<&[u8]> {
        slice(self.stream(), offset, len)
    }

    /// What kind of file this is.
    #[must_use]
    pub fn kind(&self) -> LegacyKind {
        self.kind
    }

    /// Highest pickle protocol used.
    #[must_use]
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Written by Python 2 (legacy `str` opcodes): unpickle with `encoding="latin1"`.
    #[must_use]
    pub fn py2(&self) -> bool {
        self.py2
    }

    /// Size of the file as opened (compressed size for compressed files).
    #[must_use]
    pub fn file_size(&self) -> u64 {
        self.file_size
    }
}

/// Arrays [`Legacy::pack_arrays`] copies from memory rather than reads.
pub const MEMCPY_BELOW: usize = 64 << 10;

/// [`Legacy::load_stream`], as the open left it.
enum LoadStream {
    /// The original stream (a plain pickle).
    Original,
    /// Rewritten by the open.
    Rewritten(Vec<u8>),
    /// Not made by a scan-only open: the regions to cut, made on first use.
    Deferred {
        spans: Vec<(u64, u64)>,
        end: u64,
        limits: amber_pickle::Limits,
        made: std::sync::OnceLock<Vec<u8>>,
    },
}

/// What an open prepares beyond the parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Everything a load needs (the rewritten stream).
    Load,
    /// Only what a safety scan reads: no stream rewrite.
    Scan,
}

fn slice(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}

fn to_u64(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Whether content starting with `head` (for protocol 0/1 pickles: whose
/// last byte is `head`'s last byte) is a pickle or a joblib file: a `PROTO`
/// pickle, a protocol 0/1 pickle, one of joblib's compressors or `ZF`.
#[must_use]
pub fn is_legacy_content(head: &[u8]) -> bool {
    matches!(
        sniff::kind(head),
        Kind::Pickle(_) | Kind::OldPickle | Kind::JoblibZf
    ) || Codec::sniff(head).is_some()
}

/// [`is_legacy_content`] of the file at `path` (its first 16 bytes and last byte).
///
/// # Errors
/// The file cannot be read.
pub fn is_legacy_file(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let mut head = Vec::with_capacity(17);
    (&mut file).take(16).read_to_end(&mut head)?;
    if head.is_empty() {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    (&mut file).take(1).read_to_end(&mut head)?;
    Ok(is_legacy_content(&head))
}

/// Opens the pickle or joblib file at `path`. Uncompressed files are mapped,
/// so array views share the file's pages; companion files are looked up in
/// the same directory.
///
/// # Errors
/// Any [`LegacyError`].
pub fn open_path(path: &Path, limits: &Limits) -> Result<Legacy> {
    open_path_inspected(path, limits, &mut |_| {})
}

/// What [`open_path_inspected`] shows of the stream it parsed while
/// opening: the graph borrows the stream, so it lives only during the call.
pub struct Parse<'p, 'a> {
    /// The decompressed stream.
    pub stream: &'a [u8],
    /// It, parsed the way joblib reads it (joblib's array hook, the given limits).
    pub pickle: &'p amber_pickle::Pickle<'a>,
    /// Whether the file is a joblib file (compressed, `ZF`, or holding
    /// joblib's array wrappers) rather than a plain pickle.
    pub joblib: bool,
    /// Arrays the joblib hook found.
    pub joblib_arrays: u64,
}

/// [`open_path`], showing `inspect` the parse it makes anyway (a safety
/// scan can analyse that graph instead of parsing the stream again).
///
/// # Errors
/// Any [`LegacyError`].
pub fn open_path_inspected(
    path: &Path,
    limits: &Limits,
    inspect: &mut dyn FnMut(&Parse<'_, '_>),
) -> Result<Legacy> {
    open_path_for(path, limits, Purpose::Load, inspect)
}

/// [`open_path_inspected`] for a safety scan: the same checks and the same
/// errors, but the stream is not rewritten for loading
/// ([`Legacy::load_stream`] is made on first use instead), which halves
/// the cost of scanning a large joblib file.
///
/// # Errors
/// Any [`LegacyError`], as [`open_path`].
pub fn scan_open_path(
    path: &Path,
    limits: &Limits,
    inspect: &mut dyn FnMut(&Parse<'_, '_>),
) -> Result<Legacy> {
    open_path_for(path, limits, Purpose::Scan, inspect)
}

fn open_path_for(
    path: &Path,
    limits: &Limits,
    purpose: Purpose,
    inspect: &mut dyn FnMut(&Parse<'_, '_>),
) -> Result<Legacy> {
    let io = |action, source| LegacyError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|e| io("open", e))?;
    if file.metadata().map_err(|e| io("open", e))?.is_dir() {
        // EISDIR, so that Python raises IsADirectoryError.
        return Err(io("open", std::io::Error::from_raw_os_error(21)));
    }
    let mapping = amber_format::file::map_open_file(&file, path)
        .map_err(|e| io("map", std::io::Error::other(e.to_string())))?;
    let dir = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            p.to_path_buf()
        }
    });
    open_backing(
        Backing::Map(mapping, file),
        dir.as_deref(),
        limits,
        purpose,
        inspect,
    )
}

/// Opens a pickle or joblib file held in memory. Pre-0.10 dumps with
/// companion files need [`open_path`].
///
/// # Errors
/// Any [`LegacyError`].
pub fn open_bytes(data: Vec<u8>, limits: &Limits) -> Result<Legacy> {
    open_bytes_inspected(data, limits, &mut |_| {})
}

/// [`open_bytes`], showing `inspect` its parse (see [`open_path_inspected`]).
///
/// # Errors
/// Any [`LegacyError`].
pub fn open_bytes_inspected(
    data: Vec<u8>,
    limits: &Limits,
    inspect: &mut dyn FnMut(&Parse<'_, '_>),
) -> Result<Legacy> {
    open_backing(Backing::Owned(data), None, limits, Purpose::Load, inspect)
}

/// [`scan_open_path`] for a file held in memory.
///
/// # Errors
/// Any [`LegacyError`], as [`open_bytes`].
pub fn scan_open_bytes(
    data: Vec<u8>,
    limits: &Limits,
    inspect: &mut dyn FnMut(&Parse<'_, '_>),
) -> Result<Legacy> {
    open_backing(Backing::Owned(data), None, limits, Purpose::Scan, inspect)
}

fn open_backing(
    file: Backing,
    dir: Option<&Path>,
    limits: &Limits,
    purpose: Purpose,
    inspect: &mut dyn FnMut(&Parse<'_, '_>),
) -> Result<Legacy> {
    let data = file.as_ref();
    let file_size = to_u64(data.len());
    let (stream, compression, zf) = match sniff::kind(data) {
        Kind::Zip => return Err(LegacyError::AmberFile),
        Kind::Npy => {
            return Err(LegacyError::Unrecognised {
                what: sniff::describe(data),
            });
        }
        Kind::JoblibZf => (
            Backing::Owned(read_zfile(data, limits.max_decompressed)?),
            None,
            true,
        ),
        _ => match Codec::sniff(data) {
            Some(codec) => (
                Backing::Owned(decompress(codec, data, limits.max_decompressed)?),
                Some(codec),
                false,
            ),
            None => (file, None, false),
        },
    };
    let joblib = zf || compression.is_some();
    let parsed = parse(stream.as_ref(), limits, joblib, purpose, inspect)?;
    let companions = match dir {
        Some(dir) => companion::open_all(dir, &parsed.companion_names, limits)?,
        None => match parsed.companion_names.first() {
            Some(name) => {
                return Err(LegacyError::CompanionNeedsDirectory { name: name.clone() });
            }
            None => Vec::new(),
        },
    };
    // Sized up front: collecting through `Result` gives no size hint, and a
    // file of 100,000 small arrays then regrew this list seventeen times.
    let mut arrays = Vec::with_capacity(parsed.arrays.len());
    for found in parsed.arrays {
        arrays.push(companion::resolve(found, &companions)?);
    }
    let multi_file = !companions.is_empty();
    let kind = if zf {
        LegacyKind::JoblibZf
    } else if multi_file {
        LegacyKind::JoblibMultiFile
    } else if compression.is_some() || !arrays.is_empty() {
        LegacyKind::Joblib { compression }
    } else {
        LegacyKind::Pickle {
            protocol: parsed.protocol,
        }
    };
    Ok(Legacy {
        stream,
        load_stream: parsed.load_stream,
        arrays,
        companions,
        kind,
        protocol: parsed.protocol,
        py2: parsed.py2,
        file_size,
    })
}

/// An array as found by the parse, before companions are opened.
#[derive(Debug)]
pub(crate) enum Found {
    Inline {
        offset: u64,
        len: u64,
    },
    Nested {
        offset: u64,
        len: u64,
    },
    /// Index into the companion names.
    Npy(usize),
    Zfile(usize),
}

struct Parsed {
    arrays: Vec<Found>,
    companion_names: Vec<String>,
    load_stream: LoadStream,
    protocol: u8,
    py2: bool,
}

/// The pre-0.10 wrapper classes: the first [`ND_WRAPPERS`] name a
/// companion `.npy` file, the others a companion `ZF` file.
const OLD_WRAPPERS: &[&str] = &[
    "joblib.numpy_pickle.NDArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NDArrayWrapper",
    "joblib.numpy_pickle.ZNDArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.ZNDArrayWrapper",
];
const ND_WRAPPERS: usize = 2;

/// What follows a wrapper's `BUILD`.
#[derive(Debug)]
enum Cut {
    /// Raw bytes (padding included) up to `end`.
    Data { at: u64, data: u64, end: u64 },
    /// A nested pickle starting at `at`; its end is known after the parse.
    Nested { at: u64 },
    /// Nothing (the data is in a companion file).
    Companion {
        at: u64,
        name: Result<String, &'static str>,
        zfile: bool,
    },
}

/// [`JoblibHook`] plus pre-0.10 wrappers and a size check.
struct LegacyHook {
    joblib: JoblibHook,
    cuts: Vec<Cut>,
    size_error: Option<LegacyError>,
}

impl Hook for LegacyHook {
    fn after_build(&mut self, ctx: &BuildContext<'_, '_>) -> amber_pickle::Result<HookAction> {
        let action = self.joblib.after_build(ctx)?;
        match action {
            HookAction::Data { padding, len } => {
                let data = ctx.position.saturating_add(padding);
                let available = to_u64(ctx.input.len()).saturating_sub(data);
                if len > available {
                    self.size_error = Some(LegacyError::ArraySize {
                        index: self.cuts.len(),
                        offset: data,
                        declared: len,
                        available,
                    });
                    return Err(PickleError::hook(
                        ctx.position,
                        "array data runs past the end",
                    ));
                }
                self.cuts.push(Cut::Data {
                    at: ctx.position,
                    data,
                    end: data.saturating_add(len),
                });
            }
            HookAction::NestedPickle => self.cuts.push(Cut::Nested { at: ctx.position }),
            _ => {
                if ctx.nested_depth > 0 {
                    return Ok(action);
                }
                let Some(class) = class_among(ctx.graph, ctx.target, OLD_WRAPPERS) else {
                    return Ok(action);
                };
                self.cuts.push(Cut::Companion {
                    at: ctx.position,
                    name: state_filename(ctx),
                    zfile: class >= ND_WRAPPERS,
                });
            }
        }
        Ok(action)
    }
}

fn state_filename(ctx: &BuildContext<'_, '_>) -> Result<String, &'static str> {
    let graph = ctx.graph;
    let Some(NodeKind::Dict(pairs)) = graph.kind(ctx.state) else {
        return Err("the wrapper's state is not a dict");
    };
    let value = pairs
        .iter()
        .rev()
        .find(|&&(k, _)| str_of(graph, k) == Some("filename"))
        .map(|&(_, v)| v)
        .ok_or("the wrapper's state has no `filename`")?;
    str_of(graph, value)
        .map(str::to_owned)
        .ok_or("`filename` is not ASCII text")
}

fn parse(
    stream: &[u8],
    limits: &Limits,
    compressed: bool,
    purpose: Purpose,
    inspect: &mut dyn FnMut(&Parse<'_, '_>),
) -> Result<Parsed> {
    let mut hook = LegacyHook {
        joblib: JoblibHook::counting(),
        cuts: Vec::new(),
        size_error: None,
    };
    let result = Parser::new(stream)
        .limits(limits.pickle)
        .hook(&mut hook)
        .parse();
    let pickle = match result {
        Ok(p) => p,
        Err(e) => {
            if let Some(size) = hook.size_error.take() {
                return Err(size);
            }
            if matches!(sniff::kind(stream), Kind::Unknown) {
                return Err(LegacyError::Unrecognised {
                    what: format!("{}; read as a pickle: {e}", sniff::describe(stream)),
                });
            }
            return Err(e.into());
        }
    };
    inspect(&Parse {
        stream,
        pickle: &pickle,
        joblib: compressed || !hook.cuts.is_empty(),
        joblib_arrays: hook.joblib.count(),
    });
    let stats = pickle.stats();
    let py2 = [Opcode::STRING, Opcode::BINSTRING, Opcode::SHORT_BINSTRING]
        .iter()
        .any(|&op| stats.count(op) > 0);
    let implied = (0..=255u8)
        .filter_map(Opcode::from_byte)
        .filter(|&op| stats.count(op) > 0)
        .map(Opcode::protocol)
        .max()
        .unwrap_or(0);
    let protocol = pickle.highest_protocol().unwrap_or(0).max(implied);

    // Nested pickles: start -> end (the graph is walked only if there are any).
    let nested: std::collections::HashMap<u64, u64> = if pickle.stats().nested_pickles == 0 {
        std::collections::HashMap::new()
    } else {
        pickle
            .graph()
            .iter()
            .filter_map(|(_, node)| match node.kind() {
                NodeKind::NestedPickle { start, end, .. } => Some((start, end)),
                _ => None,
            })
            .collect()
    };

    let mut arrays = Vec::with_capacity(hook.cuts.len());
    let mut companion_names: Vec<String> = Vec::new();
    let mut spans = Vec::with_capacity(hook.cuts.len());
    for cut in hook.cuts {
        match cut {
            Cut::Data { at, data, end } => {
                arrays.push(Found::Inline {
                    offset: data,
                    len: end.saturating_sub(data),
                });
                spans.push((at, end));
            }
            Cut::Nested { at } => {
                let end = *nested.get(&at).ok_or(PickleError::Internal {
                    offset: at,
                    what: "nested pickle not found in the graph",
                })?;
                arrays.push(Found::Nested {
                    offset: at,
                    len: end.saturating_sub(at),
                });
                spans.push((at, end));
            }
            Cut::Companion { at, name, zfile } => {
                let name = name.map_err(|reason| LegacyError::CompanionName {
                    name: String::new(),
                    reason,
                })?;
                let index = companion_names.len();
                if index >= limits.max_companions {
                    return Err(LegacyError::CompanionName {
                        name,
                        reason: "more companion files than the limit allows",
                    });
                }
                companion_names.push(name);
                arrays.push(if zfile {
                    Found::Zfile(index)
                } else {
                    Found::Npy(index)
                });
                spans.push((at, at));
            }
        }
    }
    let load_stream = match (spans.is_empty(), purpose) {
        (true, _) => LoadStream::Original,
        (false, Purpose::Load) => LoadStream::Rewritten(rewrite::rewrite(
            stream,
            pickle.end(),
            &spans,
            limits.pickle,
        )?),
        (false, Purpose::Scan) => LoadStream::Deferred {
            spans,
            end: pickle.end(),
            limits: limits.pickle,
            made: std::sync::OnceLock::new(),
        },
    };
    Ok(Parsed {
        arrays,
        companion_names,
        load_stream,
        protocol,
        py2,
    })
}
