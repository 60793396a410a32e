"""Safe by default: hostile pickles are refused before anything runs.

Each case is a pickle stream built opcode by opcode from the attack catalogue
(`shared/reference/pickle-security.md` section 6), wrapped in an amber file.
Its payload would create a marker file; the test asserts that loading raises
the expected typed error, that the findings carry the expected code, and that
the marker does not exist afterwards. `test_payloads_are_live` proves with
`trusted=True` that the payloads do run when the policy is off, so these
tests can fail.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import amber
from amber import _amber, _manifest

from _hostile import (
    BUILD,
    EMPTY_DICT,
    EMPTY_LIST,
    EMPTY_TUPLE,
    MARK,
    MEMOIZE,
    NEWOBJ,
    NONE,
    PROTO2,
    PROTO4,
    REDUCE,
    STACK_GLOBAL,
    STOP,
    TUPLE,
    TUPLE2,
    b,
    call,
    glob,
    i,
    pickle_of,
    s,
    touch_open,
    touch_system,
)


def amber_with_stream(stream: bytes, buffers: list[np.ndarray] | None = None) -> bytes:
    """An amber file whose pickle entry is ``stream`` (valid container, any stream)."""
    writer = _amber.Writer.to_memory()
    writer.begin_entry(_manifest.pickle_entry_name(False), None, 0)
    writer.write(stream)
    record = writer.end_entry()
    manifest = _manifest.build(record, [], [], [], ({}, {}), {}, amber.__version__, writer.content_hash())
    data = writer.finish(manifest)
    assert isinstance(data, bytes)
    return data


# Each case: (id, builder(marker) -> stream, expected finding codes (any of)).
Case = tuple[str, Callable[[str], bytes], set[str]]

GLOBAL = {"global.not_allowed"}
OPCODE = {"opcode.refused"}


def _stack_global(module: str, name: str) -> bytes:
    return s(module) + s(name) + STACK_GLOBAL


CASES: list[Case] = [
    # Direct dangerous globals.
    ("os_system", lambda m: pickle_of(touch_system(m)), GLOBAL),
    ("posix_system", lambda m: pickle_of(touch_system(m, "posix")), GLOBAL),
    ("builtins_open", lambda m: pickle_of(touch_open(m)), GLOBAL),
    ("builtins_eval", lambda m: pickle_of(call(glob("builtins", "eval"), s(f"open({m!r}, 'w')"))), GLOBAL),
    ("builtins_exec", lambda m: pickle_of(call(glob("builtins", "exec"), s(f"open({m!r}, 'w')"))), GLOBAL),
    (
        "builtins_import",
        lambda m: pickle_of(call(glob("builtins", "__import__"), s("os"))),
        GLOBAL,
    ),
    (
        "subprocess_popen",
        lambda m: pickle_of(call(glob("subprocess", "Popen"), MARK + s("touch") + s(m) + b"l")),
        GLOBAL,
    ),
    (
        "py2_builtin_eval",
        lambda m: pickle_of(call(glob("__builtin__", "eval"), s(f"open({m!r}, 'w')")), PROTO2),
        GLOBAL,
    ),
    ("numpy_load", lambda m: pickle_of(call(glob("numpy", "load"), s(m))), GLOBAL),
    (
        "pickle_loads_nested",
        lambda m: pickle_of(call(glob("pickle", "loads"), b(pickle_of(touch_open(m))))),
        GLOBAL,
    ),
    ("joblib_load", lambda m: pickle_of(call(glob("joblib", "load"), s(m))), GLOBAL),
    (
        "functools_partial",
        lambda m: pickle_of(call(call(glob("functools", "partial"), glob("builtins", "open"), s(m), s("w")))),
        GLOBAL,
    ),
    (
        "getattr_trampoline",
        lambda m: pickle_of(
            call(call(glob("builtins", "getattr"), call(glob("builtins", "__import__"), s("os")), s("system")), s(f"touch {m}"))
        ),
        GLOBAL,
    ),
    (
        "operator_attrgetter",
        lambda m: pickle_of(call(glob("operator", "attrgetter"), s("system"))),
        GLOBAL,
    ),
    # STACK_GLOBAL: constant operands, memo-smuggled names, computed names.
    (
        "stack_global_os_system",
        lambda m: pickle_of(call(_stack_global("os", "system"), s(f"touch {m}"))),
        GLOBAL,
    ),
    (
        "stack_global_memo_smuggled",
        lambda m: pickle_of(
            s("os") + MEMOIZE + b"0" + s("system") + MEMOIZE + b"0"
            + b"h\x00" + b"h\x01" + STACK_GLOBAL + MARK + s(f"touch {m}") + TUPLE + REDUCE
        ),
        GLOBAL,
    ),
    (
        "stack_global_computed_name",
        lambda m: pickle_of(
            s("os") + call(glob("builtins", "str"), s("system")) + STACK_GLOBAL + MARK + s(f"touch {m}") + TUPLE + REDUCE
        ),
        {"global.not_constant", "global.not_allowed", "malformed.bad_operands"},
    ),
    (
        "dotted_walk_numpy_os",
        lambda m: pickle_of(call(_stack_global("numpy", "lib._datasource.os.system"), s(f"touch {m}"))),
        GLOBAL,
    ),
    (
        "dotted_walk_allowed_class",
        lambda m: pickle_of(call(_stack_global("collections", "OrderedDict.__init__.__globals__"), EMPTY_TUPLE)),
        GLOBAL,
    ),
    (
        "dotted_walk_sklearn_module",
        lambda m: pickle_of(call(_stack_global("sklearn.base", "BaseEstimator.__reduce__.__globals__"), EMPTY_TUPLE)),
        GLOBAL,
    ),
    # Refused opcodes.
    ("inst", lambda m: pickle_of(MARK + s(f"touch {m}") + b"ios\nsystem\n"), OPCODE | GLOBAL),
    ("obj", lambda m: pickle_of(MARK + glob("os", "system") + s(f"touch {m}") + b"o"), OPCODE | GLOBAL),
    ("ext1", lambda m: pickle_of(b"\x82\x01" + MARK + s(m) + TUPLE + REDUCE), OPCODE),
    ("ext2", lambda m: pickle_of(b"\x83\x01\x01"), OPCODE),
    ("ext4", lambda m: pickle_of(b"\x84\x01\x00\x00\x00"), OPCODE),
    ("persid", lambda m: pickle_of(b"P" + m.encode() + b"\n", b""), OPCODE),
    ("binpersid", lambda m: pickle_of(s(m) + b"Q"), OPCODE),
    (
        "newobj_ex",
        lambda m: pickle_of(glob("collections", "OrderedDict") + EMPTY_TUPLE + EMPTY_DICT + b"\x92"),
        OPCODE,
    ),
    # BUILD on things the stream did not make from an allowed class.
    (
        "build_on_class",
        lambda m: pickle_of(glob("collections", "OrderedDict") + EMPTY_DICT + s("__reduce__") + glob("os", "system") + b"s" + BUILD),
        {"build.target", "global.not_allowed"},
    ),
    (
        "build_on_allowed_class_object",
        lambda m: pickle_of(glob("numpy", "ndarray") + EMPTY_DICT + s("__array_finalize__") + NONE + b"s" + BUILD),
        {"build.target"},
    ),
    (
        "build_slot_state",
        lambda m: pickle_of(
            glob("sklearn.preprocessing._data", "StandardScaler") + EMPTY_TUPLE + NEWOBJ
            + NONE + EMPTY_DICT + s("__class__") + glob("builtins", "object") + b"s" + TUPLE2 + BUILD
        ),
        {"build.state", "build.slot_state", "build.dunder", "global.not_allowed"},
    ),
    (
        "build_dunder_key",
        lambda m: pickle_of(
            glob("sklearn.preprocessing._data", "StandardScaler") + EMPTY_TUPLE + NEWOBJ
            + EMPTY_DICT + s("__class__") + i(1) + b"s" + BUILD
        ),
        {"build.state", "build.dunder"},
    ),
    # Callable trampolines through allowed globals.
    (
        "randomstate_ctor_trampoline",
        lambda m: pickle_of(
            call(glob("numpy.random._pickle", "__randomstate_ctor"), s("MT19937"), glob("builtins", "open"))
        ),
        {"reduce.args", "trampoline", "global.not_allowed"},
    ),
    (
        "randomstate_ctor_allowed_callable",
        lambda m: pickle_of(
            call(glob("numpy.random._pickle", "__randomstate_ctor"), s("MT19937"), glob("numpy", "ndarray"))
        ),
        {"reduce.args", "trampoline"},
    ),
    (
        "defaultdict_factory",
        lambda m: pickle_of(call(glob("collections", "defaultdict"), glob("os", "system"))),
        {"reduce.args", "trampoline", "global.not_allowed"},
    ),
    (
        "defaultdict_allowed_callable_factory",
        lambda m: pickle_of(call(glob("collections", "defaultdict"), glob("numpy.random._pickle", "__randomstate_ctor"))),
        {"reduce.args", "trampoline"},
    ),
    (
        "reconstructor_non_object_base",
        lambda m: pickle_of(
            call(glob("copyreg", "_reconstructor"), glob("collections", "OrderedDict"), glob("builtins", "int"), i(7))
        ),
        {"reconstructor.base", "reduce.args"},
    ),
    (
        "reconstruct_subclass",
        lambda m: pickle_of(
            call(glob("numpy._core.multiarray", "_reconstruct"), glob("collections", "OrderedDict"), MARK + i(0) + TUPLE, b(b"b"))
        ),
        {"reduce.args", "trampoline"},
    ),
    (
        "allowed_function_called_with_wrong_args",
        lambda m: pickle_of(call(glob("numpy", "dtype"), glob("builtins", "open"))),
        {"reduce.args", "global.not_allowed"},
    ),
    (
        "reference_only_called",
        lambda m: pickle_of(call(glob("numpy", "log1p"), i(1))),
        {"reduce.args", "reduce.not_callable", "global.role"},
    ),
    # Container smuggling and parser tricks.
    (
        "payload_after_stop",
        lambda m: pickle_of(EMPTY_DICT) + pickle_of(touch_open(m)),
        {"stream.trailing"},
    ),
    (
        "frame_overrun",
        lambda m: PROTO4 + b"\x95" + struct.pack("<Q", 2) + touch_open(m) + STOP,
        {"malformed.", "pickle."},
    ),
    (
        "opcode_straddles_frame",
        lambda m: PROTO4 + b"\x95" + struct.pack("<Q", 3) + s("abcdef") + STOP,
        {"malformed.", "pickle."},
    ),
    # Denial of service: each must be refused quickly and in bounded memory.
    ("memo_index_bomb", lambda m: pickle_of(EMPTY_DICT + b"r" + struct.pack("<I", 0xFFFFFFF0)), {"limit.", "malformed.", "pickle."}),
    ("huge_bytes_length", lambda m: pickle_of(b"\x8e" + struct.pack("<Q", 1 << 60) + b"xx"), {"limit.", "malformed.", "pickle."}),
    ("huge_unicode_length", lambda m: pickle_of(b"\x8d" + struct.pack("<Q", 1 << 62) + b"xx"), {"limit.", "malformed.", "pickle."}),
    ("huge_long4", lambda m: pickle_of(b"\x8b" + struct.pack("<i", 0x7FFFFFFF) + b"\x01"), {"limit.", "malformed.", "pickle."}),
    ("deep_nesting", lambda m: pickle_of(EMPTY_LIST * 200_000 + b"a" * 199_999), {"limit.", "malformed.", "pickle."}),
    ("mark_bomb", lambda m: pickle_of(MARK * 1_000_000 + NONE), {"limit.", "malformed.", "pickle."}),
    ("get_unset_memo", lambda m: pickle_of(b"h\x05"), {"malformed.", "pickle."}),
    ("leftover_stack", lambda m: PROTO4 + NONE + NONE + STOP, {"malformed.", "pickle."}),
]


def _codes(excinfo: pytest.ExceptionInfo) -> set[str]:
    return {f.code for f in excinfo.value.findings}


def _matches(codes: set[str], expected: set[str]) -> bool:
    """Whether any code is expected; an expected entry ending in ``.`` is a prefix."""
    return any(c == e or (e.endswith(".") and c.startswith(e)) for c in codes for e in expected)


@pytest.mark.parametrize("name,builder,expected", CASES, ids=[c[0] for c in CASES])
def test_hostile_stream_refused(tmp_path: Path, name: str, builder: Callable[[str], bytes], expected: set[str]) -> None:
    marker = tmp_path / "marker"
    data = amber_with_stream(builder(str(marker)))
    with pytest.raises((amber.UnsafeModelError, amber.FormatError)) as excinfo:
        amber.loads(data)
    assert not marker.exists(), "the payload ran"
    codes = _codes(excinfo) if isinstance(excinfo.value, amber.UnsafeModelError) else {excinfo.value.code}
    assert _matches(codes, expected), f"{name}: got {codes}, expected one of {expected}\n{excinfo.value}"
    # Scanning says the same, and never runs anything either.
    report = amber.scan(data)
    assert report.verdict in ("unsafe", "malformed")
    assert not marker.exists()


def test_corpus_size() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(
    "builder",
    [lambda m: pickle_of(touch_open(m)), lambda m: pickle_of(touch_system(m))],
    ids=["open", "system"],
)
def test_payloads_are_live(tmp_path: Path, builder: Callable[[str], bytes]) -> None:
    """With the policy off the same streams do run: the refusals above are real."""
    marker = tmp_path / "marker"
    data = amber_with_stream(builder(str(marker)))
    result = amber.loads(data, trusted=True)
    if hasattr(result, "close"):
        result.close()
    assert marker.exists()


def test_error_names_global_offset_and_how_to_trust(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    stream = pickle_of(touch_system(str(marker)))
    with pytest.raises(amber.UnsafeModelError) as excinfo:
        amber.loads(amber_with_stream(stream))
    err = excinfo.value
    finding = next(f for f in err.findings if f.code == "global.not_allowed")
    assert finding.global_name in ("os.system", "posix.system")
    assert finding.offset == 2  # the GLOBAL opcode right after PROTO
    assert "trusted=" in str(err) and "os.system" in str(err)
    assert isinstance(err, amber.AmberError)


def test_trusted_names_add_exactly_those(tmp_path: Path) -> None:
    """Trusting a name lets that name through and nothing else."""
    import ipaddress

    address = call(glob("ipaddress", "IPv4Address"), s("10.1.2.3"))
    data = amber_with_stream(pickle_of(address))
    with pytest.raises(amber.UnsafeModelError):
        amber.loads(data)
    for trusted in (["ipaddress.IPv4Address"], [ipaddress.IPv4Address]):
        assert amber.loads(data, trusted=trusted) == ipaddress.IPv4Address("10.1.2.3")
    marker = tmp_path / "marker"
    both = pickle_of(MARK + address + touch_open(str(marker)) + TUPLE)
    with pytest.raises(amber.UnsafeModelError) as excinfo:
        amber.loads(amber_with_stream(both), trusted=["ipaddress.IPv4Address"])
    assert {f.global_name for f in excinfo.value.findings} == {"builtins.open"}
    assert not marker.exists()


@pytest.mark.parametrize("bad", ["os", "", ".system", "os.", "a.<locals>.f", 3])
def test_trusted_rejects_non_names(bad: object) -> None:
    data = amber.dumps([1])
    with pytest.raises((TypeError, ValueError)):
        amber.loads(data, trusted=[bad])
    with pytest.raises(TypeError):
        amber.loads(data, trusted="os.system")


def test_second_wall_refuses_what_the_analyser_did_not_accept() -> None:
    """The unpickler resolves only accepted names, even if asked directly."""
    import io

    from amber._pickling import Unpickler

    payload = pickle.dumps(os.getcwd, protocol=4)
    with pytest.raises(amber.UnsafeModelError) as excinfo:
        Unpickler(io.BytesIO(payload), allowed=frozenset({"collections.OrderedDict"})).load()
    assert excinfo.value.findings[0].code == "second_wall.refused"


def test_truncation_at_every_opcode_of_a_real_model(fitted_models) -> None:
    """A real model's stream cut after every opcode is refused as malformed, never run or half-built."""
    import pickletools

    model, _ = fitted_models["logistic_regression"]
    stream = pickle.dumps(model, protocol=5)
    cuts = [pos for _, _, pos in pickletools.genops(stream)][1:]
    for cut in cuts:
        with pytest.raises(amber.FormatError):
            amber.loads(amber_with_stream(stream[:cut]))


def test_safe_default_loads_real_models(fitted_models) -> None:
    for name, (model, X) in fitted_models.items():
        back = amber.loads(amber.dumps(model))
        if hasattr(model, "predict"):
            np.testing.assert_array_equal(back.predict(X), model.predict(X), err_msg=name)


def test_scan_report_of_a_safe_model(fitted_models) -> None:
    model, _ = fitted_models["random_forest"]
    report = amber.scan(amber.dumps(model))
    assert report.safe and report.verdict == "safe" and not report.findings
    # Counts are references in the stream: a class is named once, then memoised.
    assert report.globals["sklearn.ensemble._forest.RandomForestClassifier"] == 1
    assert report.globals["sklearn.tree._tree.Tree"] >= 1
    assert report.format == "amber" and report.protocol == 5


class _CraftedTree:
    """Pickles as a fitted tree's `Tree` with one child index set to ``child``."""

    def __init__(self, tree: Any, child: int) -> None:
        self.args = (tree.n_features, tree.n_classes, tree.n_outputs)
        self.state = tree.__getstate__()
        self.state["nodes"] = self.state["nodes"].copy()
        self.state["nodes"]["right_child"][0] = child

    def __reduce__(self) -> Any:
        from sklearn.tree._tree import Tree

        return (Tree, self.args, self.state)


@pytest.mark.parametrize("compress", [None, True, "lz4"])
@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_crafted_tree_refused_whatever_the_storage(tmp_path: Path, compress: Any, mmap_mode: str | None) -> None:
    """The node array is an out-of-band entry, compressed or not; the checks
    read it where the load will (decoded once for a compressed entry) and
    refuse the tree before anything is built from it."""
    from sklearn.tree import DecisionTreeClassifier

    from amber._pickling import ARRAY_THRESHOLD

    rng = np.random.RandomState(0)
    X = rng.rand(3000, 4)
    model = DecisionTreeClassifier(random_state=0).fit(X, rng.randint(0, 2, len(X)))  # noise: a deep tree
    assert model.tree_.__getstate__()["nodes"].nbytes >= ARRAY_THRESHOLD  # stored as its own entry
    good = tmp_path / "good.amber"
    amber.dump(model, good, compress=compress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # compressed arrays cannot be mapped
        loaded = amber.load(good, mmap_mode=mmap_mode)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))

    model.tree_ = _CraftedTree(model.tree_, 1 << 40)
    bad = tmp_path / "bad.amber"
    amber.dump(model, bad, compress=compress, protocol=5)
    with pytest.raises(amber.UnsafeModelError) as excinfo, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        amber.load(bad, mmap_mode=mmap_mode)
    assert "tree.child_out_of_range" in _codes(excinfo)
    assert amber.scan(bad).verdict == "unsafe"


class _EditedTree:
    """Pickles as a fitted tree's `Tree` with its node array edited by ``edit``."""

    def __init__(self, tree: Any, edit: Callable[[np.ndarray], None]) -> None:
        self.args = (tree.n_features, tree.n_classes, tree.n_outputs)
        self.state = tree.__getstate__()
        self.state["nodes"] = self.state["nodes"].copy()
        edit(self.state["nodes"])

    def __reduce__(self) -> Any:
        from sklearn.tree._tree import Tree

        return (Tree, self.args, self.state)


def _first_split(nodes: np.ndarray) -> int:
    return int(np.flatnonzero(nodes["left_child"] != -1)[0])


_NODE_EDITS: dict[str, Callable[[np.ndarray], None]] = {
    "tree.child_out_of_range": lambda n: n["left_child"].__setitem__(0, len(n) + 5),
    "tree.cycle": lambda n: n["right_child"].__setitem__(_first_split(n[1:]) + 1, 0),
    "tree.shared_node": lambda n: n["right_child"].__setitem__(0, n["left_child"][0]),
    "tree.feature_out_of_range": lambda n: n["feature"].__setitem__(0, 99),
}


@pytest.mark.parametrize("compress", [None, True])
@pytest.mark.parametrize("code", sorted(_NODE_EDITS))
def test_tree_nodes_checked_on_the_loaded_copy(tmp_path: Path, code: str, compress: Any) -> None:
    """A load that copies its arrays leaves the node walk of each tree to
    the copy of its node array, made on the pool while unpickling runs. The
    analysis before unpickling then passes the crafted tree, the copy refuses
    it before the unpickler gets it, and the load raises exactly what
    `amber.scan` reports (the file is analysed again, walking in place)."""
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.RandomState(0)
    X = rng.rand(3000, 4)
    model = DecisionTreeClassifier(random_state=0).fit(X, rng.randint(0, 2, len(X)))
    model.tree_ = _EditedTree(model.tree_, _NODE_EDITS[code])
    path = tmp_path / "bad.amber"
    amber.dump(model, path, compress=compress, protocol=5)

    reader = _amber.Reader.open(str(path))
    _, deferred, _ = reader.checked_pickle([], None, True)
    _, in_place, _ = reader.checked_pickle([], None, False)
    assert code in in_place
    assert code not in deferred and '"verdict":"safe"' in deferred.replace(" ", "")
    # The copies run the walk that was left to them.
    reader.checked_pickle([], None, True)
    sizes = reader.array_sizes()
    buffers = [np.empty(n, dtype=np.uint8) for n in sizes]
    with pytest.raises(_amber.ContentCheckError, match=code.replace(".", r"\.")):
        reader.start_copy_arrays_into(buffers).wait()

    with pytest.raises(amber.UnsafeModelError) as excinfo:
        amber.load(path)
    report = amber.scan(path)
    assert report.verdict == "unsafe"
    assert [(f.code, f.offset) for f in excinfo.value.findings] == [(f.code, f.offset) for f in report.findings]


@pytest.mark.parametrize("batch", [1, 1 << 20])
def test_forest_decoded_ahead_checks_each_tree_and_finds_damage(
    tmp_path: Path, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed forest is decoded ahead of the unpickler, batch after
    batch, by the pool and the waiting thread: it loads equal; a crafted
    tree in the middle is refused on its copy with what `amber.scan`
    reports; a damaged array in a later batch is named by the error. With
    one array per batch every batch is started ahead and shared between
    threads."""
    from sklearn.ensemble import RandomForestClassifier

    monkeypatch.setattr(amber._api, "_COPY_BATCH", batch)
    rng = np.random.RandomState(0)
    X = rng.rand(6000, 6)
    y = (X[:, 0] + rng.rand(6000) > 1).astype(int)  # noisy: trees of over 1,000 nodes
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    good = tmp_path / "good.amber"
    amber.dump(model, good, compress=True)
    np.testing.assert_array_equal(amber.load(good).predict_proba(X), model.predict_proba(X))

    edited = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    edited.estimators_[6].tree_ = _EditedTree(edited.estimators_[6].tree_, _NODE_EDITS["tree.cycle"])
    bad = tmp_path / "bad.amber"
    amber.dump(edited, bad, compress=True, protocol=5)
    with pytest.raises(amber.UnsafeModelError) as excinfo:
        amber.load(bad)
    report = amber.scan(bad)
    assert "tree.cycle" in _codes(excinfo)
    assert [(f.code, f.offset) for f in excinfo.value.findings] == [(f.code, f.offset) for f in report.findings]

    import zipfile

    with zipfile.ZipFile(good) as z:
        info = [i for i in z.infolist() if i.filename.endswith(".npyc")][-3]
    data = bytearray(good.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 3] ^= 0x10
    damaged = tmp_path / "damaged.amber"
    damaged.write_bytes(bytes(data))
    with pytest.raises(amber.ChecksumError, match=info.filename):
        amber.load(damaged)


def test_compressed_arrays_decoded_by_the_checks_are_handed_over(tmp_path: Path) -> None:
    """A safe load hands the unpickler the very bytes the content checks
    decoded (a sparse matrix's and a KD tree's arrays): equal, writable and
    the load's own, without decoding them a second time."""
    import scipy.sparse as sp
    from sklearn.neighbors import KDTree

    rng = np.random.default_rng(0)
    matrix = sp.random(2000, 3000, density=0.05, format="csr", random_state=0)
    X = rng.random((20000, 3))
    path = tmp_path / "checked.amber"
    amber.dump({"m": matrix, "t": KDTree(X)}, path, compress=True)
    reader = _amber.Reader.open(str(path))
    reader.checked_pickle([], None, True)
    decoded = reader.take_decoded()
    assert sum(d is not None for d in decoded) == len(decoded) == 4  # indptr, indices, data; the tree's
    assert not any(reader.take_decoded())  # given out once

    got = amber.load(path)
    assert (got["m"] != matrix).nnz == 0
    np.testing.assert_array_equal(got["t"].query(X[:50], k=3)[1], KDTree(X).query(X[:50], k=3)[1])
    assert got["m"].data.flags.writeable and got["m"].indices.flags.writeable
    got["m"].data[:] = 0
    assert (amber.load(path)["m"] != matrix).nnz == 0


@pytest.mark.parametrize("trusted", [None, True])
def test_compressed_arrays_load_equal_and_writable(tmp_path: Path, trusted: Any) -> None:
    """Arrays decoded for the checks are the arrays the load returns: equal,
    writable, independent of each other, and of the right size."""
    rng = np.random.default_rng(1)
    value = {
        "big": rng.integers(0, 50, size=(1 << 19,), dtype=np.int64),
        "small": [rng.random(7) for _ in range(300)],
        "empty": np.zeros((0, 3)),
        "plain": rng.random(5000),
    }
    path = tmp_path / "z.amber"
    amber.dump(value, path, compress=True)
    got = amber.load(path, trusted=trusted)
    np.testing.assert_array_equal(got["big"], value["big"])
    for a, b in zip(got["small"], value["small"]):
        np.testing.assert_array_equal(a, b)
    assert got["empty"].shape == (0, 3)
    np.testing.assert_array_equal(got["plain"], value["plain"])
    got["small"][0][:] = -1.0  # writable, and sharing no bytes with its neighbour
    np.testing.assert_array_equal(got["small"][1], value["small"][1])
    assert got["big"].flags.writeable


def test_an_analysis_started_ahead_serves_only_the_call_it_was_started_for(tmp_path):
    """`load` starts the analysis while it compares versions; the
    `checked_pickle` after it takes that result only for the same policy."""
    path = tmp_path / "ip.amber"
    amber.dump(ipaddress.IPv4Address("10.0.0.1"), path)
    reader = _amber.Reader.open(str(path), None)
    reader.start_checked_pickle(["ipaddress.IPv4Address"], True)
    _, report, _ = reader.checked_pickle([], None, True)
    assert json.loads(report)["verdict"] == "unsafe"
    reader.start_checked_pickle([], True)
    _, report, _ = reader.checked_pickle(["ipaddress.IPv4Address"], None, True)
    assert json.loads(report)["verdict"] == "safe"
    assert reader.accepted_globals() == ["ipaddress.IPv4Address"]
    reader.start_checked_pickle([], True)
    stream, report, _ = reader.checked_pickle([], None, True)
    assert json.loads(report)["verdict"] == "unsafe"
    assert reader.accepted_globals() is None
    assert stream[reader.stream_offset() :].startswith(b"\x80\x05")
    # A name the policy refuses is raised by the call that waits, as without a start.
    reader.start_checked_pickle(["no_dot"], True)
    with pytest.raises(ValueError, match="no_dot") as started:
        reader.checked_pickle(["no_dot"], None, True)
    with pytest.raises(ValueError, match="no_dot") as alone:
        reader.checked_pickle(["no_dot"], None, True)
    assert str(started.value) == str(alone.value)
    with pytest.raises(amber.UnsafeModelError):
        amber.load(path)
    assert amber.load(path, trusted=[ipaddress.IPv4Address]) == ipaddress.IPv4Address("10.0.0.1")
