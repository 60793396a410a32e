//! `amber convert`: run by Python, since converting a pickle means unpickling it.
//!
//! The interpreter is `$AMBER_PYTHON`, else the `python` beside this
//! executable (a virtual environment's `bin/`), else `python3` on the `PATH`;
//! it runs `python -m amber convert ...` with the same arguments.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Outcome;

/// The Python interpreter to run.
fn interpreter() -> PathBuf {
    if let Some(p) = std::env::var_os("AMBER_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("python")));
    match beside {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("python3"),
    }
}

/// Runs the conversion; exit codes as documented for the CLI.
pub fn convert(
    input: &Path,
    output: &Path,
    compress: Option<&str>,
    check: bool,
    trusted: bool,
) -> Outcome {
    let python = interpreter();
    let mut args: Vec<OsString> = vec!["-m".into(), "amber".into(), "convert".into()];
    args.push(input.into());
    args.push(output.into());
    if let Some(c) = compress {
        args.push("--compress".into());
        args.push(c.into());
    }
    if check {
        args.push("--check".into());
    }
    if trusted {
        args.push("--trusted".into());
    }
    let status = match Command::new(&python).args(&args).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot run Python ({}): {e}\n  amber convert needs a Python with amber installed; set AMBER_PYTHON to its interpreter",
                python.display()
            );
            return Outcome::Error;
        }
    };
    if status.success() {
        return Outcome::Ok;
    }
    let importable = Command::new(&python)
        .args(["-c", "import amber._amber"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        eprintln!(
            "error: amber is not importable with {}\n  install amber in that environment, or set AMBER_PYTHON to an interpreter that has it",
            python.display()
        );
        return Outcome::Error;
    }
    match status.code() {
        Some(1) => Outcome::Invalid,
        _ => Outcome::Error,
    }
}
