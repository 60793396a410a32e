//! The scanner on arbitrary bytes, in all three stream kinds: nothing may
//! panic, hang or allocate without bound, and the report must be coherent.
//!
//! The first byte selects the kind (and the amber buffer count). Seed the
//! corpus with `crates/amber-scan/tests/data/benign/*` (and the
//! `pickle_parse` seeds): `tools/fuzz_seeds.sh` does both.

#![no_main]

use amber_scan::{Limits, NoArrays, Policy, StreamKind, Verdict, scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let kind = match selector % 3 {
        0 => StreamKind::Pickle,
        1 => StreamKind::Joblib,
        _ => StreamKind::Amber {
            buffers: u64::from(selector / 3),
        },
    };
    let policy = Policy::default_policy();
    let report = scan(data, kind, &NoArrays, &policy, &Limits::default());
    assert_eq!(report.verdict == Verdict::Safe, report.findings.is_empty());
    assert!(report.findings.len() <= amber_scan::report::MAX_FINDINGS + 1);
    assert_eq!(report.stream_len as usize, data.len());
    if report.is_safe() {
        assert!(report.globals.iter().all(|g| g.allowed));
    }
    for f in &report.findings {
        assert!(f.offset.is_none_or(|o| o as usize <= data.len()), "{f:?}");
    }
    let _ = report.to_json();
});
