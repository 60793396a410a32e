//! The machine's fast path (common opcodes executed without building an
//! instruction) must be invisible: with a listing recorded it is off, so
//! parsing with and without a listing must give the same graph, stats,
//! globals and errors, on real fixtures and on generated streams pressed
//! against every limit.

use amber_pickle::joblib::JoblibHook;
use amber_pickle::{LimitKind, Limits, Parser};
use proptest::prelude::*;
use proptest::test_runner::RngAlgorithm;

use crate::{fixture, fixture_names};

/// Everything a parse reports, as text.
fn outcome(data: &[u8], limits: Limits, listing: bool, joblib: bool) -> String {
    let mut hook = JoblibHook::new();
    let mut parser = Parser::new(data)
        .limits(limits)
        .allow_trailing(true)
        .record_listing(listing);
    if joblib {
        parser = parser.hook(&mut hook);
    }
    match parser.parse() {
        Ok(p) => format!(
            "root {} end {} proto {:?}\n{:?}\n{:?}\n{:?}",
            p.root(),
            p.end(),
            p.highest_protocol(),
            p.stats(),
            p.globals(),
            p.graph()
        ),
        Err(e) => format!("error {e:?}"),
    }
}

fn assert_same(data: &[u8], limits: Limits, joblib: bool) {
    let general = outcome(data, limits, true, joblib);
    let fast = outcome(data, limits, false, joblib);
    assert!(
        general == fast,
        "fast path differs:\n{fast}\n---- general:\n{general}"
    );
}

#[test]
fn fixtures_parse_the_same_on_both_paths() {
    let names = fixture_names(&[".pkl", ".joblib"]);
    assert!(names.len() > 20, "{names:?}");
    for name in names {
        let data = fixture(&name);
        let joblib = name.ends_with(".joblib");
        assert_same(&data, Limits::default(), joblib);
        // Every truncation, so errors on both paths are compared too.
        for end in (0..data.len()).step_by(7) {
            assert_same(&data[..end], Limits::default(), joblib);
        }
    }
}

/// Everything a joblib parse reports with `hook`, plus the arrays it counted.
fn hooked(data: &[u8], mut hook: JoblibHook) -> (String, u64, usize) {
    let parsed = Parser::new(data)
        .allow_trailing(true)
        .hook(&mut hook)
        .parse()
        .map(|p| format!("{:?}\n{:?}\n{:?}", p.root(), p.stats(), p.graph()));
    let text = match parsed {
        Ok(t) => t,
        Err(e) => format!("error {e:?}"),
    };
    (text, hook.count(), hook.arrays().len())
}

#[test]
fn counting_hook_decides_as_the_recording_one() {
    let names = fixture_names(&[".joblib"]);
    assert!(!names.is_empty());
    let mut arrays = 0;
    for name in names {
        let data = fixture(&name);
        for end in (0..=data.len()).rev().step_by(5) {
            let (kept, kept_count, kept_len) = hooked(&data[..end], JoblibHook::new());
            let (counted, count, len) = hooked(&data[..end], JoblibHook::counting());
            assert_eq!(kept, counted, "{name} cut at {end}");
            assert_eq!((kept_count, len), (count, 0), "{name} cut at {end}");
            assert_eq!(usize::try_from(kept_count).unwrap(), kept_len);
            if end == data.len() {
                arrays += kept_len;
            }
        }
    }
    assert!(arrays > 0, "the joblib fixtures hold arrays");
}

/// Fragments of the opcodes the fast path takes, and some it does not.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"\x80\x05".to_vec()),
        Just(b"N".to_vec()),
        Just(b"\x88".to_vec()),
        Just(b"\x89".to_vec()),
        Just(b"(".to_vec()),
        Just(b"]".to_vec()),
        Just(b"}".to_vec()),
        Just(b")".to_vec()),
        Just(b"\x8f".to_vec()),
        Just(b"t".to_vec()),
        Just(b"\x85".to_vec()),
        Just(b"\x86".to_vec()),
        Just(b"\x87".to_vec()),
        Just(b"R".to_vec()),
        Just(b"\x81".to_vec()),
        Just(b"u".to_vec()),
        Just(b"e".to_vec()),
        Just(b"a".to_vec()),
        Just(b"b".to_vec()),
        Just(b"0".to_vec()),
        Just(b"1".to_vec()),
        Just(b"2".to_vec()),
        Just(b"\x94".to_vec()),
        Just(b"h\x00".to_vec()),
        Just(b"h\x02".to_vec()),
        Just(b"j\x01\x00\x00\x00".to_vec()),
        Just(b"q\x00".to_vec()),
        Just(b"q\x03".to_vec()),
        Just(b"r\x01\x00\x00\x00".to_vec()),
        Just(b"r\xff\xff\xff\x7f".to_vec()),
        Just(b"K\x05".to_vec()),
        Just(b"M\x01\x02".to_vec()),
        Just(b"J\xff\xff\xff\xff".to_vec()),
        Just(b"G?\xf8\x00\x00\x00\x00\x00\x00".to_vec()),
        Just(b"\x8c\x01a".to_vec()),
        Just(b"\x8c\x02\xc3\xa9".to_vec()),
        Just(b"\x8c\x01\xff".to_vec()),
        Just(b"\x8c\x00".to_vec()),
        Just(b"\x8c\x09abcdefghi".to_vec()),
        Just(b"\x8c\x11\xc3\xa9bcdefghijklmnop".to_vec()),
        Just(b"\x8c\x11abcdefghijklmnop\xff".to_vec()),
        Just(b"X\x03\x00\x00\x00abc".to_vec()),
        Just(b"C\x02hi".to_vec()),
        Just(b"U\x01x".to_vec()),
        Just(b"\x96\x03\x00\x00\x00\x00\x00\x00\x00abc".to_vec()),
        Just(b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00z".to_vec()),
        Just(b"\x93".to_vec()),
        Just(b"cmod\nname\n".to_vec()),
        Just(b"\x95\x05\x00\x00\x00\x00\x00\x00\x00".to_vec()),
        Just(b"\x95\x02\x00\x00\x00\x00\x00\x00\x00".to_vec()),
        Just(b".".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..3),
    ]
}

/// Limits small enough that generated streams hit each of them.
fn limits() -> impl Strategy<Value = Limits> {
    (
        proptest::option::of(0u64..40),
        proptest::option::of(0u64..20),
        proptest::option::of(0u64..12),
        proptest::option::of(0u64..6),
        proptest::option::of(0u64..6),
        proptest::option::of(0u64..6),
        proptest::option::of(0u64..6),
        proptest::option::of(0u64..1200),
        proptest::option::of(0u64..3),
    )
        .prop_map(
            |(ops, nodes, stack, nesting, entries, index, gets, bytes, len)| {
                let mut l = Limits::default();
                let set = [
                    (LimitKind::Opcodes, ops),
                    (LimitKind::Nodes, nodes),
                    (LimitKind::StackDepth, stack),
                    (LimitKind::NestingDepth, nesting),
                    (LimitKind::MemoEntries, entries),
                    (LimitKind::MemoIndex, index),
                    (LimitKind::MemoGets, gets),
                    (LimitKind::GraphBytes, bytes),
                    (LimitKind::StrLen, len),
                    (LimitKind::BytesLen, len),
                ];
                for (kind, value) in set {
                    if let Some(v) = value {
                        l.set(kind, v);
                    }
                }
                l
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_streams_parse_the_same_on_both_paths(
        parts in proptest::collection::vec(fragment(), 0..60),
        limits in limits(),
    ) {
        let data: Vec<u8> = parts.concat();
        let general = outcome(&data, limits, true, false);
        let fast = outcome(&data, limits, false, false);
        prop_assert_eq!(fast, general);
    }
}

/// A memoized `SHORT_BINUNICODE` key `k{i}`.
fn push_key(body: &mut Vec<u8>, i: usize) {
    let key = format!("k{i}");
    body.push(0x8c);
    body.push(key.len() as u8);
    body.extend_from_slice(key.as_bytes());
    body.push(0x94);
}

/// `body` (a dict and the `MARK` of its items) closed by `SETITEMS` and
/// `STOP`, in one frame of a `proto` pickle.
fn framed(proto: u8, mut body: Vec<u8>) -> Vec<u8> {
    body.extend_from_slice(b"u.");
    let mut data = vec![0x80, proto, 0x95];
    data.extend_from_slice(&(body.len() as u64).to_le_bytes());
    data.extend(body);
    data
}

/// A protocol-4 dict literal of `pairs` memoized `str -> int` items set in
/// one `SETITEMS`, inside a frame, with a memo hole (`BINPUT 5`) halfway:
/// the long runs of scalars, `MEMOIZE`s and `BINGET`s the fast path takes
/// in one loop.
fn dict_literal(pairs: usize) -> Vec<u8> {
    let mut body = b"}\x94(".to_vec();
    for i in 0..pairs {
        push_key(&mut body, i);
        match i % 4 {
            0 => body.extend_from_slice(b"K\x07"),
            1 => body.extend_from_slice(b"M\x01\x02"),
            2 => body.extend_from_slice(b"h\x00"),
            _ => body.extend_from_slice(b"J\xff\xff\xff\xff"),
        }
        if i == pairs / 2 {
            body.extend_from_slice(b"q\x40");
        }
    }
    framed(4, body)
}

/// The limits a run of scalars and memo traffic can reach.
const RUN_LIMITS: [LimitKind; 7] = [
    LimitKind::Opcodes,
    LimitKind::Nodes,
    LimitKind::StackDepth,
    LimitKind::MemoEntries,
    LimitKind::MemoIndex,
    LimitKind::MemoGets,
    LimitKind::StrLen,
];

#[test]
fn long_runs_stop_at_every_limit_as_the_general_path() {
    let data = dict_literal(40);
    assert_same_under_limits(&data, &RUN_LIMITS, 140);
}

/// Both paths agree on `data` whole, under each of `kinds` set to every
/// value below `up_to`, and on every cut of it.
fn assert_same_under_limits(data: &[u8], kinds: &[LimitKind], up_to: u64) {
    assert_same(data, Limits::default(), false);
    for value in 0..up_to {
        for &kind in kinds {
            assert_same(data, Limits::default().with(kind, value), false);
        }
    }
    for end in 0..data.len() {
        assert_same(&data[..end], Limits::default(), false);
    }
}

/// A `SHORT_BINUNICODE` key of `len` bytes, pure ASCII or with a
/// two-byte character (or a lone continuation byte, if `bad`) at `at`.
fn text_key(len: usize, at: usize, bad: bool) -> Vec<u8> {
    let mut key: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    if at + 1 < len {
        key[at] = 0xc3;
        key[at + 1] = if bad { 0x28 } else { 0xa9 };
    }
    let mut op = vec![0x8c, len as u8];
    op.extend(key);
    op
}

/// A protocol-4 dict literal of `pairs` `str` keys of every length up to
/// 40 (ASCII, or not, at every position the word checks split at), each
/// memoized or not, with every scalar value the pair loop takes and some
/// it does not (`BINGET`, a tuple), and a key that is not UTF-8 if `bad`:
/// the vocabulary-like runs `fast_pairs` takes.
fn vocabulary(pairs: usize, bad: Option<usize>) -> Vec<u8> {
    let values: [&[u8]; 10] = [
        b"K\x07",
        b"M\x01\x02",
        b"J\xff\xff\xff\xff",
        b"G?\xf8\x00\x00\x00\x00\x00\x00",
        b"N",
        b"\x88",
        b"\x89",
        b"h\x00",
        b"K\x01\x85",
        b"J\x00\x00\x00\x01",
    ];
    let mut body = b"}\x94(".to_vec();
    for i in 0..pairs {
        let len = i % 41;
        body.extend(text_key(len, (i * 5) % 19, bad == Some(i)));
        if i % 7 != 3 {
            body.push(0x94);
        }
        body.extend_from_slice(values[i % values.len()]);
    }
    framed(4, body)
}

#[test]
fn vocabulary_pairs_stop_at_every_limit_as_the_general_path() {
    let data = vocabulary(90, None);
    assert!(Parser::new(&data).parse().is_ok());
    assert_same_under_limits(&data, &RUN_LIMITS, 300);
    // A key that is not UTF-8 is refused where the general path refuses it.
    for bad in [9, 17, 30, 59, 60, 70] {
        let data = vocabulary(90, Some(bad));
        assert!(Parser::new(&data).parse().is_err(), "key {bad}");
        assert_same(&data, Limits::default(), false);
    }
    // Damaged streams: each byte in turn replaced.
    let data = vocabulary(40, None);
    for at in 0..data.len() {
        for byte in [0x00, 0x80, 0x8c, 0x94, b'K', 0xff] {
            let mut damaged = data.clone();
            damaged[at] = byte;
            assert_same(&damaged, Limits::default(), false);
        }
    }
}

/// A protocol-5 dict of `entries` call-shaped values in one frame, set in
/// one `SETITEMS`: each a memoized key, then a `MARK`, a `BYTEARRAY8` and
/// the tuples (`TUPLE1`, `TUPLE2`, `TUPLE3`, `TUPLE`), `REDUCE` and
/// `NEWOBJ` that close over them, much as a dict of in-band arrays is
/// pickled: the runs that carry on through tuples and calls.
fn dict_of_calls(entries: usize) -> Vec<u8> {
    let mut body = b"}\x94(".to_vec();
    for i in 0..entries {
        push_key(&mut body, i);
        body.extend_from_slice(b"(\x96\x02\x00\x00\x00\x00\x00\x00\x00ab\x94");
        body.extend_from_slice(b"K\x0a\x85\x94N\x86\x94h\x00\x87\x94t\x94NR\x94");
        if i % 2 == 1 {
            body.extend_from_slice(b")\x81");
        }
    }
    framed(5, body)
}

#[test]
fn runs_through_tuples_and_calls_stop_at_every_limit_as_the_general_path() {
    let data = dict_of_calls(12);
    assert!(Parser::new(&data).parse().is_ok());
    assert_same_under_limits(&data, &CALL_LIMITS, 260);
    assert_same_under_graph_bytes(&data, 6000);
}

/// The limits a run through tuples and calls can reach.
const CALL_LIMITS: [LimitKind; 8] = [
    LimitKind::Opcodes,
    LimitKind::Nodes,
    LimitKind::StackDepth,
    LimitKind::NestingDepth,
    LimitKind::MemoEntries,
    LimitKind::MemoIndex,
    LimitKind::MemoGets,
    LimitKind::BytesLen,
];

/// Both paths agree on `data` under every graph-bytes limit below `up_to`
/// (in steps of 8).
fn assert_same_under_graph_bytes(data: &[u8], up_to: u64) {
    for bytes in (0..up_to).step_by(8) {
        assert_same(
            data,
            Limits::default().with(LimitKind::GraphBytes, bytes),
            false,
        );
    }
}

/// A memo read of slot `index`: `BINGET`, or `LONG_BINGET` if `long`.
fn memo_read(body: &mut Vec<u8>, index: u32, long: bool) {
    if long {
        body.push(b'j');
        body.extend_from_slice(&index.to_le_bytes());
    } else {
        body.push(b'h');
        body.push(index as u8);
    }
}

/// A protocol-5 dict of `entries` in-band arrays as NumPy pickles them
/// once the memo holds `_frombuffer` (slot 1), the dtype (slot 3, a node
/// two deep) and the order (slot 4): `BINGET f; MARK; BYTEARRAY8;
/// MEMOIZE; BINGET d; ints; TUPLEn; MEMOIZE; BINGET o; TUPLE; MEMOIZE;
/// REDUCE; MEMOIZE`, the arrays `Run::fast_frombuffer` takes whole. The
/// entries vary what it must take or leave: one to four dimensions of
/// each int opcode, `LONG_BINGET`, a missing `MEMOIZE`, a read of the slot
/// the array itself or its key just filled, a key read from the memo; with
/// `bad`, a read of a slot never filled.
fn dict_of_arrays(entries: usize, bad: bool) -> Vec<u8> {
    let mut body = b"}\x94(".to_vec();
    // 1: callable, 2: a leaf, 3: dtype ((leaf,),), 4: order.
    body.extend_from_slice(b"\x8c\x01f\x940K\x05\x94\x85\x85\x940\x8c\x01C\x940");
    let mut slots = 5u32;
    let ints: [&[u8]; 4] = [b"K\x0a", b"M\x01\x02", b"J\xff\xff\xff\x7f", b"K\x00"];
    let mut key_slot = 0;
    for i in 0..entries {
        if i % 7 == 4 {
            // A key read back from the memo (one the dict has already).
            memo_read(&mut body, key_slot, false);
        } else {
            push_key(&mut body, i);
            key_slot = slots;
            slots += 1;
        }
        let long = i % 5 == 2;
        memo_read(&mut body, 1, long);
        body.extend_from_slice(b"(\x96");
        let n = i % 9;
        body.extend_from_slice(&(n as u64).to_le_bytes());
        body.extend((0..n).map(|b| b as u8));
        body.push(0x94);
        let buffer = slots;
        slots += 1;
        let dtype = match i % 13 {
            7 if bad => 9_000,
            5 => buffer,
            // The slot its key just filled.
            10 => key_slot,
            _ => 3,
        };
        memo_read(&mut body, dtype, i % 3 == 1);
        let dims = 1 + i % 4;
        if dims == 4 {
            // Four ints: a TUPLE over a mark of their own.
            body.push(b'(');
        }
        for d in 0..dims {
            body.extend_from_slice(ints[(i + d) % 4]);
        }
        body.push(match dims {
            1 => 0x85,
            2 => 0x86,
            3 => 0x87,
            _ => b't',
        });
        if i % 11 != 6 {
            body.push(0x94);
            slots += 1;
        }
        memo_read(&mut body, 4, long);
        body.extend_from_slice(b"t\x94R\x94");
        slots += 2;
    }
    framed(5, body)
}

#[test]
fn in_band_arrays_stop_at_every_limit_as_the_general_path() {
    let data = dict_of_arrays(26, false);
    let p = Parser::new(&data).parse().unwrap();
    // The dict, the dtype's two tuples, three nodes per array.
    assert_eq!(p.graph().len(), 3 + 26 * 3);
    assert_same_under_limits(&data, &CALL_LIMITS, 420);
    assert_same_under_graph_bytes(&data, 12_000);
    // Keys of two and three bytes: a string limit stops a run at one.
    for len in 0..4 {
        assert_same(&data, Limits::default().with(LimitKind::StrLen, len), false);
    }
    // A read of a slot never filled is an error on both paths.
    let data = dict_of_arrays(26, true);
    assert_eq!(
        Parser::new(&data).parse().unwrap_err().code(),
        "pickle.memo_missing"
    );
    assert_same(&data, Limits::default(), false);
    // Damaged streams: each byte in turn replaced.
    let data = dict_of_arrays(8, false);
    for at in 0..data.len() {
        for byte in [
            0x00, 0x28, 0x85, 0x94, 0x96, b'h', b'j', b'K', b't', b'R', 0xff,
        ] {
            let mut damaged = data.clone();
            damaged[at] = byte;
            assert_same(&damaged, Limits::default(), false);
        }
    }
    // Before the arrays: a leaf with a depth of its own (an `APPEND` on
    // it), or a hole in the memo (`BINPUT 40`).
    for prefix in [&b"K\x01Na0"[..], b"Nq\x280"] {
        let mut data = dict_of_arrays(6, false);
        data.splice(11..11, prefix.iter().copied());
        let len = data.len() as u64 - 11;
        data[3..11].copy_from_slice(&len.to_le_bytes());
        assert!(Parser::new(&data).parse().is_ok());
        assert_same(&data, Limits::default(), false);
    }
}

/// `Graph::str_bytes` (keys compared without decoding), `Graph::tuple_items`,
/// `Graph::is_int` and `Graph::is_raw_leaf` (the analyser's shortcuts past
/// `kind`) must agree
/// with `Graph::kind` on every value of every fixture, leaves included,
/// and on hand-made `str`s, ints and raw payloads of each opcode and of none.
#[test]
fn str_bytes_tuple_items_and_is_int_agree_with_kind() {
    use amber_pickle::{NodeId, NodeKind};
    let check = |data: &[u8], joblib: bool| {
        let mut hook = JoblibHook::new();
        let mut parser = Parser::new(data).allow_trailing(true);
        if joblib {
            parser = parser.hook(&mut hook);
        }
        let p = parser.parse().unwrap();
        let g = p.graph();
        let mut ids: Vec<NodeId> = vec![p.root()];
        for (id, _) in g.iter() {
            ids.push(id);
            ids.extend(g.children(id));
        }
        ids.sort();
        ids.dedup();
        let (mut strs, mut ints, mut raws) = (0, 0, 0);
        for id in ids {
            let kind = g.kind(id);
            let expected = match kind {
                Some(NodeKind::Str(s)) => Some(s.as_bytes()),
                _ => None,
            };
            strs += usize::from(expected.is_some());
            assert_eq!(g.str_bytes(id), expected, "{id}");
            // The other shortcuts the analyser takes past `kind`.
            let tuple = match kind {
                Some(NodeKind::Tuple(items)) => Some(items),
                _ => None,
            };
            assert_eq!(g.tuple_items(id), tuple, "{id}");
            let int = matches!(kind, Some(NodeKind::Int(_) | NodeKind::BigInt(_)));
            assert_eq!(g.is_int(id), int, "{id}");
            let raw = id.is_leaf()
                && matches!(
                    kind,
                    Some(
                        NodeKind::Str(_)
                            | NodeKind::Bytes(_)
                            | NodeKind::ByteArray(_)
                            | NodeKind::LegacyStr(_)
                    )
                );
            assert_eq!(g.is_raw_leaf(id), raw, "{id}");
            raws += usize::from(raw);
            ints += usize::from(int);
        }
        (strs, ints, raws)
    };
    let (mut strs, mut ints, mut raws) = (0, 0, 0);
    for name in fixture_names(&[".pkl", ".joblib"]) {
        let (s, i, r) = check(&fixture(&name), name.ends_with(".joblib"));
        strs += s;
        ints += i;
        raws += r;
    }
    assert!(
        strs > 100 && ints > 100 && raws > 100,
        "{strs} {ints} {raws}"
    );
    // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, UNICODE (a stored node),
    // SHORT_BINBYTES (not a str), in one tuple.
    let data = b"\x80\x04(\x8c\x02\xc3\xa9X\x01\x00\x00\x00a\x8d\x01\x00\x00\x00\x00\x00\x00\x00bVc\nC\x01dt.";
    assert_eq!(check(data, false), (4, 0, 4));
    // Ints of every kind (BININT1, BININT2, BININT, LONG1, INT, LONG) and
    // things that are not (bools, a float, an empty tuple), in tuples.
    let data = b"\x80\x02(K\x01M\x01\x02J\xff\xff\xff\xff\x8a\x01\x05I7\nL8L\n\x88\x89G?\xf0\x00\x00\x00\x00\x00\x00)\x85t.";
    assert_eq!(check(data, false), (0, 6, 0));
    // BYTEARRAY8, BINBYTES, BINBYTES8, SHORT_BINSTRING, BINSTRING (raw
    // leaves, none a str), STRING (a stored node), in one tuple.
    let data = b"\x80\x05(\x96\x01\x00\x00\x00\x00\x00\x00\x00aB\x01\x00\x00\x00b\x8e\x01\x00\x00\x00\x00\x00\x00\x00cU\x01dT\x01\x00\x00\x00eS'f'\nt.";
    assert_eq!(check(data, false), (0, 0, 5));
}

/// A joblib 1.6 file of sixteen small arrays (dtypes, shapes of one to
/// three dimensions and none, C and Fortran order, an object array, data
/// after the arrays) and an `OrderedDict`: each wrapper after the first is
/// `BINGET cls; EMPTY_TUPLE; NEWOBJ; MEMOIZE; EMPTY_DICT; MEMOIZE; MARK;
/// memo-read keys and memo-read, leaf or shape-tuple values; SETITEMS`,
/// the objects `Run::fast_object` takes whole, then its `BUILD` and the
/// array's bytes. Parsed with joblib's hook on both paths, whole, under
/// every limit it can reach, cut anywhere and with damaged bytes.
#[test]
fn joblib_wrappers_stop_at_every_limit_as_the_general_path() {
    let data = fixture("joblib_many.joblib");
    let mut hook = JoblibHook::new();
    let p = Parser::new(&data).hook(&mut hook).parse().unwrap();
    assert!(p.graph().len() > 100);
    // What `generate.py` wrote (the wrappers after the first share their
    // key nodes, so the hook finds each value where the last one had it).
    let shapes: [&[u64]; 6] = [&[3], &[2, 2], &[1, 2, 2], &[0], &[5], &[2, 3]];
    let sizes = [8, 4, 1, 2, 4, 8, 16];
    let mut expected: Vec<(Vec<u64>, u64, bool)> = (0..14)
        .map(|i| {
            (
                shapes[i % 6].to_vec(),
                sizes[i % 7],
                i % 5 == 3 && i % 6 != 3,
            )
        })
        .collect();
    expected.extend([
        (vec![3], 8, false),
        (vec![4], 8, false),
        (vec![2], 8, false),
    ]);
    let found: Vec<(Vec<u64>, u64, bool)> = hook
        .arrays()
        .iter()
        .map(|a| (a.shape.clone(), a.itemsize, a.fortran_order))
        .collect();
    assert_eq!(found, expected);
    assert_same(&data, Limits::default(), true);
    // Each limit set to every value up to what the whole file needs.
    let stats = p.stats();
    let up_to = stats.opcodes + 2;
    for value in 0..up_to {
        for kind in CALL_LIMITS {
            assert_same(&data, Limits::default().with(kind, value), true);
        }
    }
    for bytes in (0..stats.graph_bytes + 64).step_by(8) {
        let limits = Limits::default().with(LimitKind::GraphBytes, bytes);
        assert_same(&data, limits, true);
    }
    for end in 0..data.len() {
        assert_same(&data[..end], Limits::default(), true);
    }
    for at in 0..data.len() {
        for byte in [
            0x00, 0x28, 0x29, 0x4b, 0x4d, 0x75, 0x7d, 0x81, 0x85, 0x88, 0x94, 0x95, b'h',
        ] {
            let mut damaged = data.clone();
            damaged[at] = byte;
            assert_same(&damaged, Limits::default(), true);
        }
    }
}

/// A protocol-4 list of `count` objects of a memoized class (slot 3), each
/// `BINGET cls; EMPTY_TUPLE; NEWOBJ; MEMOIZE; EMPTY_DICT; MEMOIZE; MARK;
/// pairs; SETITEMS` with memoized `str` keys (slots 4 to 6) and values of
/// every kind `Run::fast_object` takes (memo reads, ints, `None`, bools,
/// tuples of one to three ints, memoized or not, last or not) and some it
/// does not (four ints, a float, a fresh `str`, no pairs, too many pairs),
/// `LONG_BINGET` as well; with `bad`, one key reads a slot never filled.
fn objects(count: usize, bad: bool) -> Vec<u8> {
    let mut body = b"]\x94(\x8c\x01m\x94\x8c\x01C\x94\x93\x940".to_vec();
    body.extend_from_slice(b"\x8c\x01a\x940\x8c\x01b\x940\x8c\x01c\x940");
    let values: [&[u8]; 14] = [
        b"K\x07",
        b"h\x03",
        b"M\x01\x02",
        b"J\xff\xff\xff\xff",
        b"N",
        b"\x88",
        b"\x89",
        b"K\x01\x85\x94",
        b"K\x01M\x02\x00\x86",
        b"K\x01K\x02J\x03\x00\x00\x00\x87\x94",
        b"(K\x01K\x02K\x03K\x04t",
        b"G?\xf8\x00\x00\x00\x00\x00\x00",
        b"\x8c\x01z",
        b"\x8c\x01y\x94",
    ];
    for i in 0..count {
        memo_read(&mut body, 3, i % 4 == 1);
        body.extend_from_slice(b")\x81\x94}\x94(");
        let pairs = match i % 9 {
            0 => 0,
            8 => 17,
            n => n,
        };
        for j in 0..pairs {
            let key = if bad && i == count / 2 && j == 0 {
                200
            } else {
                4 + (i + j) as u32 % 3
            };
            memo_read(&mut body, key, (i + j) % 5 == 2);
            // The values not taken only now and then.
            let v = match (i * 3 + j) % 40 {
                33 => 11,
                34 => 12,
                35 => 13,
                v => v % 11,
            };
            body.extend_from_slice(values[v]);
        }
        body.push(b'u');
    }
    body.extend_from_slice(b"e.");
    let mut data = vec![0x80, 4];
    data.extend(body);
    data
}

#[test]
fn objects_with_state_dicts_stop_at_every_limit_as_the_general_path() {
    let data = objects(30, false);
    let p = Parser::new(&data).parse().unwrap();
    let up_to = p.stats().opcodes + 2;
    assert_same_under_limits(&data, &CALL_LIMITS, up_to);
    assert_same_under_graph_bytes(&data, p.stats().graph_bytes + 64);
    // A read of a slot never filled is an error on both paths.
    let data = objects(30, true);
    assert_eq!(
        Parser::new(&data).parse().unwrap_err().code(),
        "pickle.memo_missing"
    );
    assert_same(&data, Limits::default(), false);
    // Damaged streams: each byte in turn replaced.
    let data = objects(12, false);
    for at in 0..data.len() {
        for byte in [
            0x00, 0x28, 0x29, b'K', 0x75, 0x7d, 0x81, 0x85, 0x87, 0x94, b'h', b'j',
        ] {
            let mut damaged = data.clone();
            damaged[at] = byte;
            assert_same(&damaged, Limits::default(), false);
        }
    }
    // One object alone, built: its stack peaks with the ints of its last
    // value (one to three, memoized or not), or with that value.
    for value in [
        &b"K\x01"[..],
        b"K\x01\x85",
        b"K\x01K\x02\x86\x94",
        b"K\x01K\x02K\x03\x87",
    ] {
        let mut data = b"\x80\x04\x8c\x01m\x94\x8c\x01C\x94\x93\x940\x8c\x01a\x940".to_vec();
        data.extend_from_slice(b"h\x02)\x81\x94}\x94(h\x03");
        data.extend_from_slice(value);
        data.push(b'u');
        for grow in [&b""[..], b"h\x05(h\x03K\x09u0"] {
            // Its dict (slot 5) grown afterwards by a `SETITEMS` of its own.
            let mut data = data.clone();
            data.extend_from_slice(grow);
            data.extend_from_slice(b"b.");
            let p = Parser::new(&data).parse().unwrap();
            let state = p.graph().events()[0].kind.clone();
            let amber_pickle::EventKind::Build { state } = state else {
                panic!("{state:?}");
            };
            let Some(amber_pickle::NodeKind::Dict(pairs)) = p.graph().kind(state) else {
                panic!("not a dict");
            };
            assert_eq!(pairs.len(), 1 + usize::from(!grow.is_empty()));
            assert_same_under_limits(&data, &CALL_LIMITS, 40);
        }
    }
    // Before the objects: a leaf with a depth of its own (an `APPEND` on
    // it), or a hole in the memo (`BINPUT 40`).
    for prefix in [&b"K\x01Na0"[..], b"Nq\x280"] {
        let mut data = objects(10, false);
        data.splice(2..2, prefix.iter().copied());
        assert!(Parser::new(&data).parse().is_ok());
        assert_same(&data, Limits::default(), false);
    }
}
