//! The facade's scans of legacy files open them for a scan only (no
//! stream rewrite); their reports must be exactly those of the full open
//! that loads use, on real joblib and pickle files and on damaged copies.
#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use std::path::{Path, PathBuf};

use amber::{Policy, open_legacy_bytes_scanned, scan_bytes, scan_path};
use amber_legacy::{LegacyError, Limits};

fn files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for dir in [
        "amber-scan/tests/data/benign",
        "amber-scan/tests/data/hostile",
        "amber-legacy/tests/it/data",
        "amber-pickle/tests/data",
    ] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".pkl") || name.contains(".joblib") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// What `scan_bytes` answered before it opened files for a scan only: the
/// full open's report, a refused report for an unparsable pickle, else the error.
fn full_open_answer(data: Vec<u8>, policy: &Policy) -> String {
    let size = data.len() as u64;
    match open_legacy_bytes_scanned(data, policy, &Limits::default()) {
        Ok((legacy, report)) => format!("{} {report:?}", legacy.kind().label()),
        Err(LegacyError::Pickle { source }) => {
            format!("pickle {:?}", amber_scan::refused(&source, size))
        }
        Err(e) => format!("error {e}"),
    }
}

fn scan_answer(data: Vec<u8>, policy: &Policy) -> String {
    match scan_bytes(data, policy, &Limits::default()) {
        Ok((label, report)) => format!("{label} {report:?}"),
        Err(e) => format!("error {e}"),
    }
}

#[test]
fn scan_only_opens_report_what_full_opens_report() {
    let policy = Policy::default_policy();
    let files = files();
    assert!(files.len() > 20, "{files:?}");
    let (mut joblib, mut unsafe_or_malformed) = (0, 0);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let want = full_open_answer(data.clone(), &policy);
        assert_eq!(scan_answer(data.clone(), &policy), want, "{path:?}");
        let (label, report) = scan_path(path, &policy, &Limits::default()).unwrap();
        assert_eq!(format!("{label} {report:?}"), want, "{path:?} by path");
        joblib += usize::from(label == "joblib");
        // Damaged copies: a byte changed every few hundred bytes, and cuts.
        for at in (0..data.len()).step_by(97) {
            let mut bad = data.clone();
            bad[at] ^= 0x5a;
            let want = full_open_answer(bad.clone(), &policy);
            unsafe_or_malformed += usize::from(!want.contains("verdict: Safe"));
            assert_eq!(scan_answer(bad, &policy), want, "{path:?} byte {at}");
            let cut = data[..at].to_vec();
            assert_eq!(
                scan_answer(cut.clone(), &policy),
                full_open_answer(cut, &policy),
                "{path:?} cut at {at}"
            );
        }
    }
    assert!(joblib >= 5, "joblib files were scanned: {joblib}");
    assert!(unsafe_or_malformed > 100, "{unsafe_or_malformed}");
}
