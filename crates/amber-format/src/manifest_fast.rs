//! Decoding `manifest.json` in one pass.
//!
//! The derived decoder of [`Manifest`] buffers the whole document before
//! reading it: `extra` is a flattened map, and each entry an internally
//! tagged enum, both of which serde can only decode from a buffered copy.
//! For a manifest of a few hundred entries that is most of the time an open
//! takes. [`parse`] first decodes a manifest laid out the way amber writes it
//! (each entry's `kind` first, no key twice) straight from the text; anything
//! else it gives up on, and the derived decoder decides, so every value it
//! accepts and every error message stays exactly the derived decoder's.
//!
//! [`parse_entries`] is [`parse`] for a reader of entries only (a scan): the
//! free fields are read as `serde_json::Value` reads them (so the same text
//! is accepted) but not built, and [`Manifest::extra`] is left empty.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::manifest::{ArrayInfo, EntryInfo, Manifest, Order};

/// `raw` decoded as [`Manifest`]'s derived decoder decodes it (the same
/// value, or the same error), without buffering it when it is laid out as
/// amber writes it.
///
/// # Errors
/// The derived decoder's error.
pub fn parse(raw: &[u8]) -> Result<Manifest, serde_json::Error> {
    decode(raw, true)
}

/// [`parse`], accepting and refusing the same text, with
/// [`Manifest::extra`] left empty: the free fields are checked as the
/// derived decoder reads them, never built (for a scan, which reads the
/// entries only).
///
/// # Errors
/// The derived decoder's error.
pub fn parse_entries(raw: &[u8]) -> Result<Manifest, serde_json::Error> {
    decode(raw, false)
}

fn decode(raw: &[u8], keep_extra: bool) -> Result<Manifest, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let direct = de
        .deserialize_map(ManifestVisitor { keep_extra })
        .and_then(|direct| de.end().map(|()| direct));
    match direct {
        Ok(Direct(manifest)) => Ok(manifest),
        Err(_) => {
            let mut manifest: Manifest = serde_json::from_slice(raw)?;
            if !keep_extra {
                manifest.extra.clear();
            }
            Ok(manifest)
        }
    }
}

/// A manifest decoded in one pass; any surprise is an error (then the
/// derived decoder runs).
struct Direct(Manifest);

/// The error that hands the text to the derived decoder.
fn give_up<E: de::Error>() -> E {
    E::custom("not in amber's own layout")
}

/// Sets `slot` once; a key seen twice gives up.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(give_up());
    }
    Ok(())
}

fn required<T, E: de::Error>(slot: Option<T>) -> Result<T, E> {
    slot.ok_or_else(give_up)
}

#[cfg(test)]
impl<'de> Deserialize<'de> for Direct {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ManifestVisitor { keep_extra: true })
    }
}

struct ManifestVisitor {
    /// Whether the free fields are built into [`Manifest::extra`] (else
    /// only checked, see [`Checked`]).
    keep_extra: bool,
}

impl<'de> Visitor<'de> for ManifestVisitor {
    type Value = Direct;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an amber manifest")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Direct, A::Error> {
        let (mut format, mut version, mut entries) = (None, None, None);
        let mut extra = serde_json::Map::new();
        // The free keys seen when they are not kept (a key twice gives up).
        let mut seen: Vec<&'de str> = Vec::new();
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "format" => once(&mut format, map.next_value::<String>()?)?,
                "format_version" => once(&mut version, map.next_value::<u32>()?)?,
                "entries" => once(&mut entries, map.next_value::<Entries>()?.0)?,
                other if self.keep_extra => {
                    let value = map.next_value::<serde_json::Value>()?;
                    if extra.insert(other.to_owned(), value).is_some() {
                        return Err(give_up());
                    }
                }
                other => {
                    map.next_value::<Checked>()?;
                    if seen.contains(&other) {
                        return Err(give_up());
                    }
                    seen.push(other);
                }
            }
        }
        Ok(Direct(Manifest {
            format: required(format)?,
            format_version: required(version)?,
            entries: required(entries)?,
            extra,
        }))
    }
}

/// A JSON value read the way `serde_json::Value` reads one (the same
/// calls into the parser, so the same nesting limit and number checks) and
/// dropped: any text one accepts the other does.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_none<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        Checked::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

struct Entries(Vec<EntryInfo>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
        // The hint is the parser's guess; a hostile one is capped.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Entry(entry)) = seq.next_element()? {
            out.push(entry);
        }
        Ok(Entries(out))
    }
}

struct Entry(EntryInfo);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

/// The fields of either kind of entry, each set at most once.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    size: Option<u64>,
    crc32: Option<u32>,
    protocol: Option<u8>,
    buffers: Option<u64>,
    raw_size: Option<Option<u64>>,
    data_offset: Option<u64>,
    nbytes: Option<u64>,
    dtype: Option<serde_json::Value>,
    shape: Option<Vec<u64>>,
    order: Option<Order>,
    codec: Option<Option<String>>,
    filter: Option<Option<String>>,
}

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
        if map.next_key::<&'de str>()? != Some("kind") {
            return Err(give_up());
        }
        let array = match map.next_value::<&'de str>()? {
            "array" => true,
            "pickle" => false,
            _ => return Err(give_up()),
        };
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<&'de str>()? {
            match (key, array) {
                ("name", _) => once(&mut f.name, map.next_value()?)?,
                ("size", _) => once(&mut f.size, map.next_value()?)?,
                ("crc32", _) => once(&mut f.crc32, map.next_value()?)?,
                ("codec", _) => once(&mut f.codec, map.next_value()?)?,
                ("protocol", false) => once(&mut f.protocol, map.next_value()?)?,
                ("buffers", false) => once(&mut f.buffers, map.next_value()?)?,
                ("raw_size", false) => once(&mut f.raw_size, map.next_value()?)?,
                ("data_offset", true) => once(&mut f.data_offset, map.next_value()?)?,
                ("nbytes", true) => once(&mut f.nbytes, map.next_value()?)?,
                ("dtype", true) => once(&mut f.dtype, map.next_value()?)?,
                ("shape", true) => once(&mut f.shape, map.next_value()?)?,
                ("order", true) => once(&mut f.order, map.next_value()?)?,
                ("filter", true) => once(&mut f.filter, map.next_value()?)?,
                _ => {
                    let _ = map.next_value::<IgnoredAny>()?;
                    return Err(give_up());
                }
            }
        }
        let entry = if array {
            EntryInfo::Array(ArrayInfo {
                name: required(f.name)?,
                size: required(f.size)?,
                crc32: required(f.crc32)?,
                data_offset: required(f.data_offset)?,
                nbytes: required(f.nbytes)?,
                dtype: required(f.dtype)?,
                shape: required(f.shape)?,
                order: required(f.order)?,
                codec: f.codec.flatten(),
                filter: f.filter.flatten(),
            })
        } else {
            EntryInfo::Pickle {
                name: required(f.name)?,
                size: required(f.size)?,
                crc32: required(f.crc32)?,
                protocol: required(f.protocol)?,
                buffers: required(f.buffers)?,
                codec: f.codec.flatten(),
                raw_size: f.raw_size.flatten(),
            }
        };
        Ok(Entry(entry))
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    fn derived(raw: &[u8]) -> Result<Manifest, String> {
        serde_json::from_slice::<Manifest>(raw).map_err(|e| e.to_string())
    }

    /// Whether the one-pass decoder took `raw` itself (rather than handing
    /// it over), asserting that the result is the derived decoder's.
    fn agrees(raw: &[u8]) -> bool {
        let expected = derived(raw);
        assert_eq!(
            parse(raw).map_err(|e| e.to_string()),
            expected,
            "{}",
            String::from_utf8_lossy(raw)
        );
        let mut entries_only = expected.clone();
        if let Ok(m) = &mut entries_only {
            m.extra.clear();
        }
        assert_eq!(
            parse_entries(raw).map_err(|e| e.to_string()),
            entries_only,
            "{}",
            String::from_utf8_lossy(raw)
        );
        let direct = serde_json::from_slice::<Direct>(raw).ok().map(|d| d.0);
        let mut de = serde_json::Deserializer::from_slice(raw);
        let direct_entries = de
            .deserialize_map(ManifestVisitor { keep_extra: false })
            .and_then(|d| de.end().map(|()| d));
        // Checking the free fields instead of building them takes the same texts.
        assert_eq!(
            direct_entries.is_ok(),
            direct.is_some(),
            "{}",
            String::from_utf8_lossy(raw)
        );
        if let Some(direct) = &direct {
            assert_eq!(
                Ok(direct),
                expected.as_ref(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        direct.is_some()
    }

    fn manifests() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors");
        let mut out = Vec::new();
        for kind in ["valid", "invalid", "malicious"] {
            let Ok(list) = std::fs::read_dir(dir.join(kind)) else {
                continue;
            };
            for entry in list {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "amber") {
                    continue;
                }
                let bytes = std::fs::read(&path).unwrap();
                // The manifest is the last entry: its text runs from its
                // local header's data to the central directory.
                let Some(start) = bytes.windows(9).rposition(|w| w == b"{\"format\"") else {
                    continue;
                };
                let Some(len) = bytes[start..].windows(4).position(|w| w == b"PK\x01\x02") else {
                    continue;
                };
                out.push(bytes[start..start + len].to_vec());
            }
        }
        out
    }

    #[test]
    fn every_vector_manifest_decodes_in_one_pass_as_derived() {
        let all = manifests();
        assert!(all.len() > 5, "{}", all.len());
        let direct = all.iter().filter(|m| agrees(m)).count();
        // Amber wrote them: nearly all are in its own layout.
        assert!(direct * 2 > all.len(), "{direct} of {}", all.len());
    }

    #[test]
    fn changed_manifests_give_the_derived_value_or_error() {
        let mut cases: Vec<String> = vec![
            r#"{"format":"amber","format_version":1,"entries":[]}"#.into(),
            r#"{"format_version":1,"entries":[],"format":"amber","x":{"y":[1,2.5,null]}}"#.into(),
            r#"{"format":"amber","format":"amber","format_version":1,"entries":[]}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":[],"a":1,"a":2}"#.into(),
            r#"{"format":"amber","entries":[]}"#.into(),
            r#"{"format":"amber","format_version":-1,"entries":[]}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":{}}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":[]} x"#.into(),
            r#"{"format":"am\u0062er","format_version":1,"entries":[]}"#.into(),
            r#"{"form\u0061t":"amber","format_version":1,"entries":[]}"#.into(),
            r#"[]"#.into(),
            // Free fields as `Value` reads them: numbers out of range,
            // escapes, keys of nested objects, a free key twice.
            r#"{"format":"amber","format_version":1,"entries":[],"x":1e400}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":[],"x":-1e308,"y":18446744073709551616}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":[],"x":{"\u0061":"\ud83d\ude00","a":1,"a":[true,false,null]}}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":[],"x":"\ud800"}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":[],"x":"\q"}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":[],"x":{1:2}}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":[],"x":[1,]}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":[],"x":1,"y":{},"x":2}"#.into(),
            r#"{"format":"amber","format_version":1,"entries":[],"\u0078":1}"#.into(),
            "{\"format\":\"amber\",\"format_version\":1,\"entries\":[],\"x\":\"\u{1}\"}".into(),
        ];
        // Around serde_json's nesting limit, in the free part and in a dtype.
        let deep: Vec<String> = (124..=130)
            .map(|depth| {
                let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
                format!(r#"{{"format":"amber","format_version":1,"entries":[],"metadata":{deep}}}"#)
            })
            .collect();
        let within = deep
            .iter()
            .filter(|c| derived(c.as_bytes()).is_ok())
            .count();
        assert!(within > 0 && within < deep.len(), "{within}");
        cases.extend(deep);
        let pickle = r#"{"kind":"pickle","name":"model.pkl","size":215,"crc32":4277717181,"protocol":5,"buffers":1}"#;
        let array = r#"{"kind":"array","name":"arrays/000000.npy","size":208,"crc32":1,"data_offset":128,"nbytes":80,"dtype":"<f8","shape":[10],"order":"C"}"#;
        let entries = [
            pickle.to_owned(),
            array.to_owned(),
            pickle
                .replace(r#""kind":"pickle","#, "")
                .replace('}', r#","kind":"pickle"}"#),
            pickle.replace("\"protocol\":5,", ""),
            pickle.replace("\"buffers\":1", "\"buffers\":1,\"buffers\":1"),
            pickle.replace(
                "\"buffers\":1",
                "\"buffers\":1,\"codec\":\"zstd\",\"raw_size\":9",
            ),
            pickle.replace(
                "\"buffers\":1",
                "\"buffers\":1,\"codec\":null,\"raw_size\":null",
            ),
            pickle.replace("\"buffers\":1", "\"buffers\":1,\"dtype\":\"<f8\""),
            pickle.replace("\"protocol\":5", "\"protocol\":500"),
            pickle.replace("\"crc32\":4277717181", "\"crc32\":42777171810"),
            pickle.replace("pickle\"", "other\""),
            array.replace("\"order\":\"C\"", "\"order\":\"K\""),
            array.replace(
                "\"order\":\"C\"",
                "\"order\":\"F\",\"codec\":\"zstd\",\"filter\":\"shuffle\"",
            ),
            array.replace("\"<f8\"", r#"[["a","<i8"],["b","<f8",[2]]]"#),
            array.replace("\"shape\":[10]", "\"shape\":[10,-1]"),
            array.replace("\"shape\":[10],", ""),
            array.replace("\"size\":208", "\"size\":208.0"),
            array.replace("\"nbytes\":80", "\"nbytes\":80,\"protocol\":5"),
            array.replace(r#""kind":"array""#, r#""kind":"array","kind":"array""#),
            array.replace("arrays/", "arr\\u0061ys/"),
            array.replace(
                "\"<f8\"",
                &format!("{}1{}", "[".repeat(126), "]".repeat(126)),
            ),
            array.replace(
                "\"<f8\"",
                &format!("{}1{}", "[".repeat(124), "]".repeat(124)),
            ),
        ];
        for one in &entries {
            for two in [None, Some(array)] {
                let list = match two {
                    Some(t) => format!("{one},{t}"),
                    None => one.clone(),
                };
                cases.push(format!(
                    r#"{{"format":"amber","format_version":1,"created":"x","entries":[{list}],"metadata":{{"k":[1]}}}}"#
                ));
            }
        }
        let mut direct = 0;
        for case in &cases {
            direct += usize::from(agrees(case.as_bytes()));
        }
        assert!(direct >= 10, "{direct}");
    }
}
