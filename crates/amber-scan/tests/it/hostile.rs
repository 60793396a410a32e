//! Hostile pickles built from the attack catalogue
//! (`pickle-security.md` section 6): each must be refused with the expected
//! finding code. Payloads would create a marker file; scanning never runs
//! anything, and the last test checks the marker is absent.

use std::path::{Path, PathBuf};

use amber_scan::{Limits, NoArrays, Policy, Severity, StreamKind, Verdict, scan};

use crate::build::{P, op, refused, refused_as, scan_as, scan_pickle};

const LOGREG: (&str, &str) = ("sklearn.linear_model._logistic", "LogisticRegression");

fn marker() -> PathBuf {
    std::env::temp_dir().join(format!("amber-scan-marker-{}", std::process::id()))
}

fn command() -> String {
    format!("touch {}", marker().display())
}

/// `callable(command)` through STACK_GLOBAL.
fn call(module: &str, name: &str) -> Vec<u8> {
    P::proto(4).sg(module, name).s(&command()).call(1).stop()
}

fn logreg(p: P) -> P {
    p.sg(LOGREG.0, LOGREG.1)
}

/// `NEWOBJ(LogisticRegression, ())`.
fn new_logreg(p: P) -> P {
    logreg(p).new0()
}

// --- 1. direct dangerous globals ------------------------------------------------------------

#[test]
fn os_system_protocol_0() {
    let data = P::proto(0)
        .global("os", "system")
        .raw(format!("(S'{}'\ntR.", command()).as_bytes())
        .0;
    let r = refused(&data, "global.not_allowed");
    let f = &r.findings[0];
    assert_eq!(f.global.as_deref(), Some("os.system"));
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.offset, Some(0));
    assert_eq!(f.opcode, Some("GLOBAL"));
    assert!(
        f.message.contains(r#"trusted=["os.system"]"#),
        "{}",
        f.message
    );
    assert_eq!(r.verdict, Verdict::Unsafe);
    assert!(r.allowed_globals().is_empty());
    let text = r.render_findings();
    assert!(
        text.contains("critical global.not_allowed at byte 0x0 (GLOBAL)"),
        "{text}"
    );
    assert!(
        text.contains("names not in the policy: os.system"),
        "{text}"
    );
}

#[test]
fn direct_dangerous_globals() {
    for (m, n) in [
        ("posix", "system"),
        ("nt", "system"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("builtins", "open"),
        ("subprocess", "Popen"),
        ("subprocess", "check_output"),
        ("runpy", "_run_code"),
        ("importlib", "import_module"),
        ("pty", "spawn"),
        ("ctypes", "CDLL"),
        ("pydoc", "locate"),
        ("pkgutil", "resolve_name"),
        ("webbrowser", "open"),
        ("functools", "reduce"),
        ("operator", "attrgetter"),
        ("copyreg", "__newobj__"),
        ("copyreg", "add_extension"),
        ("numpy", "load"),
        ("numpy.testing._private.utils", "runstring"),
        ("joblib", "load"),
    ] {
        let r = refused(&call(m, n), "global.not_allowed");
        assert_eq!(r.findings[0].global.as_deref(), Some(&*format!("{m}.{n}")));
        assert_eq!(r.findings[0].opcode, Some("STACK_GLOBAL"));
    }
}

#[test]
fn python2_names_are_canonicalised() {
    let data = P::proto(2)
        .global("__builtin__", "eval")
        .s("1")
        .call(1)
        .stop();
    let r = refused(&data, "global.not_allowed");
    assert_eq!(r.findings[0].global.as_deref(), Some("builtins.eval"));
    assert_eq!(r.findings[0].severity, Severity::Critical);
    // And the benign direction: copy_reg._reconstructor is copyreg._reconstructor.
    let data = P::proto(0)
        .global("copy_reg", "_reconstructor")
        .raw(b"(")
        .global(LOGREG.0, LOGREG.1)
        .global("__builtin__", "object")
        .raw(b"NtR.")
        .0;
    assert!(
        scan_pickle(&data).is_safe(),
        "{:?}",
        scan_pickle(&data).findings
    );
}

#[test]
fn nested_deserialisers() {
    for (m, n) in [
        ("pickle", "loads"),
        ("_pickle", "loads"),
        ("marshal", "loads"),
        ("numpy.lib.npyio", "load"),
        ("types", "CodeType"),
    ] {
        refused(&call(m, n), "global.not_allowed");
    }
}

// --- STACK_GLOBAL tricks ----------------------------------------------------------------------

#[test]
fn stack_global_with_memo_smuggled_names() {
    let data = P::proto(4)
        .s("os")
        .put(0)
        .op(op::POP)
        .s("numpy")
        .put(1)
        .op(op::POP)
        .s("system")
        .put(2)
        .op(op::POP)
        .get(0)
        .get(2)
        .op(op::STACK_GLOBAL)
        .s(&command())
        .call(1)
        .stop();
    let r = refused(&data, "global.not_allowed");
    assert_eq!(r.findings[0].global.as_deref(), Some("os.system"));
}

#[test]
fn stack_global_with_non_constant_operands() {
    // The module operand is the result of a call, not a str constant.
    let data = P::proto(4)
        .sg("builtins", "str")
        .call(0)
        .s("system")
        .op(op::STACK_GLOBAL)
        .stop();
    let r = refused(&data, "malformed.bad_operands");
    assert_eq!(r.verdict, Verdict::Malformed);
}

#[test]
fn escaped_names_are_decoded_before_matching() {
    // UNICODE is raw-unicode-escape: `o\u0073` is `os`.
    let data = P::proto(4)
        .raw(b"Vo\\u0073\nVsystem\n")
        .op(op::STACK_GLOBAL)
        .stop();
    let r = refused(&data, "global.not_allowed");
    assert_eq!(r.findings[0].global.as_deref(), Some("os.system"));
}

#[test]
fn dotted_names_never_walk_attributes() {
    for (m, n) in [
        ("numpy", "lib._datasource.os.system"),
        ("pathlib", "os.system"),
        ("numpy", "dtype.__class__.__base__"),
        ("numpy._core.numeric", "_frombuffer.__globals__"),
        ("collections", "OrderedDict.__init__"),
    ] {
        let r = refused(&call(m, n), "global.not_allowed");
        assert_eq!(r.findings[0].severity, Severity::Critical, "{m}.{n}");
    }
}

#[test]
fn discarded_results_are_still_analysed() {
    let data = P::proto(0).global("os", "system").raw(b"(S'x'\ntR0N.").0;
    refused(&data, "global.not_allowed");
}

// --- refused opcodes ------------------------------------------------------------------------

#[test]
fn inst_is_refused_even_for_allowed_classes() {
    let data = P::proto(0)
        .raw(format!("(i{}\n{}\n.", LOGREG.0, LOGREG.1).as_bytes())
        .0;
    let r = refused(&data, "opcode.refused");
    assert_eq!(r.findings[0].opcode, Some("INST"));
    let data = P::proto(0).raw(b"(S'x'\nios\nsystem\n.").0;
    let r = refused(&data, "opcode.refused");
    assert!(r.has("global.not_allowed"));
}

#[test]
fn obj_is_refused() {
    let data = P::proto(2)
        .op(op::MARK)
        .global(LOGREG.0, LOGREG.1)
        .op(op::OBJ)
        .stop();
    let r = refused(&data, "opcode.refused");
    assert_eq!(r.findings[0].opcode, Some("OBJ"));
}

#[test]
fn extension_codes_are_refused() {
    for (bytes, name) in [
        (&[0x82u8, 1][..], "EXT1"),
        (&[0x83, 1, 0][..], "EXT2"),
        (&[0x84, 1, 0, 0, 0][..], "EXT4"),
    ] {
        let r = refused(&P::proto(2).raw(bytes).stop(), "opcode.refused");
        assert_eq!(r.findings[0].opcode, Some(name));
    }
}

#[test]
fn persistent_ids_are_refused() {
    let r = refused(&P::proto(0).raw(b"Pabc\n.").0, "opcode.refused");
    assert_eq!(r.findings[0].opcode, Some("PERSID"));
    let r = refused(
        &P::proto(2).s("x").op(op::BINPERSID).stop(),
        "opcode.refused",
    );
    assert_eq!(r.findings[0].opcode, Some("BINPERSID"));
}

#[test]
fn newobj_ex_is_refused() {
    let data = logreg(P::proto(4))
        .op(op::EMPTY_TUPLE)
        .op(op::EMPTY_DICT)
        .op(op::NEWOBJ_EX)
        .stop();
    let r = refused(&data, "opcode.refused");
    assert_eq!(r.findings[0].opcode, Some("NEWOBJ_EX"));
}

#[test]
fn out_of_band_buffers_only_in_amber_streams() {
    let data = P::proto(5).op(op::NEXT_BUFFER).stop();
    let r = refused(&data, "opcode.refused");
    assert_eq!(r.findings[0].opcode, Some("NEXT_BUFFER"));
    refused_as(
        &data,
        StreamKind::Amber { buffers: 0 },
        "malformed.buffer_missing",
    );
    assert!(scan_as(&data, StreamKind::Amber { buffers: 1 }).is_safe());
}

// --- BUILD --------------------------------------------------------------------------------

#[test]
fn build_on_a_class() {
    let data = logreg(P::proto(4))
        .op(op::EMPTY_DICT)
        .s("predict")
        .sg("numpy", "log1p")
        .op(op::SETITEM)
        .op(op::BUILD)
        .stop();
    let r = refused(&data, "build.target");
    assert!(r.findings[0].message.contains("process-wide"));
}

#[test]
fn build_on_a_function_or_module_global() {
    let data = P::proto(4)
        .sg("numpy", "log1p")
        .op(op::EMPTY_DICT)
        .op(op::BUILD)
        .stop();
    refused(&data, "build.target");
    let data = P::proto(4)
        .sg("numpy", "random")
        .op(op::EMPTY_DICT)
        .op(op::BUILD)
        .stop();
    let r = refused(&data, "build.target");
    assert!(r.has("global.not_allowed"));
}

#[test]
fn build_on_a_literal() {
    let data = P::proto(2)
        .op(op::EMPTY_LIST)
        .op(op::EMPTY_DICT)
        .op(op::BUILD)
        .stop();
    refused(&data, "build.target");
}

#[test]
fn build_slot_state_on_an_allowed_object() {
    let data = new_logreg(P::proto(4))
        .op(op::NONE)
        .op(op::EMPTY_DICT)
        .s("__class__")
        .sg("numpy", "float64")
        .op(op::SETITEM)
        .op(op::TUPLE2)
        .op(op::BUILD)
        .stop();
    let r = refused(&data, "build.slot_state");
    assert_eq!(r.findings[0].severity, Severity::Critical);
}

#[test]
fn build_with_dunder_or_odd_state() {
    let data = new_logreg(P::proto(4))
        .op(op::EMPTY_DICT)
        .s("__dict__")
        .op(op::EMPTY_DICT)
        .op(op::SETITEM)
        .op(op::BUILD)
        .stop();
    refused(&data, "build.state");
    let data = new_logreg(P::proto(4)).int(1).op(op::BUILD).stop();
    refused(&data, "build.state");
    let data = new_logreg(P::proto(4))
        .op(op::EMPTY_DICT)
        .int(1)
        .int(2)
        .op(op::SETITEM)
        .op(op::BUILD)
        .stop();
    refused(&data, "build.state");
    // The control: a plain attribute dict is fine.
    let data = new_logreg(P::proto(4)).build_attr("C", 1).stop();
    assert!(scan_pickle(&data).is_safe());
}

fn frombuffer(p: P) -> P {
    p.sg("numpy._core.numeric", "_frombuffer")
        .op(op::MARK)
        .bytes(&[0; 8])
        .dtype("f8", "<")
        .int(1)
        .op(op::TUPLE1)
        .s("C")
        .op(op::TUPLE)
        .op(op::REDUCE)
}

#[test]
fn build_on_an_object_that_takes_no_state() {
    assert!(scan_pickle(&frombuffer(P::proto(5)).stop()).is_safe());
    let data = frombuffer(P::proto(5))
        .op(op::EMPTY_DICT)
        .op(op::BUILD)
        .stop();
    refused(&data, "build.target");
}

// --- trampolines ---------------------------------------------------------------------------

fn random_ctor(ctor: &str, second: Option<(&str, &str)>) -> Vec<u8> {
    let p = P::proto(4).sg("numpy.random._pickle", ctor).s("MT19937");
    let p = match second {
        Some((m, n)) => p.sg(m, n).op(op::TUPLE2),
        None => p.op(op::TUPLE1),
    };
    p.op(op::REDUCE).stop()
}

#[test]
fn random_state_ctor_with_a_second_callable() {
    for ctor in ["__randomstate_ctor", "__generator_ctor"] {
        refused(&random_ctor(ctor, Some(("numpy", "log1p"))), "trampoline");
        refused(&random_ctor(ctor, Some(("builtins", "list"))), "trampoline");
        let r = refused(&random_ctor(ctor, Some(("os", "system"))), "trampoline");
        assert!(r.has("global.not_allowed"));
        // numpy's own spelling passes its bit-generator constructor there.
        let ok = random_ctor(ctor, Some(("numpy.random._pickle", "__bit_generator_ctor")));
        assert!(
            scan_pickle(&ok).is_safe(),
            "{:?}",
            scan_pickle(&ok).findings
        );
        assert!(scan_pickle(&random_ctor(ctor, None)).is_safe());
    }
}

#[test]
fn bit_generator_ctor_calls_its_argument() {
    let data = logreg(P::proto(4).sg("numpy.random._pickle", "__bit_generator_ctor"))
        .call(1)
        .stop();
    refused(&data, "trampoline");
}

fn defaultdict(factory: (&str, &str)) -> Vec<u8> {
    P::proto(4)
        .sg("collections", "defaultdict")
        .sg(factory.0, factory.1)
        .call(1)
        .stop()
}

#[test]
fn defaultdict_factory_must_be_a_plain_type() {
    refused(&defaultdict(("numpy", "log1p")), "trampoline");
    refused(&defaultdict(LOGREG), "trampoline");
    let r = refused(&defaultdict(("os", "system")), "trampoline");
    assert!(r.has("global.not_allowed"));
    assert!(scan_pickle(&defaultdict(("builtins", "list"))).is_safe());
}

#[test]
fn ndarray_reconstruct_with_a_foreign_subclass() {
    let data = logreg(P::proto(4).sg("numpy._core.multiarray", "_reconstruct"))
        .int(0)
        .op(op::TUPLE1)
        .bytes(b"b")
        .call(3)
        .stop();
    refused(&data, "trampoline");
    // NumPy 1.x spelling of the same function is the same entry.
    let data = P::proto(4)
        .sg("numpy.core.multiarray", "_reconstruct")
        .sg("numpy", "ndarray")
        .int(0)
        .op(op::TUPLE1)
        .bytes(b"b")
        .call(3)
        .stop();
    assert!(
        scan_pickle(&data).is_safe(),
        "{:?}",
        scan_pickle(&data).findings
    );
}

fn reconstructor(cls: (&str, &str), base: (&str, &str)) -> Vec<u8> {
    P::proto(4)
        .sg("copyreg", "_reconstructor")
        .sg(cls.0, cls.1)
        .sg(base.0, base.1)
        .op(op::NONE)
        .call(3)
        .stop()
}

#[test]
fn reconstructor_with_a_non_object_base() {
    refused(
        &reconstructor(LOGREG, ("numpy", "ndarray")),
        "reconstructor.base",
    );
    let r = refused(
        &reconstructor(LOGREG, ("logging", "FileHandler")),
        "reconstructor.base",
    );
    assert!(r.has("global.not_allowed"));
    refused(
        &reconstructor(("numpy", "log1p"), ("builtins", "object")),
        "trampoline",
    );
    assert!(scan_pickle(&reconstructor(LOGREG, ("builtins", "object"))).is_safe());
}

#[test]
fn functools_partial_wraps_only_references() {
    let partial = |f: (&str, &str)| P::proto(4).sg("functools", "partial").sg(f.0, f.1).call(1);
    refused(&partial(LOGREG).stop(), "trampoline");
    // A listed reference is not enough: the partial's arguments are the file's.
    refused(
        &partial(("sklearn.cluster._kmeans", "_kmeans_single_lloyd")).stop(),
        "trampoline",
    );
    // The state swaps the function for a class.
    let data = logreg(partial(("numpy", "log1p")).op(op::MARK))
        .op(op::EMPTY_TUPLE)
        .op(op::EMPTY_DICT)
        .op(op::NONE)
        .op(op::TUPLE)
        .op(op::BUILD)
        .stop();
    refused(&data, "trampoline");
    let data = partial(("sklearn.utils.validation", "check_array"))
        .op(op::MARK)
        .sg("sklearn.utils.validation", "check_array")
        .op(op::EMPTY_TUPLE)
        .op(op::EMPTY_DICT)
        .op(op::NONE)
        .op(op::TUPLE)
        .op(op::BUILD)
        .stop();
    assert!(
        scan_pickle(&data).is_safe(),
        "{:?}",
        scan_pickle(&data).findings
    );
}

// --- calls ---------------------------------------------------------------------------------

#[test]
fn calling_a_reference_only_global() {
    let data = P::proto(4).sg("numpy", "log1p").int(1).call(1).stop();
    refused(&data, "reduce.not_callable");
    let data = logreg(P::proto(4)).call(0).stop();
    refused(&data, "reduce.not_callable");
}

#[test]
fn calling_an_object_the_stream_built() {
    let data = P::proto(4).sg("builtins", "bytes").call(0).call(0).stop();
    refused(&data, "reduce.callable");
}

#[test]
fn newobj_rules() {
    let data = P::proto(4).sg("numpy", "log1p").new0().stop();
    refused(&data, "newobj.not_allowed");
    let data = logreg(P::proto(4))
        .sg("numpy", "log1p")
        .op(op::TUPLE1)
        .op(op::NEWOBJ)
        .stop();
    refused(&data, "newobj.args");
    let data = P::proto(4).sg("builtins", "bytes").call(0).new0().stop();
    refused(&data, "newobj.class");
}

#[test]
fn mutating_objects_that_are_not_containers() {
    let data = new_logreg(P::proto(4))
        .op(op::MARK)
        .int(1)
        .op(op::APPENDS)
        .stop();
    let r = refused(&data, "items.target");
    assert_eq!(r.findings[0].opcode, Some("APPENDS"));
    let data = P::proto(4)
        .dtype("f8", "<")
        .s("k")
        .int(1)
        .op(op::SETITEM)
        .stop();
    refused(&data, "items.target");
    // OrderedDict is filled by SETITEMS.
    let data = P::proto(4)
        .sg("collections", "OrderedDict")
        .call(0)
        .op(op::MARK)
        .s("k")
        .int(1)
        .op(op::SETITEMS)
        .stop();
    assert!(scan_pickle(&data).is_safe());
}

#[test]
fn argument_shapes_are_checked() {
    let data = P::proto(4)
        .sg("_codecs", "encode")
        .s("abc")
        .s("rot13")
        .call(2)
        .stop();
    refused(&data, "reduce.args");
    let data = P::proto(4)
        .sg("numpy", "dtype")
        .sg("numpy", "log1p")
        .op(op::NEWFALSE)
        .op(op::NEWTRUE)
        .call(3)
        .stop();
    refused(&data, "reduce.args");
    let data = P::proto(4)
        .sg("builtins", "set")
        .sg("numpy", "log1p")
        .call(1)
        .stop();
    refused(&data, "trampoline");
}

// --- nested pickles -------------------------------------------------------------------------

#[test]
fn a_pickle_inside_bytes_is_data() {
    let inner = call("os", "system");
    let data = P::proto(4).bytes(&inner).stop();
    assert!(scan_pickle(&data).is_safe());
    // ... unless something would unpickle it.
    let data = P::proto(4)
        .sg("pickle", "loads")
        .bytes(&inner)
        .call(1)
        .stop();
    refused(&data, "global.not_allowed");
}

/// A joblib `NumpyArrayWrapper` for `count` elements of `descr`, without
/// padding (joblib < 1.2 layout); the raw data must follow.
fn joblib_wrapper(p: P, descr: &str, count: i32, subclass: (&str, &str)) -> P {
    p.sg("joblib.numpy_pickle", "NumpyArrayWrapper")
        .new0()
        .op(op::EMPTY_DICT)
        .op(op::MARK)
        .s("subclass")
        .sg(subclass.0, subclass.1)
        .s("shape")
        .int(count)
        .op(op::TUPLE1)
        .s("order")
        .s("C")
        .s("dtype")
        .dtype(descr, "|")
        .s("allow_mmap")
        .op(op::NEWTRUE)
        .op(op::SETITEMS)
        .op(op::BUILD)
}

#[test]
fn joblib_array_bytes_are_skipped_not_parsed() {
    // The array data *looks* like a payload; joblib reads it as bytes.
    let fake = format!("cos\nsystem\n(S'{}'\ntR.", command());
    let data = joblib_wrapper(
        P::proto(4),
        "u1",
        i32::try_from(fake.len()).unwrap(),
        ("numpy", "ndarray"),
    )
    .raw(fake.as_bytes())
    .stop();
    let r = scan_as(&data, StreamKind::Joblib);
    assert!(r.is_safe(), "{:?}", r.findings);
    assert_eq!(r.joblib_arrays, 1);
}

#[test]
fn payload_after_a_joblib_array() {
    let data = joblib_wrapper(P::proto(4), "u1", 3, ("numpy", "ndarray"))
        .raw(b"abc")
        .op(op::POP)
        .sg("os", "system")
        .s(&command())
        .call(1)
        .stop();
    let r = refused_as(&data, StreamKind::Joblib, "global.not_allowed");
    assert_eq!(r.joblib_arrays, 1);
}

#[test]
fn payload_in_a_nested_joblib_object_array_pickle() {
    let nested = call("os", "system");
    let data = joblib_wrapper(P::proto(4), "O8", 1, ("numpy", "ndarray"))
        .raw(&nested)
        .stop();
    let r = refused_as(&data, StreamKind::Joblib, "global.not_allowed");
    assert_eq!(r.findings[0].global.as_deref(), Some("os.system"));
    assert!(r.findings[0].offset.unwrap() > 0);
}

#[test]
fn joblib_wrapper_subclass_must_be_an_array_class() {
    let data = joblib_wrapper(P::proto(4), "u1", 1, LOGREG)
        .raw(b"a")
        .stop();
    refused_as(&data, StreamKind::Joblib, "trampoline");
}

/// Two one-byte `u1` arrays whose wrappers share the class and the state
/// keys through the memo (as joblib writes them), with these subclasses.
fn two_wrappers(first: (&str, &str), second: (&str, &str)) -> Vec<u8> {
    let wrapper = |p: P, subclass: (&str, &str), memoized: bool| {
        let p = if memoized {
            p.get(0)
        } else {
            p.sg("joblib.numpy_pickle", "NumpyArrayWrapper").put(0)
        };
        let key = |p: P, i: u8, name: &str| if memoized { p.get(i) } else { p.s(name).put(i) };
        let p = key(p.new0().op(op::EMPTY_DICT).op(op::MARK), 1, "subclass");
        let p = key(p.sg(subclass.0, subclass.1), 2, "shape")
            .int(1)
            .op(op::TUPLE1);
        let p = key(p, 3, "order").s("C");
        key(p, 4, "dtype")
            .dtype("u1", "|")
            .op(op::SETITEMS)
            .op(op::BUILD)
            .raw(b"a")
    };
    let p = P::proto(4).op(op::EMPTY_LIST).op(op::MARK);
    let p = wrapper(p, first, false);
    wrapper(p, second, true).op(op::APPENDS).stop()
}

#[test]
fn joblib_wrappers_with_the_same_keys_are_each_checked() {
    let ndarray = ("numpy", "ndarray");
    let r = scan_as(&two_wrappers(ndarray, ndarray), StreamKind::Joblib);
    assert!(r.is_safe(), "{:?}", r.findings);
    assert_eq!(r.joblib_arrays, 2);
    // The second wrapper's keys are those the first one had accepted.
    let r = refused_as(
        &two_wrappers(ndarray, LOGREG),
        StreamKind::Joblib,
        "trampoline",
    );
    assert_eq!(r.findings.len(), 1);
    let r = refused_as(
        &two_wrappers(LOGREG, ndarray),
        StreamKind::Joblib,
        "trampoline",
    );
    assert_eq!(r.findings.len(), 1);
}

#[test]
fn joblib_legacy_wrapper_file_names_are_bare() {
    let legacy = |name: &str| {
        P::proto(2)
            .sg("joblib.numpy_pickle_compat", "NDArrayWrapper")
            .new0()
            .op(op::EMPTY_DICT)
            .op(op::MARK)
            .s("filename")
            .s(name)
            .s("subclass")
            .sg("numpy", "ndarray")
            .s("allow_mmap")
            .op(op::NEWFALSE)
            .op(op::SETITEMS)
            .op(op::BUILD)
            .stop()
    };
    for bad in ["../../etc/passwd", "/etc/passwd", "a\\b", "..", "x\0y"] {
        refused_as(&legacy(bad), StreamKind::Joblib, "joblib.filename");
    }
    let ok = scan_as(&legacy("model.pkl_01.npy"), StreamKind::Joblib);
    assert!(ok.is_safe(), "{:?}", ok.findings);
    // Outside joblib mode the wrapper is not a listed class at all.
    refused(&legacy("model.pkl_01.npy"), "global.not_allowed");
}

// --- container smuggling, malformed streams -------------------------------------------------

#[test]
fn bytes_after_stop() {
    let mut data = P::proto(4).op(op::NONE).stop();
    data.extend_from_slice(b"PK\x03\x04 anything");
    let r = refused(&data, "stream.trailing");
    assert_eq!(r.findings[0].offset, Some(4));
    let mut data = P::proto(4).op(op::NONE).stop();
    data.extend(call("os", "system"));
    refused(&data, "stream.trailing");
}

#[test]
fn frame_tricks() {
    // A frame longer than the stream.
    let data = P::proto(4)
        .raw(&[0x95, 100, 0, 0, 0, 0, 0, 0, 0])
        .op(op::NONE)
        .stop();
    let r = scan_pickle(&data);
    assert_eq!(r.verdict, Verdict::Malformed, "{:?}", r.findings);
    // An opcode straddling the end of its frame.
    let data = P::proto(4)
        .raw(&[0x95, 2, 0, 0, 0, 0, 0, 0, 0])
        .s("abc")
        .stop();
    let r = scan_pickle(&data);
    assert_eq!(r.verdict, Verdict::Malformed, "{:?}", r.findings);
    assert!(
        r.findings[0].code.starts_with("malformed.frame"),
        "{:?}",
        r.findings
    );
}

#[test]
fn memo_index_bomb() {
    let data = P::proto(4)
        .op(op::NONE)
        .raw(&[b'r', 0xff, 0xff, 0xff, 0xff])
        .stop();
    let r = refused(&data, "limit.memo_index");
    assert_eq!(r.verdict, Verdict::Unsafe);
}

#[test]
fn memo_entry_bomb() {
    let limits = Limits::default().with(amber_pickle::LimitKind::MemoEntries, 1000);
    let mut p = P::proto(4).op(op::NONE);
    for _ in 0..2000 {
        p = p.op(op::MEMOIZE);
    }
    let r = scan(
        &p.stop(),
        StreamKind::Pickle,
        &NoArrays,
        &Policy::default_policy(),
        &limits,
    );
    assert!(r.has("limit.memo"), "{:?}", r.findings);
}

#[test]
fn mark_bomb_and_deep_nesting() {
    let data = P::proto(2).raw(&vec![op::MARK; 1_100_000]).stop();
    refused(&data, "limit.stack");
    let mut data = P::proto(2).raw(&vec![op::EMPTY_LIST; 5_000]);
    data = data.raw(&vec![op::APPEND; 4_999]);
    refused(&data.stop(), "limit.depth");
}

#[test]
fn huge_length_fields() {
    for opcode in [0x8eu8, 0x8d, 0x96] {
        // BINBYTES8, BINUNICODE8, BYTEARRAY8 claiming 2**62 bytes.
        let data = P::proto(5)
            .op(opcode)
            .raw(&(1u64 << 62).to_le_bytes())
            .stop();
        let r = scan_pickle(&data);
        assert_ne!(r.verdict, Verdict::Safe);
        assert!(
            r.findings[0].code.starts_with("malformed.")
                || r.findings[0].code.starts_with("limit."),
            "{:?}",
            r.findings
        );
    }
    // LONG4 with a 2 GiB length.
    let data = P::proto(2).raw(&[0x8b, 0xff, 0xff, 0xff, 0x7f]).stop();
    assert_ne!(scan_pickle(&data).verdict, Verdict::Safe);
}

#[test]
fn billion_laughs_is_never_expanded() {
    let mut p = P::proto(2).op(op::EMPTY_LIST).put(0).op(op::POP);
    for level in 1..=40u8 {
        p = p.op(op::MARK);
        for _ in 0..10 {
            p = p.get(level - 1);
        }
        p = p.op(op::TUPLE).put(level);
        if level < 40 {
            p = p.op(op::POP);
        }
    }
    let r = scan_pickle(&p.stop());
    assert!(r.is_safe(), "{:?}", r.findings);
    assert!(r.opcodes < 1_000);
}

fn benign(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/benign")
            .join(name),
    )
    .unwrap()
}

#[test]
fn truncation_at_every_byte_of_real_models() {
    for name in ["logreg_p2.pkl", "tree_p4.pkl", "knn_kd_p5.pkl"] {
        let data = benign(name);
        assert!(scan_pickle(&data).is_safe());
        for cut in 0..data.len() {
            let r = scan_pickle(data.get(..cut).unwrap());
            assert_eq!(
                r.verdict,
                Verdict::Malformed,
                "{name} cut at {cut}: {:?}",
                r.findings
            );
            assert!(r.findings[0].code.starts_with("malformed."));
        }
    }
}

#[test]
fn truncation_of_a_joblib_file_inside_array_data() {
    let data = benign("forest.joblib");
    for cut in [data.len() - 1, data.len() / 2, data.len() / 3] {
        let r = scan_as(data.get(..cut).unwrap(), StreamKind::Joblib);
        assert_eq!(r.verdict, Verdict::Malformed, "{:?}", r.findings);
    }
}

// --- reporting --------------------------------------------------------------------------------

#[test]
fn repeats_are_one_finding_with_a_count() {
    let mut p = P::proto(4);
    for _ in 0..10_000 {
        p = p.sg("os", "system").op(op::POP);
    }
    let r = refused(&p.op(op::NONE).stop(), "global.not_allowed");
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].count, 10_000);
    assert_eq!(r.findings[0].offset, Some(14)); // the first STACK_GLOBAL
    assert_eq!(r.globals.len(), 1);
    assert_eq!(r.globals[0].count, 10_000);
    assert!(!r.globals[0].allowed);
}

#[test]
fn findings_are_capped() {
    let mut p = P::proto(4);
    for i in 0..500 {
        p = p.sg("evil", &format!("f{i}")).op(op::POP);
    }
    let r = refused(&p.op(op::NONE).stop(), "report.truncated");
    assert_eq!(r.findings.len(), amber_scan::report::MAX_FINDINGS + 1);
    assert_eq!(r.globals.len(), 500);
}

#[test]
fn trusted_names_load_with_any_state() {
    let data = P::proto(4)
        .sg("mypkg.models", "MyModel")
        .new0()
        .build_attr("w", 1)
        .stop();
    let r = refused(&data, "global.not_allowed");
    assert!(
        r.findings[0]
            .message
            .contains(r#"trusted=["mypkg.models.MyModel"]"#)
    );
    assert_eq!(r.findings[0].severity, Severity::High);
    let mut policy = Policy::default_policy();
    policy.trust("mypkg.models.MyModel").unwrap();
    let r = scan(
        &data,
        StreamKind::Pickle,
        &NoArrays,
        &policy,
        &Limits::default(),
    );
    assert!(r.is_safe(), "{:?}", r.findings);
    assert_eq!(r.allowed_globals(), ["mypkg.models.MyModel"]);
}

#[test]
fn no_payload_ever_ran() {
    // Every stream above only ever went through the analyser.
    assert!(!marker().exists());
}

// --- crafted compiled types (tests/data/hostile, made by generate.py) ------------------------

fn crafted(name: &str) -> amber_scan::Report {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hostile")
        .join(format!("{name}.pkl"));
    scan_pickle(&std::fs::read(path).unwrap())
}

const CRAFTED: &[(&str, &str)] = &[
    ("tree_child_out_of_range", "tree.child_out_of_range"),
    ("tree_cycle", "tree.child_out_of_range"),
    ("tree_feature_out_of_range", "tree.feature_out_of_range"),
    ("tree_value_shape", "tree.value_shape"),
    ("hgb_node_out_of_range", "hist.node_out_of_range"),
    ("kdtree_index_out_of_range", "neighbors.index_out_of_range"),
    ("csr_indices_out_of_range", "sparse.indices"),
];

#[test]
fn crafted_objects_pass_the_structural_rules() {
    // Their globals, calls and states are all of listed forms: only the
    // content validators can (and must) refuse them.
    for (name, _) in CRAFTED {
        let r = crafted(name);
        for f in &r.findings {
            assert_eq!(f.severity, Severity::Critical, "{name}: {f:?}");
            assert!(
                ["tree.", "hist.", "neighbors.", "sparse.", "content."]
                    .iter()
                    .any(|p| f.code.starts_with(p)),
                "{name}: structural finding {f:?}"
            );
        }
    }
}

#[test]
fn crafted_trees_and_indices_are_refused() {
    for (name, code) in CRAFTED {
        let r = crafted(name);
        assert_eq!(r.verdict, Verdict::Unsafe, "{name}");
        // A backward child may be reported as a cycle instead.
        assert!(
            r.has(code) || (*name == "tree_cycle" && r.has("tree.cycle")),
            "{name}: expected {code}, got {:?}",
            r.findings
        );
    }
}

#[test]
fn reconstructor_only_for_plain_classes() {
    // `object.__new__` on a compiled type: refused before NumPy would raise.
    refused(
        &reconstructor(("sklearn.tree._tree", "Tree"), ("builtins", "object")),
        "trampoline",
    );
    // `newObj(cls)` only for the compiled classes of its own module.
    let data = P::proto(4)
        .sg("sklearn.neighbors._kd_tree", "newObj")
        .sg("sklearn.neighbors._ball_tree", "BallTree")
        .call(1)
        .stop();
    refused(&data, "trampoline");
    let data = P::proto(4)
        .sg("sklearn.metrics._dist_metrics", "newObj")
        .sg("sklearn.metrics._dist_metrics", "PyFuncDistance64")
        .call(1)
        .stop();
    refused(&data, "global.not_allowed");
}

#[test]
fn function_transformer_calls_only_numpy_functions() {
    let ft = |f: (&str, &str)| {
        P::proto(4)
            .sg(
                "sklearn.preprocessing._function_transformer",
                "FunctionTransformer",
            )
            .new0()
            .op(op::EMPTY_DICT)
            .s("func")
            .sg(f.0, f.1)
            .op(op::SETITEM)
            .op(op::BUILD)
            .stop()
    };
    // A listed Cython helper that trusts its array shapes, called with kw_args from the file.
    refused(
        &ft(("sklearn.cluster._kmeans", "_kmeans_single_lloyd")),
        "trampoline",
    );
    refused(&ft(("builtins", "list")), "trampoline");
    assert!(scan_pickle(&ft(("numpy", "log1p"))).is_safe());
}

#[test]
fn reconstructor_with_a_dict_base_only_for_python_dict_subclasses() {
    let recon = |cls: (&str, &str)| {
        P::proto(2)
            .global("copy_reg", "_reconstructor")
            .global(cls.0, cls.1)
            .global("__builtin__", "dict")
            .op(op::EMPTY_DICT)
            .call(3)
            .stop()
    };
    assert!(scan_pickle(&recon(("sklearn.utils._bunch", "Bunch"))).is_safe());
    refused(&recon(("collections", "OrderedDict")), "reconstructor.base");
    refused(&recon(LOGREG), "reconstructor.base");
}

#[test]
fn what_is_validated_is_what_setstate_sees() {
    // A second BUILD would replace a validated state.
    let data = new_logreg(P::proto(4))
        .build_attr("C", 1)
        .build_attr("C", 2)
        .stop();
    refused(&data, "build.repeated");
    // A state dict set twice: the graph keeps both pairs, `__setstate__` saw
    // whichever was set before the BUILD.
    let data = new_logreg(P::proto(4))
        .op(op::EMPTY_DICT)
        .s("C")
        .int(1)
        .op(op::SETITEM)
        .s("C")
        .int(2)
        .op(op::SETITEM)
        .op(op::BUILD)
        .stop();
    refused(&data, "build.state");
}
