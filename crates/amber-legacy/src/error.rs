//! The one error type of this crate, with stable `code()` strings.

use std::path::PathBuf;

use crate::Codec;

/// Why a pickle or joblib file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// The file could not be opened or read.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done (`open`, `read`, `map`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The content is neither a pickle nor a joblib file.
    #[error("not a pickle or joblib file: {what}")]
    Unrecognised {
        /// What the bytes look like.
        what: String,
    },
    /// The content is an amber file (a zip archive), which the amber reader opens.
    #[error("this is an amber file (a zip archive), not a pickle or joblib file")]
    AmberFile,
    /// A compressed stream ends before its end-of-stream marker.
    #[error("{codec} stream is truncated: it ends after {consumed} of {len} bytes without its end-of-stream marker{}", entry_suffix(.entry.as_deref()))]
    Truncated {
        /// The compressor.
        codec: Codec,
        /// Compressed bytes consumed.
        consumed: u64,
        /// Compressed bytes available.
        len: u64,
        /// The companion file, if it was one.
        entry: Option<String>,
    },
    /// A compressed stream is damaged (bad data, checksum, trailer or extra bytes).
    #[error("{codec} stream is corrupt near compressed offset {offset}: {detail}{}", entry_suffix(.entry.as_deref()))]
    Corrupt {
        /// The compressor.
        codec: Codec,
        /// Compressed bytes consumed when the damage was found.
        offset: u64,
        /// What the decoder reported.
        detail: String,
        /// The companion file, if it was one.
        entry: Option<String>,
    },
    /// Decompressed data would exceed [`crate::Limits::max_decompressed`].
    #[error("decompressed data exceeds the limit of {limit} bytes{}", entry_suffix(.entry.as_deref()))]
    TooLarge {
        /// The bound.
        limit: u64,
        /// The companion file, if it was one.
        entry: Option<String>,
    },
    /// A legacy `ZF` header is malformed or its length disagrees with the data.
    #[error("bad joblib `ZF` container{}: {detail}", entry_suffix(.entry.as_deref()))]
    ZfHeader {
        /// What is wrong.
        detail: String,
        /// The companion file, if it was one.
        entry: Option<String>,
    },
    /// The pickle stream itself is malformed.
    #[error("{source}")]
    Pickle {
        /// The parser's error.
        #[from]
        source: amber_pickle::PickleError,
    },
    /// An array's declared size does not match the bytes that follow it.
    #[error(
        "array {index} at offset {offset} declares {declared} bytes of data but only {available} remain"
    )]
    ArraySize {
        /// Array number, in stream order.
        index: usize,
        /// Where its data would start.
        offset: u64,
        /// `prod(shape) * itemsize`.
        declared: u64,
        /// Bytes left in the stream.
        available: u64,
    },
    /// A companion file name is not a bare file name in the same directory.
    #[error("refused companion file name {name:?}: {reason}")]
    CompanionName {
        /// The name as stored in the pickle.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A companion file named by the pickle cannot be opened.
    #[error("companion file {name:?} cannot be opened")]
    CompanionMissing {
        /// The name as stored in the pickle.
        name: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The pickle needs companion files but was not opened from a path.
    #[error(
        "this pre-0.10 joblib pickle keeps its arrays in companion files ({name:?}); open it by path"
    )]
    CompanionNeedsDirectory {
        /// The first companion named.
        name: String,
    },
    /// A companion file's content is malformed.
    #[error("companion file {name:?}: {detail}")]
    Companion {
        /// The companion file.
        name: String,
        /// What is wrong.
        detail: String,
    },
}

fn entry_suffix(entry: Option<&str>) -> String {
    entry.map(|e| format!(" in {e:?}")).unwrap_or_default()
}

impl LegacyError {
    /// A stable identifier, e.g. `legacy.truncated`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "legacy.io",
            Self::Unrecognised { .. } => "legacy.unrecognised",
            Self::AmberFile => "legacy.amber_file",
            Self::Truncated { .. } => "legacy.truncated",
            Self::Corrupt { .. } => "legacy.corrupt",
            Self::TooLarge { .. } => "legacy.too_large",
            Self::ZfHeader { .. } => "legacy.zf_header",
            Self::Pickle { .. } => "legacy.pickle",
            Self::ArraySize { .. } => "legacy.array_size",
            Self::CompanionName { .. } => "legacy.companion_name",
            Self::CompanionMissing { .. } => "legacy.companion_missing",
            Self::CompanionNeedsDirectory { .. } => "legacy.companion_needs_directory",
            Self::Companion { .. } => "legacy.companion",
        }
    }

    /// The companion file the error is about, if any.
    #[must_use]
    pub fn entry(&self) -> Option<&str> {
        match self {
            Self::Truncated { entry, .. }
            | Self::Corrupt { entry, .. }
            | Self::TooLarge { entry, .. }
            | Self::ZfHeader { entry, .. } => entry.as_deref(),
            Self::CompanionName { name, .. }
            | Self::CompanionMissing { name, .. }
            | Self::CompanionNeedsDirectory { name }
            | Self::Companion { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The byte offset the error is about, if any.
    #[must_use]
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Truncated { consumed, .. } => Some(*consumed),
            Self::Corrupt { offset, .. } | Self::ArraySize { offset, .. } => Some(*offset),
            Self::Pickle { source } => Some(source.offset()),
            _ => None,
        }
    }

    pub(crate) fn in_entry(mut self, name: &str) -> Self {
        match &mut self {
            Self::Truncated { entry, .. }
            | Self::Corrupt { entry, .. }
            | Self::TooLarge { entry, .. }
            | Self::ZfHeader { entry, .. } => *entry = Some(name.to_owned()),
            _ => {}
        }
        self
    }
}

/// Shorthand.
pub type Result<T, E = LegacyError> = std::result::Result<T, E>;
