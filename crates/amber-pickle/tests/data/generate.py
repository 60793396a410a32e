"""Generate the pickle fixtures used by `tests/it` (run from any directory).

Environment (the versions the fixtures were made with):

    python3 -m venv /tmp/pk-venv
    /tmp/pk-venv/bin/pip install numpy==2.4.6 scikit-learn==1.9.1 joblib==1.6.0
    /tmp/pk-venv/bin/python crates/amber-pickle/tests/data/generate.py

Writes, next to this script:

- `*.pkl` / `*.joblib`: the fixtures;
- `expected.txt`: for each fixture, what the Rust tests check — the opcode
  listing as `pickletools.genops` reads it, the globals `find_class` is
  asked for (canonicalised like CPython for protocols < 3, with counts, in
  order of first use), the out-of-band buffer count, a canonical rendering
  of plain values (`plain_render.txt`), and for the joblib file every array's data position as
  joblib wrote it.

Everything is deterministic for a given environment (fixed seeds, no
timestamps), so re-running yields the same bytes.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
import pickletools
import struct
import sys
from pathlib import Path

import joblib
import numpy as np
from joblib import numpy_pickle
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------
# Canonical value rendering, mirrored by `tests/it/value.rs`.
#   None N, bools T/F, int i<decimal>, float f<16 hex digits of the bits>,
#   str s<utf-8 hex>, bytes b<hex>, bytearray y<hex>, tuple (a,b),
#   list [a,b], dict {k:v,...} (OrderedDict o{...}), set <a,b>,
#   frozenset z<a,b>. Containers keep iteration (= pickling) order.
# --------------------------------------------------------------------------
def render(o: object) -> str:
    if o is None:
        return "N"
    if o is True:
        return "T"
    if o is False:
        return "F"
    if isinstance(o, int):
        return f"i{o}"
    if isinstance(o, float):
        return "f%016x" % struct.unpack("<Q", struct.pack("<d", o))[0]
    if isinstance(o, str):
        return "s" + o.encode("utf-8").hex()
    if isinstance(o, bytes):
        return "b" + o.hex()
    if isinstance(o, bytearray):
        return "y" + bytes(o).hex()
    if isinstance(o, tuple):
        return "(" + ",".join(render(x) for x in o) + ")"
    if isinstance(o, list):
        return "[" + ",".join(render(x) for x in o) + "]"
    if isinstance(o, collections.OrderedDict):
        return "o{" + ",".join(f"{render(k)}:{render(v)}" for k, v in o.items()) + "}"
    if isinstance(o, dict):
        return "{" + ",".join(f"{render(k)}:{render(v)}" for k, v in o.items()) + "}"
    if isinstance(o, frozenset):
        return "z<" + ",".join(render(x) for x in o) + ">"
    if isinstance(o, set):
        return "<" + ",".join(render(x) for x in o) + ">"
    raise TypeError(type(o))


def plain_value() -> dict:
    """Builtin values covering every scalar and container opcode."""
    return {
        "none": None,
        "bools": (True, False),
        "ints": [0, 1, -1, 255, 256, 65535, 65536, -(2**31), 2**31 - 1, 2**31, 2**63 - 1],
        "bigints": [2**63, -(2**63) - 1, 2**64, 2**100, -(2**100), 10**60],
        "floats": [0.0, -0.0, 1.5, -2.25e-10, 1e100, math.inf, -math.inf, 1 / 3],
        "strs": ["", "a", "line\nbreak", "back\\slash \\u0041", "caf\u00e9", "\u20ac \U0001f600", "x" * 300],
        "bytes": [b"", b"\x00\xff", bytes(range(256)), b"y" * 300],
        "bytearray": bytearray(b"ba\x00"),
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
        "dict": {1: "one", (2, 3): [4], "nested": {"k": {"k2": [[]]}}},
        "ordered": collections.OrderedDict([("z", 1), ("a", 2)]),
        "set": {1, 2, 3},
        "frozenset": frozenset({"a"}),
        "empty": [[], {}, set(), frozenset()],
        "long_list": list(range(1001)),  # APPENDS batches of 1000
    }


def shared_value() -> list:
    """Sharing and a cycle: checked structurally, not rendered."""
    inner = [1, 2]
    cyc: list = ["self"]
    cyc.append(cyc)
    return [inner, inner, cyc]


# --------------------------------------------------------------------------
# Facts checked by the Rust tests.
# --------------------------------------------------------------------------
def ops_listing(data: bytes) -> dict:
    """The opcodes as `pickletools.genops` reads them, compactly: the opcode
    bytes in hex and the offset gaps between consecutive opcodes."""
    ops = list(pickletools.genops(data))
    codes = "".join(f"{op.code.encode('latin-1')[0]:02x}" for op, _a, _p in ops)
    gaps = ",".join(str(b[2] - a[2]) for a, b in zip(ops, ops[1:]))
    return {"count": len(ops), "codes": codes, "gaps": gaps}


class RecordingUnpickler(pickle.Unpickler):
    """Records every `find_class` call (raw names, as the C unpickler passes them)."""

    def __init__(self, f, **kw):
        super().__init__(f, **kw)
        self.calls: list[tuple[str, str]] = []

    def find_class(self, module, name):
        self.calls.append((module, name))
        return super().find_class(module, name)


def canonical(module: str, name: str, proto: int) -> tuple[str, str]:
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def globals_used(data: bytes, proto: int, **load_kw) -> list[list]:
    u = RecordingUnpickler(io.BytesIO(data), **load_kw)
    u.load()
    out: dict[tuple[str, str], int] = {}
    for module, name in u.calls:
        key = canonical(module, name, proto)
        out[key] = out.get(key, 0) + 1
    return [[m, n, c] for (m, n), c in out.items()]


def to_text(expected: dict[str, dict]) -> str:
    """A line format the Rust tests parse without a JSON dependency:
    `[file]` sections of `key value...` lines."""
    lines = []
    for name in sorted(expected):
        e = expected[name]
        lines.append(f"[{name}]")
        lines.append(f"protocol {e['protocol']}")
        lines.append(f"len {e['len']}")
        if "ops" in e:
            lines.append(f"ops_count {e['ops']['count']}")
            lines.append(f"ops_codes {e['ops']['codes']}")
            lines.append(f"ops_gaps {e['ops']['gaps']}")
        for m, n, c in e.get("globals", []):
            lines.append(f"global {m} {n} {c}")
        if "buffers" in e:
            lines.append(f"buffers {e['buffers']}")
        for a in e.get("arrays", []):
            shape = ",".join(map(str, a["shape"]))
            if a["object"]:
                lines.append(f"array object shape={shape} start={a['nested_start']} end={a['nested_end']}")
            else:
                lines.append(
                    f"array raw shape={shape} padding={a['padding']} "
                    f"offset={a['data_offset']} len={a['data_len']}"
                )
        lines.append("")
    return "\n".join(lines)


def write(name: str, data: bytes) -> None:
    (HERE / name).write_bytes(data)


def joblib_many() -> bytes:
    """joblib 1.6 file of seventeen small arrays for the fast-path tests
    (dtypes, shapes of one to three dimensions and none, C and Fortran
    order, an object array, data after the arrays, an `OrderedDict`); the
    tests check it against the general path, so it has no expected entry."""
    rng = np.random.default_rng(5)
    arrays = {}
    for i in range(14):
        shape = [(3,), (2, 2), (1, 2, 2), (0,), (5,), (2, 3)][i % 6]
        dtype = ["<f8", "<i4", "|b1", "<u2", ">f4", "<i8", "<c16"][i % 7]
        a = (rng.random(shape) * 100).astype(dtype)
        if i % 5 == 3:
            a = np.asfortranarray(a)
        arrays[f"a{i}"] = a
    arrays["obj"] = np.array(["x", 1, None], dtype=object)
    arrays["after"] = np.arange(4.0)
    payload = {"arrays": arrays, "od": collections.OrderedDict(a=np.ones(2)),
               "s": np.float64(2.5), "tail": "end"}
    buf = io.BytesIO()
    joblib.dump(payload, buf)
    data = buf.getvalue()
    assert joblib.load(io.BytesIO(data))["tail"] == "end"
    return data


def main() -> None:
    expected: dict[str, dict] = {}

    def record(name: str, data: bytes, proto: int, **extra) -> None:
        write(name, data)
        entry = {
            "protocol": proto,
            "len": len(data),
            "ops": ops_listing(data),
            "globals": globals_used(data, proto, **extra.pop("load_kw", {})),
        }
        entry.update(extra)
        expected[name] = entry

    # Plain data, every protocol.
    value = plain_value()
    (HERE / "plain_render.txt").write_text(render(value) + "\n")
    for proto in range(6):
        data = pickle.dumps(value, protocol=proto)
        assert pickle.loads(data) == value
        record(f"plain_p{proto}.pkl", data, proto)
        shared = pickle.dumps(shared_value(), protocol=proto)
        record(f"shared_p{proto}.pkl", shared, proto)

    # Python-2-style names written by Python 3 (fix_imports) ...
    py2names = [set([1]), frozenset([2]), bytearray(b"x"), b"bytes", ValueError("boom"), range(3)]
    data = pickle.dumps(py2names, protocol=2)
    record("py2names_p2.pkl", data, 2)
    data = pickle.dumps(py2names, protocol=0)
    record("py2names_p0.pkl", data, 0)

    # ... and streams as Python 2 itself writes them (hand-written bytes:
    # STRING/BINSTRING/SHORT_BINSTRING, `exceptions`, `__builtin__`).
    py2_p0 = (
        b"(dp0\nS'a'\np1\nS'b\\n\\x00\\'q'\np2\nsS'exc'\np3\n"
        b"cexceptions\nValueError\np4\n(S'boom'\np5\ntp6\nRp7\n"
        b"sS'u'\np8\nVcaf\xe9 \\u20ac\np9\nsS'n'\np10\nI01\nsS'l'\np11\nL12345678901234567890L\ns."
    )
    py2_p2 = (
        b"\x80\x02}q\x00(U\x01aq\x01U\x02b\xffq\x02T\x03\x00\x00\x00cdeq\x03"
        b"c__builtin__\nxrange\nq\x04K\x00K\x03K\x01\x87q\x05Rq\x06u."
    )
    for name, data, proto in [("py2_p0.pkl", py2_p0, 0), ("py2_p2.pkl", py2_p2, 2)]:
        pickle.loads(data, encoding="latin1")  # valid for CPython
        record(name, data, proto, load_kw={"encoding": "latin1"})

    # scikit-learn models.
    X, y = load_iris(return_X_y=True)
    lr = LogisticRegression(max_iter=500).fit(X, y)
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
    for name, obj, proto in [
        ("sklearn_logreg_p5.pkl", lr, 5),
        ("sklearn_logreg_p0.pkl", lr, 0),
        ("sklearn_tree_p4.pkl", tree, 4),
        ("sklearn_tree_p2.pkl", tree, 2),
        ("sklearn_pipeline_p5.pkl", pipe, 5),
    ]:
        record(name, pickle.dumps(obj, protocol=proto), proto)

    # numpy arrays, in-band and out-of-band.
    arrays = {
        "i8": np.arange(10, dtype="<i8"),
        "f4_fortran": np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)),
        "structured": np.zeros(2, dtype=[("a", "<f8"), ("b", "<i4")]),
        "objects": np.array(["a", 1, None], dtype=object),
        "dates": np.array(["2020-01-01"], dtype="M8[D]"),
        "big_endian": np.arange(3, dtype=">u2"),
    }
    for proto in (2, 4, 5):
        record(f"numpy_p{proto}.pkl", pickle.dumps(arrays, protocol=proto), proto)
    buffers: list[pickle.PickleBuffer] = []
    oob = pickle.dumps(arrays, protocol=5, buffer_callback=buffers.append)
    raw = [bytes(b.raw()) for b in buffers]
    assert pickle.loads(oob, buffers=raw).keys() == arrays.keys()
    # find_class needs the buffers to load: record with them.
    u = RecordingUnpickler(io.BytesIO(oob), buffers=raw)
    u.load()
    write("numpy_oob_p5.pkl", oob)
    expected["numpy_oob_p5.pkl"] = {
        "protocol": 5,
        "len": len(oob),
        "ops": ops_listing(oob),
        "globals": [[m, n, c] for (m, n), c in collections.Counter(u.calls).items()],
        "buffers": len(raw),
    }

    # joblib 1.6, uncompressed: record where each array's bytes went.
    positions: list[dict] = []
    original = numpy_pickle.NumpyArrayWrapper.write_array

    def spying_write_array(self, array, pickler):
        before = pickler.file_handle.tell()
        original(self, array, pickler)
        after = pickler.file_handle.tell()
        positions.append({"start": before, "end": after, "object": bool(array.dtype.hasobject),
                          "shape": list(array.shape), "descr": array.dtype.descr[0][1] if array.dtype.names is None else "V"})

    numpy_pickle.NumpyArrayWrapper.write_array = spying_write_array
    try:
        payload = {"model": lr, "arrays": arrays, "text": "after arrays", "empty": np.zeros(0)}
        buf = io.BytesIO()
        joblib.dump(payload, buf)
        jl = buf.getvalue()
    finally:
        numpy_pickle.NumpyArrayWrapper.write_array = original
    loaded = joblib.load(io.BytesIO(jl))
    assert loaded["text"] == "after arrays"
    joblib_arrays = []
    for p in positions:
        if p["object"]:
            joblib_arrays.append({"object": True, "nested_start": p["start"], "nested_end": p["end"], "shape": p["shape"]})
        else:
            n = jl[p["start"]]
            joblib_arrays.append({
                "object": False,
                "shape": p["shape"],
                "padding": 1 + n,
                "data_offset": p["start"] + 1 + n,
                "data_len": p["end"] - (p["start"] + 1 + n),
            })
    write("joblib_dict.joblib", jl)
    write("joblib_many.joblib", joblib_many())
    expected["joblib_dict.joblib"] = {
        "protocol": pickle.DEFAULT_PROTOCOL,
        "len": len(jl),
        "arrays": joblib_arrays,
    }

    (HERE / "expected.txt").write_text(to_text(expected))
    total = sum(f.stat().st_size for f in HERE.iterdir() if f.is_file())
    print(f"wrote {len(expected)} fixtures, {total} bytes in {HERE} (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
