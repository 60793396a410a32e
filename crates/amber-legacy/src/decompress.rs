//! Whole-file decompression for joblib's compressors, strict and bounded.
//!
//! joblib compresses the whole stream (pickle opcodes and array bytes
//! together) with zlib, gzip, bz2, lzma, xz or lz4, or, before 0.10, wraps
//! it in its own `ZF` container. Every decoder here refuses a stream that
//! ends before its end-of-stream marker (joblib's zlib reader silently loads
//! some truncated files), reports damage as a typed error, and stops at
//! [`crate::Limits::max_decompressed`] output bytes so a bomb cannot exhaust
//! memory.

use std::io::Read;

use flate2::{Decompress, FlushDecompress, Status};

use crate::error::{LegacyError, Result};

/// A whole-file compressor joblib writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// zlib (joblib's default, `compress=True` / `3`).
    Zlib,
    /// gzip.
    Gzip,
    /// bzip2.
    Bz2,
    /// lzma "alone" (`.lzma`).
    Lzma,
    /// xz.
    Xz,
    /// LZ4 frame.
    Lz4,
}

impl Codec {
    /// joblib's name for it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Zlib => "zlib",
            Self::Gzip => "gzip",
            Self::Bz2 => "bz2",
            Self::Lzma => "lzma",
            Self::Xz => "xz",
            Self::Lz4 => "lz4",
        }
    }

    /// The codec whose magic bytes `data` starts with (joblib's detection
    /// rules; the `ZF` container is recognised separately).
    #[must_use]
    pub fn sniff(data: &[u8]) -> Option<Self> {
        use amber_format::sniff::Kind;
        match amber_format::sniff::kind(data) {
            Kind::Zlib => Some(Self::Zlib),
            Kind::Gzip => Some(Self::Gzip),
            Kind::Bzip2 => Some(Self::Bz2),
            Kind::Lzma => Some(Self::Lzma),
            Kind::Xz => Some(Self::Xz),
            Kind::Lz4 => Some(Self::Lz4),
            _ => None,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Output is grown in steps of at most this size (never all at once from a
/// size field the file claims).
const GROW: usize = 4 << 20;

/// Memory the lzma/xz decoders may use for their dictionary (KiB): 1.5 GiB,
/// far above the 64 MiB of xz's `-9`.
const LZMA_MEM_KIB: u32 = 1536 * 1024;

/// Decompresses all of `data` with `codec`, producing at most `max` bytes.
///
/// # Errors
/// [`LegacyError::Truncated`], [`LegacyError::Corrupt`] or [`LegacyError::TooLarge`].
pub fn decompress(codec: Codec, data: &[u8], max: u64) -> Result<Vec<u8>> {
    match codec {
        Codec::Zlib => inflate(Decompress::new(true), codec, data, max, None),
        Codec::Gzip => inflate(Decompress::new_gzip(15), codec, data, max, None),
        Codec::Bz2 => read_all(codec, data, max, bzip2::read::BzDecoder::new(data)),
        Codec::Xz => read_all(
            codec,
            data,
            max,
            lzma_rust2::XzReader::new_mem_limit(data, false, LZMA_MEM_KIB),
        ),
        Codec::Lzma => {
            let reader = lzma_rust2::LzmaReader::new_mem_limit(data, LZMA_MEM_KIB, None)
                .map_err(|e| stream_error(codec, 0, data.len(), &e))?;
            read_all(codec, data, max, reader)
        }
        Codec::Lz4 => {
            lz4_frame_extent(data)?;
            read_all(codec, data, max, lz4_flex::frame::FrameDecoder::new(data))
        }
    }
}

/// Walks the block structure of the LZ4 frames filling `data` (header,
/// blocks, end mark, optional checksums) without decoding: the decoder
/// accepts a frame cut inside its end mark, so the end is checked here.
fn lz4_frame_extent(data: &[u8]) -> Result<()> {
    let codec = Codec::Lz4;
    let u32_at = |at: usize| -> Option<u32> {
        let b = data.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([
            *b.first()?,
            *b.get(1)?,
            *b.get(2)?,
            *b.get(3)?,
        ]))
    };
    let cut = |at: usize| truncated(codec, to_u64(at), data.len());
    let mut pos = 0usize;
    while pos < data.len() {
        if u32_at(pos) != Some(0x184D_2204) {
            return Err(corrupt(codec, to_u64(pos), "bad frame magic".to_owned()));
        }
        let flg = *data.get(pos + 4).ok_or_else(|| cut(pos))?;
        let mut header = 7usize;
        if flg & 0x08 != 0 {
            header += 8;
        }
        if flg & 0x01 != 0 {
            header += 4;
        }
        pos = pos.checked_add(header).ok_or_else(|| cut(pos))?;
        let block_checksum = if flg & 0x10 != 0 { 4 } else { 0 };
        loop {
            let size = u32_at(pos).ok_or_else(|| cut(pos))?;
            pos += 4;
            if size == 0 {
                break;
            }
            let len = usize::try_from(size & 0x7fff_ffff).unwrap_or(usize::MAX);
            pos = pos
                .checked_add(len)
                .and_then(|p| p.checked_add(block_checksum))
                .filter(|&p| p <= data.len())
                .ok_or_else(|| cut(pos))?;
        }
        if flg & 0x04 != 0 {
            pos += 4;
        }
        if pos > data.len() {
            return Err(cut(data.len()));
        }
    }
    Ok(())
}

/// Inflates one zlib or gzip stream that must fill `data` exactly. With
/// `expected`, the output must be exactly that long.
fn inflate(
    mut z: Decompress,
    codec: Codec,
    data: &[u8],
    max: u64,
    expected: Option<u64>,
) -> Result<Vec<u8>> {
    let max_len = usize::try_from(max).unwrap_or(usize::MAX);
    let first = expected
        .and_then(|e| usize::try_from(e).ok())
        .unwrap_or(data.len().saturating_mul(4))
        .min(max_len)
        .min(GROW.saturating_mul(16));
    let mut out: Vec<u8> = Vec::with_capacity(first.max(64));
    loop {
        let consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let input = data.get(consumed..).unwrap_or_default();
        if out.len() == out.capacity() {
            if out.len() >= max_len {
                // One more byte would be over the limit, unless the stream ends here.
                let mut probe = [0u8; 1];
                let before = z.total_out();
                let status = z
                    .decompress(input, &mut probe, FlushDecompress::None)
                    .map_err(|e| corrupt(codec, z.total_in(), e.to_string()))?;
                if z.total_out() != before {
                    return Err(LegacyError::TooLarge {
                        limit: max,
                        entry: None,
                    });
                }
                if status == Status::StreamEnd {
                    return finish(codec, &z, data, out, expected);
                }
                if z.total_in() == to_u64(consumed) {
                    return Err(truncated(codec, z.total_in(), data.len()));
                }
                continue;
            }
            let step = out.capacity().clamp(64, GROW).min(max_len - out.len());
            out.reserve_exact(step);
        }
        let before = (z.total_in(), z.total_out());
        let status = z
            .decompress_vec(input, &mut out, FlushDecompress::None)
            .map_err(|e| corrupt(codec, z.total_in(), e.to_string()))?;
        if status == Status::StreamEnd {
            return finish(codec, &z, data, out, expected);
        }
        if (z.total_in(), z.total_out()) == before && out.len() < out.capacity() {
            // No progress with room to spare: the input ran out mid-stream.
            return Err(truncated(codec, z.total_in(), data.len()));
        }
    }
}

fn finish(
    codec: Codec,
    z: &Decompress,
    data: &[u8],
    out: Vec<u8>,
    expected: Option<u64>,
) -> Result<Vec<u8>> {
    if z.total_in() != to_u64(data.len()) {
        return Err(corrupt(
            codec,
            z.total_in(),
            format!(
                "{} bytes follow the end of the stream",
                to_u64(data.len()).saturating_sub(z.total_in())
            ),
        ));
    }
    if let Some(expected) = expected
        && to_u64(out.len()) != expected
    {
        return Err(LegacyError::ZfHeader {
            detail: format!(
                "header declares {expected} bytes, the stream holds {}",
                out.len()
            ),
            entry: None,
        });
    }
    Ok(out)
}

/// Reads a decoder to its end, at most `max` bytes.
fn read_all(codec: Codec, data: &[u8], max: u64, reader: impl Read) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(3).min(GROW.saturating_mul(16)));
    let mut limited = reader.take(max.saturating_add(1));
    limited
        .read_to_end(&mut out)
        .map_err(|e| stream_error(codec, 0, data.len(), &e))?;
    if to_u64(out.len()) > max {
        return Err(LegacyError::TooLarge {
            limit: max,
            entry: None,
        });
    }
    Ok(out)
}

fn stream_error(codec: Codec, offset: u64, len: usize, e: &dyn std::fmt::Display) -> LegacyError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("eof")
        || lower.contains("end of file")
        || lower.contains("unexpected end")
        || lower.contains("truncated")
        || lower.contains("not finished")
    {
        truncated(codec, to_u64(len), len)
    } else {
        corrupt(codec, offset, text)
    }
}

fn truncated(codec: Codec, consumed: u64, len: usize) -> LegacyError {
    LegacyError::Truncated {
        codec,
        consumed,
        len: to_u64(len),
        entry: None,
    }
}

fn corrupt(codec: Codec, offset: u64, detail: String) -> LegacyError {
    LegacyError::Corrupt {
        codec,
        offset,
        detail,
        entry: None,
    }
}

fn to_u64(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Length of a `ZF` header: `ZF`, then `len(hex(2**64))` = 19 characters.
const ZF_HEADER: usize = 21;

/// Reads joblib's legacy `ZF` container: `ZF`, the uncompressed length as
/// `0x…` hex left-justified in 19 characters (Python 2 joblib <= 0.8.4 wrote
/// one more space), then one zlib stream of exactly that length.
///
/// # Errors
/// [`LegacyError::ZfHeader`] and the zlib errors of [`decompress`].
pub fn read_zfile(data: &[u8], max: u64) -> Result<Vec<u8>> {
    let bad = |detail: String| LegacyError::ZfHeader {
        detail,
        entry: None,
    };
    let header = data
        .get(..ZF_HEADER)
        .ok_or_else(|| bad(format!("{} bytes, shorter than the header", data.len())))?;
    let field = header.get(2..).unwrap_or_default();
    let text = std::str::from_utf8(field)
        .map_err(|_| bad("length field is not text".to_owned()))?
        .trim_end_matches(' ');
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| bad(format!("length field {text:?} is not `0x…` hex")))?;
    let length = u64::from_str_radix(digits, 16)
        .map_err(|_| bad(format!("length field {text:?} is not `0x…` hex")))?;
    if length > max {
        return Err(LegacyError::TooLarge {
            limit: max,
            entry: None,
        });
    }
    let start = if data.get(ZF_HEADER) == Some(&b' ') {
        ZF_HEADER + 1
    } else {
        ZF_HEADER
    };
    let body = data.get(start..).unwrap_or_default();
    inflate(
        Decompress::new(true),
        Codec::Zlib,
        body,
        length,
        Some(length),
    )
    .map_err(|e| match e {
        LegacyError::TooLarge { .. } => bad(format!(
            "header declares {length} bytes, the stream holds more"
        )),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(3));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn zlib_round_trip_and_limits() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let z = zlib(&data);
        assert_eq!(decompress(Codec::Zlib, &z, 1 << 30).unwrap(), data);
        assert_eq!(decompress(Codec::Zlib, &z, 200_000).unwrap(), data);
        let e = decompress(Codec::Zlib, &z, 199_999).unwrap_err();
        assert_eq!(e.code(), "legacy.too_large");
        for cut in [1, 4, z.len() / 2, z.len() - 1] {
            let e = decompress(Codec::Zlib, &z[..z.len() - cut], 1 << 30).unwrap_err();
            assert_eq!(e.code(), "legacy.truncated", "cut {cut}: {e}");
        }
        let mut extra = z.clone();
        extra.push(0);
        assert_eq!(
            decompress(Codec::Zlib, &extra, 1 << 30).unwrap_err().code(),
            "legacy.corrupt"
        );
        let mut bad = z;
        let n = bad.len();
        bad[n - 2] ^= 0x55;
        assert_eq!(
            decompress(Codec::Zlib, &bad, 1 << 30).unwrap_err().code(),
            "legacy.corrupt"
        );
    }

    #[test]
    fn zfile() {
        let data = b"hello hello hello hello".repeat(10);
        let mut f = format!("ZF{:<19}", format!("{:#x}", data.len())).into_bytes();
        f.extend(zlib(&data));
        assert_eq!(read_zfile(&f, 1 << 20).unwrap(), data);
        // Python 2's wider header.
        let mut g = format!("ZF{:<20}", format!("{:#x}", data.len())).into_bytes();
        g.extend(zlib(&data));
        assert_eq!(read_zfile(&g, 1 << 20).unwrap(), data);
        let mut h = format!("ZF{:<19}", format!("{:#x}", data.len() + 1)).into_bytes();
        h.extend(zlib(&data));
        assert_eq!(
            read_zfile(&h, 1 << 20).unwrap_err().code(),
            "legacy.zf_header"
        );
        assert_eq!(
            read_zfile(b"ZF0x", 1 << 20).unwrap_err().code(),
            "legacy.zf_header"
        );
        assert_eq!(read_zfile(&f, 10).unwrap_err().code(), "legacy.too_large");
    }
}
