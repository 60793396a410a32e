//! Runs the `amber` binary on the spec's test vectors: exit codes, text and JSON output.
#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod scan;

use std::path::{Path, PathBuf};
use std::process::Command;

fn vector(kind: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/vectors")
        .join(kind)
        .join(name)
}

fn amber(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_amber"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn verify_exit_codes() {
    let good = vector("valid", "arrays.amber");
    let damaged = vector("invalid", "damaged-array.amber");
    let (code, stdout, stderr) = amber(&["verify", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok ("), "{stdout}");
    let (code, _, stderr) = amber(&["verify", damaged.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("arrays/000000.npy") && stderr.contains("damaged"),
        "{stderr}"
    );
    let (code, _, stderr) = amber(&["verify", "/nonexistent/model.amber"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/model.amber"), "{stderr}");
    // The worst outcome wins when several files are given.
    let (code, _, _) = amber(&["verify", good.to_str().unwrap(), damaged.to_str().unwrap()]);
    assert_eq!(code, 1);
    let (code, _, _) = amber(&["verify"]);
    assert_eq!(code, 2, "missing argument is a usage error");
}

#[test]
fn verify_json_names_the_damaged_entry() {
    let damaged = vector("invalid", "damaged-pickle.amber");
    let (code, stdout, _) = amber(&["verify", "--json", damaged.to_str().unwrap()]);
    assert_eq!(code, 1);
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(value["ok"], false);
    assert_eq!(value["code"], "format.checksum");
    assert_eq!(value["entry"], "model.pkl");
}

#[test]
fn info_text_and_json() {
    let good = vector("valid", "arrays.amber");
    let (code, stdout, stderr) = amber(&["info", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    for needle in [
        "amber format 1",
        "model.pkl",
        "arrays/000000.npy",
        "<f8",
        "F-order",
        "struct[4 fields]",
        "test vector",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let (code, stdout, _) = amber(&["info", "--json", good.to_str().unwrap()]);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["format"], "amber");
    assert_eq!(value["metadata"]["purpose"], "test vector");
    assert_eq!(value["file_size"], std::fs::metadata(&good).unwrap().len());
}

#[test]
fn info_names_the_bit_shuffle_filter() {
    let packed = vector("valid", "compressed-bitshuffle.amber");
    let (code, stdout, stderr) = amber(&["info", packed.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches("zstd+bitshuffle").count(), 4, "{stdout}");
}

#[test]
fn info_shows_codecs_and_extract_writes_plain_npy() {
    let packed = vector("valid", "compressed-zstd.amber");
    let (code, stdout, stderr) = amber(&["info", packed.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("zstd+shuffle") && stdout.contains("RATIO"),
        "{stdout}"
    );
    let out = std::env::temp_dir().join(format!("amber-extract-{}.npy", std::process::id()));
    let (code, _, stderr) = amber(&[
        "extract",
        packed.to_str().unwrap(),
        "arrays/000000.npyc",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY"));
    // 40,000 int32 values after a 128-byte header: i // 7 for i in 0..40000.
    assert_eq!(bytes.len(), 128 + 160_000);
    let last = i32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
    assert_eq!(last, 39_999 / 7);
    let (code, _, stderr) = amber(&[
        "extract",
        packed.to_str().unwrap(),
        "nope",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("arrays/000001.npyc"),
        "lists the entries: {stderr}"
    );
}

#[test]
fn info_on_non_amber_input_says_what_it_is() {
    // A pickle (whatever its name) is described, not refused.
    let (code, stdout, stderr) = amber(&[
        "info",
        vector("invalid", "plain-pickle.amber").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("not an amber file") && stdout.contains("\"pickle\""),
        "{stdout}"
    );
    let (code, stdout, _) = amber(&[
        "info",
        "--json",
        vector("invalid", "plain-pickle.amber").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["format"].as_str(), v["protocol"].as_u64()),
        (Some("pickle"), Some(5))
    );
    let (code, _, stderr) = amber(&[
        "verify",
        vector("invalid", "plain-pickle.amber").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not an amber file") && stderr.contains("pickle"),
        "{stderr}"
    );
    let (code, _, stderr) = amber(&[
        "info",
        vector("invalid", "future-version.amber").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("upgrade amber"), "{stderr}");
}

#[test]
fn diff_exit_codes_and_report() {
    let arrays = vector("valid", "arrays.amber");
    let legacy = vector("valid", "legacy-no-content-hash.amber");
    let small = vector("valid", "no-arrays.amber");
    // Same model written by an older amber: identical content, other environment fields.
    let (code, stdout, stderr) = amber(&[
        "diff",
        "--json",
        arrays.to_str().unwrap(),
        legacy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["identical_content"], true);
    assert!(report["content_hash"]["b"].is_null());
    let keys: Vec<&str> = report["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"distributions.numpy.name"), "{keys:?}");
    let (code, stdout, _) = amber(&["diff", small.to_str().unwrap(), arrays.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("content      differs")
            && stdout.contains("added        arrays/000005.npy"),
        "{stdout}"
    );
    assert!(stdout.contains("pickle       stream changed"), "{stdout}");
    let (code, _, stderr) = amber(&["diff", small.to_str().unwrap(), "/nonexistent.amber"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent.amber"), "{stderr}");
}

#[test]
fn store_commands_on_a_missing_or_empty_store() {
    let (code, _, stderr) = amber(&["store", "ls", "/nonexistent/store"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/store"), "{stderr}");
    let dir = std::env::temp_dir().join(format!("amber-cli-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = dir.to_str().unwrap();
    let (code, stdout, _) = amber(&["store", "ls", root, "--json"]);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["models"], serde_json::json!([]));
    let (code, stdout, _) = amber(&["store", "show", root, "churn", "--json"]);
    assert_eq!(code, 2);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["code"],
        "store.unknown_model"
    );
    let (code, _, stderr) = amber(&["store", "alias", root, "../x", "prod", "1.0.0"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid model name"), "{stderr}");
    let (code, stdout, _) = amber(&["store", "check", root]);
    assert_eq!(code, 0);
    assert!(stdout.contains("0 models, 0 versions"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}
