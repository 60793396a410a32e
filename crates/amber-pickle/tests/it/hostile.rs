//! Hostile inputs: each must end quickly with the expected error (or a
//! small graph), never a panic, a stack overflow or a large allocation.

use std::time::{Duration, Instant};

use amber_pickle::{
    LimitKind, Limits, NodeKind, Parser, PickleError, TreeOptions, parse, render_tree,
};

/// Generous for unoptimised test builds; release builds are far faster.
const BUDGET: Duration = Duration::from_secs(5);

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(took < BUDGET, "{what} took {took:?}");
    out
}

fn limit_of(e: &PickleError) -> Option<LimitKind> {
    match e {
        PickleError::Limit { limit, .. } => Some(*limit),
        _ => None,
    }
}

#[test]
fn deep_list_nesting() {
    // 1,000,000 x EMPTY_LIST then 999,999 x APPEND: l0.append(l1.append(...)).
    let n = 1_000_000;
    let mut data = vec![b']'; n];
    data.extend(std::iter::repeat_n(b'a', n - 1));
    data.push(b'.');
    let e = timed("deep lists", || parse(&data)).unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::NestingDepth), "{e}");

    // Without limits it parses (no recursion anywhere), and renders small.
    let p = timed("deep lists, unlimited", || {
        Parser::new(&data).limits(Limits::unlimited()).parse()
    })
    .unwrap();
    assert_eq!(p.stats().max_nesting_depth, n as u64);
    let text = timed("render deep", || {
        render_tree(p.graph(), p.root(), &TreeOptions::default())
    });
    assert!(text.lines().count() < 100, "{}", text.lines().count());
}

#[test]
fn deep_nesting_through_the_memo() {
    // `) q0` then repeatedly `( h0 t q0`: each tuple holds the previous one,
    // with a stack that never grows.
    let mut data = b")q\x00".to_vec();
    for _ in 0..200_000 {
        data.extend_from_slice(b"(h\x00tq\x000");
    }
    data.push(b'.');
    let e = timed("memo nesting", || parse(&data)).unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::NestingDepth), "{e}");
}

#[test]
fn mark_bomb() {
    let data = vec![b'('; 1_000_001];
    let e = timed("marks", || parse(&data)).unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::StackDepth), "{e}");
    // Without a limit: the input simply ends.
    let e = Parser::new(&data)
        .limits(Limits::unlimited())
        .parse()
        .unwrap_err();
    assert_eq!(e.code(), "pickle.truncated");
    // STOP with open marks.
    assert_eq!(parse(b"N((.").unwrap_err().code(), "pickle.bad_stop");
}

#[test]
fn billion_laughs_stays_a_small_dag() {
    // l0 = []; l(i+1) = [l(i)] * 10, thirty times: 10^30 leaves if expanded.
    let mut data = b"]q\x000".to_vec();
    for i in 0..30u8 {
        data.push(b'(');
        for _ in 0..10 {
            data.extend_from_slice(&[b'h', i]);
        }
        data.extend_from_slice(&[b'l', b'q', i + 1, b'0']);
    }
    data.extend_from_slice(&[b'h', 30, b'.']);
    let p = timed("laughs", || parse(&data)).unwrap();
    assert!(p.graph().len() < 40, "{}", p.graph().len());
    assert_eq!(p.stats().memo_gets, 301);
    let text = render_tree(p.graph(), p.root(), &TreeOptions::default());
    assert!(text.len() < 200_000);
}

#[test]
fn memo_bombs() {
    // One write to a huge slot: refused before the memo grows.
    let e = parse(b"Nr\xff\xff\xff\xff.").unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::MemoIndex), "{e}");
    let e = parse(b"Np99999999999999999999999999\n.").unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::MemoIndex), "{e}");
    let e = parse(b"Np4294967295\n.").unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::MemoIndex), "{e}");
    // Many slots.
    let mut data = b"N".to_vec();
    data.extend(std::iter::repeat_n(0x94u8, 2_000_001));
    data.push(b'.');
    let e = timed("memoize", || parse(&data)).unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::MemoEntries), "{e}");
    // Reads of an unset slot.
    let e = parse(b"\x80\x04N\x94j\x01\x00\x00\x00.").unwrap_err();
    assert_eq!(e.code(), "pickle.memo_missing");
    assert_eq!(
        e.to_string(),
        "memo slot 1 is empty at byte 0x4 (opcode `LONG_BINGET`)"
    );
}

#[test]
fn get_budget() {
    let mut data = b"Nq\x00".to_vec();
    for _ in 0..2_000 {
        data.extend_from_slice(b"h\x000");
    }
    data.push(b'.');
    let limits = Limits::default().with(LimitKind::MemoGets, 1_000);
    let e = Parser::new(&data).limits(limits).parse().unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::MemoGets), "{e}");
    assert!(parse(&data).is_ok());
}

#[test]
fn opcode_and_node_budgets() {
    let mut data = vec![b'N'; 100];
    data.extend(std::iter::repeat_n(b'0', 99));
    data.push(b'.');
    assert!(parse(&data).is_ok());
    let e = Parser::new(&data)
        .limits(Limits::default().with(LimitKind::Opcodes, 150))
        .parse()
        .unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::Opcodes));
    let e = Parser::new(&data)
        .limits(Limits::default().with(LimitKind::Nodes, 50))
        .parse()
        .unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::Nodes));

    // Default node limit on a flood of `NONE`/`POP`.
    let mut data = Vec::new();
    for _ in 0..2_100_000 {
        data.extend_from_slice(b"N0");
    }
    data.extend_from_slice(b"N.");
    let e = timed("node flood", || parse(&data)).unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::Nodes), "{e}");
}

#[test]
fn huge_length_fields() {
    let cases: &[(&[u8], &str)] = &[
        (b"\x8e\xff\xff\xff\xff\xff\xff\xff\x7f", "pickle.truncated"), // BINBYTES8
        (b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff", "pickle.truncated"), // BINUNICODE8
        (b"\x96\x00\x00\x00\x00\x01\x00\x00\x00", "pickle.truncated"), // BYTEARRAY8
        (b"B\xff\xff\xff\xff", "pickle.truncated"),                    // BINBYTES
        (b"X\xff\xff\xff\xff", "pickle.truncated"),                    // BINUNICODE
        (b"T\xff\xff\xff\x7f", "pickle.truncated"),                    // BINSTRING
        (b"T\xff\xff\xff\xff", "pickle.bad_argument"),                 // negative
        (b"\x8b\xff\xff\xff\x7f", "pickle.truncated"),                 // LONG4
        (b"\x8b\x00\x00\x00\x80", "pickle.bad_argument"),              // negative
        (
            b"\x95\xff\xff\xff\xff\xff\xff\xff\xff",
            "pickle.frame_overrun",
        ),
    ];
    for (data, code) in cases {
        let e = parse(data).unwrap_err();
        assert_eq!(e.code(), *code, "{data:?}: {e}");
    }
    // A LONG4 that is present but over the big-int limit.
    let mut data = b"\x8b\x00\x20\x00\x00".to_vec();
    data.extend(std::iter::repeat_n(1u8, 0x2000));
    data.push(b'.');
    let e = parse(&data).unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::BigIntBytes), "{e}");
}

#[test]
fn long_text_integers() {
    let mut ok = b"L".to_vec();
    ok.extend(std::iter::repeat_n(b'7', 4300));
    ok.extend_from_slice(b"L\n.");
    let p = timed("4300 digits", || parse(&ok)).unwrap();
    assert!(matches!(
        p.graph().kind(p.root()),
        Some(NodeKind::BigInt(_))
    ));
    let mut bad = b"L".to_vec();
    bad.extend(std::iter::repeat_n(b'7', 1_000_000));
    bad.extend_from_slice(b"\n.");
    let e = timed("a million digits", || parse(&bad)).unwrap_err();
    assert_eq!(e.code(), "pickle.bad_argument");
}

#[test]
fn frame_violations() {
    // Length beyond the input.
    let e = parse(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00N.").unwrap_err();
    assert_eq!(e.code(), "pickle.frame_overrun");
    assert_eq!(
        e.to_string(),
        "frame at byte 0x2 announces 16 bytes, only 2 remain"
    );
    // An opcode argument crossing the frame end (c31-style divergence).
    let e = parse(b"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00C\x05hello.").unwrap_err();
    assert_eq!(e.code(), "pickle.frame_straddle");
    // A frame inside a frame.
    let e = parse(
        b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x95\x02\x00\x00\x00\x00\x00\x00\x00N.",
    )
    .unwrap_err();
    assert_eq!(e.code(), "pickle.frame_nested");
    // STOP before the frame ends: a file reader would resume elsewhere.
    let e = parse(b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00N.N").unwrap_err();
    assert_eq!(e.code(), "pickle.frame_unfinished");
    // Back-to-back frames and unframed tails are fine.
    assert!(
        parse(
            b"\x80\x04\x95\x01\x00\x00\x00\x00\x00\x00\x00N\x95\x01\x00\x00\x00\x00\x00\x00\x00."
        )
        .is_ok()
    );
}

#[test]
fn trailing_bytes() {
    let e = parse(b"\x80\x04N.\x80\x04cos\nsystem\n.").unwrap_err();
    assert_eq!(e.code(), "pickle.trailing_bytes");
    assert_eq!(e.offset(), 4);
    let e = parse(b"N.\0").unwrap_err();
    assert_eq!(e.to_string(), "1 trailing bytes after `STOP` at byte 0x2");
}

#[test]
fn stop_with_leftovers_and_bad_stack_globals() {
    // d06: CPython ignores the extra item and the open mark.
    assert_eq!(
        parse(b"cos\nsystem\nN.").unwrap_err().code(),
        "pickle.bad_stop"
    );
    // c17: STACK_GLOBAL operands that are not str constants.
    let e = parse(b"\x80\x04cbuiltins\nstr\n\x8c\x04eval\x93.").unwrap_err();
    assert_eq!(e.code(), "pickle.bad_operands");
}

#[test]
fn escaped_names_decode_exactly() {
    // c33-style: names hidden behind raw-unicode-escape in UNICODE.
    let p = parse(b"\x80\x04V\\u006fs\nVsys\\u0074em\n\x93.").unwrap();
    let g = p.graph().get(p.root()).unwrap().as_global().unwrap();
    assert_eq!(g.dotted(), "os.system");
    assert_eq!(p.globals()[0].module, "os");
    // Python 2 names are canonicalised for protocol < 3 only.
    let p = parse(b"c__builtin__\neval\n.").unwrap();
    assert_eq!(p.globals()[0].module, "builtins");
    let p = parse(b"\x80\x03c__builtin__\neval\n.").unwrap();
    assert_eq!(p.globals()[0].module, "__builtin__");
}

#[test]
fn refused_text_forms() {
    for (data, code) in [
        (&b"I010\n."[..], "pickle.bad_argument"),
        (b"I+1\n.", "pickle.bad_argument"),
        (b"I-0\n.", "pickle.bad_argument"),
        (b"I 1\n.", "pickle.bad_argument"),
        (b"F1e999\n.", "pickle.bad_argument"),
        (b"F1_0\n.", "pickle.bad_argument"),
        (b"S'\\q'\n.", "pickle.bad_argument"),
        (b"S\"abc'\n.", "pickle.bad_argument"),
        (b"V\\ud800\n.", "pickle.bad_encoding"),
        (b"cmod\xff\nname\n.", "pickle.bad_encoding"),
        (b"Pid\xe9\n.", "pickle.bad_encoding"),
        (b"g-1\n.", "pickle.bad_argument"),
    ] {
        let e = parse(data).unwrap_err();
        assert_eq!(e.code(), code, "{data:?}: {e}");
    }
}

#[test]
fn graph_memory_budget() {
    // Globals cost a boxed name pair each: the byte budget stops them
    // before the node limit would.
    let mut data = Vec::new();
    for _ in 0..2_100_000 {
        data.extend_from_slice(b"ca\nb\n0");
    }
    data.extend_from_slice(b"N.");
    let e = timed("global flood", || parse(&data)).unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::GraphBytes), "{e}");

    // Decoded text is checked against the budget before it is allocated.
    let mut data = b"V".to_vec();
    data.extend(std::iter::repeat_n(0xe9u8, 1 << 20));
    data.extend_from_slice(b"\n.");
    let limits = Limits::default().with(LimitKind::GraphBytes, 1 << 20);
    let e = Parser::new(&data).limits(limits).parse().unwrap_err();
    assert_eq!(limit_of(&e), Some(LimitKind::GraphBytes), "{e}");
    assert_eq!(e.offset(), 0);
    // Borrowed payloads cost nothing but their node.
    let mut data = b"\x8e\x00\x00\x10\x00\x00\x00\x00\x00".to_vec();
    data.extend(std::iter::repeat_n(0u8, 1 << 20));
    data.push(b'.');
    let p = Parser::new(&data).limits(limits).parse().unwrap();
    assert!(p.stats().graph_bytes < 100, "{}", p.stats().graph_bytes);
}
