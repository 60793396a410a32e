//! `store.json`: a model's aliases, each with its stack of previous targets
//! and a log of every change, written atomically.
//!
//! ```json
//! {"format": "amber-store", "format_version": 1, "model": "churn",
//!  "aliases": {"production": {"version": "1.2.0", "previous": ["1.0.0", "1.1.0"],
//!              "history": [{"at": "2026-11-22T10:15:00Z", "action": "set", "version": "1.0.0"}, ...]}}}
//! ```
//!
//! `version` is the alias's target; `previous` the targets it had before, oldest
//! first, which [`Registry::rollback`] pops; `history` only grows, so a rollback
//! is recorded too. The file is replaced by write-to-temp, fsync, rename and
//! fsync of the directory, so a crash leaves the old file or the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::layout::REGISTRY_FILE;

/// Value of the `format` field.
pub const REGISTRY_FORMAT: &str = "amber-store";
/// The registry version this crate writes and the highest it reads.
pub const REGISTRY_VERSION: u32 = 1;

/// One change of an alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When (RFC 3339 UTC).
    pub at: String,
    /// `set`, `rollback` or `delete` (a forced delete removed the version).
    pub action: String,
    /// The target after the change (absent when the alias was removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The target before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// One alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// The current target.
    pub version: String,
    /// Earlier targets, oldest first; rollback returns to the last one.
    #[serde(default)]
    pub previous: Vec<String>,
    /// Every change, oldest first.
    #[serde(default)]
    pub history: Vec<Event>,
}

/// The content of `store.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Always `"amber-store"`.
    pub format: String,
    /// Always 1 for now.
    pub format_version: u32,
    /// The model this file belongs to.
    pub model: String,
    /// Aliases by name.
    #[serde(default)]
    pub aliases: BTreeMap<String, Alias>,
}

impl Registry {
    /// An empty registry for `model`.
    #[must_use]
    pub fn new(model: &str) -> Self {
        Self {
            format: REGISTRY_FORMAT.into(),
            format_version: REGISTRY_VERSION,
            model: model.to_owned(),
            aliases: BTreeMap::new(),
        }
    }

    /// Reads the registry in `dir`; an empty one if the file does not exist.
    pub fn load(dir: &Path, model: &str) -> Result<Self> {
        let path = dir.join(REGISTRY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new(model)),
            Err(e) => return Err(StoreError::io("read", path, e)),
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let registry: Self = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if registry.format != REGISTRY_FORMAT {
            return Err(corrupt(format!("`format` is not `{REGISTRY_FORMAT}`")));
        }
        if registry.format_version > REGISTRY_VERSION {
            return Err(corrupt(format!(
                "format_version {} needs a newer amber (this one reads up to {REGISTRY_VERSION})",
                registry.format_version
            )));
        }
        if registry.model != model {
            return Err(corrupt(format!(
                "it belongs to model `{}`, not `{model}`",
                registry.model
            )));
        }
        Ok(registry)
    }

    /// Replaces the registry in `dir` atomically and durably.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(REGISTRY_FILE);
        let mut text = serde_json::to_vec_pretty(self)
            .map_err(|e| StoreError::io("encode", &path, e.into()))?;
        text.push(b'\n');
        let mut builder = tempfile::Builder::new();
        builder.prefix(".store.json.").suffix(".tmp");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o644));
        }
        let mut temp = builder
            .tempfile_in(dir)
            .map_err(|e| StoreError::io("create a temporary file in", dir, e))?;
        temp.write_all(&text)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| StoreError::io("write", temp.path().to_path_buf(), e))?;
        temp.persist(&path)
            .map_err(|e| StoreError::io("rename into", &path, e.error))?;
        sync_dir(dir)
    }

    /// Points `alias` at `version`, keeping the old target for rollback.
    pub fn set(&mut self, alias: &str, version: &str, at: &str) {
        let event = |from: Option<String>| Event {
            at: at.to_owned(),
            action: "set".into(),
            version: Some(version.to_owned()),
            from,
        };
        match self.aliases.get_mut(alias) {
            Some(entry) => {
                if entry.version == version {
                    return;
                }
                let old = std::mem::replace(&mut entry.version, version.to_owned());
                entry.history.push(event(Some(old.clone())));
                entry.previous.push(old);
            }
            None => {
                self.aliases.insert(
                    alias.to_owned(),
                    Alias {
                        version: version.to_owned(),
                        previous: Vec::new(),
                        history: vec![event(None)],
                    },
                );
            }
        }
    }

    /// Moves `alias` back to its previous target; returns (from, to).
    pub fn rollback(&mut self, model: &str, alias: &str, at: &str) -> Result<(String, String)> {
        let entry = self
            .aliases
            .get_mut(alias)
            .ok_or_else(|| StoreError::UnknownAlias {
                name: model.to_owned(),
                alias: alias.to_owned(),
            })?;
        let to = entry.previous.pop().ok_or_else(|| StoreError::NoHistory {
            name: model.to_owned(),
            alias: alias.to_owned(),
        })?;
        let from = std::mem::replace(&mut entry.version, to.clone());
        entry.history.push(Event {
            at: at.to_owned(),
            action: "rollback".into(),
            version: Some(to.clone()),
            from: Some(from.clone()),
        });
        Ok((from, to))
    }

    /// The aliases whose current target is `version`.
    #[must_use]
    pub fn pointing_to(&self, version: &str) -> Vec<String> {
        self.aliases
            .iter()
            .filter(|(_, a)| a.version == version)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Forgets a deleted version: it leaves every alias's previous targets, an
    /// alias pointing to it goes back to its previous target, and an alias with
    /// none left is removed. Returns the aliases removed.
    pub fn forget(&mut self, version: &str, at: &str) -> Vec<String> {
        let mut removed = Vec::new();
        for (name, entry) in &mut self.aliases {
            entry.previous.retain(|v| v != version);
            if entry.version != version {
                continue;
            }
            let next = entry.previous.pop();
            entry.history.push(Event {
                at: at.to_owned(),
                action: "delete".into(),
                version: next.clone(),
                from: Some(version.to_owned()),
            });
            match next {
                Some(v) => entry.version = v,
                None => removed.push(name.clone()),
            }
        }
        for name in &removed {
            self.aliases.remove(name);
        }
        removed
    }
}

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("sync directory", dir, e))
}
