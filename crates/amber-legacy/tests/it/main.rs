//! Integration tests of amber-legacy: joblib 1.6 fixtures shipped in
//! `data/` (protocols 2/4/5, aligned arrays, object and Fortran arrays,
//! every compressor), joblib's own test data when the venv has it, lz4
//! frames written here, hand-made pre-0.10 dumps and damaged inputs.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::io::Write;
use std::path::{Path, PathBuf};

use amber_legacy::{ArraySource, Codec, Legacy, LegacyKind, Limits, open_bytes, open_path};
use amber_pickle::{NodeKind, Opcode, Parser};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/data")
        .join(name)
}

fn limits() -> Limits {
    Limits::default()
}

/// The rewritten stream is a plain pickle: no frames, one persistent id per
/// array, and the same number of opcodes otherwise.
fn check_load_stream(l: &Legacy) {
    let p = Parser::new(l.load_stream()).parse().unwrap();
    assert_eq!(p.stats().frames, 0);
    assert_eq!(p.stats().count(Opcode::BINPERSID), l.arrays().len() as u64);
    assert_eq!(p.stats().inline_data_bytes, 0);
}

/// The small fixture: {"a": arange(5) i8, "f": F-order 2x3 f8, "o": object array, "s": "text"}.
fn check_small(l: &Legacy) {
    let arrays = l.arrays();
    assert_eq!(arrays.len(), 3, "{l:?}");
    let a = l.array_bytes(0).unwrap();
    let want: Vec<u8> = (0..5i64).flat_map(i64::to_le_bytes).collect();
    assert_eq!(a, want.as_slice());
    // Fortran data is written in Fortran order: column by column.
    let f = l.array_bytes(1).unwrap();
    let want: Vec<u8> = [0.0f64, 3.0, 1.0, 4.0, 2.0, 5.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(f, want.as_slice());
    // Copies (a positioned read for files, memcpy for buffers) give the same bytes.
    let mut copy = vec![0u8; 48];
    l.copy_array(1, &mut copy).unwrap();
    assert_eq!(copy, want);
    assert_eq!(
        l.copy_array(1, &mut [0u8; 47]).unwrap_err().code(),
        "legacy.array_size"
    );
    // Packed copies: each at a multiple of the alignment, stopping at the
    // object array, at an array too large, or when the block is full.
    let mut block = vec![0u8; 256];
    assert_eq!(l.pack_arrays(0, &mut block, 1 << 20, 64).unwrap(), [0, 64]);
    assert_eq!(&block[..40], a);
    assert_eq!(&block[64..112], want.as_slice());
    assert_eq!(l.pack_arrays(1, &mut block, 1 << 20, 64).unwrap(), [0]);
    assert_eq!(&block[..48], want.as_slice());
    assert_eq!(l.pack_arrays(0, &mut block, 45, 64).unwrap(), [0]);
    assert_eq!(
        l.pack_arrays(0, &mut block[..100], 1 << 20, 64).unwrap(),
        [0]
    );
    assert!(
        l.pack_arrays(0, &mut block[..39], 1 << 20, 64)
            .unwrap()
            .is_empty()
    );
    assert!(
        l.pack_arrays(2, &mut block, 1 << 20, 64)
            .unwrap()
            .is_empty()
    );
    assert!(
        l.pack_arrays(3, &mut block, 1 << 20, 64)
            .unwrap()
            .is_empty()
    );
    assert!(arrays[2].is_pickle());
    let nested = amber_pickle::parse(l.array_bytes(2).unwrap()).unwrap();
    assert!(matches!(
        nested.graph().kind(nested.root()),
        Some(NodeKind::Reduce { .. })
    ));
    check_load_stream(l);
    assert!(!l.py2());
}

#[test]
fn joblib_16_fixtures_every_protocol_and_codec() {
    for (name, kind) in [
        ("small_p2.joblib", LegacyKind::Joblib { compression: None }),
        ("small_p4.joblib", LegacyKind::Joblib { compression: None }),
        ("small_p5.joblib", LegacyKind::Joblib { compression: None }),
        (
            "small.joblib.z",
            LegacyKind::Joblib {
                compression: Some(Codec::Zlib),
            },
        ),
        (
            "small.joblib.gz",
            LegacyKind::Joblib {
                compression: Some(Codec::Gzip),
            },
        ),
        (
            "small.joblib.bz2",
            LegacyKind::Joblib {
                compression: Some(Codec::Bz2),
            },
        ),
        (
            "small.joblib.xz",
            LegacyKind::Joblib {
                compression: Some(Codec::Xz),
            },
        ),
        (
            "small.joblib.lzma",
            LegacyKind::Joblib {
                compression: Some(Codec::Lzma),
            },
        ),
    ] {
        let l = open_path(&data(name), &limits()).unwrap();
        assert_eq!(l.kind(), kind, "{name}");
        check_small(&l);
        // Aligned data (joblib >= 1.2): 16-byte boundaries of the uncompressed stream.
        for s in l.arrays() {
            if let ArraySource::Inline { offset, .. } = s {
                assert_eq!(offset % 16, 0, "{name}");
            }
        }
        let bytes = std::fs::read(data(name)).unwrap();
        let m = open_bytes(bytes, &limits()).unwrap();
        assert_eq!(m.load_stream(), l.load_stream(), "{name}");
        assert_eq!(
            l.array_is_mapped(0),
            kind == LegacyKind::Joblib { compression: None }
        );
    }
}

/// A scan-only open parses and checks as an open for loading does and shows
/// the same parse; only the rewritten stream is left until first asked for,
/// and it is then the same bytes.
#[test]
fn scan_only_open_matches_the_full_open() {
    for name in [
        "small_p2.joblib",
        "small_p5.joblib",
        "small.joblib.gz",
        "small.joblib.xz",
    ] {
        let full = open_path(&data(name), &limits()).unwrap();
        let mut seen = Vec::new();
        let scan = amber_legacy::scan_open_path(&data(name), &limits(), &mut |p| {
            seen.push((p.joblib, p.joblib_arrays, p.pickle.graph().len()));
        })
        .unwrap();
        let mut full_seen = Vec::new();
        amber_legacy::open_path_inspected(&data(name), &limits(), &mut |p| {
            full_seen.push((p.joblib, p.joblib_arrays, p.pickle.graph().len()));
        })
        .unwrap();
        assert_eq!(seen, full_seen, "{name}");
        assert_eq!(seen.first().map(|s| s.1), Some(3), "{name}");
        assert_eq!(scan.kind(), full.kind(), "{name}");
        assert_eq!(scan.arrays(), full.arrays(), "{name}");
        assert!(scan.is_rewritten(), "{name}");
        assert_eq!(scan.load_stream(), full.load_stream(), "{name}");
        check_small(&scan);
        let bytes = std::fs::read(data(name)).unwrap();
        let from_bytes = amber_legacy::scan_open_bytes(bytes, &limits(), &mut |_| {}).unwrap();
        assert_eq!(from_bytes.load_stream(), full.load_stream(), "{name}");
    }
    // A plain pickle is not rewritten either way.
    let plain = amber_pickle_plain();
    let l = amber_legacy::scan_open_bytes(plain.clone(), &limits(), &mut |_| {}).unwrap();
    assert!(!l.is_rewritten());
    assert_eq!(l.load_stream(), plain.as_slice());
    // Errors are the open's.
    let damaged = std::fs::read(data("small_p4.joblib")).unwrap();
    let cut = damaged[..damaged.len() - 40].to_vec();
    let scan_err = amber_legacy::scan_open_bytes(cut.clone(), &limits(), &mut |_| {}).unwrap_err();
    let full_err = open_bytes(cut, &limits()).unwrap_err();
    assert_eq!(scan_err.to_string(), full_err.to_string());
}

/// `pickle.dumps([1, 2], protocol=2)`.
fn amber_pickle_plain() -> Vec<u8> {
    b"\x80\x02]q\x00(K\x01K\x02e.".to_vec()
}

fn lz4(data: &[u8]) -> Vec<u8> {
    let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn lz4_frames() {
    let raw = std::fs::read(data("small_p4.joblib")).unwrap();
    let packed = lz4(&raw);
    let l = open_bytes(packed.clone(), &limits()).unwrap();
    assert_eq!(
        l.kind(),
        LegacyKind::Joblib {
            compression: Some(Codec::Lz4)
        }
    );
    assert_eq!(l.stream(), raw.as_slice());
    check_small(&l);
    for cut in [1, 5, packed.len() / 2] {
        let e = open_bytes(packed[..packed.len() - cut].to_vec(), &limits()).unwrap_err();
        assert_eq!(e.code(), "legacy.truncated", "{cut}: {e}");
    }
}

#[test]
fn truncated_and_corrupt_compressed_streams_are_refused() {
    for name in [
        "small.joblib.z",
        "small.joblib.gz",
        "small.joblib.bz2",
        "small.joblib.xz",
    ] {
        let bytes = std::fs::read(data(name)).unwrap();
        for cut in [1, 4, 8, bytes.len() / 2] {
            let e = open_bytes(bytes[..bytes.len() - cut].to_vec(), &limits()).unwrap_err();
            assert!(
                matches!(e.code(), "legacy.truncated" | "legacy.corrupt"),
                "{name} cut {cut}: {e}"
            );
        }
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n / 2] ^= 0xa5;
        bad[n / 2 + 1] ^= 0x5a;
        let e = open_bytes(bad, &limits()).unwrap_err();
        assert!(
            matches!(
                e.code(),
                "legacy.truncated" | "legacy.corrupt" | "legacy.pickle"
            ),
            "{name}: {e}"
        );
    }
}

#[test]
fn decompression_is_bounded() {
    let l = Limits::default().with_max_decompressed(100);
    for name in [
        "small.joblib.z",
        "small.joblib.gz",
        "small.joblib.bz2",
        "small.joblib.xz",
    ] {
        let e = open_path(&data(name), &l).unwrap_err();
        assert_eq!(e.code(), "legacy.too_large", "{name}: {e}");
    }
}

#[test]
fn wrong_declared_array_size_is_refused() {
    let mut bytes = std::fs::read(data("small_p4.joblib")).unwrap();
    // The shape (5,) of "a" is `K\x05\x85` (BININT1 5, TUPLE1): claim 500 elements.
    let at = bytes.windows(3).position(|w| w == b"K\x05\x85").unwrap();
    bytes[at] = b'M';
    bytes.insert(at + 2, 0x01);
    bytes[at + 1] = 0xf4;
    let e = open_bytes(bytes, &limits()).unwrap_err();
    assert_eq!(e.code(), "legacy.array_size", "{e}");
    assert!(e.to_string().contains("declares 4000 bytes of data"), "{e}");
}

#[test]
fn plain_pickles_are_unchanged() {
    // pickle.dumps({"a": [1, 2]}, protocol=4)
    let p = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94]\x94(K\x01K\x02es.";
    let l = open_bytes(p.to_vec(), &limits()).unwrap();
    assert_eq!(l.kind(), LegacyKind::Pickle { protocol: 4 });
    assert!(!l.is_rewritten());
    assert_eq!(l.load_stream(), p.as_slice());
    // Protocol 0 with a Python 2 str: py2.
    let l = open_bytes(b"(dp0\nS'a'\np1\nI1\ns.".to_vec(), &limits()).unwrap();
    assert_eq!(l.kind(), LegacyKind::Pickle { protocol: 0 });
    assert!(l.py2());
    let e = open_bytes(b"hello world".to_vec(), &limits()).unwrap_err();
    assert_eq!(e.code(), "legacy.unrecognised");
    let e = open_bytes(b"PK\x03\x04rest".to_vec(), &limits()).unwrap_err();
    assert_eq!(e.code(), "legacy.amber_file");
}

/// A protocol-2 pickle of one `NDArrayWrapper` naming `filename`.
fn nd_pickle(filename: &str) -> Vec<u8> {
    let mut p =
        b"\x80\x02cjoblib.numpy_pickle\nNDArrayWrapper\n)\x81}(X\x08\x00\x00\x00filename".to_vec();
    p.push(b'X');
    p.extend((filename.len() as u32).to_le_bytes());
    p.extend(filename.as_bytes());
    p.extend(b"ub.");
    p
}

fn npy_i8(values: &[i64]) -> Vec<u8> {
    let header = format!(
        "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    let mut h = header.into_bytes();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h);
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

#[test]
fn companion_files() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("m.pkl");
    std::fs::write(&main, nd_pickle("m.pkl_01.npy")).unwrap();
    std::fs::write(dir.path().join("m.pkl_01.npy"), npy_i8(&[1, 2, 3])).unwrap();
    let l = open_path(&main, &limits()).unwrap();
    assert_eq!(l.kind(), LegacyKind::JoblibMultiFile);
    let ArraySource::Npy { shape, descr, .. } = &l.arrays()[0] else {
        panic!("{:?}", l.arrays());
    };
    assert_eq!((shape.as_slice(), descr.as_str()), (&[3u64][..], "<i8"));
    assert_eq!(l.array_bytes(0).unwrap().len(), 24);
    let mut copy = [0u8; 24];
    l.copy_array(0, &mut copy).unwrap();
    assert_eq!(&copy[8..16], &2i64.to_le_bytes());
    assert!(l.array_is_mapped(0));
    check_load_stream(&l);

    // From bytes there is no directory.
    let e = open_bytes(nd_pickle("m.pkl_01.npy"), &limits()).unwrap_err();
    assert_eq!(e.code(), "legacy.companion_needs_directory");

    for name in ["../m.pkl_01.npy", "/etc/passwd", "sub/x.npy", "..", "a\\b"] {
        std::fs::write(&main, nd_pickle(name)).unwrap();
        let e = open_path(&main, &limits()).unwrap_err();
        assert_eq!(e.code(), "legacy.companion_name", "{name}: {e}");
    }
    std::fs::write(&main, nd_pickle("missing.npy")).unwrap();
    let e = open_path(&main, &limits()).unwrap_err();
    assert_eq!(e.code(), "legacy.companion_missing");

    // A symbolic link out of the directory is refused; one inside is followed.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.npy"), npy_i8(&[7])).unwrap();
    std::os::unix::fs::symlink(outside.path().join("x.npy"), dir.path().join("out.npy")).unwrap();
    std::fs::write(&main, nd_pickle("out.npy")).unwrap();
    let e = open_path(&main, &limits()).unwrap_err();
    assert_eq!(e.code(), "legacy.companion_name", "{e}");
    std::os::unix::fs::symlink(dir.path().join("m.pkl_01.npy"), dir.path().join("in.npy")).unwrap();
    std::fs::write(&main, nd_pickle("in.npy")).unwrap();
    assert!(open_path(&main, &limits()).is_ok());
}

fn joblib_test_data() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    let python = std::fs::read_dir(venv).ok()?.flatten().next()?.path();
    let d = python.join("site-packages/joblib/test/data");
    d.is_dir().then_some(d)
}

#[test]
fn joblib_shipped_test_data() {
    let Some(dir) = joblib_test_data() else {
        eprintln!("joblib is not installed in .venv: skipped");
        return;
    };
    let mut opened = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("joblib_") || name.contains(".npy") {
            continue;
        }
        let l = open_path(&path, &limits()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(l.py2(), name.contains("py27"), "{name}");
        let expected = match l.kind() {
            LegacyKind::JoblibZf if name.contains("cache_size") => 3,
            LegacyKind::JoblibZf => 0,
            _ => 4,
        };
        assert_eq!(l.arrays().len(), expected, "{name}");
        if l.is_rewritten() {
            check_load_stream(&l);
        }
        opened += 1;
    }
    assert_eq!(opened, 42);
}

/// Every truncation and many single-byte changes of real files: a typed
/// error or a consistent result, never a panic.
#[test]
fn damaged_inputs_never_panic() {
    for name in [
        "small_p4.joblib",
        "small_p2.joblib",
        "small.joblib.z",
        "small.joblib.xz",
    ] {
        let bytes = std::fs::read(data(name)).unwrap();
        let check = |b: Vec<u8>| {
            if let Ok(l) = open_bytes(b, &limits()) {
                assert!(Parser::new(l.load_stream()).parse().is_ok(), "{name}");
                for k in 0..l.arrays().len() {
                    assert!(l.array_bytes(k).is_some());
                }
            }
        };
        for cut in 0..bytes.len() {
            check(bytes[..cut].to_vec());
        }
        let mut state = 0x9e37_79b9_u32;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let mut b = bytes.clone();
            let at = state as usize % b.len();
            b[at] = (state >> 8) as u8;
            check(b);
        }
    }
}

/// A protocol-2 joblib file holding one aligned `uint8` array of `data`,
/// laid out as joblib 1.6 writes it.
fn joblib_u1(data: &[u8]) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut p = b"\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}(".to_vec();
    text(&mut p, "subclass");
    p.extend_from_slice(b"cnumpy\nndarray\n");
    text(&mut p, "shape");
    p.push(b'J');
    p.extend_from_slice(&i32::try_from(data.len()).unwrap().to_le_bytes());
    p.push(b'\x85');
    text(&mut p, "order");
    text(&mut p, "C");
    text(&mut p, "dtype");
    p.extend_from_slice(b"cnumpy\ndtype\n");
    text(&mut p, "u1");
    p.extend_from_slice(b"\x89\x88\x87R(K\x03");
    text(&mut p, "|");
    p.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
    text(&mut p, "allow_mmap");
    p.push(b'\x88');
    text(&mut p, "numpy_array_alignment_bytes");
    p.extend_from_slice(b"K\x10ub");
    let padding = 16 - (p.len() + 1) % 16;
    p.push(u8::try_from(padding).unwrap());
    p.extend(std::iter::repeat_n(0xff, padding));
    p.extend_from_slice(data);
    p.push(b'.');
    p
}

#[test]
fn large_arrays_are_read_in_parallel_pieces() {
    // Not a whole number of pieces, and above the parallel threshold.
    let data: Vec<u8> = (0..(13u32 << 20) + 4099)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = joblib_u1(&data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.joblib");
    std::fs::write(&path, &file).unwrap();
    let from_file = open_path(&path, &limits()).unwrap();
    let from_bytes = open_bytes(file.clone(), &limits()).unwrap();
    for l in [&from_file, &from_bytes] {
        assert!(matches!(
            l.arrays(),
            [ArraySource::Inline { len, .. }] if *len == data.len() as u64
        ));
        // Twice: a copy leaves the source as it was.
        for _ in 0..2 {
            let mut copy = vec![0u8; data.len()];
            l.copy_array(0, &mut copy).unwrap();
            assert!(copy == data);
        }
        assert_eq!(
            l.copy_array(0, &mut vec![0u8; data.len() - 1])
                .unwrap_err()
                .code(),
            "legacy.array_size"
        );
    }
    // The file is only read.
    assert!(std::fs::read(&path).unwrap() == file);
    // A file cut short after the open: a typed error, not a panic.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(file.len() as u64 / 2)
        .unwrap();
    let mut copy = vec![0u8; data.len()];
    assert_eq!(
        from_file.copy_array(0, &mut copy).unwrap_err().code(),
        "legacy.io"
    );
}
