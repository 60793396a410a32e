//! `amber scan` and `amber inspect` on real files: exit codes, text and JSON.

use std::path::{Path, PathBuf};

use super::amber;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../amber-scan/tests/data/benign")
        .join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `os.system("true")`, protocol 4.
const EVIL: &[u8] = b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R.";

fn write(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn scan_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let evil = write(&dir, "evil.pkl", EVIL);
    let forest_amber = fixture("forest.amber");
    let forest_joblib = fixture("forest.joblib");
    let logreg = fixture("logreg_p0.pkl");
    let (code, stdout, stderr) = amber(&["scan", s(&forest_amber), s(&forest_joblib), s(&logreg)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("forest.amber: safe (amber"), "{stdout}");
    assert!(stdout.contains("forest.joblib: safe (joblib"), "{stdout}");
    assert!(stdout.contains("logreg_p0.pkl: safe (pickle"), "{stdout}");

    let (code, stdout, _) = amber(&["scan", s(&logreg), s(&evil)]);
    assert_eq!(code, 1);
    assert!(stdout.contains("evil.pkl: unsafe"), "{stdout}");
    assert!(
        stdout.contains("global.not_allowed at byte 0xe (STACK_GLOBAL)"),
        "{stdout}"
    );
    assert!(stdout.contains(r#"trusted=["os.system"]"#), "{stdout}");
    assert!(
        stdout.contains("names not in the policy: os.system"),
        "{stdout}"
    );

    let truncated = write(&dir, "cut.pkl", &EVIL[..EVIL.len() - 3]);
    let (code, stdout, _) = amber(&["scan", s(&truncated)]);
    assert_eq!(code, 1);
    assert!(stdout.contains("malformed"), "{stdout}");

    let (code, _, stderr) = amber(&["scan", s(&evil), "/nonexistent/model.pkl"]);
    assert_eq!(code, 2, "an unreadable file wins over an unsafe one");
    assert!(stderr.contains("/nonexistent/model.pkl"), "{stderr}");
    let (code, _, _) = amber(&["scan"]);
    assert_eq!(code, 2);
}

#[test]
fn compressed_joblib_is_scanned_and_damage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let raw = std::fs::read(fixture("forest.joblib")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(3));
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let gz = gz.finish().unwrap();
    // The name says nothing: detection is by content.
    let good = write(&dir, "model.bin", &gz);
    let (code, stdout, stderr) = amber(&["scan", s(&good)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("model.bin: safe (joblib"), "{stdout}");
    let (code, stdout, _) = amber(&["inspect", s(&good)]);
    assert_eq!(code, 0);
    assert!(stdout.contains("RandomForestClassifier"), "{stdout}");

    let cut = write(&dir, "cut.joblib.gz", &gz[..gz.len() / 2]);
    let (code, _, stderr) = amber(&["scan", s(&cut)]);
    assert_eq!(code, 1, "read and found damaged");
    assert!(
        stderr.contains("cut.joblib.gz") && stderr.contains("gzip"),
        "{stderr}"
    );
}

#[test]
fn scan_json_and_trust() {
    let dir = tempfile::tempdir().unwrap();
    let evil = write(&dir, "evil.pkl", EVIL);
    let (code, stdout, _) = amber(&["scan", "--json", s(&evil), s(&fixture("tree_p4.pkl"))]);
    assert_eq!(code, 1);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["verdict"], "unsafe");
    assert_eq!(lines[0]["format"], "pickle");
    assert_eq!(lines[0]["findings"][0]["code"], "global.not_allowed");
    assert_eq!(lines[0]["findings"][0]["offset"], 14);
    assert_eq!(lines[0]["findings"][0]["severity"], "critical");
    assert_eq!(lines[0]["globals"][0]["name"], "os.system");
    assert_eq!(lines[1]["verdict"], "safe");
    assert!(
        lines[1]["globals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "sklearn.tree._tree.Tree")
    );
    // Trusting the name makes the file acceptable (the user's explicit choice).
    let (code, stdout, _) = amber(&["scan", "--trust", "os.system", s(&evil)]);
    assert_eq!(code, 0, "{stdout}");
    let (code, _, stderr) = amber(&["scan", "--trust", "not a name", s(&evil)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot trust"), "{stderr}");
}

#[test]
fn inspect_shows_classes_attributes_and_arrays() {
    let (code, stdout, stderr) = amber(&["inspect", s(&fixture("pipeline_p5.pkl"))]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("(pickle, protocol 5"), "{stdout}");
    assert!(
        stdout.starts_with(s(&fixture("pipeline_p5.pkl"))),
        "{stdout}"
    );
    assert!(stdout.contains("Pipeline (sklearn.pipeline)"), "{stdout}");
    assert!(stdout.contains("steps: list (3 items)"), "{stdout}");
    assert!(stdout.contains("func: numpy.log1p"), "{stdout}");
    assert!(stdout.contains("mean_: ndarray float64 (4,)"), "{stdout}");

    let (code, stdout, _) = amber(&["inspect", s(&fixture("forest.amber"))]);
    assert_eq!(code, 0);
    assert!(stdout.contains("(amber, protocol 5"), "{stdout}");
    assert!(
        stdout.contains("w: ndarray float64 (20000,), out-of-band buffer 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("RandomForestClassifier (sklearn.ensemble._forest)"),
        "{stdout}"
    );

    let (code, stdout, _) = amber(&["inspect", s(&fixture("forest.joblib"))]);
    assert_eq!(code, 0);
    assert!(stdout.contains("(joblib, protocol"), "{stdout}");
    assert!(stdout.contains("joblib inline"), "{stdout}");
}

#[test]
fn inspect_json() {
    let (code, stdout, _) = amber(&["inspect", "--json", s(&fixture("logreg_p2.pkl"))]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["format"], "pickle");
    assert_eq!(v["protocol"], 2);
    assert_eq!(v["root"]["type"], "object");
    assert_eq!(
        v["root"]["class"],
        "sklearn.linear_model._logistic.LogisticRegression"
    );
    assert_eq!(v["root"]["attrs"]["coef_"]["type"], "ndarray");
    assert_eq!(v["root"]["attrs"]["coef_"]["dtype"], "float64");
    assert_eq!(
        v["root"]["attrs"]["coef_"]["shape"],
        serde_json::json!([1, 4])
    );
}

#[test]
fn inspect_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = write(&dir, "junk.bin", b"\x80\x04\x8c\x05abc");
    let (code, _, stderr) = amber(&["inspect", s(&junk)]);
    assert_eq!(code, 1);
    assert!(stderr.contains("truncated string at byte 0x2"), "{stderr}");
    let (code, _, _) = amber(&["inspect", "/nonexistent/x.pkl"]);
    assert_eq!(code, 2);
}

#[test]
fn policy_listing() {
    let (code, stdout, _) = amber(&["policy"]);
    assert_eq!(code, 0);
    assert!(
        stdout.lines().any(|l| l == "copyreg._reconstructor call"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l == "numpy.log1p reference"));
    assert!(!stdout.contains("os.system"));
    let (code, stdout, _) = amber(&["policy", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["names"]["sklearn.tree._tree.Tree"]["build"], "data");
    assert_eq!(
        v["names"]["numpy._core.numeric._frombuffer"]["call"],
        "frombuffer"
    );
    assert!(v["joblib"]["joblib.numpy_pickle.NumpyArrayWrapper"].is_object());
}
