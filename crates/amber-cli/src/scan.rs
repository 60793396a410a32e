//! `amber scan`: the safety verdict for each file, as text or JSON lines.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use amber_scan::{Policy, Report};

use crate::Outcome;
use crate::source;

/// Scan every file; the worst outcome decides the exit code.
pub fn run(paths: &[PathBuf], json: bool, trusted: &[String]) -> Outcome {
    let mut policy = Policy::default_policy();
    for name in trusted {
        if let Err(e) = policy.trust(name) {
            eprintln!("error: {e}");
            return Outcome::Error;
        }
    }
    let mut worst = Outcome::Ok;
    for path in paths {
        let outcome = match scan_one(path, &policy) {
            Ok((format, report)) => {
                if json {
                    println!("{}", json_line(path, format, &report));
                } else {
                    print!("{}", text(path, format, &report));
                }
                if report.is_safe() {
                    Outcome::Ok
                } else {
                    Outcome::Invalid
                }
            }
            Err(e) => {
                if json {
                    let value = serde_json::json!({"file": path, "error": e.message});
                    println!("{value}");
                } else {
                    eprintln!("error: {}", e.message);
                }
                if e.invalid {
                    Outcome::Invalid
                } else {
                    Outcome::Error
                }
            }
        };
        worst = worst.max(outcome);
    }
    worst
}

/// The format label and the report for one file.
pub fn scan_one(path: &Path, policy: &Policy) -> Result<(&'static str, Report), source::OpenError> {
    amber::scan_path(path, policy, &amber_legacy::Limits::default())
        .map_err(|e| source::OpenError::new(path, &e))
}

fn json_line(path: &Path, format: &str, report: &Report) -> String {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("file".into(), serde_json::json!(path));
        map.insert("format".into(), format.into());
    }
    value.to_string()
}

fn text(path: &Path, format: &str, report: &Report) -> String {
    let mut out = String::new();
    let refused = report.globals.iter().filter(|g| !g.allowed).count();
    let protocol = report
        .protocol
        .map_or_else(|| "no PROTO".to_owned(), |p| format!("protocol {p}"));
    let _ = writeln!(
        out,
        "{}: {} ({format}, {protocol}, {} bytes, {} opcodes, {} globals{})",
        path.display(),
        report.verdict.as_str(),
        report.stream_len,
        report.opcodes,
        report.globals.len(),
        if refused > 0 {
            format!(", {refused} not allowed")
        } else {
            String::new()
        }
    );
    out.push_str(&report.render_findings());
    out
}

/// `amber policy [--json]`.
pub fn policy(json: bool) -> Outcome {
    let policy = Policy::default_policy();
    if json {
        println!("{}", policy.to_json());
    } else {
        for (name, role) in policy.names() {
            let role = serde_json::to_value(role).unwrap_or_default();
            println!("{name} {}", role.as_str().unwrap_or("?"));
        }
    }
    Outcome::Ok
}
