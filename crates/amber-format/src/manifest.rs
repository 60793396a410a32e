//! The typed view of `manifest.json`: the part of it a reader must understand.
//!
//! The manifest is the single source of truth about what an amber file holds:
//! its format version, each entry with its kind, size and CRC-32, and for array
//! entries the dtype, shape and order. Everything else in it (user metadata, the
//! environment that wrote it) is kept as free JSON in [`Manifest::extra`], so a
//! newer writer can add fields without breaking an older reader, while a change
//! that readers must understand bumps [`FORMAT_VERSION`] (rule F-30).

use serde::{Deserialize, Serialize};

/// The value of the manifest's `format` field.
pub const FORMAT_NAME: &str = "amber";
/// The format version this crate writes and the highest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest entry; always the last entry of the archive.
pub const MANIFEST_ENTRY: &str = "manifest.json";
/// Name of the first entry, whose content identifies the file type.
pub const MIMETYPE_ENTRY: &str = "mimetype";
/// Content of the first entry.
pub const MIMETYPE: &[u8] = b"application/x-amber";
/// Largest manifest a reader parses.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// The decoded manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Always `"amber"`.
    pub format: String,
    /// Format version; readers refuse versions above [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The entries between `mimetype` and `manifest.json`, in file order.
    pub entries: Vec<EntryInfo>,
    /// Every other field (`created`, `producer`, `environment`, `metadata`, …).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Prefix of the manifest's `content_hash` value (F-16).
pub const CONTENT_HASH_PREFIX: &str = "blake3:";

/// Formats a BLAKE3 digest as a manifest `content_hash` value.
#[must_use]
pub fn content_hash_text(hash: &blake3::Hash) -> String {
    format!("{CONTENT_HASH_PREFIX}{}", hash.to_hex())
}

impl Manifest {
    /// The recorded `content_hash` (F-16), absent in files written before it existed.
    #[must_use]
    pub fn content_hash(&self) -> Option<&str> {
        self.extra.get("content_hash").and_then(|v| v.as_str())
    }
}

/// One entry of the archive as the manifest describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum EntryInfo {
    /// The pickle stream (protocol 5), with arrays replaced by out-of-band buffers.
    Pickle {
        /// Entry name.
        name: String,
        /// Size in bytes.
        size: u64,
        /// CRC-32 of the entry's bytes.
        crc32: u32,
        /// Pickle protocol of the stream.
        protocol: u8,
        /// Number of out-of-band buffers the stream takes (`NEXT_BUFFER` opcodes),
        /// which are the array entries in manifest order.
        buffers: u64,
        /// Compression of the entry (absent: stored as is).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        codec: Option<String>,
        /// Length of the stream once decompressed (with `codec`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_size: Option<u64>,
    },
    /// A NumPy array in `.npy` format.
    Array(ArrayInfo),
}

/// An array entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArrayInfo {
    /// Entry name.
    pub name: String,
    /// Size in bytes of the whole entry (`.npy` header and data).
    pub size: u64,
    /// CRC-32 of the entry's bytes.
    pub crc32: u32,
    /// Offset of the array data within the entry (the `.npy` header length).
    pub data_offset: u64,
    /// Bytes of array data.
    pub nbytes: u64,
    /// NumPy dtype descriptor as in the `.npy` header (`"<f8"`, or a list of fields).
    pub dtype: serde_json::Value,
    /// Shape.
    pub shape: Vec<u64>,
    /// `"C"` or `"F"`: the memory order of the data.
    pub order: Order,
    /// Compression of the data after the header (absent: stored as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// Filter applied before compression (`"none"`, `"shuffle"` or `"bitshuffle"`), with `codec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl ArrayInfo {
    /// Whether the data is a chunked compressed payload rather than raw bytes.
    #[must_use]
    pub fn is_compressed(&self) -> bool {
        self.codec.as_deref().is_some_and(|c| c != "none")
    }
}

/// Memory order of array data.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Order {
    /// Row-major.
    C,
    /// Column-major.
    F,
}

impl EntryInfo {
    /// The entry name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Pickle { name, .. } | Self::Array(ArrayInfo { name, .. }) => name,
        }
    }

    /// The recorded size.
    #[must_use]
    pub fn size(&self) -> u64 {
        match self {
            Self::Pickle { size, .. } | Self::Array(ArrayInfo { size, .. }) => *size,
        }
    }

    /// The recorded CRC-32.
    #[must_use]
    pub fn crc32(&self) -> u32 {
        match self {
            Self::Pickle { crc32, .. } | Self::Array(ArrayInfo { crc32, .. }) => *crc32,
        }
    }

    /// `"pickle"` or `"array"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Pickle { .. } => "pickle",
            Self::Array(_) => "array",
        }
    }
}

impl ArrayInfo {
    /// The dtype as a short human string: the descriptor itself for simple
    /// dtypes, `struct[n fields]` for structured ones.
    #[must_use]
    pub fn dtype_label(&self) -> String {
        match &self.dtype {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(fields) => format!("struct[{} fields]", fields.len()),
            other => other.to_string(),
        }
    }
}
