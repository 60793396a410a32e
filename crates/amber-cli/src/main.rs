//! `amber`: look into, check, scan for safety, compare and convert model files,
//! and manage model stores, without Python (`convert` alone runs Python).
//!
//! Exit codes (also in `amber --help`):
//! - 0: success (for `verify`: every file is intact; for `scan`: every file is safe)
//! - 1: a file was read and found damaged or invalid (`scan`: unsafe or malformed;
//!   `diff`: the model content differs; `store check`: problems found)
//! - 2: a file could not be checked (missing, unreadable), a store name, version or
//!   alias is wrong, or the command line is wrong

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use amber_format::{Container, FormatError, MapMode, Mapping};
use clap::{Parser, Subcommand};

mod convert;
mod diff;
mod inspect;
mod legacy;
mod render;
mod scan;
mod source;
mod store;

const EXIT_HELP: &str = "Exit codes:\n  0  success (for verify: every file is intact; for scan: every file is safe;\n     for diff: same model content)\n  1  a file was read and found damaged or invalid (for scan: unsafe or malformed;\n     for diff: the content differs; for store check: problems found)\n  2  a file or store could not be read, a name, version or alias is wrong, or the\n     command line is wrong";

/// Inspect, verify and scan model files.
#[derive(Parser)]
#[command(name = "amber", version, about, after_help = EXIT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a file's manifest: format, creation, environment, metadata and entries
    /// (for a pickle or joblib file: its format, compression and arrays).
    Info {
        /// The amber file.
        file: PathBuf,
        /// Print the manifest as JSON (with `file_size` added).
        #[arg(long)]
        json: bool,
        /// List every entry (by default long lists are summarised).
        #[arg(long)]
        all: bool,
    },
    /// Write one entry out as a standalone file: an array as a plain `.npy`
    /// (decompressed if needed), the pickle entry as a raw pickle stream.
    Extract {
        /// The amber file.
        file: PathBuf,
        /// The entry name, as `amber info` lists it (e.g. `arrays/000000.npy`).
        entry: String,
        /// Where to write (replaced atomically).
        output: PathBuf,
    },
    /// Decide whether files are safe to load (amber, pickle and joblib files),
    /// without importing or running anything: verdict, findings, globals.
    Scan {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print one JSON object per file instead of text.
        #[arg(long)]
        json: bool,
        /// Also accept this exact `module.qualname` (repeatable).
        #[arg(long = "trust", value_name = "NAME")]
        trusted: Vec<String>,
    },
    /// List the names the default safety policy accepts, with their roles.
    Policy {
        /// Print the policy as JSON (every name with its role, call and state checks).
        #[arg(long)]
        json: bool,
    },
    /// Show what a file holds (classes, attributes, arrays, containers),
    /// read from the pickle stream without Python.
    Inspect {
        /// The amber, pickle or joblib file.
        file: PathBuf,
        /// Print the tree as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Convert a pickle or joblib file (any version, detected by content) to
    /// an amber file. Runs `python -m amber convert` (Python from
    /// `AMBER_PYTHON`, else the `python` beside this executable, else `python3`).
    Convert {
        /// The pickle, joblib or amber file to read.
        input: PathBuf,
        /// The amber file to write (a `.joblib`/`.pkl` name writes a joblib file).
        output: PathBuf,
        /// Compression: `zstd`, `lz4`, a level 1-9, or `CODEC:LEVEL`.
        #[arg(long, value_name = "CODEC[:LEVEL]")]
        compress: Option<String>,
        /// Load both files again and compare them.
        #[arg(long)]
        check: bool,
        /// Skip the safety policy (only for files you trust).
        #[arg(long)]
        trusted: bool,
    },
    /// Check the structure and every checksum of one or more files.
    Verify {
        /// The amber files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print one JSON object per file instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What differs between two model files: content, entries, metadata, environment.
    /// Exit 0 if the model content is identical, 1 if it differs, 2 on error.
    Diff(diff::DiffArgs),
    /// Look into and manage a model store (a directory written by `amber.Store`).
    #[command(subcommand)]
    Store(store::StoreCommand),
}

/// How a command ended, mapped to the documented exit codes (worst last).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    Ok,
    Invalid,
    Error,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Info { file, json, .. } if legacy::is_legacy(&file) => legacy::info(&file, json),
        Command::Info { file, json, all } => info(&file, json, all),
        Command::Verify { files, json } => verify(&files, json),
        Command::Scan {
            files,
            json,
            trusted,
        } => scan::run(&files, json, &trusted),
        Command::Inspect { file, json } => inspect::run(&file, json),
        Command::Convert {
            input,
            output,
            compress,
            check,
            trusted,
        } => convert::convert(&input, &output, compress.as_deref(), check, trusted),
        Command::Policy { json } => scan::policy(json),
        Command::Extract {
            file,
            entry,
            output,
        } => extract(&file, &entry, &output),
        Command::Diff(args) => diff::run(&args),
        Command::Store(command) => store::run(command),
    };
    match outcome {
        Outcome::Ok => ExitCode::SUCCESS,
        Outcome::Invalid => ExitCode::from(1),
        Outcome::Error => ExitCode::from(2),
    }
}

pub(crate) fn open(path: &Path) -> Result<Container<Mapping>, FormatError> {
    Container::parse(amber_format::map_file(path, MapMode::ReadOnly)?)
}

pub(crate) fn failure(path: &Path, err: &FormatError) -> Outcome {
    eprintln!("error: {}: {err}", path.display());
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    match err {
        FormatError::Io { .. } | FormatError::Usage { .. } => Outcome::Error,
        _ => Outcome::Invalid,
    }
}

fn info(path: &Path, json: bool, all: bool) -> Outcome {
    let container = match open(path) {
        Ok(c) => c,
        Err(e) => return failure(path, &e),
    };
    if json {
        let mut value =
            match serde_json::from_slice::<serde_json::Value>(container.manifest_bytes()) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: {}: manifest is not JSON: {e}", path.display());
                    return Outcome::Invalid;
                }
            };
        if let Some(map) = value.as_object_mut() {
            map.insert("file_size".into(), container.bytes().len().into());
        }
        match serde_json::to_string_pretty(&value) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::Error;
            }
        }
    } else {
        print!("{}", render::info(path, &container, all));
    }
    Outcome::Ok
}

fn extract(path: &Path, entry: &str, output: &Path) -> Outcome {
    let written = open(path).and_then(|c| {
        let (header, data) = c.extract(entry)?;
        let target = amber_format::Output::Path {
            target: output.to_path_buf(),
            overwrite: true,
            sync: false,
        };
        let mut sink = amber_format::Sink::create(&target)?;
        let io = |e| FormatError::Io {
            op: "write",
            path: output.to_path_buf(),
            source: e,
        };
        std::io::Write::write_all(&mut sink, &header).map_err(io)?;
        std::io::Write::write_all(&mut sink, &data).map_err(io)?;
        sink.commit()?;
        Ok(header.len() + data.len())
    });
    match written {
        Ok(n) => {
            println!("{}: wrote {} ({n} bytes)", path.display(), output.display());
            Outcome::Ok
        }
        Err(e) => failure(path, &e),
    }
}

fn verify(paths: &[PathBuf], json: bool) -> Outcome {
    let mut worst = Outcome::Ok;
    for path in paths {
        let result = open(path).and_then(|c| {
            let total = c.bytes().len() as u64;
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(path.display().to_string());
            let checked = c.verify(&|n| bar.inc(n));
            bar.finish_and_clear();
            checked.map(|()| (c.zip_entries().len(), c.arrays().len()))
        });
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(FormatError::Io { .. } | FormatError::Usage { .. }) => Outcome::Error,
            Err(_) => Outcome::Invalid,
        };
        if json {
            let value = match &result {
                Ok((n, arrays)) => {
                    serde_json::json!({"file": path, "ok": true, "entries": n, "arrays": arrays})
                }
                Err(e) => {
                    serde_json::json!({"file": path, "ok": false, "code": e.code(), "entry": e.entry(), "error": e.to_string()})
                }
            };
            println!("{value}");
        } else {
            match &result {
                // Counted as `amber info` counts: the zip's mimetype and
                // manifest entries are named, not counted as content.
                Ok((n, arrays)) => println!(
                    "{}: ok (pickle stream, {arrays} arrays, mimetype and manifest: {n} zip entries, all checksums match)",
                    path.display()
                ),
                Err(e) => {
                    failure(path, e);
                }
            }
        }
        worst = match (worst, outcome) {
            (Outcome::Error, _) | (_, Outcome::Error) => Outcome::Error,
            (Outcome::Invalid, _) | (_, Outcome::Invalid) => Outcome::Invalid,
            _ => Outcome::Ok,
        };
    }
    worst
}
