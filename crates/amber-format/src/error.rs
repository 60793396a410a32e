//! The one error type of this crate.
//!
//! Every variant says *what* is wrong and *where* (an entry name, a byte
//! offset, a path), carries structured fields rather than pre-formatted
//! strings, and has a stable [`FormatError::code`] that bindings and tests
//! match on. Messages follow `docs/STYLE.md`: lowercase fragments, no
//! trailing period, literals in backticks, never repeating the source error.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing an amber container.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The bytes are not an amber file at all (not a zip, or a zip of something else).
    #[error("not an amber file: {reason}")]
    NotAmber {
        /// What was found instead.
        reason: String,
    },

    /// The file ends before a structure it announces.
    #[error(
        "truncated file: {what} at byte {offset:#x} needs {needed} bytes, the file has {available}"
    )]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Where that structure starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },

    /// A zip structure is malformed or breaks one of the strict layout rules.
    #[error("corrupt container: {what} at byte {offset:#x}")]
    Corrupt {
        /// What is wrong, as a fragment.
        what: String,
        /// Where it was found.
        offset: u64,
    },

    /// The manifest is missing, not JSON, or does not follow the schema.
    #[error("invalid manifest: {reason}")]
    Manifest {
        /// What is wrong.
        reason: String,
    },

    /// The manifest and the archive disagree about an entry.
    #[error("entry `{entry}` does not match the manifest: {what}")]
    Mismatch {
        /// The entry concerned.
        entry: String,
        /// What differs.
        what: String,
    },

    /// An entry's bytes do not match their recorded CRC-32.
    #[error(
        "entry `{entry}`{} is damaged: CRC-32 is {actual:#010x}, the file records {expected:#010x}",
        chunk.map(|c| format!(" (chunk {c})")).unwrap_or_default()
    )]
    Checksum {
        /// The damaged entry.
        entry: String,
        /// The damaged chunk, for compressed entries.
        chunk: Option<u64>,
        /// The checksum recorded in the archive.
        expected: u32,
        /// The checksum of the bytes found.
        actual: u32,
    },

    /// The entries' bytes do not hash to the manifest's `content_hash` (F-16),
    /// although each entry's CRC-32 matches: the content was changed and the
    /// CRCs recomputed, or the manifest was edited.
    #[error("content hash is {actual}, the manifest records {expected}")]
    ContentHash {
        /// The hash the manifest records.
        expected: String,
        /// The hash of the bytes found.
        actual: String,
    },

    /// A valid file that uses a feature or version this reader does not have.
    #[error("unsupported: {what}")]
    Unsupported {
        /// The feature or version.
        what: String,
    },

    /// A size bound that protects the reader was exceeded.
    #[error("{what} is {value}, more than the limit of {limit}")]
    Limit {
        /// What was measured.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The bound.
        limit: u64,
    },

    /// A caller error: the API was used out of order or with a bad argument.
    #[error("invalid use: {what}")]
    Usage {
        /// What was wrong with the call.
        what: String,
    },

    /// An operating-system error on a path.
    #[error("{op} `{path}`")]
    Io {
        /// What was being done (`open`, `write`, `rename`, …).
        op: &'static str,
        /// The path concerned (empty for anonymous files and memory).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl FormatError {
    /// A stable, dotted code for this error, for bindings, tests and `--json` output.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAmber { .. } => "format.not_amber",
            Self::Truncated { .. } => "format.truncated",
            Self::Corrupt { .. } => "format.corrupt",
            Self::Manifest { .. } => "format.manifest",
            Self::Mismatch { .. } => "format.mismatch",
            Self::Checksum { .. } => "format.checksum",
            Self::ContentHash { .. } => "format.content_hash",
            Self::Unsupported { .. } => "format.unsupported",
            Self::Limit { .. } => "format.limit",
            Self::Usage { .. } => "format.usage",
            Self::Io { .. } => "io",
        }
    }

    /// The entry this error is about, when there is one.
    #[must_use]
    pub fn entry(&self) -> Option<&str> {
        match self {
            Self::Mismatch { entry, .. } | Self::Checksum { entry, .. } => Some(entry),
            _ => None,
        }
    }

    /// The chunk of a compressed entry this error is about, when there is one.
    #[must_use]
    pub fn chunk(&self) -> Option<u64> {
        match self {
            Self::Checksum { chunk, .. } => *chunk,
            _ => None,
        }
    }

    /// The byte offset this error is about, when there is one.
    #[must_use]
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Truncated { offset, .. } | Self::Corrupt { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, offset: u64) -> Self {
        Self::Corrupt {
            what: what.into(),
            offset,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
