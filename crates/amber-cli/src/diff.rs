//! `amber diff A B`: what differs between two model files, without Python.
//!
//! Compared: the model content (the `content_hash`, F-16, or the entries one by
//! one when a file has none), the pickle stream, each array entry (added,
//! removed, dtype/shape/order/size/codec changes, data changed), the user
//! metadata, the environment and the creation time. Entries are paired by
//! name, ignoring the `c` suffix of compressed entries, so a file and its
//! compressed copy pair up; their data is then compared decompressed.
//!
//! Exit codes, like `diff`: 0 when the model content is identical (metadata,
//! environment and times may still differ, and are listed), 1 when it differs,
//! 2 when a file cannot be read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use amber_format::{Container, EntryInfo, FormatError, Mapping};
use serde_json::{Value, json};

use crate::Outcome;

/// Arguments of `amber diff`.
#[derive(clap::Args)]
pub struct DiffArgs {
    /// The first amber file.
    a: PathBuf,
    /// The second amber file.
    b: PathBuf,
    /// Print the differences as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `amber diff`.
pub fn run(args: &DiffArgs) -> Outcome {
    let opened = crate::open(&args.a)
        .map_err(|e| (args.a.as_path(), e))
        .and_then(|a| {
            crate::open(&args.b)
                .map(|b| (a, b))
                .map_err(|e| (args.b.as_path(), e))
        });
    let (a, b) = match opened {
        Ok(pair) => pair,
        Err((path, e)) => {
            crate::failure(path, &e);
            return Outcome::Error;
        }
    };
    let report = match compare(&a, &b) {
        Ok(r) => r,
        Err(e) => {
            crate::failure(&args.a, &e);
            return Outcome::Error;
        }
    };
    if args.json {
        let mut value = report.clone();
        if let Some(map) = value.as_object_mut() {
            map.insert("a".into(), json!(args.a));
            map.insert("b".into(), json!(args.b));
        }
        println!("{value:#}");
    } else {
        print!("{}", render(&args.a, &args.b, &report));
    }
    if at(&report, "/identical_content").as_bool() == Some(true) {
        Outcome::Ok
    } else {
        Outcome::Invalid
    }
}

fn raw(c: &Container<Mapping>) -> Value {
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
fn data_differs(
    ca: &Container<Mapping>,
    ea: &EntryInfo,
    cb: &Container<Mapping>,
    eb: &EntryInfo,
) -> Result<bool, FormatError> {
    let same_codec = shape(ea).get("codec") == shape(eb).get("codec");
    if same_codec {
        return Ok(ea.crc32() != eb.crc32() || ea.size() != eb.size());
    }
    let (ha, da) = ca.extract(ea.name())?;
    let (hb, db) = cb.extract(eb.name())?;
    Ok(ha != hb || da != db)
}

fn compare(a: &Container<Mapping>, b: &Container<Mapping>) -> Result<Value, FormatError> {
    let (ra, rb) = (raw(a), raw(b));
    let index = |c: &Container<Mapping>| -> BTreeMap<String, EntryInfo> {
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
        content_changed |= differs || layout.iter().any(|c| at(c, "/key") != "codec");
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

/// The value at a JSON pointer, `null` when absent.
fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "(absent)".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn render(pa: &Path, pb: &Path, r: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "--- {}\n+++ {}", pa.display(), pb.display());
    let identical = at(r, "/identical_content").as_bool() == Some(true);
    let _ = writeln!(
        out,
        "content      {}",
        if identical { "identical" } else { "differs" }
    );
    let (ha, hb) = (at(r, "/content_hash/a"), at(r, "/content_hash/b"));
    if ha != hb {
        let note = if identical {
            "  (stored differently)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  hash       {} -> {}{note}",
            show(Some(ha)),
            show(Some(hb))
        );
    }
    if at(r, "/pickle_changed").as_bool() == Some(true) {
        let _ = writeln!(out, "pickle       stream changed");
    }
    for name in at(r, "/entries/added").as_array().into_iter().flatten() {
        let _ = writeln!(out, "added        {}", show(Some(name)));
    }
    for name in at(r, "/entries/removed").as_array().into_iter().flatten() {
        let _ = writeln!(out, "removed      {}", show(Some(name)));
    }
    for entry in at(r, "/entries/changed").as_array().into_iter().flatten() {
        let mut what: Vec<String> = at(entry, "/changes")
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} {} -> {}",
                    show(c.get("key")),
                    show(c.get("a")),
                    show(c.get("b"))
                )
            })
            .collect();
        if at(entry, "/data_changed").as_bool() == Some(true) {
            what.push("data changed".into());
        }
        let _ = writeln!(
            out,
            "changed      {}: {}",
            show(entry.get("name")),
            what.join(", ")
        );
    }
    for (section, label) in [
        ("metadata", "metadata"),
        ("environment", "environment"),
        ("producer", "producer"),
    ] {
        for c in at(r, &format!("/{section}"))
            .as_array()
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                out,
                "{label:<12} {}: {} -> {}",
                show(c.get("key")),
                show(c.get("a")),
                show(c.get("b"))
            );
        }
    }
    let (ca, cb) = (at(r, "/created/a"), at(r, "/created/b"));
    if ca != cb {
        let _ = writeln!(out, "created      {} -> {}", show(Some(ca)), show(Some(cb)));
    }
    out
}
