//! `amber info` on pickle and joblib files: what they hold, read without unpickling.

use std::path::Path;

use amber_legacy::{ArraySource, Legacy, Limits};

use crate::Outcome;

/// Whether the file's content is a pickle or joblib file rather than an amber file.
pub fn is_legacy(path: &Path) -> bool {
    amber_legacy::is_legacy_file(path).unwrap_or(false)
}

fn describe(l: &Legacy) -> serde_json::Value {
    let (format, compression) = (l.kind().label(), l.kind().compression());
    let objects = l.arrays().iter().filter(|a| a.is_pickle()).count();
    let array_bytes: usize = (0..l.arrays().len())
        .filter(|&k| !l.arrays().get(k).is_some_and(ArraySource::is_pickle))
        .filter_map(|k| l.array_bytes(k).map(<[u8]>::len))
        .sum();
    serde_json::json!({
        "format": format,
        "protocol": l.protocol(),
        "compression": compression,
        "python2": l.py2(),
        "file_size": l.file_size(),
        "stream_size": l.stream().len(),
        "arrays": l.arrays().len(),
        "object_arrays": objects,
        "array_bytes": array_bytes,
        "companions": l.companions().iter().map(|c| c.name()).collect::<Vec<_>>(),
    })
}

/// Prints what a pickle or joblib file holds.
pub fn info(path: &Path, json: bool) -> Outcome {
    let l = match amber_legacy::open_path(path, &Limits::default()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {}: [{}] {e}", path.display(), e.code());
            return match e {
                amber_legacy::LegacyError::Io { .. } => Outcome::Error,
                _ => Outcome::Invalid,
            };
        }
    };
    let value = describe(&l);
    if json {
        match serde_json::to_string_pretty(&value) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::Error;
            }
        }
        return Outcome::Ok;
    }
    println!("{}: not an amber file", path.display());
    if let Some(map) = value.as_object() {
        for (key, v) in map {
            println!("  {key:<14} {v}");
        }
    }
    println!(
        "  convert it with: amber convert {} OUT.amber",
        path.display()
    );
    Outcome::Ok
}
