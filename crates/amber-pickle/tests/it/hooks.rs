//! Hooks: a synthetic hook that skips raw bytes or parses a nested pickle
//! after `BUILD`, and the joblib hook on a real joblib 1.6 file.

use amber_pickle::joblib::JoblibHook;
use amber_pickle::{
    BuildContext, Hook, HookAction, LimitKind, Limits, NodeKind, Parser, PickleError, parse,
};

use crate::{expected, fixture};

/// Builds protocol-4 streams by hand.
#[derive(Default)]
struct Stream {
    bytes: Vec<u8>,
}

impl Stream {
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(b);
        self
    }

    /// `FRAME` around `body`.
    fn frame(&mut self, body: &[u8]) -> &mut Self {
        self.bytes.push(0x95);
        self.bytes
            .extend_from_slice(&(body.len() as u64).to_le_bytes());
        self.raw(body)
    }
}

fn short_str(s: &str) -> Vec<u8> {
    let mut v = vec![0x8c, s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// `mod.W()` then `BUILD` with an empty dict: the wrapper shape.
fn wrapper_ops() -> Vec<u8> {
    let mut v = short_str("mod");
    v.extend(short_str("W"));
    v.extend_from_slice(b"\x93)\x81}b");
    v
}

/// Skips `len` raw bytes after every `BUILD` of a `mod.W`, or nests a pickle.
struct Synthetic {
    action: HookAction,
    calls: Vec<(u64, u64)>,
}

impl Hook for Synthetic {
    fn after_build(&mut self, ctx: &BuildContext<'_, '_>) -> Result<HookAction, PickleError> {
        self.calls.push((ctx.build_offset, ctx.position));
        let is_wrapper = match ctx.graph.kind(ctx.target) {
            Some(NodeKind::NewObj { cls, .. }) => ctx
                .graph
                .get(cls)
                .and_then(|n| n.as_global())
                .is_some_and(|g| g.dotted() == "mod.W"),
            _ => false,
        };
        Ok(if is_wrapper && ctx.nested_depth == 0 {
            self.action
        } else {
            HookAction::Continue
        })
    }
}

fn with_raw_between_frames(raw: &[u8]) -> Vec<u8> {
    let mut s = Stream::default();
    s.raw(b"\x80\x04").frame(&wrapper_ops()).raw(raw);
    s.frame(b"K\x07\x86.");
    s.bytes
}

#[test]
fn raw_bytes_between_frames() {
    let data = with_raw_between_frames(b"RAWDATA");
    let mut hook = Synthetic {
        action: HookAction::Data { padding: 3, len: 4 },
        calls: Vec::new(),
    };
    let p = Parser::new(&data).hook(&mut hook).parse().unwrap();
    assert_eq!(hook.calls.len(), 1);
    let (build, position) = hook.calls[0];
    assert_eq!(position, build + 1);
    let items = p.graph().get(p.root()).unwrap().as_tuple().unwrap();
    let NodeKind::InlineData {
        wrapper,
        offset,
        len,
    } = p.graph().kind(items[0]).unwrap()
    else {
        panic!("wrapper not replaced");
    };
    assert_eq!(offset, position + 3);
    assert_eq!(len, 4);
    assert_eq!(&data[offset as usize..][..4], b"DATA");
    assert!(matches!(
        p.graph().kind(wrapper),
        Some(NodeKind::NewObj { .. })
    ));
    assert_eq!(p.stats().inline_data_bytes, 4);
    // Without the hook the raw bytes are read as opcodes and fail.
    assert!(parse(&data).is_err());
}

#[test]
fn raw_bytes_must_fit_and_sit_outside_frames() {
    let data = with_raw_between_frames(b"RAW");
    let mut hook = Synthetic {
        action: HookAction::Data {
            padding: 0,
            len: 1_000,
        },
        calls: Vec::new(),
    };
    let e = Parser::new(&data).hook(&mut hook).parse().unwrap_err();
    assert_eq!(e.code(), "pickle.truncated");

    let mut hook = Synthetic {
        action: HookAction::Data {
            padding: u64::MAX,
            len: u64::MAX,
        },
        calls: Vec::new(),
    };
    let e = Parser::new(&data).hook(&mut hook).parse().unwrap_err();
    assert_eq!(e.code(), "pickle.truncated");

    // BUILD in the middle of a frame: raw data would straddle it.
    let mut body = wrapper_ops();
    body.extend_from_slice(b"K\x07\x86.");
    let mut s = Stream::default();
    s.raw(b"\x80\x04").frame(&body);
    let mut hook = Synthetic {
        action: HookAction::Data { padding: 0, len: 0 },
        calls: Vec::new(),
    };
    let e = Parser::new(&s.bytes).hook(&mut hook).parse().unwrap_err();
    assert_eq!(e.code(), "pickle.frame_unfinished");
}

#[test]
fn nested_pickle_after_build() {
    // Outer: wrapper, then a complete protocol-5 pickle, then `K 7 TUPLE2 STOP`.
    let nested: &[u8] = b"\x80\x05\x95\x05\x00\x00\x00\x00\x00\x00\x00]K\x01a.";
    let data = with_raw_between_frames(nested);
    let mut hook = Synthetic {
        action: HookAction::NestedPickle,
        calls: Vec::new(),
    };
    let p = Parser::new(&data).hook(&mut hook).parse().unwrap();
    let items = p.graph().get(p.root()).unwrap().as_tuple().unwrap();
    let NodeKind::NestedPickle {
        root, start, end, ..
    } = p.graph().kind(items[0]).unwrap()
    else {
        panic!("wrapper not replaced");
    };
    assert_eq!(end - start, nested.len() as u64);
    assert!(matches!(p.graph().kind(root), Some(NodeKind::List(l)) if l.len() == 1));
    assert_eq!(p.stats().nested_pickles, 1);
    assert_eq!(p.highest_protocol(), Some(5));

    // A nested pickle that leaves junk inside its last frame is refused.
    let bad: &[u8] = b"\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00]K\x01a.N";
    let data = with_raw_between_frames(bad);
    let mut hook = Synthetic {
        action: HookAction::NestedPickle,
        calls: Vec::new(),
    };
    let e = Parser::new(&data).hook(&mut hook).parse().unwrap_err();
    assert_eq!(e.code(), "pickle.frame_unfinished");
}

/// Nests a pickle after every `BUILD`, at any depth.
struct AlwaysNest;

impl Hook for AlwaysNest {
    fn after_build(&mut self, _: &BuildContext<'_, '_>) -> Result<HookAction, PickleError> {
        Ok(HookAction::NestedPickle)
    }
}

#[test]
fn nested_pickles_are_bounded_without_recursion() {
    // `N } b` followed by itself, forever: each BUILD nests the next copy.
    let unit: &[u8] = b"N}b";
    let data: Vec<u8> = unit.repeat(10_000);
    let e = Parser::new(&data)
        .hook(&mut AlwaysNest)
        .parse()
        .unwrap_err();
    assert!(
        matches!(
            e,
            PickleError::Limit {
                limit: LimitKind::NestedPickles,
                ..
            }
        ),
        "{e}"
    );
    // Even with a huge nesting allowance the machine stack is on the heap.
    let limits = Limits::default().with(LimitKind::NestedPickles, 1_000_000);
    let e = Parser::new(&data)
        .limits(limits)
        .hook(&mut AlwaysNest)
        .parse()
        .unwrap_err();
    assert_eq!(e.code(), "pickle.truncated");
}

#[test]
fn real_joblib_file() {
    let data = fixture("joblib_dict.joblib");
    let exp = expected().remove("joblib_dict.joblib").unwrap();
    assert_eq!(data.len() as u64, exp.number("len"));
    let mut hook = JoblibHook::new();
    let p = Parser::new(&data)
        .hook(&mut hook)
        .record_listing(true)
        .parse()
        .unwrap();
    assert_eq!(p.end(), data.len() as u64);

    let got: Vec<String> = hook
        .arrays()
        .iter()
        .map(|a| {
            let shape: Vec<String> = a.shape.iter().map(u64::to_string).collect();
            let shape = shape.join(",");
            if a.object {
                let nested = p
                    .graph()
                    .iter()
                    .find_map(|(_, n)| match n.kind() {
                        NodeKind::NestedPickle {
                            wrapper,
                            start,
                            end,
                            ..
                        } if wrapper == a.wrapper => Some((start, end)),
                        _ => None,
                    })
                    .unwrap();
                format!("object shape={shape} start={} end={}", nested.0, nested.1)
            } else {
                format!(
                    "raw shape={shape} padding={} offset={} len={}",
                    a.padding, a.data_offset, a.data_len
                )
            }
        })
        .collect();
    assert_eq!(got, exp.all("array"));
    assert!(
        p.globals()
            .iter()
            .any(|g| g.module == "joblib.numpy_pickle" && g.name == "NumpyArrayWrapper")
    );
    // Every raw array's data is 16-byte aligned, as joblib >= 1.2 promises.
    for a in hook.arrays().iter().filter(|a| !a.object) {
        assert_eq!(a.data_offset % 16, 0, "{a:?}");
    }
    let dtypes: Vec<&str> = hook.arrays().iter().map(|a| a.descr.as_str()).collect();
    assert!(
        dtypes.contains(&"M8") && dtypes.contains(&"V12") && dtypes.contains(&"u2"),
        "{dtypes:?}"
    );
    let listing = p.listing().unwrap().to_string();
    assert!(listing.contains("<raw data: "), "{listing}");
    assert!(listing.contains("| "), "nested pickle lines are marked");

    // A plain parse fails on the raw data; a corrupted padding is refused.
    assert!(parse(&data).is_err());
    let first = &hook.arrays()[0];
    let mut bad = data.clone();
    let pad_at = (first.data_offset - first.padding) as usize;
    bad[pad_at] = 40;
    let e = Parser::new(&bad)
        .hook(&mut JoblibHook::new())
        .parse()
        .unwrap_err();
    assert_eq!(e.code(), "pickle.hook");
    assert!(e.to_string().contains("padding length 40"), "{e}");
}

#[test]
fn joblib_hook_ignores_plain_pickles() {
    let data = fixture("sklearn_logreg_p5.pkl");
    let mut hook = JoblibHook::new();
    let p = Parser::new(&data).hook(&mut hook).parse().unwrap();
    assert!(hook.arrays().is_empty());
    assert_eq!(p.end(), data.len() as u64);
}

#[test]
fn every_truncation_of_the_joblib_file_is_an_error() {
    let data = fixture("joblib_dict.joblib");
    for cut in 0..data.len() {
        let mut hook = JoblibHook::new();
        let r = Parser::new(&data[..cut])
            .hook(&mut hook)
            .allow_trailing(true)
            .parse();
        assert!(r.is_err(), "cut at {cut} parsed");
    }
}

/// A joblib-style stream by hand: a `NumpyArrayWrapper` with this shape
/// and dtype descriptor, aligned, followed by `tail` and then `.`.
fn joblib_stream(shape: &[u32], descr: &str, tail: &[u8]) -> Vec<u8> {
    let s = |text: &str| short_str(text);
    let mut v = b"\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}(".to_vec();
    v.extend(s("shape"));
    v.push(b'(');
    for d in shape {
        v.push(b'J');
        v.extend_from_slice(&d.to_le_bytes());
    }
    v.push(b't');
    v.extend(s("order"));
    v.extend(s("C"));
    v.extend(s("dtype"));
    v.extend_from_slice(b"cnumpy\ndtype\n");
    v.extend(s(descr));
    v.extend_from_slice(b"\x89\x88\x87R(K\x03");
    v.extend(s("<"));
    v.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
    v.extend(s("numpy_array_alignment_bytes"));
    v.extend_from_slice(b"K\x10ub");
    v.extend_from_slice(tail);
    v.push(b'.');
    v
}

#[test]
fn synthetic_joblib_wrappers() {
    // 2 x 3 float64 after 1 + 3 padding bytes.
    let mut tail = vec![3, 0xff, 0xff, 0xff];
    tail.extend_from_slice(&[7u8; 48]);
    let data = joblib_stream(&[2, 3], "f8", &tail);
    let mut hook = JoblibHook::new();
    let p = Parser::new(&data).hook(&mut hook).parse().unwrap();
    let a = &hook.arrays()[0];
    assert_eq!(
        (a.shape.clone(), a.itemsize, a.padding, a.data_len),
        (vec![2, 3], 8, 4, 48)
    );
    assert_eq!(&data[a.data_offset as usize..][..48], &[7u8; 48][..]);
    assert!(matches!(
        p.graph().kind(p.root()),
        Some(NodeKind::InlineData { len: 48, .. })
    ));

    // A shape whose byte size overflows, and one far larger than the input:
    // refused without allocating.
    let big = 0x7fff_ffff;
    let data = joblib_stream(&[big, big, big], "f8", &[1, 0xff]);
    let e = Parser::new(&data)
        .hook(&mut JoblibHook::new())
        .parse()
        .unwrap_err();
    assert_eq!(e.code(), "pickle.hook", "{e}");
    assert!(e.to_string().contains("overflows"), "{e}");
    let data = joblib_stream(&[u32::MAX], "f8", &[1, 0xff]);
    let e = Parser::new(&data)
        .hook(&mut JoblibHook::new())
        .parse()
        .unwrap_err();
    assert!(e.to_string().contains("negative dimension"), "{e}");
    let data = joblib_stream(&[1 << 20, 1 << 20], "c16", &[1, 0xff]);
    let e = Parser::new(&data)
        .hook(&mut JoblibHook::new())
        .parse()
        .unwrap_err();
    assert_eq!(e.code(), "pickle.truncated", "{e}");
    // Padding that is not 0xff.
    let data = joblib_stream(&[1], "u1", &[2, 0xff, 0x00, 9]);
    let e = Parser::new(&data)
        .hook(&mut JoblibHook::new())
        .parse()
        .unwrap_err();
    assert!(e.to_string().contains("0xff"), "{e}");

    // Object dtype: a nested pickle follows instead of raw bytes.
    let data = joblib_stream(&[1], "O8", b"\x80\x05N.");
    let mut hook = JoblibHook::new();
    let p = Parser::new(&data).hook(&mut hook).parse().unwrap();
    assert!(hook.arrays()[0].object);
    assert!(matches!(
        p.graph().kind(p.root()),
        Some(NodeKind::NestedPickle { .. })
    ));
    // A builtin dtype claiming object flags is ambiguous: refused.
    let mut data = joblib_stream(&[1], "f8", &[1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    let flags_at = data.windows(4).position(|w| w == b"K\x00tb").unwrap();
    data[flags_at + 1] = 0x3f;
    let e = Parser::new(&data)
        .hook(&mut JoblibHook::new())
        .parse()
        .unwrap_err();
    assert!(e.to_string().contains("object flags"), "{e}");
}

/// Two `NumpyArrayWrapper`s of one element sharing one dtype, written out
/// by `dtype` in the first (it memoizes the dtype in slot 1) and read from
/// the memo in the second; `between` runs between them.
fn two_wrappers(dtype: &[u8], between: &[u8]) -> Vec<u8> {
    let keys = |v: &mut Vec<u8>| {
        v.extend(short_str("shape"));
        v.extend_from_slice(b"K\x01\x85");
        v.extend(short_str("order"));
        v.extend(short_str("C"));
        v.extend(short_str("dtype"));
    };
    let mut v = b"\x80\x02(cjoblib.numpy_pickle\nNumpyArrayWrapper\nq\x00)\x81}(".to_vec();
    keys(&mut v);
    v.extend_from_slice(dtype);
    v.extend_from_slice(b"ub");
    v.extend_from_slice(&[1u8; 8]);
    v.extend_from_slice(between);
    v.extend_from_slice(b"h\x00)\x81}(");
    keys(&mut v);
    v.extend_from_slice(b"h\x01ub");
    v.extend_from_slice(&[2u8; 8]);
    v.extend_from_slice(b"l.");
    v
}

/// [`two_wrappers`] sharing an `f8` dtype.
fn two_wrappers_one_dtype(between: &[u8]) -> Vec<u8> {
    let mut dtype = b"cnumpy\ndtype\n".to_vec();
    dtype.extend(short_str("f8"));
    dtype.extend_from_slice(b"\x89\x88\x87Rq\x01(K\x03");
    dtype.extend(short_str("<"));
    dtype.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
    two_wrappers(&dtype, between)
}

#[test]
fn wrappers_sharing_a_dtype_read_its_current_state() {
    let data = two_wrappers_one_dtype(b"");
    for keep in [true, false] {
        let mut hook = if keep {
            JoblibHook::new()
        } else {
            JoblibHook::counting()
        };
        Parser::new(&data).hook(&mut hook).parse().unwrap();
        assert_eq!(hook.count(), 2);
        if keep {
            let arrays = hook.arrays();
            assert_eq!(arrays.len(), 2);
            for (k, a) in arrays.iter().enumerate() {
                assert_eq!((a.descr.as_str(), a.itemsize), ("f8", 8));
                assert_eq!(a.byteorder.as_deref(), Some("<"));
                let fill = [k as u8 + 1; 8];
                assert_eq!(&data[a.data_offset as usize..][..8], &fill[..]);
            }
        }
    }
    // A second BUILD of the shared dtype between the wrappers: the second
    // wrapper is judged on the new state (an element size that contradicts
    // `f8`), not on what the first one read.
    let mut rebuild = b"h\x01(K\x03".to_vec();
    rebuild.extend(short_str("<"));
    rebuild.extend_from_slice(b"NNNJ\x04\x00\x00\x00J\xff\xff\xff\xffK\x00tb0");
    let data = two_wrappers_one_dtype(&rebuild);
    for mut hook in [JoblibHook::new(), JoblibHook::counting()] {
        let e = Parser::new(&data).hook(&mut hook).parse().unwrap_err();
        assert_eq!(e.code(), "pickle.hook", "{e}");
        assert!(e.to_string().contains("element size 4"), "{e}");
        assert_eq!(hook.count(), 1);
    }
}

/// [`two_wrappers`] sharing a structured dtype (`V8` with the field `a`
/// of an `f8` dtype, its fields dict memoized in slot 4, `numpy.dtype` in 2).
fn two_wrappers_one_structured_dtype(between: &[u8]) -> Vec<u8> {
    let mut dtype = b"cnumpy\ndtype\nq\x02".to_vec();
    dtype.extend(short_str("V8"));
    dtype.extend_from_slice(b"\x89\x88\x87Rq\x01(K\x03");
    dtype.extend(short_str("|"));
    dtype.extend(short_str("a"));
    dtype.extend_from_slice(b"\x85}q\x04");
    dtype.extend(short_str("a"));
    dtype.extend_from_slice(b"h\x02");
    dtype.extend(short_str("f8"));
    dtype.extend_from_slice(b"\x89\x88\x87RK\x00\x86sNK\x08K\x01K\x00tb");
    two_wrappers(&dtype, between)
}

#[test]
fn wrappers_sharing_a_structured_dtype_see_its_fields_grow() {
    let data = two_wrappers_one_structured_dtype(b"");
    for mut hook in [JoblibHook::new(), JoblibHook::counting()] {
        Parser::new(&data).hook(&mut hook).parse().unwrap();
        assert_eq!(hook.count(), 2);
    }
    // The fields dict grows in place between the wrappers (a `SETITEMS`,
    // which leaves no event) by a field of an object dtype: the second
    // wrapper's dtype now holds objects its flags deny.
    let mut grow = b"h\x04(".to_vec();
    grow.extend(short_str("b"));
    grow.extend_from_slice(b"h\x02");
    grow.extend(short_str("O8"));
    grow.extend_from_slice(b"\x89\x88\x87RK\x00\x86u0");
    // Or the outer dtype gets a second `BUILD`, whose fields hold an
    // object dtype.
    let mut rebuild = b"h\x01(K\x03".to_vec();
    rebuild.extend(short_str("|"));
    rebuild.extend(short_str("a"));
    rebuild.extend_from_slice(b"\x85}");
    rebuild.extend(short_str("a"));
    rebuild.extend_from_slice(b"h\x02");
    rebuild.extend(short_str("O8"));
    rebuild.extend_from_slice(b"\x89\x88\x87RK\x00\x86sNK\x08K\x01K\x00tb0");
    for between in [grow, rebuild] {
        let data = two_wrappers_one_structured_dtype(&between);
        for mut hook in [JoblibHook::new(), JoblibHook::counting()] {
            let e = Parser::new(&data).hook(&mut hook).parse().unwrap_err();
            assert_eq!(e.code(), "pickle.hook", "{e}");
            assert!(e.to_string().contains("fields say true"), "{e}");
            assert_eq!(hook.count(), 1);
        }
    }
}
