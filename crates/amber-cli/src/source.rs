//! Opening a model file for `scan` and `inspect`: which format it is (by
//! content, never by extension), and the pickle stream inside it.
//!
//! - amber files: the container's pickle entry (decoded if compressed), with
//!   its array entries as out-of-band buffers;
//! - plain pickles and uncompressed joblib files: the file itself. They are
//!   parsed the way `joblib.load` reads both (raw bytes after each
//!   `NumpyArrayWrapper` skipped); a file is labelled `joblib` when it has
//!   such arrays;
//! - compressed joblib files: refused for now, in [`decompress_joblib`].

use std::borrow::Cow;
use std::path::Path;

use amber_format::sniff::{self, Kind};
use amber_format::{Container, MapMode, Mapping};
use amber_scan::{ArrayBytes, StreamKind};

/// Why a file could not be opened for scanning (exit code 2, or 1 for a
/// damaged amber container).
#[derive(Clone)]
pub struct OpenError {
    /// The message.
    pub message: String,
    /// The file is readable but not a valid container (exit 1, not 2).
    pub invalid: bool,
}

impl OpenError {
    fn error(message: String) -> Self {
        OpenError {
            message,
            invalid: false,
        }
    }
}

/// An opened file: the pickle stream and how to parse it.
pub struct Opened<'c> {
    /// `amber`, `pickle` (or `joblib`, decided after parsing).
    pub format: &'static str,
    /// The pickle stream.
    pub stream: Cow<'c, [u8]>,
    /// How to parse it.
    pub kind: StreamKind,
    /// Bytes of out-of-band buffers (amber) or inline arrays (joblib).
    pub arrays: Box<dyn ArrayBytes + 'c>,
}

/// What backs an [`Opened`] stream.
pub enum Backing {
    /// An amber container.
    Amber(Container<Mapping>),
    /// A pickle or joblib file, mapped.
    Plain(Mapping),
    /// A decoded (decompressed) stream.
    Decoded(Vec<u8>),
}

/// Map and classify a file.
pub fn open(path: &Path) -> Result<Backing, OpenError> {
    let map = amber_format::map_file(path, MapMode::ReadOnly)
        .map_err(|e| OpenError::error(format!("{}: {e}", path.display())))?;
    let bytes: &[u8] = map.as_ref();
    match sniff::kind(bytes) {
        Kind::Zip => Container::parse(map)
            .map(Backing::Amber)
            .map_err(|e| OpenError {
                message: format!("{}: {e}", path.display()),
                invalid: true,
            }),
        Kind::Zlib
        | Kind::Gzip
        | Kind::Bzip2
        | Kind::Xz
        | Kind::Lzma
        | Kind::Lz4
        | Kind::Zstd
        | Kind::JoblibZf => decompress_joblib(path, bytes).map(Backing::Decoded),
        Kind::Npy => Err(OpenError::error(format!(
            "{}: a `.npy` file, not a model file (scan its object arrays by loading them into a model file)",
            path.display()
        ))),
        // Pickles, and anything else: the parser decides (unknown bytes are malformed).
        _ => Ok(Backing::Plain(map)),
    }
}

/// The one place compressed joblib files are handled.
pub fn decompress_joblib(path: &Path, data: &[u8]) -> Result<Vec<u8>, OpenError> {
    Err(OpenError::error(format!(
        "{}: {}: compressed joblib files are not supported yet",
        path.display(),
        sniff::describe(data)
    )))
}

impl Backing {
    /// The stream inside.
    pub fn stream(&self, path: &Path) -> Result<Opened<'_>, OpenError> {
        match self {
            Backing::Amber(c) => {
                let stream = c.pickle().map_err(|e| OpenError {
                    message: format!("{}: {e}", path.display()),
                    invalid: true,
                })?;
                let buffers: Vec<(u64, u64, bool)> = c
                    .arrays()
                    .iter()
                    .map(|(_, loc)| (loc.offset, loc.nbytes, loc.compressed))
                    .collect();
                Ok(Opened {
                    format: "amber",
                    stream,
                    kind: StreamKind::Amber {
                        buffers: buffers.len() as u64,
                    },
                    arrays: Box::new(AmberArrays {
                        file: c.bytes(),
                        buffers,
                    }),
                })
            }
            Backing::Plain(map) => Ok(plain(map.as_ref())),
            Backing::Decoded(data) => Ok(plain(data)),
        }
    }
}

fn plain(data: &[u8]) -> Opened<'_> {
    Opened {
        format: "pickle",
        stream: Cow::Borrowed(data),
        kind: StreamKind::Joblib,
        arrays: Box::new(InlineArrays { data }),
    }
}

/// Array entries of an amber file that are stored uncompressed, in place.
struct AmberArrays<'c> {
    file: &'c [u8],
    buffers: Vec<(u64, u64, bool)>,
}

impl ArrayBytes for AmberArrays<'_> {
    fn buffer(&self, index: u64) -> Option<&[u8]> {
        let &(offset, len, compressed) = self.buffers.get(usize::try_from(index).ok()?)?;
        if compressed {
            return None;
        }
        slice(self.file, offset, len)
    }

    fn inline(&self, _offset: u64, _len: u64) -> Option<&[u8]> {
        None
    }
}

/// joblib inline arrays: ranges of the stream itself.
struct InlineArrays<'c> {
    data: &'c [u8],
}

impl ArrayBytes for InlineArrays<'_> {
    fn buffer(&self, _index: u64) -> Option<&[u8]> {
        None
    }

    fn inline(&self, offset: u64, len: u64) -> Option<&[u8]> {
        slice(self.data, offset, len)
    }
}

fn slice(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}
