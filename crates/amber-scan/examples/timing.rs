//! Times `scan` on files (for the speed figures in the report, not a test):
//! `cargo run --release -p amber-scan --example timing -- pickle|joblib FILE...`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Instant;

use amber_scan::{Limits, NoArrays, Policy, StreamKind, scan};

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = match args.next().as_deref() {
        Some("joblib") => StreamKind::Joblib,
        Some("pickle") => StreamKind::Pickle,
        Some(n) => StreamKind::Amber {
            buffers: n.parse().expect("buffer count"),
        },
        None => panic!("usage: timing pickle|joblib|BUFFERS FILE..."),
    };
    let policy = Policy::default_policy();
    for path in args {
        let data = std::fs::read(&path).unwrap();
        let mut best = f64::MAX;
        let mut verdict = "";
        for _ in 0..5 {
            let t = Instant::now();
            let r = scan(&data, kind, &NoArrays, &policy, &Limits::default());
            best = best.min(t.elapsed().as_secs_f64());
            verdict = r.verdict.as_str();
        }
        let mut parse = f64::MAX;
        let mut nodes = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let p = amber_pickle::Parser::new(&data)
                .allow_trailing(true)
                .out_of_band_buffers(u64::MAX)
                .hook(&mut amber_pickle::joblib::JoblibHook::new())
                .parse();
            nodes = p.map(|p| p.graph().len()).unwrap_or(0);
            parse = parse.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{path}: {} bytes, {verdict}, scan {:.2} ms = {:.0} MB/s (parse alone {:.2} ms, {} nodes)",
            data.len(),
            best * 1e3,
            data.len() as f64 / best / 1e6,
            parse * 1e3,
            nodes
        );
    }
}
