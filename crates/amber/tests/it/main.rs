//! The facade's scans of legacy files open them for a scan only (no
//! stream rewrite); their reports must be exactly those of the full open
//! that loads use, on real joblib and pickle files and on damaged copies.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

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

/// A [`amber::Fill`] decoded by two helping threads and the waiting one
/// fills every compressed array of each test vector with what a copy gets,
/// and reports the copy's error when the copy fails.
#[test]
fn fills_agree_with_copies() {
    use std::sync::Arc;

    use amber_format::Container;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors");
    let mut filled = 0;
    for kind in ["valid", "invalid"] {
        for entry in std::fs::read_dir(root.join(kind)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "amber") {
                continue;
            }
            let Ok(container) = Container::parse(std::fs::read(&path).unwrap()) else {
                continue;
            };
            let container = Arc::new(container);
            let packed: Vec<(usize, usize)> = container
                .arrays()
                .iter()
                .filter(|(_, loc)| loc.compressed)
                .map(|(info, loc)| (loc.index, usize::try_from(info.nbytes).unwrap()))
                .collect();
            let mut copies: Vec<Vec<u8>> = packed.iter().map(|&(_, n)| vec![0u8; n]).collect();
            let copied = container.copy_arrays_into(
                packed
                    .iter()
                    .zip(copies.iter_mut())
                    .map(|(&(i, _), b)| (i, b.as_mut_slice()))
                    .collect(),
            );
            let mut outs: Vec<Vec<u8>> = packed.iter().map(|&(_, n)| vec![0u8; n]).collect();
            let fill = amber::Fill::new(
                Arc::clone(&container),
                packed
                    .iter()
                    .zip(outs.iter_mut())
                    .map(|(&(i, _), b)| (i, b.as_mut_slice()))
                    .collect(),
                Arc::new(amber::DeferredChecks::default()),
            );
            let result = std::thread::scope(|s| {
                s.spawn(|| fill.help());
                s.spawn(|| fill.help());
                fill.wait(true)
            });
            assert!(fill.claimed());
            assert!(fill.wait(false).is_ok(), "a failure is reported once");
            drop(fill);
            match (copied, result) {
                (Ok(()), Ok(())) => {
                    assert_eq!(outs, copies, "{}", path.display());
                    filled += outs.len();
                }
                (Err(want), Err(amber::FillFailure::Read(got))) => {
                    assert_eq!(got.code(), want.code(), "{}", path.display());
                }
                (want, got) => panic!("{}: copy {want:?}, fill {got:?}", path.display()),
            }
        }
    }
    assert!(filled > 0);
}
