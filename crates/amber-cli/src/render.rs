//! Human-readable rendering of a container for `amber info`.

use std::fmt::Write as _;
use std::path::Path;

use amber_format::{Container, EntryInfo, Mapping};
use serde_json::Value;

/// Entries listed before the rest are summarised (unless `--all`).
const MAX_LISTED: usize = 10;

/// Formats a byte count with a decimal unit (`12.3 MB`).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let label = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {label}")
    }
}

fn field<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".into(),
    }
}

/// The text `amber info` prints.
pub fn info(path: &Path, container: &Container<Mapping>, all: bool) -> String {
    let manifest = container.manifest();
    let raw: Value = serde_json::from_slice(container.manifest_bytes()).unwrap_or(Value::Null);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  ({}, amber format {})",
        path.display(),
        size(container.bytes().len() as u64),
        manifest.format_version
    );
    let _ = writeln!(
        out,
        "created    {} by amber {}",
        text(field(&raw, &["created"])),
        text(field(&raw, &["producer", "version"]))
    );
    let _ = writeln!(
        out,
        "python     {} ({}) on {}",
        text(field(&raw, &["environment", "python"])),
        text(field(&raw, &["environment", "implementation"])),
        text(field(&raw, &["environment", "platform"]))
    );
    let _ = writeln!(
        out,
        "machine    {}, {}-endian",
        text(field(&raw, &["environment", "machine"])),
        text(field(&raw, &["environment", "byteorder"]))
    );
    if let Some(Value::Object(packages)) = field(&raw, &["environment", "packages"]) {
        let dists = field(&raw, &["environment", "distributions"]);
        let list: Vec<String> = packages
            .iter()
            .map(|(k, v)| {
                // `sklearn 1.9.1 (scikit-learn)`: the distribution name when it differs.
                let dist = dists
                    .and_then(|d| d.get(k))
                    .and_then(|d| d.get("name"))
                    .and_then(Value::as_str)
                    .filter(|d| d != k);
                match dist {
                    Some(d) => format!("{k} {} ({d})", text(Some(v))),
                    None => format!("{k} {}", text(Some(v))),
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "packages   {}",
            if list.is_empty() {
                "-".into()
            } else {
                list.join(", ")
            }
        );
    }
    let _ = writeln!(
        out,
        "content    {}",
        manifest
            .content_hash()
            .unwrap_or("- (no content hash recorded)")
    );
    match field(&raw, &["metadata"]) {
        Some(Value::Object(m)) if !m.is_empty() => {
            let _ = writeln!(out, "metadata   {}", Value::Object(m.clone()));
        }
        _ => {
            let _ = writeln!(out, "metadata   -");
        }
    }
    let arrays = manifest
        .entries
        .iter()
        .filter(|e| matches!(e, EntryInfo::Array(_)))
        .count();
    let _ = writeln!(
        out,
        "entries    {} (1 pickle stream, {arrays} arrays)",
        manifest.entries.len()
    );
    let _ = writeln!(
        out,
        "  {:<7} {:>10} {:>10} {:>6} {:<15} {:<20} {:<16} SHAPE",
        "KIND", "RAW", "STORED", "RATIO", "CODEC", "NAME", "DTYPE"
    );
    let shown = if all || manifest.entries.len() <= MAX_LISTED + 2 {
        manifest.entries.len()
    } else {
        MAX_LISTED
    };
    for entry in manifest.entries.iter().take(shown) {
        let (dtype, shape) = match entry {
            EntryInfo::Array(a) => (
                a.dtype_label(),
                format!(
                    "({}){}",
                    a.shape
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    if a.order == amber_format::Order::F {
                        " F-order"
                    } else {
                        ""
                    }
                ),
            ),
            EntryInfo::Pickle { .. } => (String::new(), String::new()),
        };
        let (raw, codec) = match entry {
            EntryInfo::Array(a) => (
                a.nbytes,
                match (&a.codec, &a.filter) {
                    (Some(c), Some(f)) if f != "none" => format!("{c}+{f}"),
                    (Some(c), _) => c.clone(),
                    _ => "-".into(),
                },
            ),
            EntryInfo::Pickle {
                raw_size, codec, ..
            } => (
                raw_size.unwrap_or(entry.size()),
                codec.clone().unwrap_or_else(|| "-".into()),
            ),
        };
        let stored = match entry {
            EntryInfo::Array(a) => entry.size().saturating_sub(a.data_offset),
            EntryInfo::Pickle { .. } => entry.size(),
        };
        let ratio = if raw == 0 {
            1.0
        } else {
            stored as f64 / raw as f64
        };
        let _ = writeln!(
            out,
            "  {:<7} {:>10} {:>10} {:>6.3} {:<15} {:<20} {:<16} {}",
            entry.kind(),
            size(raw),
            size(stored),
            ratio,
            codec,
            entry.name(),
            dtype,
            shape
        );
    }
    let hidden = manifest.entries.get(shown..).unwrap_or_default();
    if !hidden.is_empty() {
        let bytes: u64 = hidden.iter().map(EntryInfo::size).sum();
        let _ = writeln!(
            out,
            "  … {} more entries ({}); `--all` lists them",
            hidden.len(),
            size(bytes)
        );
    }
    out
}
