//! Naming what a byte string is from its first bytes.
//!
//! Used for error messages ("not an amber file: a gzip stream") and, later, to
//! route plain pickles and joblib files to their readers. Detection is by
//! content only, never by file extension.

/// What kind of content a file starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A zip archive (amber files are zip archives).
    Zip,
    /// A pickle stream with a PROTO opcode (protocol 2 or later).
    Pickle(u8),
    /// What looks like a protocol 0 or 1 pickle: an opcode byte first, `.` (STOP) last.
    OldPickle,
    /// zlib data (joblib's default compressor).
    Zlib,
    /// gzip data.
    Gzip,
    /// bzip2 data.
    Bzip2,
    /// xz data.
    Xz,
    /// lzma "alone" data.
    Lzma,
    /// An LZ4 frame.
    Lz4,
    /// A zstd frame.
    Zstd,
    /// joblib's legacy `ZF` container.
    JoblibZf,
    /// A `.npy` file.
    Npy,
    /// Nothing recognised.
    Unknown,
}

/// Classifies `data` by its magic bytes.
#[must_use]
pub fn kind(data: &[u8]) -> Kind {
    let starts = |magic: &[u8]| data.starts_with(magic);
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        Kind::Zip
    } else if let [0x80, proto @ 0..=5, ..] = data {
        Kind::Pickle(*proto)
    } else if starts(b"ZF") {
        Kind::JoblibZf
    } else if starts(b"\x1f\x8b") {
        Kind::Gzip
    } else if starts(b"BZh") {
        Kind::Bzip2
    } else if starts(b"\xfd7zXZ") {
        Kind::Xz
    } else if starts(b"\x5d\x00\x00") {
        Kind::Lzma
    } else if starts(b"\x04\x22\x4d\x18") {
        Kind::Lz4
    } else if starts(b"\x28\xb5\x2f\xfd") {
        Kind::Zstd
    } else if starts(b"\x93NUMPY") {
        Kind::Npy
    } else if data.first() == Some(&0x78) {
        Kind::Zlib
    } else if data.last() == Some(&b'.')
        && data
            .first()
            .is_some_and(|b| b"(]})NIJKLFSVXcGTUhqjrpgdelstu".contains(b))
    {
        Kind::OldPickle
    } else {
        Kind::Unknown
    }
}

/// A short human description of what `data` looks like.
#[must_use]
pub fn describe(data: &[u8]) -> String {
    match kind(data) {
        Kind::Zip => "a zip archive".into(),
        Kind::Pickle(p) => format!("a pickle stream (protocol {p}) or an uncompressed joblib file"),
        Kind::OldPickle => "a pickle stream (protocol 0 or 1)".into(),
        Kind::Zlib => "zlib data (a compressed joblib file?)".into(),
        Kind::Gzip => "gzip data".into(),
        Kind::Bzip2 => "bzip2 data".into(),
        Kind::Xz => "xz data".into(),
        Kind::Lzma => "lzma data".into(),
        Kind::Lz4 => "an LZ4 frame".into(),
        Kind::Zstd => "a zstd frame".into(),
        Kind::JoblibZf => "a legacy joblib `ZF` file".into(),
        Kind::Npy => "a `.npy` file".into(),
        Kind::Unknown if data.is_empty() => "the file is empty".into(),
        Kind::Unknown => {
            let head: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!(
                "unrecognised content starting with bytes {}",
                head.join(" ")
            )
        }
    }
}
