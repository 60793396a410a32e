//! Integration tests: real CPython pickles (`tests/data`, made by
//! `generate.py`), hostile inputs, hooks and property tests.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly on purpose"
)]

mod fastpath;
mod fixtures;
mod hooks;
mod hostile;
mod props;
mod value;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Directory holding the fixtures.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Names of the fixtures ending in one of `suffixes`, sorted.
pub fn fixture_names(suffixes: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| suffixes.iter().any(|s| n.ends_with(s)))
        .collect();
    names.sort();
    names
}

/// Bytes of one fixture.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// One `[file]` section of `expected.txt`: key → values (keys may repeat).
#[derive(Debug, Default)]
pub struct Expected {
    /// `(key, rest of line)` in file order.
    pub entries: Vec<(String, String)>,
}

impl Expected {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of `key` as a number.
    pub fn number(&self, key: &str) -> u64 {
        self.get(key)
            .unwrap_or_else(|| panic!("no `{key}`"))
            .parse()
            .unwrap()
    }
}

/// Parse `expected.txt`.
pub fn expected() -> BTreeMap<String, Expected> {
    let text = std::fs::read_to_string(data_dir().join("expected.txt")).unwrap();
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_owned());
            out.entry(name.to_owned()).or_default();
            continue;
        }
        let name = current.as_ref().expect("line before a section");
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        out.get_mut(name)
            .unwrap()
            .entries
            .push((k.to_owned(), v.to_owned()));
    }
    out
}
