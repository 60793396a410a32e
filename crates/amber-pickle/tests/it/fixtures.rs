//! Real pickles written by CPython: listings agree with `pickletools`,
//! globals agree with what `find_class` was asked for, and every
//! truncation or single-byte corruption is an error, never a panic.

use std::borrow::Cow;

use amber_pickle::joblib::JoblibHook;
use amber_pickle::{
    Arg, Limits, Line, NodeId, NodeKind, Opcode, Parser, PickleError, Reader, TreeOptions,
    disassemble, parse, parse_prefix, render_tree,
};

use crate::{expected, fixture, fixture_names};

/// Fixtures that are one plain pickle each (not joblib).
fn pickle_fixtures() -> Vec<String> {
    expected()
        .into_iter()
        .filter(|(_, e)| e.get("ops_count").is_some())
        .map(|(name, _)| name)
        .collect()
}

fn parse_fixture<'a>(name: &str, data: &'a [u8]) -> Result<amber_pickle::Pickle<'a>, PickleError> {
    let mut parser = Parser::new(data).record_listing(true);
    if name == "numpy_oob_p5.pkl" {
        parser = parser.out_of_band_buffers(4);
    }
    parser.parse()
}

#[test]
fn there_are_enough_fixtures() {
    let names = pickle_fixtures();
    assert!(names.len() >= 25, "{names:?}");
    for p in 0..6 {
        assert!(names.contains(&format!("plain_p{p}.pkl")));
    }
}

#[test]
fn listings_match_pickletools() {
    for (name, exp) in expected() {
        let Some(count) = exp.get("ops_count") else {
            continue;
        };
        let data = fixture(&name);
        assert_eq!(data.len() as u64, exp.number("len"), "{name}");
        let d = disassemble(&data, 0);
        assert!(d.error.is_none(), "{name}: {:?}", d.error);
        assert_eq!(d.end, Some(data.len() as u64), "{name}");
        let offsets: Vec<u64> = d
            .lines
            .iter()
            .map(|l| match l {
                Line::Op { instruction, .. } => instruction.offset,
                _ => panic!("raw line in a plain listing"),
            })
            .collect();
        let codes: String = d
            .lines
            .iter()
            .map(|l| match l {
                Line::Op { instruction, .. } => format!("{:02x}", instruction.opcode.byte()),
                _ => String::new(),
            })
            .collect();
        let gaps: Vec<String> = offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).to_string())
            .collect();
        assert_eq!(offsets.len().to_string(), count, "{name}: opcode count");
        assert_eq!(codes, exp.get("ops_codes").unwrap(), "{name}: opcodes");
        assert_eq!(
            gaps.join(","),
            exp.get("ops_gaps").unwrap(),
            "{name}: offsets"
        );

        // The parser's recorded listing is the same.
        let p = parse_fixture(&name, &data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.listing().unwrap().lines, d.lines, "{name}");
        assert_eq!(p.stats().opcodes, offsets.len() as u64, "{name}");
    }
}

#[test]
fn globals_match_find_class() {
    for (name, exp) in expected() {
        if exp.get("ops_count").is_none() {
            continue;
        }
        let data = fixture(&name);
        let p = parse_fixture(&name, &data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<String> = p
            .globals()
            .iter()
            .map(|g| format!("{} {} {}", g.module, g.name, g.count))
            .collect();
        let want: Vec<String> = exp.all("global").into_iter().map(str::to_owned).collect();
        assert_eq!(got, want, "{name}");
        let proto = exp.number("protocol");
        let expected_proto = if proto >= 2 { Some(proto as u8) } else { None };
        assert_eq!(p.highest_protocol(), expected_proto, "{name}");
        assert_eq!(p.end(), data.len() as u64, "{name}");
        if let Some(buffers) = exp.get("buffers") {
            assert_eq!(p.stats().buffers.to_string(), buffers, "{name}");
        }
    }
}

#[test]
fn out_of_band_buffers_are_counted_and_checked() {
    let data = fixture("numpy_oob_p5.pkl");
    let p = parse(&data).unwrap();
    assert_eq!(p.stats().buffers, 4);
    let buffers = p
        .graph()
        .iter()
        .filter(|(_, n)| matches!(n.kind(), NodeKind::Buffer { .. }))
        .count();
    assert_eq!(buffers, 4);
    let e = Parser::new(&data)
        .out_of_band_buffers(3)
        .parse()
        .unwrap_err();
    assert_eq!(e.code(), "pickle.buffer_missing");
    assert_eq!(e.opcode(), Some(Opcode::NEXT_BUFFER));
}

#[test]
fn sklearn_models_have_the_expected_shape() {
    let data = fixture("sklearn_logreg_p5.pkl");
    let p = parse(&data).unwrap();
    // Root: NEWOBJ(LogisticRegression, ()) then BUILD(dict).
    let root = p.graph().get(p.root()).unwrap();
    let NodeKind::NewObj { cls, .. } = root.kind() else {
        panic!("root is {:?}", root.kind());
    };
    let g = p.graph().get(cls).unwrap().as_global().unwrap();
    assert_eq!(
        g.dotted(),
        "sklearn.linear_model._logistic.LogisticRegression"
    );
    let builds: Vec<_> = p.graph().events_of(p.root()).collect();
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0].opcode, Opcode::BUILD);
    // Protocol 5 in-band arrays are BYTEARRAY8 payloads: leaves, decoded
    // from the input when looked at.
    assert!(p.stats().count(Opcode::BYTEARRAY8) > 0);
    let g = p.graph();
    assert!(
        g.iter()
            .flat_map(|(id, _)| g.children(id))
            .any(|c| c.is_leaf()
                && matches!(g.kind(c), Some(NodeKind::ByteArray(b)) if !b.is_empty()))
    );
    let opts = TreeOptions::default().max_items(100);
    let tree = render_tree(p.graph(), p.root(), &opts);
    assert!(tree.contains("'coef_'"), "{tree}");

    // Protocol 0: copy_reg._reconstructor, canonicalised.
    let data = fixture("sklearn_logreg_p0.pkl");
    let p = parse(&data).unwrap();
    assert!(
        p.globals()
            .iter()
            .any(|g| g.module == "copyreg" && g.name == "_reconstructor")
    );
    let written = p
        .graph()
        .iter()
        .filter_map(|(_, n)| n.as_global())
        .any(|g| g.module == "copy_reg" && g.protocol == 0);
    assert!(written, "the as-written module is kept");
}

#[test]
fn python2_streams() {
    let data = fixture("py2_p0.pkl");
    let p = parse(&data).unwrap();
    let NodeKind::Dict(pairs) = p.graph().kind(p.root()).unwrap() else {
        panic!("not a dict");
    };
    assert_eq!(pairs.len(), 5);
    let (k, v) = pairs[0];
    assert_eq!(p.graph().get(k).unwrap().as_bytes(), Some(&b"a"[..]));
    assert!(matches!(
        p.graph().kind(v),
        Some(NodeKind::LegacyStr(b)) if b == b"b\n\x00'q"
    ));
    let u = pairs[2].1;
    assert_eq!(
        p.graph().get(u).unwrap().as_str(),
        Some("caf\u{e9} \u{20ac}")
    );
    assert!(matches!(
        p.graph().kind(pairs[3].1),
        Some(NodeKind::Bool(true))
    ));
    assert!(matches!(
        p.graph().kind(pairs[4].1),
        Some(NodeKind::BigInt(_))
    ));

    let data = fixture("py2_p2.pkl");
    let p = parse(&data).unwrap();
    let g = &p.globals()[0];
    assert_eq!((g.module.as_str(), g.name.as_str()), ("builtins", "range"));
}

/// The valid pickles whose every prefix and corruption we try, with the
/// stride between cut points (1 = every byte; the larger plain-data files
/// are sampled to keep unoptimised test runs short).
const SMALL: &[(&str, usize)] = &[
    ("sklearn_logreg_p0.pkl", 1),
    ("sklearn_logreg_p5.pkl", 1),
    ("sklearn_tree_p4.pkl", 1),
    ("sklearn_pipeline_p5.pkl", 1),
    ("numpy_p2.pkl", 1),
    ("numpy_oob_p5.pkl", 1),
    ("py2_p0.pkl", 1),
    ("py2_p2.pkl", 1),
    ("shared_p0.pkl", 1),
    ("shared_p5.pkl", 1),
    ("plain_p0.pkl", 7),
    ("plain_p3.pkl", 5),
    ("plain_p5.pkl", 5),
];

#[test]
fn every_truncation_is_an_error() {
    for &(name, stride) in SMALL {
        let data = fixture(name);
        for cut in (0..data.len()).step_by(stride) {
            let prefix = &data[..cut];
            let strict = parse(prefix);
            assert!(strict.is_err(), "{name} cut at {cut} parsed");
            let lenient = parse_prefix(prefix, 0);
            assert!(lenient.is_err(), "{name} cut at {cut} parsed leniently");
            let code = lenient.unwrap_err().code();
            assert!(
                matches!(
                    code,
                    "pickle.truncated" | "pickle.frame_overrun" | "pickle.frame_straddle"
                ),
                "{name} cut at {cut}: {code}"
            );
            let d = disassemble(prefix, 0);
            assert!(d.error.is_some(), "{name} cut at {cut}");
        }
    }
}

#[test]
fn corruptions_never_panic() {
    for &(name, _) in SMALL {
        let data = fixture(name);
        let step = (data.len() / 150).max(1);
        let mut copy = data.clone();
        for i in (0..data.len()).step_by(step) {
            for value in [data[i] ^ 0xff, data[i] ^ 0x01, 0x00, b'(', 0x95, b'.'] {
                copy[i] = value;
                let _ = parse(&copy);
                let listing = disassemble(&copy, 0);
                if data.len() < 2_000 {
                    let _ = listing.to_string();
                }
            }
            copy[i] = data[i];
        }
    }
}

#[test]
fn trailing_bytes_and_prefix_mode() {
    let mut data = fixture("plain_p4.pkl");
    let len = data.len();
    data.extend_from_slice(&fixture("shared_p2.pkl"));
    let e = parse(&data).unwrap_err();
    assert_eq!(e.code(), "pickle.trailing_bytes");
    assert_eq!(e.offset(), len as u64);
    let first = parse_prefix(&data, 0).unwrap();
    assert_eq!(first.end(), len as u64);
    let second = parse_prefix(&data, len).unwrap();
    assert_eq!(second.start(), len as u64);
    assert_eq!(second.end(), data.len() as u64);
    // Strict parsing of the second alone, from its offset, also works.
    assert!(Parser::new(&data).start(len).parse().is_ok());
}

/// Hand-written snippets for the opcodes no CPython 3 pickler emits for
/// the fixtures above.
const RARE: &[(&str, &[u8])] = &[
    ("DUP", b"N2\x86."),
    ("POP", b"NN0."),
    ("POP_MARK", b"N(NN1."),
    (
        "EXT1, EXT2, EXT4",
        b"\x82\x01\x83\x01\x01\x84\x01\x00\x00\x00\x87.",
    ),
    ("PERSID", b"Pid\nN\x86."),
    ("BINPERSID", b"NQ."),
    ("OBJ", b"(cmod\nf\nK\x01o."),
    ("INST", b"(K\x01imod\nCls\n."),
    ("NEWOBJ_EX", b"cmod\nC\n)}\x92."),
    ("LONG4", b"\x8b\x01\x00\x00\x00\x05."),
    (
        "BINBYTES8, BINUNICODE8",
        b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00x\x8d\x01\x00\x00\x00\x00\x00\x00\x00y\x86.",
    ),
    (
        "BINSTRING, SHORT_BINSTRING, STRING",
        b"T\x01\x00\x00\x00aU\x01bS'c'\n\x87.",
    ),
    ("NEXT_BUFFER, READONLY_BUFFER", b"\x80\x05\x97\x98."),
    ("FROZENSET", b"(N\x91."),
    ("PUT, GET", b"Np0\ng0\n\x86."),
    ("SETITEM", b"}K\x01K\x02s."),
    ("DICT", b"(K\x01K\x02d."),
    ("LIST", b"(K\x01l."),
    ("APPEND", b"]K\x01a."),
    ("EMPTY_SET, ADDITEMS", b"\x8f(K\x01\x90."),
    (
        "LONG_BINPUT, LONG_BINGET",
        b"Nr\x00\x00\x00\x00j\x00\x00\x00\x00\x86.",
    ),
    ("BININT2", b"M\x01\x01."),
];

#[test]
fn every_opcode_is_exercised() {
    let mut counts = std::collections::BTreeMap::<Opcode, u64>::new();
    let mut add = |p: &amber_pickle::Pickle<'_>| {
        for &op in Opcode::ALL {
            *counts.entry(op).or_default() += p.stats().count(op);
        }
    };
    for name in pickle_fixtures() {
        let data = fixture(&name);
        add(&parse_fixture(&name, &data).unwrap());
    }
    for (what, snippet) in RARE {
        let p = parse(snippet).unwrap_or_else(|e| panic!("{what}: {e}"));
        add(&p);
    }
    let missing: Vec<_> = counts
        .iter()
        .filter(|(_, c)| **c == 0)
        .map(|(op, _)| op.name())
        .collect();
    assert!(missing.is_empty(), "never parsed: {missing:?}");
}

#[test]
fn nodes_record_their_opcode_and_offset() {
    // pickle.dumps({'a': (1, 2.5)}, protocol=4)
    let data = b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01G@\x04\x00\x00\x00\x00\x00\x00\x86\x94s.";
    let p = parse(data).unwrap();
    let g = p.graph();
    let stored: Vec<(u64, Opcode)> = g.iter().map(|(_, n)| (n.offset(), n.opcode())).collect();
    assert_eq!(stored, [(11, Opcode::EMPTY_DICT), (28, Opcode::TUPLE2)]);
    // The scalars are leaves, with their own offset and opcode too.
    let mut seen = Vec::new();
    let mut work = vec![p.root()];
    while let Some(id) = work.pop() {
        let n = g.get(id).unwrap();
        seen.push((n.offset(), n.opcode(), id.is_leaf()));
        work.extend(g.children(id));
    }
    seen.sort_unstable_by_key(|s| s.0);
    assert_eq!(
        seen,
        vec![
            (11, Opcode::EMPTY_DICT, false),
            (13, Opcode::SHORT_BINUNICODE, true),
            (17, Opcode::BININT1, true),
            (19, Opcode::BINFLOAT, true),
            (28, Opcode::TUPLE2, false),
        ]
    );
    assert_eq!(p.graph().get(p.root()).unwrap().depth(), 2);
}

/// What the general reader decodes at `offset`, as the value it pushes.
fn reread(data: &[u8], offset: u64) -> (NodeKind<'_>, Opcode) {
    let mut reader = Reader::new(data, offset as usize, Limits::unlimited()).unwrap();
    let ins = reader.next_instruction().unwrap();
    let kind = match (ins.opcode, ins.arg) {
        (Opcode::NONE, _) => NodeKind::None,
        (Opcode::NEWTRUE, _) => NodeKind::Bool(true),
        (Opcode::NEWFALSE, _) => NodeKind::Bool(false),
        (_, Arg::Int(v)) => NodeKind::Int(v),
        (_, Arg::Uint(v)) => NodeKind::Int(i64::try_from(v).unwrap()),
        (_, Arg::Float(v)) => NodeKind::Float(v),
        (_, Arg::Str(Cow::Borrowed(s))) => NodeKind::Str(s),
        (Opcode::BYTEARRAY8, Arg::Bytes(Cow::Borrowed(b))) => NodeKind::ByteArray(b),
        (Opcode::SHORT_BINSTRING | Opcode::BINSTRING, Arg::Bytes(Cow::Borrowed(b))) => {
            NodeKind::LegacyStr(b)
        }
        (_, Arg::Bytes(Cow::Borrowed(b))) => NodeKind::Bytes(b),
        (op, arg) => panic!("{op:?} {arg:?} at {offset} is not a leaf"),
    };
    (kind, ins.opcode)
}

#[test]
fn leaves_decode_as_the_reader_reads_them() {
    let names = fixture_names(&[".pkl", ".joblib"]);
    let mut leaves = 0;
    for name in names {
        let data = fixture(&name);
        let mut hook = JoblibHook::new();
        let mut parser = Parser::new(&data).allow_trailing(true);
        if name.ends_with(".joblib") {
            parser = parser.hook(&mut hook);
        }
        let Ok(p) = parser.parse() else { continue };
        let g = p.graph();
        let mut ids: Vec<NodeId> = g.iter().flat_map(|(id, _)| g.children(id)).collect();
        ids.push(p.root());
        for e in g.events() {
            ids.push(e.target);
        }
        for id in ids.into_iter().filter(|id| id.is_leaf()) {
            let node = g.get(id).unwrap();
            assert_eq!(
                (node.kind(), node.opcode()),
                reread(&data, node.offset()),
                "{name}"
            );
            leaves += 1;
        }
    }
    assert!(leaves > 1000, "{leaves}");
}
