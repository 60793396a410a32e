//! `amber store …`: look into and manage a model store without Python.
//!
//! The store logic is `amber-store`'s (shared with `amber.Store`); this module
//! only parses arguments and prints. Exit codes: 0 success; 1 `check` found
//! problems, or a store file is invalid; 2 a wrong name, version or alias, a
//! missing store, or an I/O error.

use std::path::PathBuf;

use amber_store::{Store, StoreError, VersionFile};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::Outcome;

/// The `amber store` subcommands.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// List the models: versions, newest version and aliases.
    Ls {
        /// The store's root directory.
        root: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one model: every version and every alias with its history.
    Show {
        /// The store's root directory.
        root: PathBuf,
        /// The model name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Point an alias at a version (its old target is kept for rollback).
    Alias {
        /// The store's root directory.
        root: PathBuf,
        /// The model name.
        name: String,
        /// The alias (e.g. `production`).
        alias: String,
        /// The version it should point to.
        version: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move an alias back to its previous target.
    Rollback {
        /// The store's root directory.
        root: PathBuf,
        /// The model name.
        name: String,
        /// The alias.
        alias: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the temporary files that interrupted saves left behind.
    Prune {
        /// The store's root directory.
        root: PathBuf,
        /// Only files last modified more than this many minutes ago.
        #[arg(long, default_value_t = 60)]
        older_than_minutes: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the whole store: every version file intact, every alias valid.
    Check {
        /// The store's root directory.
        root: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn version_json(f: &VersionFile) -> Value {
    json!({"name": f.name, "version": f.version.to_string(), "created": f.created, "path": f.path})
}

/// Runs an `amber store` subcommand.
pub fn run(command: StoreCommand) -> Outcome {
    let (json, result) = match command {
        StoreCommand::Ls { root, json } => (json, ls(root, json)),
        StoreCommand::Show { root, name, json } => (json, show(root, &name, json)),
        StoreCommand::Alias {
            root,
            name,
            alias,
            version,
            json,
        } => (
            json,
            Store::open(root)
                .and_then(|s| s.set_alias(&name, &alias, &version))
                .map(|f| {
                    let text = format!("{name}: alias `{alias}` -> {}", f.version);
                    (json!({"name": name, "alias": alias, "version": version_json(&f)}), text, Outcome::Ok)
                }),
        ),
        StoreCommand::Rollback {
            root,
            name,
            alias,
            json,
        } => (
            json,
            Store::open(root).and_then(|s| s.rollback(&name, &alias)).map(|(from, to)| {
                let text = format!("{name}: alias `{alias}` rolled back from {} to {}", from.version, to.version);
                (
                    json!({"name": name, "alias": alias, "from": version_json(&from), "to": version_json(&to)}),
                    text,
                    Outcome::Ok,
                )
            }),
        ),
        StoreCommand::Check { root, json } => (json, check(root)),
        StoreCommand::Prune {
            root,
            older_than_minutes,
            json,
        } => (
            json,
            Store::open(root)
                .and_then(|s| s.prune(std::time::Duration::from_secs(older_than_minutes.saturating_mul(60))))
                .map(|removed| {
                    let text: String = removed.iter().map(|p| format!("removed {}\n", p.display())).collect();
                    let text = format!("{text}{} leftover files removed", removed.len());
                    (json!({"removed": removed}), text, Outcome::Ok)
                }),
        ),
    };
    match result {
        Ok((value, text, outcome)) => {
            if json {
                println!("{value:#}");
            } else {
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
            }
            outcome
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json!({"ok": false, "code": e.code(), "error": e.to_string()})
                );
            }
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            match e {
                StoreError::Corrupt { .. } => Outcome::Invalid,
                _ => Outcome::Error,
            }
        }
    }
}

type Shown = Result<(Value, String, Outcome), StoreError>;

fn ls(root: PathBuf, _json: bool) -> Shown {
    use std::fmt::Write as _;
    let store = Store::open(root)?;
    let mut rows = Vec::new();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<24} {:>8}  {:<14} {:<22} ALIASES",
        "MODEL", "VERSIONS", "NEWEST", "SAVED"
    );
    for name in store.models()? {
        let versions = store.versions(&name)?;
        let registry = store.registry(&name)?;
        let newest = versions.last();
        let aliases: Vec<String> = registry
            .aliases
            .iter()
            .map(|(a, e)| format!("{a}={}", e.version))
            .collect();
        let _ = writeln!(
            text,
            "{name:<24} {:>8}  {:<14} {:<22} {}",
            versions.len(),
            newest.map(|f| f.version.to_string()).unwrap_or_default(),
            newest.map(|f| f.created.clone()).unwrap_or_default(),
            if aliases.is_empty() {
                "-".into()
            } else {
                aliases.join(", ")
            }
        );
        rows.push(json!({
            "name": name,
            "versions": versions.len(),
            "newest": newest.map(version_json),
            "aliases": registry.aliases.iter().map(|(a, e)| (a.clone(), json!(e.version))).collect::<serde_json::Map<_, _>>(),
        }));
    }
    Ok((
        json!({"root": store.root(), "models": rows}),
        text,
        Outcome::Ok,
    ))
}

fn show(root: PathBuf, name: &str, _json: bool) -> Shown {
    use std::fmt::Write as _;
    let store = Store::open(root)?;
    let versions = store.versions(name)?;
    let registry = store.registry(name)?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{name}  ({} versions, in {})",
        versions.len(),
        store.root().join(name).display()
    );
    let _ = writeln!(
        text,
        "  {:<14} {:<22} {:>10}  {:<20} FILE",
        "VERSION", "SAVED", "SIZE", "ALIASES"
    );
    let mut rows = Vec::new();
    for f in &versions {
        let v = f.version.to_string();
        let aliases = registry.pointing_to(&v);
        let size = std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0);
        let file = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "  {v:<14} {:<22} {:>10}  {:<20} {file}",
            f.created,
            crate::render::size(size),
            if aliases.is_empty() {
                "-".into()
            } else {
                aliases.join(", ")
            }
        );
        let mut row = version_json(f);
        if let Some(map) = row.as_object_mut() {
            map.insert("size".into(), json!(size));
            map.insert("aliases".into(), json!(aliases));
        }
        rows.push(row);
    }
    for (alias, entry) in &registry.aliases {
        let previous = if entry.previous.is_empty() {
            "no earlier target".to_owned()
        } else {
            format!(
                "rollback goes to {}",
                entry.previous.last().map(String::as_str).unwrap_or("?")
            )
        };
        let _ = writeln!(
            text,
            "alias {alias} -> {} ({previous}; {} changes)",
            entry.version,
            entry.history.len()
        );
        for event in &entry.history {
            let _ = writeln!(
                text,
                "    {}  {:<8} {} -> {}",
                event.at,
                event.action,
                event.from.as_deref().unwrap_or("-"),
                event.version.as_deref().unwrap_or("(removed)")
            );
        }
    }
    let value = json!({"name": name, "versions": rows, "aliases": registry.aliases});
    Ok((value, text, Outcome::Ok))
}

fn check(root: PathBuf) -> Shown {
    use std::fmt::Write as _;
    let store = Store::open(root)?;
    let report = store.check()?;
    let mut text = String::new();
    for p in &report.problems {
        let _ = writeln!(
            text,
            "problem  {}: {} ({}) [{}]",
            p.model,
            p.message,
            p.path.display(),
            p.code
        );
    }
    for l in &report.leftovers {
        let _ = writeln!(
            text,
            "leftover {} (an interrupted save; not a version, safe to remove)",
            l.display()
        );
    }
    let _ = write!(
        text,
        "{}: {} models, {} versions, {} aliases, {} problems",
        store.root().display(),
        report.models,
        report.versions,
        report.aliases,
        report.problems.len()
    );
    let outcome = if report.ok() {
        Outcome::Ok
    } else {
        Outcome::Invalid
    };
    let value = serde_json::to_value(&report).unwrap_or(Value::Null);
    Ok((json!({"ok": report.ok(), "report": value}), text, outcome))
}
