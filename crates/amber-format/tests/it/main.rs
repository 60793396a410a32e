//! Runs every test vector of `docs/FORMAT.md` (`tests/vectors/`) through the reader.
//!
//! Each vector's `.expected.json` gives the outcome of `open` (structure and
//! manifest), `load` (pickle CRC, then every array copied with its CRC),
//! `load_mmap` (pickle CRC only) and `verify` (every CRC): `"ok"` or an error code.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::{Path, PathBuf};

use amber_format::{Container, FormatError};
use serde_json::Value;

fn vectors() -> Vec<(PathBuf, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors");
    let mut out = Vec::new();
    for kind in ["valid", "invalid"] {
        for entry in std::fs::read_dir(root.join(kind)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "amber") {
                let expected = path.with_extension("amber.expected.json");
                let expected: Value =
                    serde_json::from_slice(&std::fs::read(&expected).unwrap()).unwrap();
                out.push((path, expected));
            }
        }
    }
    assert!(out.len() >= 15, "vectors missing: found {}", out.len());
    out
}

/// How an operation ended: `"ok"`, or the error's code and entry.
type Outcome = (String, Option<String>);

fn outcome(result: Result<(), FormatError>) -> Outcome {
    match result {
        Ok(()) => ("ok".into(), None),
        Err(e) => (e.code().to_owned(), e.entry().map(str::to_owned)),
    }
}

/// The container's compressed (or stored) arrays as `(index, nbytes)`,
/// their copies by `copy_arrays_into`, and how that copy ended.
fn copy_out(
    container: &Container<&[u8]>,
    compressed: bool,
) -> (Vec<(usize, usize)>, Vec<Vec<u8>>, Outcome) {
    let picked: Vec<(usize, usize)> = container
        .arrays()
        .iter()
        .filter(|(_, loc)| loc.compressed == compressed)
        .map(|(info, loc)| (loc.index, usize::try_from(info.nbytes).unwrap()))
        .collect();
    let mut copies: Vec<Vec<u8>> = picked.iter().map(|&(_, n)| vec![0u8; n]).collect();
    let dests = picked
        .iter()
        .zip(copies.iter_mut())
        .map(|(&(i, _), b)| (i, b.as_mut_slice()))
        .collect();
    let copied = outcome(container.copy_arrays_into(dests));
    (picked, copies, copied)
}

fn run(data: &[u8], op: &str) -> Result<(), FormatError> {
    let container = Container::parse(data)?;
    match op {
        "open" => Ok(()),
        "load" | "load_mmap" => {
            container.pickle()?;
            // A mapped load still has to decompress compressed arrays into memory.
            let arrays = container.arrays();
            let mut buffers: Vec<(usize, Vec<u8>)> = arrays
                .iter()
                .filter(|(_, loc)| op == "load" || loc.compressed)
                .map(|(info, loc)| (loc.index, vec![0u8; usize::try_from(info.nbytes).unwrap()]))
                .collect();
            let dests = buffers
                .iter_mut()
                .map(|(i, b)| (*i, b.as_mut_slice()))
                .collect();
            container.copy_arrays_into(dests)
        }
        "verify" => container.verify(&|_| {}),
        other => panic!("unknown operation {other}"),
    }
}

#[test]
fn every_vector_gives_its_expected_outcome() {
    for (path, expected) in vectors() {
        let data = std::fs::read(&path).unwrap();
        for op in ["open", "load", "load_mmap", "verify"] {
            let want = expected[op].as_str().expect("outcome");
            let (got, entry) = outcome(run(&data, op));
            assert_eq!(got, want, "{} {op}", path.display());
            if let Some(want_entry) = expected.get("entry").and_then(Value::as_str)
                && (got == "format.checksum" || got == "format.mismatch")
            {
                assert_eq!(
                    entry.as_deref(),
                    Some(want_entry),
                    "{} {op}",
                    path.display()
                );
            }
        }
    }
}

/// Views of uncompressed arrays (`checked_arrays`) are refused exactly when
/// copying them is, and otherwise hold the bytes a copy gets.
#[test]
fn checked_views_agree_with_copies() {
    let mut viewed = 0;
    for (path, _) in vectors() {
        let data = std::fs::read(&path).unwrap();
        let Ok(container) = Container::parse(data.as_slice()) else {
            continue;
        };
        let arrays = container.arrays();
        let (plain, copies, copied) = copy_out(&container, false);
        let indices: Vec<usize> = plain.iter().map(|&(i, _)| i).collect();
        let views = container.checked_arrays(&indices);
        match &views {
            Ok(views) if copied.0 == "ok" => {
                assert_eq!(views.len(), copies.len());
                for (view, copy) in views.iter().zip(&copies) {
                    assert_eq!(view, copy, "{}", path.display());
                }
                viewed += views.len();
            }
            _ => assert_eq!(outcome(views.map(|_| ())), copied, "{}", path.display()),
        }
        if let Some((_, loc)) = arrays.iter().find(|(_, loc)| loc.compressed) {
            let refused = container.checked_arrays(&[loc.index]).map(|_| ());
            assert_eq!(outcome(refused).0, "format.usage", "{}", path.display());
        }
    }
    assert!(viewed > 0);
}

/// Compressed arrays decoded piece by piece (`pieces`, `decode_piece`),
/// split by chunk or whole, in any order, hold what a copy gets, and are
/// refused with the copy's error code when it is refused.
#[test]
fn pieces_agree_with_copies() {
    let mut decoded = 0;
    for (path, _) in vectors() {
        let data = std::fs::read(&path).unwrap();
        let Ok(container) = Container::parse(data.as_slice()) else {
            continue;
        };
        let (packed, copies, copied) = copy_out(&container, true);
        for split in [false, true] {
            let mut pieces: Vec<Vec<u8>> = packed.iter().map(|&(_, n)| vec![0u8; n]).collect();
            let dests = packed
                .iter()
                .zip(pieces.iter_mut())
                .map(|(&(i, _), b)| (i, b.as_mut_slice(), split))
                .collect();
            let result = container.pieces(dests).and_then(|pieces| {
                pieces
                    .into_iter()
                    .rev()
                    .try_for_each(|p| container.decode_piece(p).map(|_| ()))
            });
            let got = outcome(result);
            assert_eq!(got, copied, "{} split={split}", path.display());
            if got.0 == "ok" {
                assert_eq!(pieces, copies, "{}", path.display());
                decoded += pieces.len();
            }
        }
        if let Some((_, loc)) = container.arrays().iter().find(|(_, loc)| !loc.compressed) {
            let mut buffer = vec![0u8; usize::try_from(loc.nbytes).unwrap()];
            let refused = container.pieces(vec![(loc.index, buffer.as_mut_slice(), true)]);
            assert_eq!(outcome(refused.map(|_| ())).0, "format.usage");
        }
    }
    assert!(decoded > 0);
}

#[test]
fn every_rule_has_a_vector() {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/FORMAT.md"))
            .unwrap();
    let cited: std::collections::HashSet<String> = vectors()
        .iter()
        .flat_map(|(_, e)| {
            e["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
        })
        .collect();
    // Rules about writers' behaviour and bounds are covered by unit and Python tests instead.
    let elsewhere = ["F-6", "F-8", "F-10", "F-15", "F-18", "F-31", "F-32"];
    for line in spec.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("- **F-") {
            let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let rule = format!("F-{number}");
            assert!(
                cited.contains(&rule) || elsewhere.contains(&rule.as_str()),
                "{rule} has no vector"
            );
        }
    }
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/valid/no-arrays.amber"),
    )
    .unwrap();
    for cut in 0..data.len() {
        assert!(Container::parse(&data[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn every_byte_flip_is_caught_or_harmless() {
    // A flip anywhere must give an error from parse, pickle() or verify(), or
    // land in a byte no reader looks at (padding, timestamps, attributes).
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/valid/no-arrays.amber"),
    )
    .unwrap();
    let good = Container::parse(data.as_slice()).unwrap();
    let good_manifest = good.manifest().clone();
    for i in 0..data.len() {
        let mut bad = data.clone();
        bad[i] ^= 0x10;
        let result = Container::parse(bad.as_slice()).and_then(|c| {
            c.verify(&|_| {})?;
            Ok(c.manifest().clone())
        });
        if let Ok(manifest) = result {
            assert_eq!(
                manifest, good_manifest,
                "flip at {i} changed the manifest silently"
            );
        }
    }
}

/// F-16: `content_hash` is BLAKE3 over the stored bytes of the listed entries,
/// recomputed here from the zip directory alone, for every valid vector that has one.
#[test]
fn content_hash_is_blake3_of_the_listed_entries() {
    let mut checked = 0;
    for (path, _) in vectors() {
        if path.parent().and_then(Path::file_name) != Some("valid".as_ref()) {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let container = Container::parse(data.clone()).unwrap();
        let Some(recorded) = container.manifest().content_hash() else {
            continue;
        };
        let entries = amber_format::zip::read_directory(&data).unwrap();
        let mut hasher = blake3::Hasher::new();
        for entry in &entries[1..entries.len() - 1] {
            let range = entry.data_range();
            hasher.update(&data[range.start as usize..range.end as usize]);
        }
        assert_eq!(
            recorded,
            format!("blake3:{}", hasher.finalize().to_hex()),
            "{path:?}"
        );
        assert_eq!(container.content_hash(), recorded);
        checked += 1;
    }
    assert!(checked >= 3);
}

/// `diff::compare` pairs entries by name and compares content, not storage.
#[test]
fn diff_compares_content_not_storage() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/valid");
    let open = |name: &str| Container::parse(std::fs::read(root.join(name)).unwrap()).unwrap();
    let (arrays, legacy, small) = (
        open("arrays.amber"),
        open("legacy-no-content-hash.amber"),
        open("no-arrays.amber"),
    );
    let same = amber_format::diff::compare(&arrays, &legacy).unwrap();
    assert_eq!(same["identical_content"], true, "{same:#}");
    assert_eq!(same["metadata"], serde_json::json!([]));
    let other = amber_format::diff::compare(&small, &arrays).unwrap();
    assert_eq!(other["identical_content"], false);
    assert_eq!(other["pickle_changed"], true);
    assert_eq!(other["entries"]["added"].as_array().unwrap().len(), 6);
    assert_eq!(other["metadata"][0]["key"], "purpose");
    // Compressed and uncompressed copies of one model: only the codecs differ.
    let zstd = open("compressed-zstd.amber");
    let lz4 = open("compressed-lz4.amber");
    let codecs = amber_format::diff::compare(&zstd, &lz4).unwrap();
    assert_eq!(codecs["identical_content"], true, "{codecs:#}");
    assert!(!codecs["entries"]["changed"].as_array().unwrap().is_empty());
}
