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

use std::path::{Path, PathBuf};

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
    let report = match amber_format::diff::compare(&a, &b) {
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
