//! Integration tests of the store: layout, versions, aliases, deletion, the
//! consistency check and concurrent writers (threads here; processes in the
//! Python suite). Version files are copies of a real amber file (a spec vector).
#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use std::path::{Path, PathBuf};

use amber_store::{Store, StoreError, check_name, next_version, parse_version};

fn model_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/valid/no-arrays.amber")
}

fn save(
    store: &Store,
    name: &str,
    version: Option<&str>,
    alias: Option<&str>,
) -> Result<amber_store::VersionFile, StoreError> {
    let pending = store.prepare(name, version)?;
    std::fs::copy(model_file(), &pending).unwrap();
    let done = store.commit(name, &pending, version, alias);
    if done.is_err() {
        let _ = std::fs::remove_file(&pending);
    }
    done
}

fn versions(store: &Store, name: &str) -> Vec<String> {
    store
        .versions(name)
        .unwrap()
        .iter()
        .map(|f| f.version.to_string())
        .collect()
}

#[test]
fn names_are_one_safe_path_component() {
    for ok in [
        "churn",
        "Churn-2",
        "a",
        "m.v2_final",
        "0model",
        &"x".repeat(128),
    ] {
        check_name("model", ok).unwrap();
    }
    for bad in [
        "",
        "../x",
        "a/b",
        "a\\b",
        "..",
        "a..b",
        ".hidden",
        "-x",
        "_x",
        "a b",
        "é",
        "a:b",
        "a\0b",
        &"x".repeat(129),
    ] {
        let err = check_name("model", bad).unwrap_err();
        assert_eq!(err.code(), "store.invalid_name", "{bad:?}");
    }
}

#[test]
fn versions_are_strict_semver() {
    assert_eq!(parse_version("1.2.3").unwrap().to_string(), "1.2.3");
    assert_eq!(
        parse_version("2.0.0-rc.1").unwrap().to_string(),
        "2.0.0-rc.1"
    );
    for bad in [
        "1.2",
        "v1.2.3",
        "1.2.3.4",
        "01.2.3",
        "1.2.3+build",
        "",
        "latest",
        " 1.2.3",
    ] {
        assert_eq!(
            parse_version(bad).unwrap_err().code(),
            "store.invalid_version",
            "{bad:?}"
        );
    }
    assert_eq!(next_version(None).to_string(), "1.0.0");
    assert_eq!(
        next_version(Some(&parse_version("1.2.3").unwrap())).to_string(),
        "1.2.4"
    );
    assert_eq!(
        next_version(Some(&parse_version("1.3.0-rc.1").unwrap())).to_string(),
        "1.3.1"
    );
}

#[test]
fn save_list_resolve_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("store")).unwrap();
    let first = save(&store, "churn", None, Some("production")).unwrap();
    assert_eq!(first.version.to_string(), "1.0.0");
    let file = first.path.file_name().unwrap().to_str().unwrap().to_owned();
    let stamp = file
        .strip_prefix("churn_v1.0.0_")
        .unwrap()
        .strip_suffix(".amber")
        .unwrap();
    assert_eq!(stamp.len(), 16, "{file}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T',
        "{file}"
    );
    assert!(
        std::fs::metadata(&first.path)
            .unwrap()
            .permissions()
            .readonly()
    );
    save(&store, "churn", None, None).unwrap();
    save(&store, "churn", Some("2.0.0-rc.1"), None).unwrap();
    save(&store, "churn", Some("1.10.0"), None).unwrap();
    save(&store, "fraud", None, None).unwrap();
    assert_eq!(
        versions(&store, "churn"),
        ["1.0.0", "1.0.1", "1.10.0", "2.0.0-rc.1"]
    );
    assert_eq!(
        save(&store, "churn", None, None)
            .unwrap()
            .version
            .to_string(),
        "2.0.1"
    );
    assert_eq!(store.models().unwrap(), ["churn", "fraud"]);
    assert_eq!(
        store
            .resolve("churn", None, None)
            .unwrap()
            .version
            .to_string(),
        "2.0.1"
    );
    assert_eq!(
        store
            .resolve("churn", Some("1.10.0"), None)
            .unwrap()
            .version
            .to_string(),
        "1.10.0"
    );
    assert_eq!(
        store
            .resolve("churn", None, Some("production"))
            .unwrap()
            .version
            .to_string(),
        "1.0.0"
    );

    let exists = save(&store, "churn", Some("1.0.1"), None).unwrap_err();
    assert_eq!(exists.code(), "store.version_exists");
    assert!(exists.to_string().contains("1.0.1"), "{exists}");
    assert_eq!(
        store
            .resolve("churn", Some("9.9.9"), None)
            .unwrap_err()
            .code(),
        "store.unknown_version"
    );
    assert_eq!(
        store.resolve("nope", None, None).unwrap_err().code(),
        "store.unknown_model"
    );
    assert_eq!(
        store
            .resolve("churn", None, Some("staging"))
            .unwrap_err()
            .code(),
        "store.unknown_alias"
    );
    assert_eq!(
        store.resolve("churn", Some("x"), None).unwrap_err().code(),
        "store.invalid_version"
    );
    assert_eq!(
        store.prepare("../etc", None).unwrap_err().code(),
        "store.invalid_name"
    );
    // Only files that prepare handed out can be committed.
    let outside = dir.path().join("elsewhere.amber");
    std::fs::copy(model_file(), &outside).unwrap();
    assert_eq!(
        store
            .commit("churn", &outside, None, None)
            .unwrap_err()
            .code(),
        "store.not_pending"
    );
    let report = store.check().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.models, report.versions, report.aliases), (2, 6, 1));
}

#[test]
fn aliases_roll_back_through_their_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    for _ in 0..3 {
        save(&store, "m", None, None).unwrap();
    }
    store.set_alias("m", "prod", "1.0.0").unwrap();
    store.set_alias("m", "prod", "1.0.1").unwrap();
    store.set_alias("m", "prod", "1.0.2").unwrap();
    assert_eq!(
        store.set_alias("m", "prod", "7.0.0").unwrap_err().code(),
        "store.unknown_version"
    );
    assert_eq!(
        store
            .set_alias("m", "bad/alias", "1.0.0")
            .unwrap_err()
            .code(),
        "store.invalid_name"
    );
    let (from, to) = store.rollback("m", "prod").unwrap();
    assert_eq!(
        (from.version.to_string(), to.version.to_string()),
        ("1.0.2".into(), "1.0.1".into())
    );
    store.rollback("m", "prod").unwrap();
    assert_eq!(
        store.rollback("m", "prod").unwrap_err().code(),
        "store.no_history"
    );
    assert_eq!(
        store.rollback("m", "staging").unwrap_err().code(),
        "store.unknown_alias"
    );
    let registry = store.registry("m").unwrap();
    let prod = &registry.aliases["prod"];
    assert_eq!(prod.version, "1.0.0");
    let actions: Vec<&str> = prod.history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["set", "set", "set", "rollback", "rollback"]);
    // store.json is plain, pretty JSON that a person can read.
    let text = std::fs::read_to_string(dir.path().join("m/store.json")).unwrap();
    assert!(text.contains("\"prod\": {"), "{text}");
}

#[test]
fn delete_refuses_aliased_versions_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    save(&store, "m", None, Some("prod")).unwrap();
    save(&store, "m", None, Some("prod")).unwrap();
    save(&store, "m", None, None).unwrap();
    store.delete("m", "1.0.2", false).unwrap();
    let err = store.delete("m", "1.0.1", false).unwrap_err();
    assert_eq!(err.code(), "store.alias_in_use");
    assert!(err.to_string().contains("`prod`"), "{err}");
    assert!(store.delete("m", "1.0.1", true).unwrap().is_empty());
    // The alias went back to its previous target; nothing dangles.
    assert_eq!(
        store.registry("m").unwrap().aliases["prod"].version,
        "1.0.0"
    );
    assert_eq!(store.delete("m", "1.0.0", true).unwrap(), ["prod"]);
    assert!(store.registry("m").unwrap().aliases.is_empty());
    assert_eq!(
        store.versions("m").unwrap_err().code(),
        "store.unknown_model"
    );
    assert!(store.check().unwrap().ok());
}

#[test]
fn check_finds_what_is_wrong_and_listings_ignore_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let kept = save(&store, "m", None, Some("prod")).unwrap();
    let gone = save(&store, "m", None, Some("prod")).unwrap();
    // An interrupted save: a hidden pending file, complete or not.
    std::fs::write(dir.path().join("m/.pending-1-abc.amber"), b"PK partial").unwrap();
    assert_eq!(versions(&store, "m"), ["1.0.0", "1.0.1"]);
    let report = store.check().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.leftovers.len(), 1);
    // Damage by hand: remove an aliased file, truncate another, add junk.
    std::fs::remove_file(&gone.path).unwrap();
    let mut perms = std::fs::metadata(&kept.path).unwrap().permissions();
    #[expect(
        clippy::permissions_set_readonly_false,
        reason = "test damages the file on purpose"
    )]
    perms.set_readonly(false);
    std::fs::set_permissions(&kept.path, perms).unwrap();
    let bytes = std::fs::read(&kept.path).unwrap();
    std::fs::write(&kept.path, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.path().join("m/notes.txt"), b"hi").unwrap();
    let report = store.check().unwrap();
    let mut codes: Vec<&str> = report.problems.iter().map(|p| p.code).collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [
            "check.damaged",
            "check.dangling_alias",
            "check.unexpected_file",
            "check.writable"
        ]
    );
    std::fs::write(dir.path().join("m/store.json"), b"{not json").unwrap();
    assert_eq!(store.registry("m").unwrap_err().code(), "store.corrupt");
    assert_eq!(
        store
            .check()
            .unwrap()
            .problems
            .iter()
            .filter(|p| p.code == "check.registry")
            .count(),
        1
    );
}

#[test]
fn concurrent_writers_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let store = Store::create(root).unwrap();
                (0..10)
                    .map(|i| {
                        let alias = if i % 3 == 0 { Some("latest") } else { None };
                        save(&store, "shared", None, alias)
                            .unwrap()
                            .version
                            .to_string()
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(move |v| (t, v))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .map(|(_, v)| v)
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 80);
    let store = Store::open(&root).unwrap();
    assert_eq!(store.versions("shared").unwrap().len(), 80);
    let report = store.check().unwrap();
    assert!(report.ok() && report.leftovers.is_empty(), "{report:?}");
    let latest = &store.registry("shared").unwrap().aliases["latest"];
    assert_eq!(latest.history.len(), 8 * 4);
}

#[test]
fn open_refuses_a_missing_root() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path().join("missing")).unwrap_err();
    assert_eq!(err.code(), "io");
}

#[test]
fn prune_removes_only_old_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    save(&store, "m", None, Some("prod")).unwrap();
    let old = dir.path().join("m/.pending-1-old.amber");
    let fresh = dir.path().join("m/..pending-2-fresh.amber.x.amber-tmp");
    std::fs::write(&old, b"partial").unwrap();
    std::fs::write(&fresh, b"partial").unwrap();
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let removed = store.prune(std::time::Duration::from_secs(3600)).unwrap();
    assert_eq!(removed, std::slice::from_ref(&old));
    assert!(!old.exists() && fresh.exists());
    assert_eq!(
        store.prune(std::time::Duration::ZERO).unwrap(),
        std::slice::from_ref(&fresh)
    );
    // The lock, the registry and the versions stay.
    let report = store.check().unwrap();
    assert!(report.ok() && report.leftovers.is_empty(), "{report:?}");
    assert_eq!(report.versions, 1);
    assert!(dir.path().join("m/.lock").exists() && dir.path().join("m/store.json").exists());
}
