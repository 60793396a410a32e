//! What differs between two amber files, from their manifests and entries alone
//! (nothing is unpickled): the basis of `amber diff` and `amber.diff`.
//!
//! Compared: the model content (the pickle stream and each array: added,
//! removed, dtype/shape/order/size changes, data changed), how entries are
//! stored (codec), the user metadata, the environment, the producer and the
//! creation time. Entries are paired by name, ignoring the `c` suffix of
//! compressed entries, so a file and its compressed copy pair up; their data is
//! then compared decompressed. `identical_content` is true when the model
//! content is the same, whatever the metadata, environment, times and codecs.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::Result;
use crate::manifest::EntryInfo;
use crate::read::{Container, Source};

fn raw<B: Source>(c: &Container<B>) -> Value {
    serde_json::from_slice(c.manifest_bytes()).unwrap_or(Value::Null)
}

/// Every leaf of a JSON value under its dotted path (`packages.sklearn`).
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        // An empty object at the top has no leaves (`metadata: {}`).
        Value::Object(_) if prefix.is_empty() => {}
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// `[{key, a, b}]` for the leaves that differ (absent sides are `null`).
fn changes(a: Option<&Value>, b: Option<&Value>) -> Vec<Value> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    if let Some(a) = a {
        flatten("", a, &mut fa);
    }
    if let Some(b) = b {
        flatten("", b, &mut fb);
    }
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    keys.into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| json!({"key": k, "a": fa.get(k), "b": fb.get(k)}))
        .collect()
}

fn pairing_name(name: &str) -> &str {
    name.strip_suffix('c')
        .filter(|n| n.ends_with(".npy") || n.ends_with(".pkl"))
        .unwrap_or(name)
}

fn shape(e: &EntryInfo) -> Value {
    match e {
        EntryInfo::Array(a) => json!({
            "dtype": a.dtype, "shape": a.shape, "order": a.order, "nbytes": a.nbytes,
            "codec": a.codec.as_deref().unwrap_or("none"),
        }),
        EntryInfo::Pickle {
            raw_size,
            codec,
            size,
            ..
        } => {
            json!({"nbytes": raw_size.unwrap_or(*size), "codec": codec.as_deref().unwrap_or("none")})
        }
    }
}

/// Whether two paired entries hold different data (decompressing when their codecs differ).
fn data_differs<B: Source>(
    ca: &Container<B>,
    ea: &EntryInfo,
    cb: &Container<B>,
    eb: &EntryInfo,
) -> Result<bool> {
    let same_codec = shape(ea).get("codec") == shape(eb).get("codec");
    if same_codec {
        return Ok(ea.crc32() != eb.crc32() || ea.size() != eb.size());
    }
    let (ha, da) = ca.extract(ea.name())?;
    let (hb, db) = cb.extract(eb.name())?;
    Ok(ha != hb || da != db)
}

/// The differences between `a` and `b` as a JSON report (see the module docs):
/// `{identical_content, content_hash, created, pickle_changed, entries: {added,
/// removed, changed}, metadata, environment, producer}`.
pub fn compare<B: Source>(a: &Container<B>, b: &Container<B>) -> Result<Value> {
    let (ra, rb) = (raw(a), raw(b));
    let index = |c: &Container<B>| -> BTreeMap<String, EntryInfo> {
        c.manifest()
            .entries
            .iter()
            .map(|e| (pairing_name(e.name()).to_owned(), e.clone()))
            .collect()
    };
    let (ia, ib) = (index(a), index(b));
    let added: Vec<&String> = ib.keys().filter(|k| !ia.contains_key(*k)).collect();
    let removed: Vec<&String> = ia.keys().filter(|k| !ib.contains_key(*k)).collect();
    let mut changed = Vec::new();
    let mut pickle_changed = false;
    let mut content_changed = false;
    for (name, ea) in &ia {
        let Some(eb) = ib.get(name) else { continue };
        let differs = data_differs(a, ea, b, eb)?;
        let layout = changes(Some(&shape(ea)), Some(&shape(eb)));
        if matches!(ea, EntryInfo::Pickle { .. }) {
            pickle_changed = differs;
            content_changed |= differs;
            continue;
        }
        // A codec change alone is storage, not content.
        content_changed |= differs
            || layout
                .iter()
                .any(|c| c.get("key").and_then(Value::as_str) != Some("codec"));
        if differs || !layout.is_empty() {
            changed.push(json!({"name": name, "data_changed": differs, "changes": layout}));
        }
    }
    let hashes = (a.manifest().content_hash(), b.manifest().content_hash());
    let identical = added.is_empty() && removed.is_empty() && !content_changed;
    Ok(json!({
        "identical_content": identical,
        "content_hash": {"a": hashes.0, "b": hashes.1},
        "created": {"a": ra.get("created"), "b": rb.get("created")},
        "pickle_changed": pickle_changed,
        "entries": {"added": added, "removed": removed, "changed": changed},
        "metadata": changes(ra.get("metadata"), rb.get("metadata")),
        "environment": changes(ra.get("environment"), rb.get("environment")),
        "producer": changes(ra.get("producer"), rb.get("producer")),
    }))
}
