//! Decoding of the newline-terminated text arguments of protocol 0.
//!
//! This module owns the exact grammar of `INT`, `LONG`, `FLOAT`, `GET`/`PUT`
//! indices, `STRING` (Python bytes escapes) and `UNICODE`
//! (`raw-unicode-escape`). It works on one line (without its newline) and
//! knows nothing about frames or the stack.
//!
//! CPython has two unpicklers (`_pickle.c` and `pickle.py`) whose text
//! parsing differs at the edges: `strtol` with base 0 reads `010` as octal
//! and `+1` as `True`, `float()` accepts `1_0` and spaces, `escape_decode`
//! only warns on unknown escapes. Wherever the two would read the same line
//! differently, or a future CPython could, this module *refuses* the line:
//! amber must read exactly what the loader will read, and no pickler
//! writes those forms. Everything a CPython pickler writes is accepted.

use std::borrow::Cow;

/// The value of an integer argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntValue<'a> {
    /// `INT` with the protocol-0 spelling `00` or `01`.
    Bool(bool),
    /// Fits in an `i64`.
    Small(i64),
    /// Does not fit in an `i64`: minimal little-endian two's complement.
    Big(Cow<'a, [u8]>),
}

/// CPython refuses to convert decimal strings longer than this
/// (`sys.get_int_max_str_digits()` default), so this parser does too.
pub const MAX_DECIMAL_DIGITS: usize = 4300;

/// Parse the argument of `INT` (without the newline).
///
/// Accepts `00`, `01` (booleans) and `-?[1-9][0-9]*` or `0`.
///
/// # Errors
/// A reason fragment when the line is not in that grammar.
pub fn parse_int_line(line: &[u8]) -> Result<IntValue<'static>, String> {
    match line {
        b"00" => return Ok(IntValue::Bool(false)),
        b"01" => return Ok(IntValue::Bool(true)),
        _ => {}
    }
    parse_decimal(line)
}

/// Parse the argument of `LONG` (without the newline); a trailing `L` is
/// optional, as in `pickle.py` and `_pickle.c`.
///
/// # Errors
/// A reason fragment when the line is not a canonical decimal integer.
pub fn parse_long_line(line: &[u8]) -> Result<IntValue<'static>, String> {
    let digits = line.strip_suffix(b"L").unwrap_or(line);
    parse_decimal(digits)
}

/// Parse a `GET`/`PUT` index: ASCII digits only. Returns `Ok(None)` when
/// the value does not fit in a `u64` (the caller reports a limit).
///
/// # Errors
/// A reason fragment when the line is empty or holds a non-digit.
pub fn parse_index_line(line: &[u8]) -> Result<Option<u64>, String> {
    if line.is_empty() {
        return Err("empty memo index".to_owned());
    }
    let mut value: Option<u64> = Some(0);
    for &b in line {
        if !b.is_ascii_digit() {
            return Err(format!(
                "memo index `{}` is not a decimal number",
                show(line)
            ));
        }
        value = value
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(u64::from(b - b'0')));
    }
    Ok(value)
}

/// Canonical decimal: optional `-`, then `0` or a digit string without a
/// leading zero; at most [`MAX_DECIMAL_DIGITS`] digits; `-0` refused.
fn parse_decimal(line: &[u8]) -> Result<IntValue<'static>, String> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("`{}` is not a decimal integer", show(line)));
    }
    if digits.len() > 1 && digits.first() == Some(&b'0') {
        return Err(format!(
            "`{}` has a leading zero (CPython's two unpicklers disagree on it)",
            show(line)
        ));
    }
    if negative && digits == b"0" {
        return Err(
            "`-0` is read as `False` by one CPython unpickler and `0` by the other".to_owned(),
        );
    }
    if digits.len() > MAX_DECIMAL_DIGITS {
        return Err(format!(
            "{} digits exceed CPython's limit of {MAX_DECIMAL_DIGITS}",
            digits.len()
        ));
    }
    // Fast path: fits in u64 magnitude.
    if digits.len() <= 19 {
        let mut mag: u64 = 0;
        for &d in digits {
            mag = mag * 10 + u64::from(d - b'0');
        }
        if let Some(v) = small_from_magnitude(negative, mag) {
            return Ok(IntValue::Small(v));
        }
    }
    let mag = decimal_magnitude(digits);
    Ok(int_from_magnitude(negative, &mag))
}

fn small_from_magnitude(negative: bool, mag: u64) -> Option<i64> {
    if negative {
        if mag == 1 << 63 {
            Some(i64::MIN)
        } else {
            i64::try_from(mag).ok().map(|v| -v)
        }
    } else {
        i64::try_from(mag).ok()
    }
}

/// Decimal digits to a little-endian magnitude in base 2^32.
/// Quadratic, but bounded by [`MAX_DECIMAL_DIGITS`] (about 500 chunks).
fn decimal_magnitude(digits: &[u8]) -> Vec<u32> {
    let mut limbs: Vec<u32> = Vec::new();
    for chunk in digits.chunks(9) {
        let mut mul: u64 = 1;
        let mut add: u64 = 0;
        for &d in chunk {
            mul *= 10;
            add = add * 10 + u64::from(d - b'0');
        }
        let mut carry = add;
        for limb in &mut limbs {
            let v = u64::from(*limb) * mul + carry;
            *limb = (v & 0xffff_ffff) as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            limbs.push((carry & 0xffff_ffff) as u32);
        }
    }
    limbs
}

fn int_from_magnitude(negative: bool, limbs: &[u32]) -> IntValue<'static> {
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    while bytes.len() > 1 && bytes.last() == Some(&0) {
        bytes.pop();
    }
    // One extra byte so the sign bit is free.
    bytes.push(0);
    if negative {
        let mut carry = true;
        for b in &mut bytes {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    let bytes = minimal_le(&bytes).to_vec();
    match small_from_le(&bytes) {
        Some(v) => IntValue::Small(v),
        None => IntValue::Big(Cow::Owned(bytes)),
    }
}

/// Drop redundant sign-extension bytes from a little-endian two's
/// complement integer. An empty slice is zero.
#[must_use]
pub fn minimal_le(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end >= 2 {
        let (Some(&top), Some(&next)) = (bytes.get(end - 1), bytes.get(end - 2)) else {
            break;
        };
        let redundant = (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        end -= 1;
    }
    bytes.get(..end).unwrap_or(bytes)
}

/// The value of a little-endian two's complement integer if it fits in an
/// `i64` (an empty slice is zero).
#[must_use]
pub fn small_from_le(bytes: &[u8]) -> Option<i64> {
    let bytes = minimal_le(bytes);
    if bytes.len() > 8 {
        return None;
    }
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut buf = if negative { [0xff; 8] } else { [0; 8] };
    for (dst, src) in buf.iter_mut().zip(bytes) {
        *dst = *src;
    }
    Some(i64::from_le_bytes(buf))
}

/// Parse the argument of `FLOAT` (without the newline).
///
/// Accepts an optional sign, then `inf`, `infinity` or `nan` (any case), or
/// digits with an optional fraction and exponent. A finite literal that
/// overflows to infinity is refused (`_pickle.c` raises, `pickle.py` does not).
///
/// # Errors
/// A reason fragment when the line is not in that grammar.
pub fn parse_float_line(line: &[u8]) -> Result<f64, String> {
    let bad = || format!("`{}` is not a float literal", show(line));
    let body = match line.split_first() {
        Some((b'+' | b'-', rest)) => rest,
        _ => line,
    };
    let word = body.to_ascii_lowercase();
    let special = matches!(word.as_slice(), b"inf" | b"infinity" | b"nan");
    if !special && !is_decimal_float(body) {
        return Err(bad());
    }
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let value: f64 = text.parse().map_err(|_| bad())?;
    if value.is_infinite() && !special {
        return Err(format!("`{}` overflows a double", show(line)));
    }
    Ok(value)
}

/// `digits [. digits] [e [+-] digits]` or `. digits [...]`, with at least
/// one mantissa digit.
fn is_decimal_float(s: &[u8]) -> bool {
    let mut i = 0;
    let mut mantissa_digits = 0;
    while s.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
        mantissa_digits += 1;
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
            mantissa_digits += 1;
        }
    }
    if mantissa_digits == 0 {
        return false;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == s.len()
}

/// Decode the argument of `STRING` (without the newline): strip the
/// matching quotes, then apply Python's bytes escapes.
///
/// Unknown escapes and octal escapes above `\377` are refused: CPython keeps
/// or truncates them with a `DeprecationWarning`, which becomes an error
/// under `-W error`.
///
/// # Errors
/// A reason fragment for missing quotes or a bad escape.
pub fn decode_quoted_string(line: &[u8]) -> Result<Vec<u8>, String> {
    let inner = match (line.first(), line.last()) {
        (Some(&q @ (b'\'' | b'"')), Some(&last)) if line.len() >= 2 && last == q => line
            .get(1..line.len() - 1)
            .ok_or_else(|| "`STRING` argument is not quoted".to_owned())?,
        _ => return Err("`STRING` argument must be quoted".to_owned()),
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&e) = inner.get(i) else {
            return Err("trailing `\\` in string".to_owned());
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(e - b'0');
                for _ in 0..2 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                let byte = u8::try_from(value)
                    .map_err(|_| format!("octal escape `\\{value:o}` is above `\\377`"))?;
                out.push(byte);
            }
            b'x' => {
                let hi = inner.get(i).copied().and_then(hex_value);
                let lo = inner.get(i + 1).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => return Err("invalid `\\x` escape".to_owned()),
                }
            }
            other => {
                return Err(format!(
                    "unknown escape `\\{}` (CPython only warns about it)",
                    char::from(other).escape_default()
                ));
            }
        }
    }
    Ok(out)
}

/// Decode `raw-unicode-escape` exactly like CPython: bytes map to U+0000–
/// U+00FF, except that `\uXXXX` and `\UXXXXXXXX` are escapes when preceded
/// by an odd number of backslashes.
///
/// Lone surrogates (which a Python `str` may hold) cannot be represented in
/// a Rust `String` and are refused.
///
/// # Errors
/// A reason fragment for a truncated or out-of-range escape or a surrogate.
pub fn decode_raw_unicode_escape(line: &[u8]) -> Result<String, String> {
    // Exact upper bound (bytes >= 0x80 take two UTF-8 bytes, escapes shrink),
    // so the string never reallocates.
    let wide = line.iter().filter(|&&b| b >= 0x80).count();
    let mut out = String::with_capacity(line.len().saturating_add(wide));
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if b != b'\\' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let run_start = i;
        while line.get(i) == Some(&b'\\') {
            i += 1;
        }
        let run = i - run_start;
        let kind = line.get(i).copied();
        if run % 2 == 0 || !matches!(kind, Some(b'u' | b'U')) {
            out.extend(std::iter::repeat_n('\\', run));
            continue;
        }
        out.extend(std::iter::repeat_n('\\', run - 1));
        let width = if kind == Some(b'u') { 4 } else { 8 };
        i += 1;
        let mut code: u32 = 0;
        for _ in 0..width {
            let digit = line.get(i).copied().and_then(hex_value).ok_or_else(|| {
                format!("truncated `\\{}` escape", char::from(kind.unwrap_or(b'u')))
            })?;
            code = code << 4 | u32::from(digit);
            i += 1;
        }
        if code > 0x10_ffff {
            return Err(format!("escape `\\U{code:08x}` is out of range"));
        }
        let c = char::from_u32(code)
            .ok_or_else(|| format!("lone surrogate `\\u{code:04x}` is not supported"))?;
        out.push(c);
    }
    Ok(out)
}

/// Render a little-endian two's complement integer in decimal.
#[must_use]
pub fn format_le_int(bytes: &[u8]) -> String {
    if let Some(v) = small_from_le(bytes) {
        return v.to_string();
    }
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        // Two's complement negate to get the magnitude.
        let mut carry = true;
        for b in &mut mag {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    // Little-endian base-2^32 limbs, then repeated division by 10^9.
    let mut limbs: Vec<u32> = mag
        .chunks(4)
        .map(|c| {
            let mut buf = [0u8; 4];
            for (d, s) in buf.iter_mut().zip(c) {
                *d = *s;
            }
            u32::from_le_bytes(buf)
        })
        .collect();
    let mut chunks: Vec<u32> = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut rem: u64 = 0;
        for limb in limbs.iter_mut().rev() {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = u32::try_from(cur / 1_000_000_000).unwrap_or(u32::MAX);
            rem = cur % 1_000_000_000;
        }
        chunks.push(u32::try_from(rem).unwrap_or(0));
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    let mut iter = chunks.iter().rev();
    match iter.next() {
        Some(first) => out.push_str(&first.to_string()),
        None => out.push('0'),
    }
    for chunk in iter {
        out.push_str(&format!("{chunk:09}"));
    }
    out
}

/// Render a float roughly like Python's `repr`.
#[must_use]
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "nan".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{v:?}")
    }
}

/// Render text like Python's `repr`, cut after `max_chars` characters.
#[must_use]
pub fn repr_str(s: &str, max_chars: usize) -> String {
    let mut out = String::from("'");
    for (count, c) in s.chars().enumerate() {
        if count == max_chars {
            out.push_str(&format!("'... ({} bytes)", s.len()));
            return out;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Render bytes like Python's `repr`, cut after `max_bytes` bytes.
#[must_use]
pub fn repr_bytes(b: &[u8], max_bytes: usize) -> String {
    let head = b.get(..max_bytes).unwrap_or(b);
    let mut out = format!("b'{}'", head.escape_ascii());
    if head.len() < b.len() {
        out.push_str(&format!("... ({} bytes)", b.len()));
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A short, escaped rendering of a line for error messages.
fn show(line: &[u8]) -> String {
    let head = line.get(..40).unwrap_or(line);
    let mut s: String = head.escape_ascii().to_string();
    if head.len() < line.len() {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    #[test]
    fn ints() {
        assert_eq!(parse_int_line(b"00"), Ok(IntValue::Bool(false)));
        assert_eq!(parse_int_line(b"01"), Ok(IntValue::Bool(true)));
        assert_eq!(parse_int_line(b"0"), Ok(IntValue::Small(0)));
        assert_eq!(parse_int_line(b"1"), Ok(IntValue::Small(1)));
        assert_eq!(parse_int_line(b"-17"), Ok(IntValue::Small(-17)));
        assert_eq!(
            parse_int_line(b"9223372036854775807"),
            Ok(IntValue::Small(i64::MAX))
        );
        assert_eq!(
            parse_int_line(b"-9223372036854775808"),
            Ok(IntValue::Small(i64::MIN))
        );
        assert_eq!(
            parse_int_line(b"9223372036854775808"),
            Ok(IntValue::Big(Cow::Owned(vec![
                0, 0, 0, 0, 0, 0, 0, 0x80, 0
            ])))
        );
        assert_eq!(
            parse_int_line(b"-9223372036854775809"),
            Ok(IntValue::Big(Cow::Owned(vec![
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff
            ])))
        );
        for bad in [
            &b""[..],
            b"+1",
            b" 1",
            b"1 ",
            b"010",
            b"0x10",
            b"1_000",
            b"-0",
            b"-",
            b"--1",
            b"1.0",
        ] {
            assert!(parse_int_line(bad).is_err(), "{bad:?}");
        }
        let long = vec![b'9'; MAX_DECIMAL_DIGITS + 1];
        assert!(parse_int_line(&long).is_err());
        let ok = vec![b'9'; MAX_DECIMAL_DIGITS];
        assert!(matches!(parse_int_line(&ok), Ok(IntValue::Big(_))));
    }

    #[test]
    fn big_decimal_round_trip() {
        // 2**100 = 1267650600228229401496703205376
        let v = parse_long_line(b"1267650600228229401496703205376L").unwrap();
        let mut want = vec![0u8; 13];
        want[12] = 0x10;
        assert_eq!(v, IntValue::Big(Cow::Owned(want)));
        let v = parse_long_line(b"-1267650600228229401496703205376").unwrap();
        let mut want = vec![0u8; 13];
        want[12] = 0xf0;
        assert_eq!(v, IntValue::Big(Cow::Owned(want)));
        assert_eq!(parse_long_line(b"5L"), Ok(IntValue::Small(5)));
        assert!(parse_long_line(b"5LL").is_err());
        assert!(parse_long_line(b"L").is_err());
    }

    #[test]
    fn le_helpers() {
        assert_eq!(small_from_le(&[]), Some(0));
        assert_eq!(small_from_le(&[0xff]), Some(-1));
        assert_eq!(small_from_le(&[0x00, 0x80]), Some(-32768));
        assert_eq!(small_from_le(&[0xff, 0x00]), Some(255));
        assert_eq!(small_from_le(&[0xff; 20]), Some(-1));
        assert_eq!(small_from_le(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(minimal_le(&[1, 0, 0, 0]), &[1]);
        assert_eq!(minimal_le(&[0x80, 0]), &[0x80, 0]);
    }

    #[test]
    fn formatting() {
        assert_eq!(
            format_le_int(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]),
            "9223372036854775808"
        );
        assert_eq!(
            format_le_int(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff]),
            "-9223372036854775809"
        );
        let mut two_100 = vec![0u8; 13];
        two_100[12] = 0x10;
        assert_eq!(format_le_int(&two_100), "1267650600228229401496703205376");
        assert_eq!(format_le_int(&[]), "0");
        assert_eq!(format_float(f64::NAN), "nan");
        assert_eq!(format_float(1.0), "1.0");
        assert_eq!(repr_str("a'b\n", 10), "'a\\'b\\n'");
        assert_eq!(repr_str("abcdef", 3), "'abc'... (6 bytes)");
        assert_eq!(repr_bytes(b"\x00ab", 2), "b'\\x00a'... (3 bytes)");
    }

    #[test]
    fn indices() {
        assert_eq!(parse_index_line(b"0"), Ok(Some(0)));
        assert_eq!(parse_index_line(b"007"), Ok(Some(7)));
        assert_eq!(parse_index_line(b"99999999999999999999999"), Ok(None));
        assert!(parse_index_line(b"-1").is_err());
        assert!(parse_index_line(b"").is_err());
    }

    #[test]
    fn floats() {
        assert_eq!(parse_float_line(b"1.5"), Ok(1.5));
        assert_eq!(parse_float_line(b"-2e-3"), Ok(-0.002));
        assert_eq!(parse_float_line(b"1e+100"), Ok(1e100));
        assert_eq!(parse_float_line(b".5"), Ok(0.5));
        assert_eq!(parse_float_line(b"5."), Ok(5.0));
        assert_eq!(parse_float_line(b"inf"), Ok(f64::INFINITY));
        assert_eq!(parse_float_line(b"-Infinity"), Ok(f64::NEG_INFINITY));
        assert!(parse_float_line(b"nan").unwrap().is_nan());
        for bad in [
            &b""[..],
            b"1e400",
            b"1_0",
            b" 1.0",
            b"0x1p3",
            b"e5",
            b".",
            b"1e",
            b"infx",
        ] {
            assert!(parse_float_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(decode_quoted_string(b"'abc'").unwrap(), b"abc");
        assert_eq!(decode_quoted_string(b"\"a'b\"").unwrap(), b"a'b");
        assert_eq!(
            decode_quoted_string(br"'\x41\101\0\n\t\\\''").unwrap(),
            b"AA\0\n\t\\'"
        );
        assert_eq!(decode_quoted_string(br"'\1234'").unwrap(), b"S4");
        assert_eq!(decode_quoted_string(b"''").unwrap(), b"");
        for bad in [
            &b"abc"[..],
            b"'",
            b"'abc\"",
            br"'\x4'",
            br"'\q'",
            br"'\400'",
            b"'\\'",
        ] {
            assert!(decode_quoted_string(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn raw_unicode_escape() {
        assert_eq!(decode_raw_unicode_escape(br"\u0041").unwrap(), "A");
        assert_eq!(decode_raw_unicode_escape(br"\\u0041").unwrap(), r"\\u0041");
        assert_eq!(decode_raw_unicode_escape(br"\\\u0041").unwrap(), r"\\A");
        assert_eq!(
            decode_raw_unicode_escape(br"\U0001F600").unwrap(),
            "\u{1F600}"
        );
        assert_eq!(decode_raw_unicode_escape(br"\x41").unwrap(), r"\x41");
        assert_eq!(decode_raw_unicode_escape(b"\\").unwrap(), "\\");
        assert_eq!(decode_raw_unicode_escape(b"\xe9").unwrap(), "\u{e9}");
        for bad in [&br"\u004"[..], br"\U00110000", br"\ud800", br"\u00zz"] {
            assert!(decode_raw_unicode_escape(bad).is_err(), "{bad:?}");
        }
    }
}
