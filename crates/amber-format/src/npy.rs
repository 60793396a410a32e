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
    // Versions 1 and 2 are Latin-1, version 3 is UTF-8 (NumPy's rule); ASCII
    // (what NumPy writes) reads the same either way, in place.
    let text: std::borrow::Cow<'_, str> = match std::str::from_utf8(text) {
        Ok(t) if major == 3 || t.is_ascii() => t.into(),
        Err(_) if major == 3 => return Err(bad("header is not UTF-8")),
        _ => text
            .iter()
            .map(|&b| char::from(b))
            .collect::<String>()
            .into(),
    };
    if minor != 0 {
        return Err(bad(&format!("unknown version {major}.{minor}")));
    }
    // NumPy pads with spaces and ends the header with a newline.
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| bad("header does not end with a newline"))?
        .trim_end_matches(' ');
    let inner = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| bad("header is not a dict literal"))?;
    // The exact layout NumPy and amber write: sorted keys, `, ` separators and a
    // trailing `, `. Anything else is damage (numpy.load would refuse it too).
    let rest = inner
        .strip_prefix("'descr': ")
        .ok_or_else(|| bad("header must start with `'descr': `"))?;
    let (descr_text, rest) = split_literal(rest).ok_or_else(|| bad("unreadable `descr`"))?;
    let descr = match descr_text
        .strip_prefix('\'')
        .and_then(|d| d.strip_suffix('\''))
    {
        Some(d) => Some(d.to_owned()),
        None if descr_text.starts_with('[') => None,
        None => return Err(bad("`descr` is neither a string nor a list")),
    };
    let rest = rest
        .strip_prefix(", 'fortran_order': ")
        .ok_or_else(|| bad("expected `, 'fortran_order': ` after `descr`"))?;
    let (fortran_order, rest) = if let Some(r) = rest.strip_prefix("True") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix("False") {
        (false, r)
    } else {
        return Err(bad("`fortran_order` is not a bool"));
    };
    let rest = rest
        .strip_prefix(", 'shape': ")
        .ok_or_else(|| bad("expected `, 'shape': ` after `fortran_order`"))?;
    let close = rest.find(')').ok_or_else(|| bad("unterminated `shape`"))?;
    let (shape_text, rest) = rest.split_at(close + 1);
    let shape = parse_shape(shape_text).ok_or_else(|| bad("unreadable `shape`"))?;
    if !matches!(rest, "" | ", " | ",") {
        return Err(bad("unexpected text after `shape`"));
    }
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

/// Splits a Python literal (a quoted string without escapes, or a bracketed
/// list that may contain such strings) off the front of `text`.
fn split_literal(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('\'') {
        let end = rest.find('\'')? + 2;
        return Some(text.split_at(end));
    }
    if !text.starts_with('[') {
        return None;
    }
    let mut depth = 0usize;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '[' | '(' if !quoted => depth += 1,
            ']' | ')' if !quoted => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(text.split_at(i + 1));
                }
            }
            _ => {}
        }
    }
    None
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
    #[expect(clippy::indexing_slicing, reason = "tests")]
    fn text_is_latin_1_before_version_3_and_utf_8_in_it() {
        // `é` as one Latin-1 byte, and as the two bytes of its UTF-8.
        for (major, text, descr) in [
            (1, &b"'\xe9'"[..], Some("\u{e9}")),
            (1, b"'\xc3\xa9'", Some("\u{c3}\u{a9}")),
            (3, b"'\xc3\xa9'", Some("\u{e9}")),
            (3, b"'\xe9'", None),
        ] {
            let mut entry = npy("{'descr': 'DESCR', 'fortran_order': False, 'shape': (3,), }");
            entry[6] = major;
            let at = entry.windows(7).position(|w| w == b"'DESCR'").unwrap();
            entry.splice(at..at + 7, text.iter().copied());
            // Version 3 has a 4-byte header length: rewrite the preamble.
            let header = entry.split_off(10);
            let mut fixed = entry[..8].to_vec();
            if major == 3 {
                fixed.extend_from_slice(&(header.len() as u32).to_le_bytes());
            } else {
                fixed.extend_from_slice(&(header.len() as u16).to_le_bytes());
            }
            fixed.extend_from_slice(&header);
            let parsed = parse_header(&fixed, "a");
            match descr {
                Some(d) => assert_eq!(parsed.unwrap().descr.as_deref(), Some(d)),
                None => assert!(parsed.unwrap_err().to_string().contains("not UTF-8")),
            }
        }
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
