//! The full consistency check of a store (`amber store check`, and the crash
//! and concurrency tests): every version file is a valid, intact amber file
//! named by the layout, no version appears twice, every alias and every earlier
//! alias target points to an existing version, and `store.json` parses.
//! Leftover temporary files of interrupted saves are listed, not errors: they
//! are hidden files that no listing shows as versions.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use amber_format::{Container, MapMode};
use serde::Serialize;

use crate::Store;
use crate::error::Result;
use crate::layout::{self, LOCK_FILE, REGISTRY_FILE};
use crate::registry::Registry;

/// One inconsistency found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The model concerned.
    pub model: String,
    /// The file concerned.
    pub path: PathBuf,
    /// A stable code (`check.*`).
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

/// What [`Store::check`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Models examined.
    pub models: usize,
    /// Version files examined.
    pub versions: usize,
    /// Aliases examined.
    pub aliases: usize,
    /// Hidden temporary files left by interrupted saves.
    pub leftovers: Vec<PathBuf>,
    /// Everything that is wrong; empty for a consistent store.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether the store is consistent.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Checks every model of the store (see the module docs).
    pub fn check(&self) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        for name in self.model_names()? {
            report.models += 1;
            check_model(&name, &self.root().join(&name), &mut report)?;
        }
        Ok(report)
    }
}

fn check_model(name: &str, dir: &Path, report: &mut CheckReport) -> Result<()> {
    let mut problem = |path: &Path, code: &'static str, message: String| {
        report.problems.push(Problem {
            model: name.to_owned(),
            path: path.to_path_buf(),
            code,
            message,
        });
    };
    let mut versions = BTreeSet::new();
    let mut files: Vec<PathBuf> = crate::read_dir(dir)?.iter().map(|e| e.path()).collect();
    files.sort();
    let mut leftovers = Vec::new();
    for path in &files {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        if file == REGISTRY_FILE || file == LOCK_FILE {
            continue;
        }
        if file.starts_with('.') {
            leftovers.push(path.clone());
            continue;
        }
        let Some(found) = layout::parse_file_name(dir, name, file) else {
            problem(
                path,
                "check.unexpected_file",
                format!("`{file}` is not a version file name"),
            );
            continue;
        };
        if !versions.insert(found.version.to_string()) {
            problem(
                path,
                "check.duplicate_version",
                format!("version {} appears twice", found.version),
            );
        }
        match std::fs::metadata(path) {
            Ok(m) if !m.permissions().readonly() => {
                problem(
                    path,
                    "check.writable",
                    "version file is writable (versions are immutable)".into(),
                );
            }
            Ok(_) => {}
            Err(e) => problem(path, "check.unreadable", format!("cannot stat: {e}")),
        }
        let verified = amber_format::map_file(path, MapMode::ReadOnly)
            .and_then(Container::parse)
            .and_then(|c| c.verify(&|_| {}));
        if let Err(e) = verified {
            problem(path, "check.damaged", format!("{} ({e})", e.code()));
        }
    }
    let registry_path = dir.join(REGISTRY_FILE);
    match Registry::load(dir, name) {
        Ok(registry) => {
            for (alias, entry) in &registry.aliases {
                report_alias(alias, entry, &versions, &registry_path, &mut problem);
            }
            report.aliases += registry.aliases.len();
        }
        Err(e) => problem(&registry_path, "check.registry", e.to_string()),
    }
    report.versions += versions.len();
    report.leftovers.extend(leftovers);
    Ok(())
}

fn report_alias(
    alias: &str,
    entry: &crate::registry::Alias,
    versions: &BTreeSet<String>,
    path: &Path,
    problem: &mut impl FnMut(&Path, &'static str, String),
) {
    if layout::check_name("alias", alias).is_err() {
        problem(
            path,
            "check.alias_name",
            format!("alias `{alias}` has an invalid name"),
        );
    }
    if !versions.contains(&entry.version) {
        problem(
            path,
            "check.dangling_alias",
            format!(
                "alias `{alias}` points to version {}, which does not exist",
                entry.version
            ),
        );
    }
    for old in &entry.previous {
        if !versions.contains(old) {
            problem(
                path,
                "check.dangling_history",
                format!("alias `{alias}` would roll back to version {old}, which does not exist"),
            );
        }
    }
}
