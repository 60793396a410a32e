//! The amber model store: a directory of named models, each with immutable,
//! semantically versioned amber files, aliases (`production`) with history and
//! rollback, safe under concurrent writers and crashes.
//!
//! The layout is in [`layout`] and is meant to be read by a person. Writers of
//! one model serialise on an exclusive lock of `ROOT/<name>/.lock` (std
//! `File::lock`, released by the OS when a process dies); readers take no lock,
//! since versions appear by a single rename and `store.json` is replaced
//! atomically. A save is two steps so the file can be written by any amber
//! writer (the Python package pickles): [`Store::prepare`] hands out a hidden
//! temporary path, the caller writes the model there (fsynced), and
//! [`Store::commit`] picks the version under the lock, renames the file into
//! place, fsyncs the directory and moves the alias. A process killed at any
//! point leaves either no new version or a complete one, and a valid `store.json`.

#![deny(missing_docs)]

pub mod check;
pub mod error;
pub mod layout;
pub mod registry;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use check::{CheckReport, Problem};
pub use error::{Result, StoreError};
pub use layout::{VersionFile, check_name, next_version, parse_version};
pub use registry::{Alias, Event, Registry};

use crate::layout::{LOCK_FILE, PENDING_PREFIX};
use crate::registry::sync_dir;

/// A store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The exclusive lock on one model, held while it lives.
struct Lock {
    _file: File,
}

impl Store {
    /// A store at `root`, creating the directory if needed.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io("create directory", &root, e))?;
        Ok(Self { root })
    }

    /// A store at an existing `root` (for tools that must not create one).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(Self { root }),
            Ok(_) => Err(StoreError::io(
                "open store",
                &root,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            )),
            Err(e) => Err(StoreError::io("open store", &root, e)),
        }
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of model `name` (which is checked).
    pub fn model_dir(&self, name: &str) -> Result<PathBuf> {
        check_name("model", name)?;
        Ok(self.root.join(name))
    }

    /// The names of the models that have at least one version, sorted.
    pub fn models(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for name in self.model_names()? {
            if !self.versions_in(&self.root.join(&name), &name)?.is_empty() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The versions of `name`, oldest (lowest precedence) first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionFile>> {
        let dir = self.model_dir(name)?;
        let versions = if dir.is_dir() {
            self.versions_in(&dir, name)?
        } else {
            Vec::new()
        };
        if versions.is_empty() {
            return Err(StoreError::UnknownModel {
                name: name.to_owned(),
                root: self.root.clone(),
            });
        }
        Ok(versions)
    }

    fn versions_in(&self, dir: &Path, name: &str) -> Result<Vec<VersionFile>> {
        let mut versions: Vec<VersionFile> = read_dir(dir)?
            .into_iter()
            .filter_map(|e| {
                let file = e.file_name();
                layout::parse_file_name(dir, name, file.to_str()?)
            })
            .collect();
        versions.sort_by(|a, b| a.version.cmp(&b.version).then(a.created.cmp(&b.created)));
        Ok(versions)
    }

    /// The aliases of `name` (an empty registry if it has none).
    pub fn registry(&self, name: &str) -> Result<Registry> {
        let dir = self.model_dir(name)?;
        Registry::load(&dir, name)
    }

    /// The version to load: the one an alias points to, the one given, or the newest.
    pub fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
        alias: Option<&str>,
    ) -> Result<VersionFile> {
        let versions = self.versions(name)?;
        let wanted = match (version, alias) {
            (Some(v), _) => Some(parse_version(v)?),
            (None, Some(a)) => {
                check_name("alias", a)?;
                let registry = self.registry(name)?;
                let target = registry
                    .aliases
                    .get(a)
                    .ok_or_else(|| StoreError::UnknownAlias {
                        name: name.to_owned(),
                        alias: a.to_owned(),
                    })?;
                Some(parse_version(&target.version)?)
            }
            (None, None) => None,
        };
        let found = match &wanted {
            Some(v) => versions.iter().find(|f| &f.version == v),
            None => versions.last(),
        };
        found.cloned().ok_or_else(|| StoreError::UnknownVersion {
            name: name.to_owned(),
            version: wanted.map(|v| v.to_string()).unwrap_or_default(),
            available: list(&versions),
        })
    }

    /// A fresh hidden path in the model's directory for the caller to write a
    /// new version into before [`Store::commit`]. Validates `version` early.
    pub fn prepare(&self, name: &str, version: Option<&str>) -> Result<PathBuf> {
        let dir = self.model_dir(name)?;
        if let Some(v) = version {
            parse_version(v)?;
        }
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| StoreError::io("create directory", &dir, e))?;
            sync_dir(&self.root)?;
        }
        let temp = tempfile::Builder::new()
            .prefix(&format!("{PENDING_PREFIX}{}-", std::process::id()))
            .suffix(".amber")
            .tempfile_in(&dir)
            .map_err(|e| StoreError::io("create a temporary file in", &dir, e))?;
        // The caller writes the file itself (atomically, by rename): only the name is kept.
        let (_, path) = temp
            .keep()
            .map_err(|e| StoreError::io("keep temporary file", &dir, e.error))?;
        std::fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
        Ok(path)
    }

    /// Registers the complete, fsynced file at `pending` (from [`Store::prepare`])
    /// as a new version of `name`: the given one or the next patch version, and
    /// points `alias` at it. Everything happens under the model's lock.
    pub fn commit(
        &self,
        name: &str,
        pending: &Path,
        version: Option<&str>,
        alias: Option<&str>,
    ) -> Result<VersionFile> {
        let dir = self.model_dir(name)?;
        let is_pending = pending.parent() == Some(dir.as_path())
            && pending
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(PENDING_PREFIX));
        if !is_pending {
            return Err(StoreError::NotPending {
                name: name.to_owned(),
                path: pending.to_path_buf(),
            });
        }
        let wanted = version.map(parse_version).transpose()?;
        if let Some(a) = alias {
            check_name("alias", a)?;
        }
        let _lock = self.lock(&dir)?;
        let existing = self.versions_in(&dir, name)?;
        let version = match wanted {
            Some(v) => {
                if let Some(f) = existing.iter().find(|f| f.version == v) {
                    return Err(StoreError::VersionExists {
                        name: name.to_owned(),
                        version: v.to_string(),
                        path: f.path.clone(),
                    });
                }
                v
            }
            None => next_version(existing.iter().map(|f| &f.version).max()),
        };
        let now = jiff::Timestamp::now();
        let file = layout::file_name(name, &version, &layout::stamp(now));
        let target = dir.join(&file);
        read_only(pending)?;
        std::fs::rename(pending, &target).map_err(|e| StoreError::io("rename into", &target, e))?;
        sync_dir(&dir)?;
        if let Some(a) = alias {
            let mut registry = Registry::load(&dir, name)?;
            registry.set(a, &version.to_string(), &now_text());
            registry.save(&dir)?;
        }
        layout::parse_file_name(&dir, name, &file).ok_or_else(|| StoreError::Corrupt {
            path: target,
            reason: "the new file name does not parse back".into(),
        })
    }

    /// Points `alias` of `name` at an existing `version`.
    pub fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<VersionFile> {
        check_name("alias", alias)?;
        let dir = self.model_dir(name)?;
        let _lock = self.lock_existing(name, &dir)?;
        let target = self.resolve(name, Some(version), None)?;
        let mut registry = Registry::load(&dir, name)?;
        registry.set(alias, &target.version.to_string(), &now_text());
        registry.save(&dir)?;
        Ok(target)
    }

    /// Moves `alias` back to its previous target; returns (from, to).
    pub fn rollback(&self, name: &str, alias: &str) -> Result<(VersionFile, VersionFile)> {
        check_name("alias", alias)?;
        let dir = self.model_dir(name)?;
        let _lock = self.lock_existing(name, &dir)?;
        let mut registry = Registry::load(&dir, name)?;
        let (from, to) = registry.rollback(name, alias, &now_text())?;
        let to_file = self.resolve(name, Some(&to), None)?;
        let from_file = self.resolve(name, Some(&from), None)?;
        registry.save(&dir)?;
        Ok((from_file, to_file))
    }

    /// Deletes a version. Refuses one an alias points to unless `force`; with
    /// `force`, such aliases go back to their previous target (or are removed).
    /// Returns the aliases removed.
    pub fn delete(&self, name: &str, version: &str, force: bool) -> Result<Vec<String>> {
        let dir = self.model_dir(name)?;
        let _lock = self.lock_existing(name, &dir)?;
        let target = self.resolve(name, Some(version), None)?;
        let text = target.version.to_string();
        let mut registry = Registry::load(&dir, name)?;
        let users = registry.pointing_to(&text);
        if !users.is_empty() && !force {
            return Err(StoreError::AliasInUse {
                name: name.to_owned(),
                version: text,
                aliases: users
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        // The registry first: an alias must never point to a missing file.
        let removed = registry.forget(&text, &now_text());
        registry.save(&dir)?;
        std::fs::remove_file(&target.path)
            .map_err(|e| StoreError::io("remove", &target.path, e))?;
        sync_dir(&dir)?;
        Ok(removed)
    }

    /// Removes the hidden temporary files that interrupted saves left behind, if
    /// they were last modified more than `older_than` ago (a save in progress
    /// keeps writing its file, so a generous age never touches one). Returns
    /// the files removed.
    pub fn prune(&self, older_than: std::time::Duration) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for name in self.model_names()? {
            let dir = self.root.join(&name);
            let _lock = self.lock(&dir)?;
            for entry in read_dir(&dir)? {
                let file = entry.file_name();
                let is_temporary = file
                    .to_str()
                    .is_some_and(|f| f.starts_with('.') && f != LOCK_FILE);
                let age = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                if is_temporary && age.is_some_and(|a| a > older_than) {
                    let path = entry.path();
                    std::fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
                    removed.push(path);
                }
            }
            sync_dir(&dir)?;
        }
        removed.sort();
        Ok(removed)
    }

    /// The directories under the root named like models, with or without versions.
    pub(crate) fn model_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = read_dir(&self.root)?
            .into_iter()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| check_name("model", n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn lock_existing(&self, name: &str, dir: &Path) -> Result<Lock> {
        if !dir.is_dir() {
            return Err(StoreError::UnknownModel {
                name: name.to_owned(),
                root: self.root.clone(),
            });
        }
        self.lock(dir)
    }

    fn lock(&self, dir: &Path) -> Result<Lock> {
        let path = dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io("open lock file", &path, e))?;
        file.lock().map_err(|e| StoreError::io("lock", &path, e))?;
        Ok(Lock { _file: file })
    }
}

pub(crate) fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    std::fs::read_dir(dir)
        .and_then(Iterator::collect)
        .map_err(|e| StoreError::io("list directory", dir, e))
}

fn read_only(path: &Path) -> Result<()> {
    let mut permissions = std::fs::metadata(path)
        .map_err(|e| StoreError::io("stat", path, e))?
        .permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(path, permissions).map_err(|e| StoreError::io("chmod", path, e))
}

fn now_text() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

/// Versions as a comma-separated list for messages.
fn list(versions: &[VersionFile]) -> String {
    let all: Vec<String> = versions.iter().map(|f| f.version.to_string()).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}
