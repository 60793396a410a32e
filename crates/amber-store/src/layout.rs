//! Where things live in a store, and the names allowed there.
//!
//! ```text
//! ROOT/<name>/<name>_v<version>_<YYYYMMDDTHHMMSSZ>.amber   one immutable file per version
//! ROOT/<name>/store.json                                    aliases and their history
//! ROOT/<name>/.lock                                         taken by every writer of the model
//! ROOT/<name>/.<anything>                                   temporary files, never listed
//! ```
//!
//! A version exists exactly when its file does: it appears by one rename, so a
//! reader never sees a half-written version, and a listing skips dot files.

use std::path::{Path, PathBuf};

use semver::Version;

use crate::error::{Result, StoreError};

/// The longest model or alias name.
pub const MAX_NAME_LEN: usize = 128;
/// Extension of version files.
pub const EXTENSION: &str = ".amber";
/// The registry of aliases in a model's directory.
pub const REGISTRY_FILE: &str = "store.json";
/// The lock file in a model's directory.
pub const LOCK_FILE: &str = ".lock";
/// Prefix of the temporary files `prepare` hands out.
pub const PENDING_PREFIX: &str = ".pending-";

/// Checks a model or alias name: 1 to 128 characters from `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit, and no `..`. The name is a directory and a
/// file name prefix, so this keeps it one portable path component.
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    let bad = |reason| {
        Err(StoreError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 128 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or a digit");
    }
    if name.contains("..") {
        return bad("it contains `..`");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("only letters, digits, `.`, `_` and `-` are allowed (no path separators)");
    }
    Ok(())
}

/// Parses a version: a strict semantic version (`1.2.0`, `2.0.0-rc.1`), no
/// leading `v`, no build metadata (`+...`, which semver ignores when ordering,
/// so two such versions could not be told apart by precedence).
pub fn parse_version(text: &str) -> Result<Version> {
    let version = Version::parse(text).map_err(|e| StoreError::InvalidVersion {
        version: text.to_owned(),
        reason: format!("not a semantic version MAJOR.MINOR.PATCH ({e})"),
    })?;
    if !version.build.is_empty() {
        return Err(StoreError::InvalidVersion {
            version: text.to_owned(),
            reason: "build metadata (`+...`) is not allowed".into(),
        });
    }
    Ok(version)
}

/// The version `save` takes when none is given: `1.0.0` for the first one, then
/// the next patch after the highest (`1.2.3` gives `1.2.4`, `1.3.0-rc.1` gives `1.3.1`).
#[must_use]
pub fn next_version(highest: Option<&Version>) -> Version {
    match highest {
        None => Version::new(1, 0, 0),
        Some(v) => Version::new(v.major, v.minor, v.patch.saturating_add(1)),
    }
}

/// The file name of a version: `<name>_v<version>_<stamp>.amber`.
#[must_use]
pub fn file_name(name: &str, version: &Version, stamp: &str) -> String {
    format!("{name}_v{version}_{stamp}{EXTENSION}")
}

/// Formats a UTC time as a file name stamp, `20261122T101500Z`.
#[must_use]
pub fn stamp(time: jiff::Timestamp) -> String {
    time.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// One version file, as found in a model's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFile {
    /// The model name.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// When it was saved (from the file name), RFC 3339 UTC.
    pub created: String,
    /// The file.
    pub path: PathBuf,
}

/// Reads `<name>_v<version>_<stamp>.amber`; `None` for any other file name.
#[must_use]
pub fn parse_file_name(dir: &Path, name: &str, file: &str) -> Option<VersionFile> {
    let middle = file
        .strip_prefix(name)?
        .strip_prefix("_v")?
        .strip_suffix(EXTENSION)?;
    // Semantic versions never contain `_`, so the stamp is after the last one.
    let (version, stamp) = middle.rsplit_once('_')?;
    let version = parse_version(version).ok()?;
    let time = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp).ok()?;
    let created = time.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(VersionFile {
        name: name.to_owned(),
        version,
        created: created.to_string(),
        path: dir.join(file),
    })
}
