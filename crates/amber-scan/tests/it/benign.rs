//! Real files (made by `tests/data/generate.py`) must scan `safe`.

use std::path::{Path, PathBuf};

use amber_scan::{Limits, NoArrays, Policy, Report, StreamKind, Verdict, scan};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/benign")
}

fn files(ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

fn scan_file(path: &Path, kind: StreamKind) -> Report {
    let data = std::fs::read(path).unwrap();
    scan(
        &data,
        kind,
        &NoArrays,
        &Policy::default_policy(),
        &Limits::default(),
    )
}

fn assert_safe(path: &Path, report: &Report) {
    assert_eq!(
        report.verdict,
        Verdict::Safe,
        "{}: {:#?}",
        path.display(),
        report.findings
    );
    assert!(report.findings.is_empty());
    assert!(report.globals.iter().all(|g| g.allowed));
    assert_eq!(report.allowed_globals().len(), report.globals.len());
}

#[test]
fn every_real_pickle_is_safe() {
    let pickles = files("pkl");
    assert!(pickles.len() >= 30, "{}", pickles.len());
    for path in pickles {
        let report = scan_file(&path, StreamKind::Pickle);
        assert_safe(&path, &report);
        assert!(report.opcodes > 0);
    }
}

#[test]
fn every_real_joblib_file_is_safe_and_its_arrays_are_skipped() {
    let joblibs = files("joblib");
    assert!(joblibs.len() >= 4);
    for path in joblibs {
        let report = scan_file(&path, StreamKind::Joblib);
        assert_safe(&path, &report);
        assert!(report.joblib_arrays > 0, "{}", path.display());
        assert!(
            report
                .allowed_globals()
                .contains(&"joblib.numpy_pickle.NumpyArrayWrapper".to_owned())
        );
        // The wrapper is accepted only in joblib mode.
        let as_pickle = scan_file(&path, StreamKind::Pickle);
        assert_ne!(as_pickle.verdict, Verdict::Safe);
    }
}

#[test]
fn amber_stream_with_out_of_band_buffers_is_safe() {
    let path = dir().join("forest.stream");
    let n: u64 = std::fs::read_to_string(dir().join("forest.buffers"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(n >= 1);
    let report = scan_file(&path, StreamKind::Amber { buffers: n });
    assert_safe(&path, &report);
    // As a plain pickle, NEXT_BUFFER is refused; with too few buffers it is malformed.
    let plain = scan_file(&path, StreamKind::Pickle);
    assert!(plain.has("opcode.refused"), "{:?}", plain.findings);
    let short = scan_file(&path, StreamKind::Amber { buffers: n - 1 });
    assert_eq!(short.verdict, Verdict::Malformed);
    assert!(short.has("malformed.buffer_missing"));
}

#[test]
fn tree_models_reach_the_content_hook_classes() {
    let report = scan_file(&dir().join("forest_p5.pkl"), StreamKind::Pickle);
    let names = report.allowed_globals();
    assert!(names.contains(&"sklearn.tree._tree.Tree".to_owned()));
    assert!(names.contains(&"sklearn.ensemble._forest.RandomForestClassifier".to_owned()));
}

#[test]
fn report_json_shape() {
    let report = scan_file(&dir().join("logreg_p5.pkl"), StreamKind::Pickle);
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(v["verdict"], "safe");
    assert_eq!(v["protocol"], 5);
    assert!(v["globals"].as_array().unwrap().iter().any(|g| g["name"]
        == "sklearn.linear_model._logistic.LogisticRegression"
        && g["allowed"] == true));
}
