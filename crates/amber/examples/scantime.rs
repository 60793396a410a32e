//! Times the safety scan of model files with their real arrays (for the
//! speed figures in reports, not a test):
//! `cargo run --release -p amber --example scantime -- FILE...`
//! Prints the best of 20 runs of the parse alone, of `amber_scan::scan` on
//! the stream, and of the file's whole scan (reading the stream included).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use amber::{Limits, Policy, open_path};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = f();
    for _ in 0..runs {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, out)
}

fn main() {
    let (make_policy, policy) = best_of(20, Policy::default_policy);
    println!("Policy::default_policy: {:.3} ms", make_policy * 1e3);
    let limits = Limits::default();
    for path in std::env::args().skip(1) {
        let opened = if std::env::var_os("SCANTIME_BYTES").is_some() {
            amber::open_bytes(
                std::fs::read(&path).unwrap(),
                &amber_legacy::Limits::default(),
            )
            .unwrap()
        } else {
            open_path(path.as_ref(), &amber_legacy::Limits::default()).unwrap()
        };
        let view = opened.stream().unwrap();
        let stream = view.stream.as_ref();
        let (parse, nodes) = best_of(20, || {
            let mut hook = amber_pickle::joblib::JoblibHook::new();
            let mut parser = amber_pickle::Parser::new(stream)
                .allow_trailing(true)
                .out_of_band_buffers(u64::MAX);
            if matches!(view.kind, amber_scan::StreamKind::Joblib) {
                parser = parser.hook(&mut hook);
            }
            parser.parse().map(|p| p.graph().len()).unwrap_or(0)
        });
        let (scan, report) = best_of(20, || opened.scan(&policy, &limits).unwrap());
        let (analyse, _) = best_of(20, || {
            amber_scan::scan(stream, view.kind, &*view.arrays, &policy, &limits)
        });
        let (whole, _) = best_of(20, || {
            amber::scan_path(path.as_ref(), &policy, &amber_legacy::Limits::default()).unwrap()
        });
        let (open, _) = best_of(20, || {
            open_path(path.as_ref(), &amber_legacy::Limits::default()).unwrap()
        });
        println!(
            "{path}: scan_path {:.3} ms, open_path {:.3} ms",
            whole * 1e3,
            open * 1e3
        );
        println!(
            "{path}: {} stream bytes, {nodes} nodes, {}: parse {:.3} ms, amber_scan::scan {:.3} ms, file scan {:.3} ms ({} findings)",
            stream.len(),
            report.verdict.as_str(),
            parse * 1e3,
            analyse * 1e3,
            scan * 1e3,
            report.findings.len()
        );
    }
}
