//! Reading the preamble of `.npy` entries.
//!
//! amber never builds arrays from `.npy` headers (the pickle stream decides an
//! array's dtype and shape when loading), but an array entry must stay a valid
//! `.npy` file that `numpy.load` reads the same way. So the reader checks that
//! the header is well formed, that the data starts where the manifest says, and
//! that shape, order and (simple) dtype agree with the manifest.

use crate::error::{FormatError, Result};
use crate::manifest::{ArrayInfo, Order};

/// The magic string that opens every `.npy` file.
pub const MAGIC: &[u8] = b"\x93NUMPY";

/// What the preamble and header dictionary of an `.npy` entry say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Format version `(major, minor)`.
    pub version: (u8, u8),
    /// Offset of the data from the start of the entry.
    pub data_offset: u64,
    /// The `descr` value when it is a plain string.
    pub descr: Option<String>,
    /// The `fortran_order` value.
    pub fortran_order: bool,
    /// The `shape` value.
    pub shape: Vec<u64>,
}

/// Parses the preamble and header dictionary at the start of `entry`.
pub fn parse_header(entry: &[u8], name: &str) -> Result<NpyHeader> {
    let bad = |what: &str| FormatError::Mismatch {
        entry: name.to_owned(),
        what: format!("bad `.npy` header: {what}"),
    };
    if entry.get(..MAGIC.len()) != Some(MAGIC) {
        return Err(bad("missing `\\x93NUMPY` magic"));
    }
    let major = entry.get(6).copied().ok_or_else(|| bad("truncated"))?;
    let minor = entry.get(7).copied().ok_or_else(|| bad("truncated"))?;
    let (len_size, header_len) = match major {
        1 => {
            let b = entry.get(8..10).ok_or_else(|| bad("truncated"))?;
            (
                2u64,
                u64::from(u16::from_le_bytes([
                    b.first().copied().unwrap_or(0),
                    b.get(1).copied().unwrap_or(0),
                ])),
            )
        }
        2 | 3 => {
            let b = entry.get(8..12).ok_or_else(|| bad("truncated"))?;
            let mut a = [0u8; 4];
            a.copy_from_slice(b);
            (4u64, u64::from(u32::from_le_bytes(a)))
        }
        _ => return Err(bad(&format!("unknown version {major}.{minor}"))),
    };
    let start = 8 + len_size;
    let data_offset = start + header_len;
    let text = entry
        .get(start as usize..data_offset as usize)
        .ok_or_else(|| bad("header runs past the entry"))?;
    // Versions 1 and 2 are Latin-1, version 3 is UTF-8 (NumPy's rule).
    let text: String = if major == 3 {
        std::str::from_utf8(text)
            .map_err(|_| bad("header is not UTF-8"))?
            .to_owned()
    } else {
        text.iter().map(|&b| char::from(b)).collect()
    };
    let text = text.trim_end_matches([' ', '\n', '\x00']);
    let fortran_order = match value_after(text, "'fortran_order':") {
        Some(v) if v.starts_with("True") => true,
        Some(v) if v.starts_with("False") => false,
        _ => return Err(bad("no `fortran_order`")),
    };
    let shape_text = value_after(text, "'shape':").ok_or_else(|| bad("no `shape`"))?;
    let shape = parse_shape(shape_text).ok_or_else(|| bad("unreadable `shape`"))?;
    let descr = value_after(text, "'descr':").and_then(|v| {
        let v = v.strip_prefix('\'')?;
        Some(v.get(..v.find('\'')?)?.to_owned())
    });
    Ok(NpyHeader {
        version: (major, minor),
        data_offset,
        descr,
        fortran_order,
        shape,
    })
}

/// Checks an array entry's header against its manifest record.
pub fn check_against(header: &NpyHeader, info: &ArrayInfo) -> Result<()> {
    let mismatch = |what: String| FormatError::Mismatch {
        entry: info.name.clone(),
        what,
    };
    if header.data_offset != info.data_offset {
        return Err(mismatch(format!(
            "`.npy` data starts at {}, the manifest says {}",
            header.data_offset, info.data_offset
        )));
    }
    if header.shape != info.shape {
        return Err(mismatch(format!(
            "`.npy` shape is {:?}, the manifest says {:?}",
            header.shape, info.shape
        )));
    }
    if header.fortran_order != (info.order == Order::F) {
        return Err(mismatch("`.npy` order differs from the manifest".into()));
    }
    if let (Some(descr), serde_json::Value::String(expected)) = (&header.descr, &info.dtype)
        && descr != expected
    {
        return Err(mismatch(format!(
            "`.npy` dtype is `{descr}`, the manifest says `{expected}`"
        )));
    }
    Ok(())
}

fn value_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)?;
    Some(text.get(at + key.len()..)?.trim_start())
}

/// Parses a Python tuple literal of non-negative integers such as `(3, 4)`, `(5,)` or `()`.
fn parse_shape(text: &str) -> Option<Vec<u64>> {
    let inner = text.strip_prefix('(')?;
    let inner = inner.get(..inner.find(')')?)?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse().ok())
        .collect()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn npy(dict: &str) -> Vec<u8> {
        let mut header = dict.to_owned();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out
    }

    #[test]
    fn parses_numpy_style_headers() {
        let h = parse_header(
            &npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }"),
            "a",
        )
        .unwrap();
        assert_eq!(h.data_offset, 128);
        assert_eq!(h.shape, vec![3, 4]);
        assert_eq!(h.descr.as_deref(), Some("<f8"));
        assert!(!h.fortran_order);
        let h = parse_header(
            &npy("{'descr': [('a', '<i4')], 'fortran_order': True, 'shape': (), }"),
            "a",
        )
        .unwrap();
        assert_eq!(h.shape, Vec::<u64>::new());
        assert!(h.descr.is_none());
        assert!(h.fortran_order);
        let h = parse_header(
            &npy("{'descr': '|b1', 'fortran_order': False, 'shape': (7,), }"),
            "a",
        )
        .unwrap();
        assert_eq!(h.shape, vec![7]);
    }

    #[test]
    fn refuses_garbage() {
        for bad in [&b""[..], b"\x93NUMPY", b"\x93NUMPY\x09\x00", b"NOTNPY...."] {
            assert!(parse_header(bad, "a").is_err());
        }
        let mut truncated = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }");
        truncated.truncate(40);
        assert!(parse_header(&truncated, "a").is_err());
    }
}
