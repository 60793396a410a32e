//! Property tests: arbitrary bytes, and streams assembled from opcode
//! fragments, never panic and finish quickly in every entry point.

use std::time::{Duration, Instant};

use amber_pickle::joblib::JoblibHook;
use amber_pickle::{Parser, TreeOptions, disassemble, parse, parse_prefix, render_tree};
use proptest::prelude::*;
use proptest::test_runner::RngAlgorithm;

/// Run every entry point on `data`; return how long it took.
fn exercise(data: &[u8]) -> Duration {
    let start = Instant::now();
    let _ = parse(data);
    if let Ok(p) = parse_prefix(data, 0) {
        assert!(p.end() as usize <= data.len());
        let _ = render_tree(p.graph(), p.root(), &TreeOptions::default());
        let _ = p.globals();
    }
    let mut hook = JoblibHook::new();
    let _ = Parser::new(data)
        .hook(&mut hook)
        .record_listing(true)
        .parse();
    let _ = disassemble(data, 0).to_string();
    start.elapsed()
}

/// Short fragments that reach deep parser states when concatenated.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"\x80\x05".to_vec()),
        Just(b"\x80\x02".to_vec()),
        Just(b"N".to_vec()),
        Just(b"(".to_vec()),
        Just(b"]".to_vec()),
        Just(b"}".to_vec()),
        Just(b")".to_vec()),
        Just(b"\x8f".to_vec()),
        Just(b"a".to_vec()),
        Just(b"e".to_vec()),
        Just(b"s".to_vec()),
        Just(b"u".to_vec()),
        Just(b"t".to_vec()),
        Just(b"l".to_vec()),
        Just(b"d".to_vec()),
        Just(b"\x90".to_vec()),
        Just(b"\x91".to_vec()),
        Just(b"\x85".to_vec()),
        Just(b"\x86".to_vec()),
        Just(b"\x87".to_vec()),
        Just(b"0".to_vec()),
        Just(b"1".to_vec()),
        Just(b"2".to_vec()),
        Just(b"\x94".to_vec()),
        Just(b"h\x00".to_vec()),
        Just(b"h\x01".to_vec()),
        Just(b"q\x00".to_vec()),
        Just(b"q\x01".to_vec()),
        Just(b"R".to_vec()),
        Just(b"b".to_vec()),
        Just(b"\x81".to_vec()),
        Just(b"\x92".to_vec()),
        Just(b"o".to_vec()),
        Just(b"\x93".to_vec()),
        Just(b"\x8c\x01a".to_vec()),
        Just(b"cmod\nname\n".to_vec()),
        Just(b"imod\nname\n".to_vec()),
        Just(b"K\x05".to_vec()),
        Just(b"I01\n".to_vec()),
        Just(b"L123L\n".to_vec()),
        Just(b"F1.5\n".to_vec()),
        Just(b"S'x\\n'\n".to_vec()),
        Just(b"V\\u0041\n".to_vec()),
        Just(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00".to_vec()),
        Just(b"\x97".to_vec()),
        Just(b"\x98".to_vec()),
        Just(b"Q".to_vec()),
        Just(b"Pid\n".to_vec()),
        Just(b"\x82\x01".to_vec()),
        Just(b"\x95\x04\x00\x00\x00\x00\x00\x00\x00".to_vec()),
        Just(b".".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..4),
    ]
}

proptest! {
    // XorShift: ChaCha dominates the run time of unoptimised test builds.
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let took = exercise(&data);
        prop_assert!(took < Duration::from_secs(1), "took {took:?}");
    }

    #[test]
    fn fragment_streams_never_panic(parts in proptest::collection::vec(fragment(), 0..200)) {
        let data: Vec<u8> = parts.concat();
        let took = exercise(&data);
        prop_assert!(took < Duration::from_secs(1), "took {took:?}");
    }

    #[test]
    fn lenient_end_is_consistent(parts in proptest::collection::vec(fragment(), 0..60)) {
        let data: Vec<u8> = parts.concat();
        if let Ok(p) = parse_prefix(&data, 0) {
            let end = p.end() as usize;
            // Strict parsing of exactly that prefix gives the same result.
            let strict = parse(&data[..end]);
            prop_assert!(strict.is_ok());
            prop_assert_eq!(strict.map(|s| s.graph().len()).ok(), Some(p.graph().len()));
        }
    }
}
