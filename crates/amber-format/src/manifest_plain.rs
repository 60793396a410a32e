//! `manifest.json` as amber writes it, read by hand for a scan.
//!
//! A scan opens a container to check its entries, and through serde even
//! the one-pass decoder of [`crate::manifest_fast`] spends most of the open
//! of a small file on the manifest (a parser call per string and number).
//! [`entries`] reads only a plain subset of JSON: strings of printable
//! ASCII without escapes, unsigned integers without sign, fraction or
//! exponent, `true`, `false`, `null`, nesting far below serde_json's limit,
//! and each entry with its `kind` first and no key twice. On that subset
//! serde_json reads every value exactly this way, so the manifest is the one
//! the derived decoder gives; anything else is `None`, and the caller hands
//! the text to serde (which then decides, errors included).

use crate::manifest::{EntryInfo, Manifest, Order};
use crate::manifest_fast::Fields;

/// Deepest nesting read (serde_json refuses beyond 128 levels).
const MAX_DEPTH: usize = 64;

/// The bytes a plain string holds: printable ASCII but `"` and `\\`.
#[expect(
    clippy::indexing_slicing,
    reason = "a constant table, filled below its length at compile time"
)]
const PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        plain[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    plain
};

/// The manifest in `raw` with [`Manifest::extra`] left empty, if `raw` is
/// in the plain subset (see the module docs).
#[must_use]
pub fn entries(raw: &[u8]) -> Option<Manifest> {
    // Checked once as a whole, so each string is a slice of it.
    let text = std::str::from_utf8(raw).ok()?;
    let mut r = Plain { text, raw, at: 0 };
    let manifest = r.manifest()?;
    r.space();
    (r.at == raw.len()).then_some(manifest)
}

struct Plain<'a> {
    text: &'a str,
    raw: &'a [u8],
    at: usize,
}

/// Sets `slot` once; `None` if it was set.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.replace(value).is_none().then_some(())
}

impl<'a> Plain<'a> {
    fn peek(&self) -> Option<u8> {
        self.raw.get(self.at).copied()
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.at += 1;
        }
    }

    /// `byte`, after any white space.
    fn eat(&mut self, byte: u8) -> Option<()> {
        self.space();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// `byte` next, after any white space, taken if it is there.
    fn next_is(&mut self, byte: u8) -> bool {
        self.space();
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let rest = self.raw.get(start..)?;
        let len = rest
            .iter()
            .position(|&b| !PLAIN.get(usize::from(b)).copied().unwrap_or(false))?;
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.at = start + len + 1;
        self.text.get(start..start + len)
    }

    fn uint(&mut self) -> Option<u64> {
        self.space();
        let rest = self.raw.get(self.at..)?;
        let mut value = 0u64;
        let mut len = 0;
        for &b in rest {
            if !b.is_ascii_digit() {
                break;
            }
            value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            len += 1;
        }
        let after = rest.get(len).copied();
        if len == 0
            || (len > 1 && rest.first() == Some(&b'0'))
            || matches!(after, Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        self.at += len;
        Some(value)
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        self.space();
        let rest = self.raw.get(self.at..)?;
        rest.starts_with(word).then(|| self.at += word.len())
    }

    /// `null`, taken if it is next.
    fn null(&mut self) -> bool {
        self.word(b"null").is_some()
    }

    /// A value of the subset, read and dropped.
    fn skip(&mut self, depth: usize) -> Option<()> {
        self.space();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'0'..=b'9' => self.uint().map(drop),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            b'[' if depth < MAX_DEPTH => {
                self.at += 1;
                if self.next_is(b']') {
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    if !self.next_is(b',') {
                        return self.eat(b']');
                    }
                }
            }
            b'{' if depth < MAX_DEPTH => {
                self.at += 1;
                if self.next_is(b'}') {
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.eat(b':')?;
                    self.skip(depth + 1)?;
                    if !self.next_is(b',') {
                        return self.eat(b'}');
                    }
                }
            }
            _ => None,
        }
    }

    /// A value of the subset without objects (a dtype: a descriptor, or a
    /// structured dtype's list of fields), as `serde_json::Value` holds it.
    fn value(&mut self, depth: usize) -> Option<serde_json::Value> {
        use serde_json::Value;
        self.space();
        Some(match self.peek()? {
            b'"' => Value::String(self.string()?.to_owned()),
            b'0'..=b'9' => Value::Number(self.uint()?.into()),
            b't' => self.word(b"true").map(|()| Value::Bool(true))?,
            b'f' => self.word(b"false").map(|()| Value::Bool(false))?,
            b'n' => self.word(b"null").map(|()| Value::Null)?,
            b'[' if depth < MAX_DEPTH => Value::Array(self.list(|r| r.value(depth + 1))?),
            _ => return None,
        })
    }

    /// `{` then each key (after its `:`) to `each`, up to the closing `}`.
    fn object(&mut self, mut each: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.next_is(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            each(self, key)?;
            if !self.next_is(b',') {
                return self.eat(b'}');
            }
        }
    }

    fn manifest(&mut self) -> Option<Manifest> {
        let (mut format, mut version, mut entries) = (None, None, None);
        let mut seen: Vec<&'a str> = Vec::new();
        self.object(|r, key| match key {
            "format" => once(&mut format, r.string()?.to_owned()),
            "format_version" => once(&mut version, u32::try_from(r.uint()?).ok()?),
            "entries" => once(&mut entries, r.list(Self::entry)?),
            other => {
                r.skip(1)?;
                if seen.contains(&other) {
                    return None;
                }
                seen.push(other);
                Some(())
            }
        })?;
        Some(Manifest {
            format: format?,
            format_version: version?,
            entries: entries?,
            extra: serde_json::Map::new(),
        })
    }

    /// `[`, the items `item` reads, `]`.
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.eat(b'[')?;
        let mut out = Vec::new();
        if self.next_is(b']') {
            return Some(out);
        }
        loop {
            out.push(item(self)?);
            if !self.next_is(b',') {
                self.eat(b']')?;
                return Some(out);
            }
        }
    }

    fn optional_string(&mut self) -> Option<Option<String>> {
        if self.null() {
            return Some(None);
        }
        Some(Some(self.string()?.to_owned()))
    }

    fn entry(&mut self) -> Option<EntryInfo> {
        self.eat(b'{')?;
        if self.string()? != "kind" {
            return None;
        }
        self.eat(b':')?;
        let array = match self.string()? {
            "array" => true,
            "pickle" => false,
            _ => return None,
        };
        let mut f = Fields::default();
        while self.next_is(b',') {
            let key = self.string()?;
            self.eat(b':')?;
            match (key, array) {
                ("name", _) => once(&mut f.name, self.string()?.to_owned()),
                ("size", _) => once(&mut f.size, self.uint()?),
                ("crc32", _) => once(&mut f.crc32, u32::try_from(self.uint()?).ok()?),
                ("codec", _) => once(&mut f.codec, self.optional_string()?),
                ("protocol", false) => once(&mut f.protocol, u8::try_from(self.uint()?).ok()?),
                ("buffers", false) => once(&mut f.buffers, self.uint()?),
                ("raw_size", false) => {
                    let value = if self.null() {
                        None
                    } else {
                        Some(self.uint()?)
                    };
                    once(&mut f.raw_size, value)
                }
                ("data_offset", true) => once(&mut f.data_offset, self.uint()?),
                ("nbytes", true) => once(&mut f.nbytes, self.uint()?),
                ("dtype", true) => once(&mut f.dtype, self.value(3)?),
                ("shape", true) => once(&mut f.shape, self.list(Self::uint)?),
                ("order", true) => {
                    let order = match self.string()? {
                        "C" => Order::C,
                        "F" => Order::F,
                        _ => return None,
                    };
                    once(&mut f.order, order)
                }
                ("filter", true) => once(&mut f.filter, self.optional_string()?),
                _ => None,
            }?;
        }
        self.eat(b'}')?;
        f.into_entry(array)
    }
}
