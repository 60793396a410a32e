"""Round-trip exactness of amber.dump/load and dumps/loads.

Covers NumPy arrays of every dtype family (numeric, bool, complex, datetime,
structured incl. nested/subarray/big-endian fields, strings), memory layouts
(C, Fortran, strided views, memmap input, 0-d, empty), the out-of-band
threshold, object arrays, ndarray subclasses (matrix, masked), shared
references; plain Python data and custom classes; scipy sparse containers;
every kind of target (str, Path, os.PathLike, file objects, BytesIO, bytes)
and the mmap modes (None, "r" read-only and sharing the file, "c"
copy-on-write that never reaches the file)."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import fractions
import hashlib
import io
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import amber
from amber._pickling import ARRAY_THRESHOLD

RNG_SEED = 12345


# --------------------------------------------------------------------------
# helpers


def n_arrays(data_or_path: Any) -> int:
    """How many array entries the file holds (i.e. arrays taken out of band)."""
    return sum(1 for e in amber.info(data_or_path)["entries"] if e["kind"] == "array")


def assert_same_array(expected: np.ndarray, got: Any) -> None:
    """Same type, dtype, shape and *bytes* (so NaN payloads, -0.0, NaT count)."""
    assert isinstance(got, np.ndarray)
    if expected.dtype.kind in "Mm" and not expected.dtype.isnative and expected.nbytes < ARRAY_THRESHOLD:
        # NumPy's own pickling of datetime arrays drops a non-native byte order
        # (plain pickle does the same); amber keeps small arrays in that pickle.
        expected = expected.astype(expected.dtype.newbyteorder("="))
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert got.shape == expected.shape
    if expected.dtype.hasobject:
        assert got.tolist() == expected.tolist()
    else:
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(expected).tobytes()


def random_array(dtype: np.dtype | str, n: int, seed: int = RNG_SEED) -> np.ndarray:
    """``n`` elements of ``dtype`` with random bit patterns where every pattern is valid."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=n).astype(dtype)
    if dtype.kind == "U":
        letters = np.array(list("abcdefghijé漢字🙂"))
        return np.array(["".join(rng.choice(letters, size=rng.integers(0, dtype.itemsize // 4 + 1))) for _ in range(n)], dtype=dtype)
    raw = rng.integers(0, 256, size=n * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype)


def roundtrip(obj: Any, how: str, tmp_path: Path, trusted: Any = None) -> Any:
    """Dumps and loads ``obj`` one of several ways."""
    path = tmp_path / "obj.amber"
    if how == "bytes":
        return amber.loads(amber.dumps(obj), trusted=trusted)
    amber.dump(obj, path)
    if how == "path":
        return amber.load(path, trusted=trusted)
    if how == "mmap_r":
        return amber.load(path, mmap_mode="r", trusted=trusted)
    if how == "mmap_c":
        return amber.load(path, mmap_mode="c", trusted=trusted)
    raise AssertionError(how)


HOWS = ["bytes", "path", "mmap_r", "mmap_c"]

DTYPES = [
    # integers of every width and both signs, both byte orders
    "i1", "u1", "<i2", ">i2", "<u2", ">u2", "<i4", ">i4", "<u4", ">u4", "<i8", ">i8", "<u8", ">u8",
    # floats and complex, including half and extended precision, both byte orders
    "<f2", ">f2", "<f4", ">f4", "<f8", ">f8", "g", "<c8", ">c8", "<c16", ">c16", "G",
    "?",
    # datetimes and timedeltas in several units
    "<M8[ns]", "<M8[us]", "<M8[D]", ">M8[s]", "<m8[ns]", "<m8[h]", ">m8[ms]",
    # fixed-width bytes, unicode, raw void
    "S1", "S17", "<U9", ">U3", "V12",
]


# --------------------------------------------------------------------------
# dtypes, small (inside the pickle) and large (out of band)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips_bit_exact(tmp_path, dtype, how) -> None:
    small = random_array(dtype, 7)
    large = random_array(dtype, ARRAY_THRESHOLD // np.dtype(dtype).itemsize + 3, seed=2)
    got = roundtrip({"small": small, "large": large}, how, tmp_path)
    assert_same_array(small, got["small"])
    assert_same_array(large, got["large"])


def test_dtype_cases_really_use_both_paths() -> None:
    """The large array of the dtype test goes out of band; the small one stays in the pickle."""
    data = amber.dumps({"small": random_array("f8", 7), "large": random_array("f8", ARRAY_THRESHOLD // 8 + 3)})
    assert n_arrays(data) == 1


def test_special_float_values_survive(tmp_path) -> None:
    values = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, np.finfo(np.float64).max])
    big = np.tile(values, ARRAY_THRESHOLD // values.nbytes + 1)
    for how in HOWS:
        got = roundtrip([values, big], how, tmp_path)
        assert_same_array(values, got[0])
        assert_same_array(big, got[1])
        assert np.signbit(got[1][4]) and not np.signbit(got[1][5])


def test_datetime_values_including_nat(tmp_path) -> None:
    times = np.array(["1970-01-01", "2262-04-11T23:47:16.854775807", "NaT", "1677-09-21T00:12:43.145224192"], dtype="M8[ns]")
    big = np.repeat(times, 5000)
    got = amber.load(Path(amber.dump(big, tmp_path / "t.amber")))
    assert_same_array(big, got)
    assert np.isnat(got[2 * 5000])


@pytest.mark.parametrize(
    "dtype",
    [
        np.dtype([("a", "<i4"), ("b", "<f8")]),
        np.dtype([("a", "<i4"), ("b", "<f8")], align=True),  # padding bytes
        np.dtype([("x", ">i8"), ("y", ">f4"), ("z", "<c8")]),  # big-endian fields
        np.dtype([("id", "<u4"), ("pos", [("x", "<f4"), ("y", "<f4"), ("tags", "S3", (2,))]), ("m", "<f8", (3, 2))]),
        np.dtype([("outer", [("inner", [("deep", "<i2", (4,))]), ("t", "<M8[us]")]), ("name", "<U5")]),
        np.dtype([("température", "<f4"), ("état", "?")]),  # Latin-1 names (npy 1.0 header)
        np.dtype([("温度", "<f4"), ("état", "?")]),  # non-Latin-1 names (npy 3.0 header)
    ],
    ids=["plain", "aligned", "big_endian", "nested_subarray", "deep_nesting", "latin1_names", "utf8_names"],
)
@pytest.mark.parametrize("how", HOWS)
def test_structured_dtypes(tmp_path, dtype, how) -> None:
    small = np.zeros(3, dtype=dtype)
    large = np.zeros(ARRAY_THRESHOLD // dtype.itemsize + 10, dtype=dtype)
    # Random 0/1 bytes are valid for every numeric, bool, bytes and datetime
    # field (padding included); unicode fields get real text.
    for arr, seed in ((small, 1), (large, 2)):
        raw = arr.view(np.uint8)
        raw[:] = np.random.default_rng(seed).integers(0, 2, size=raw.size, dtype=np.uint8)
        for name in dtype.names:
            if dtype.fields[name][0].kind == "U":
                arr[name] = "été"
    got = roundtrip((small, large), how, tmp_path)
    assert_same_array(small, got[0])
    assert_same_array(large, got[1])
    if how == "path":
        assert n_arrays(tmp_path / "obj.amber") == 1


def test_structured_subarray_field_values(tmp_path) -> None:
    dtype = np.dtype([("id", "<u4"), ("m", ">f8", (3, 2))])
    arr = np.zeros(20_000, dtype=dtype)
    arr["id"] = np.arange(arr.size)
    arr["m"] = np.arange(arr.size * 6, dtype=float).reshape(-1, 3, 2)
    got = amber.load(amber.dump(arr, tmp_path / "s.amber"), mmap_mode="r")
    assert got.dtype == dtype
    assert np.array_equal(got["id"], arr["id"])
    assert np.array_equal(got["m"], arr["m"])


# --------------------------------------------------------------------------
# the out-of-band threshold


@pytest.mark.parametrize(
    ("nbytes", "out_of_band"),
    [(ARRAY_THRESHOLD - 1, False), (ARRAY_THRESHOLD, True), (ARRAY_THRESHOLD + 1, True)],
    ids=["below", "at", "above"],
)
@pytest.mark.parametrize("how", HOWS)
def test_threshold(tmp_path, nbytes, out_of_band, how) -> None:
    arr = random_array("u1", nbytes)
    got = roundtrip(arr, how, tmp_path)
    assert_same_array(arr, got)
    assert n_arrays(amber.dumps(arr)) == int(out_of_band)


def test_threshold_counts_bytes_not_elements(tmp_path) -> None:
    per = ARRAY_THRESHOLD // 8
    below, at = np.arange(per - 1, dtype="f8"), np.arange(per, dtype="f8")
    assert n_arrays(amber.dumps(below)) == 0
    assert n_arrays(amber.dumps(at)) == 1


# --------------------------------------------------------------------------
# layouts


@pytest.mark.parametrize("how", HOWS)
def test_fortran_order_is_kept(tmp_path, how) -> None:
    arr = np.asfortranarray(random_array("<f8", 300 * 70).reshape(300, 70))
    got = roundtrip(arr, how, tmp_path)
    assert_same_array(arr, got)
    assert got.flags.f_contiguous and not got.flags.c_contiguous
    assert amber.info(amber.dumps(arr))["entries"][1]["order"] == "F"


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a[::3],
        lambda a: a[::-1],
        lambda a: a.reshape(300, 400)[:, 10:200],
        lambda a: a.reshape(300, 400)[::2, ::-3],
        lambda a: a.reshape(20, 30, 200).transpose(1, 0, 2),  # neither C nor F
        lambda a: a.reshape(300, 400).T[5:],  # a row slice of an F-ordered view: strided
    ],
    ids=["step", "reversed", "column_slice", "2d_strides", "transposed_3d", "transposed_slice"],
)
@pytest.mark.parametrize("how", HOWS)
def test_non_contiguous_views_come_back_c_contiguous(tmp_path, make, how) -> None:
    base = np.arange(120_000, dtype=np.float64)
    view = make(base)
    assert not view.flags.c_contiguous
    got = roundtrip(view, how, tmp_path)
    assert np.array_equal(got, view)
    assert got.dtype == view.dtype and got.shape == view.shape
    # Written as a contiguous block: C order unless the view happens to be F-contiguous.
    assert got.flags.c_contiguous or (view.flags.f_contiguous and got.flags.f_contiguous)


def test_memmap_input(tmp_path) -> None:
    source = np.memmap(tmp_path / "raw.dat", dtype="<i4", mode="w+", shape=(400, 100))
    source[:] = np.arange(40_000).reshape(400, 100)
    source.flush()
    for how in HOWS:
        got = roundtrip({"m": source, "slice": source[::7]}, how, tmp_path)
        assert isinstance(got["m"], np.ndarray)
        assert np.array_equal(got["m"], np.asarray(source))
        assert np.array_equal(got["slice"], np.asarray(source)[::7])
    assert n_arrays(amber.dumps(source)) == 1
    del source


@pytest.mark.parametrize(
    "arr",
    [
        np.array(3.5),
        np.array(-7, dtype=">i8"),
        np.array(b"abc"),
        np.array("héllo"),
        np.array(np.datetime64("2024-02-29T12:00", "m")),
        np.zeros((), dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
        np.array(None, dtype=object),
    ],
    ids=["float", "be_int", "bytes", "unicode", "datetime", "structured", "object"],
)
def test_zero_d_arrays(tmp_path, arr) -> None:
    for how in HOWS:
        got = roundtrip(arr, how, tmp_path)
        assert_same_array(arr, got)
        assert got.ndim == 0


@pytest.mark.parametrize(
    "arr",
    [
        np.empty(0),
        np.empty((0, 5), dtype=">i2"),
        np.asfortranarray(np.empty((3, 0, 4), dtype="c16")),
        np.empty((0,), dtype=[("a", "<i4"), ("b", "S2")]),
        np.empty((0, 0), dtype="M8[s]"),
    ],
    ids=["1d", "2d_be", "3d_fortran", "structured", "datetime"],
)
def test_empty_arrays(tmp_path, arr) -> None:
    for how in HOWS:
        got = roundtrip(arr, how, tmp_path)
        assert_same_array(arr, got)


# --------------------------------------------------------------------------
# object arrays and ndarray subclasses


def test_object_arrays_stay_in_the_pickle(tmp_path) -> None:
    arr = np.empty(20_000, dtype=object)  # 160 KB of pointers: above the threshold
    arr[:] = [{"k": i} if i % 3 == 0 else (str(i) if i % 3 == 1 else None) for i in range(arr.size)]
    assert arr.nbytes >= ARRAY_THRESHOLD
    data = amber.dumps(arr)
    assert n_arrays(data) == 0
    for how in HOWS:
        got = roundtrip(arr, how, tmp_path)
        assert got.dtype == object and got.tolist() == arr.tolist()


def test_structured_dtype_with_object_field_stays_in_the_pickle() -> None:
    arr = np.zeros(10_000, dtype=[("n", "<f8"), ("o", object)])
    arr["o"] = [str(i) for i in range(arr.size)]
    data = amber.dumps(arr)
    assert n_arrays(data) == 0
    got = amber.loads(data)
    assert got.dtype == arr.dtype and got["o"].tolist() == arr["o"].tolist()


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_numpy_matrix(tmp_path) -> None:
    mat = np.matrix(np.arange(200 * 100, dtype=float).reshape(200, 100))
    for how in HOWS:
        got = roundtrip(mat, how, tmp_path)
        assert type(got) is np.matrix
        assert np.array_equal(got, mat)
        assert (got * got.T).shape == (200, 200)  # still matrix semantics


def test_masked_array(tmp_path) -> None:
    data = np.arange(30_000, dtype=np.float64)
    masked = np.ma.masked_array(data, mask=(data % 7 == 0), fill_value=-1.0)
    for how in HOWS:
        got = roundtrip(masked, how, tmp_path)
        assert type(got) is np.ma.MaskedArray
        assert np.array_equal(got.data, masked.data)
        assert np.array_equal(got.mask, masked.mask)
        assert got.fill_value == -1.0
        assert got.sum() == masked.sum()


# --------------------------------------------------------------------------
# shared references and views


@pytest.mark.parametrize("how", HOWS)
def test_array_referenced_twice_is_one_object_stored_once(tmp_path, how) -> None:
    arr = random_array("<f8", 20_000)
    got = roundtrip([arr, arr, {"again": arr}], how, tmp_path)
    assert got[0] is got[1] is got[2]["again"]
    assert_same_array(arr, got[0])
    entries = amber.info(amber.dumps([arr, arr, {"again": arr}]))["entries"]
    assert [e["kind"] for e in entries] == ["pickle", "array"]
    assert entries[0]["buffers"] == 1


def test_views_sharing_a_base(tmp_path) -> None:
    """As with pickle, views are saved by value: equal values, independent arrays."""
    base = np.arange(100_000, dtype=np.int64)
    views = [base, base[10:], base[::2], base.reshape(100, 1000)[3], base.reshape(1000, 100)]
    for how in HOWS:
        got = roundtrip(views, how, tmp_path)
        for v, g in zip(views, got):
            assert_same_array(v, g)
    got = amber.loads(amber.dumps(views))
    got[0][11] = -1
    assert got[1][1] == 11  # not aliased to the loaded base


# --------------------------------------------------------------------------
# plain Python data and custom classes


@dataclass
class Point:
    x: float
    y: float
    tags: list[str] = field(default_factory=list)


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Slotted) and (self.a, self.b) == (other.a, other.b)


class WithState:
    """Custom __getstate__/__setstate__ holding an array."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.weights = np.arange(n, dtype=np.float32)
        self.cache = object()  # not saved

    def __getstate__(self) -> dict:
        return {"n": self.n, "weights": self.weights}

    def __setstate__(self, state: dict) -> None:
        self.n = state["n"]
        self.weights = state["weights"]
        self.cache = "rebuilt"


class Color(collections.namedtuple("Color", "r g b")):
    pass


def plain_data() -> dict[str, Any]:
    return {
        "dict": {"a": 1, 2: "b", (3, 4): [5], None: None, 1.5: True},
        "list": [1, "two", 3.0, [4, [5, [6]]]],
        "tuple": (1, (2, (3,)), ()),
        "set": {1, 2, "three", (4, 5)},
        "frozenset": frozenset({"x", "y"}),
        "str": "plain ascii, é, 漢字, 🙂, \x00 and \n",
        "empty_str": "",
        "bytes": bytes(range(256)),
        "bytearray": bytearray(b"\x00mutable\xff"),
        "big_ints": [2**64, -(2**64) - 1, 10**100, -(10**300), 0, -1],
        "floats": [0.1, -0.0, 1e308, 5e-324, math.pi, float("inf"), float("-inf")],
        "complex": [1 + 2j, complex("inf-0j")],
        "bools_none": [True, False, None],
        "datetime": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        "datetime_tz": dt.datetime(2001, 9, 9, 1, 46, 40, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        "date": dt.date(1, 1, 1),
        "time": dt.time(12, 30, 15, 250),
        "timedelta": dt.timedelta(days=-3, microseconds=7),
        "decimal": [decimal.Decimal("3.14159265358979323846264338327950288"), decimal.Decimal("-0.000"), decimal.Decimal("Infinity")],
        "fraction": fractions.Fraction(22, 7),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "ordered": collections.OrderedDict([("z", 1), ("a", 2), ("m", 3)]),
        "defaultdict": collections.defaultdict(list, {"k": [1]}),
        "counter": collections.Counter("mississippi"),
        "deque": collections.deque([1, 2, 3], maxlen=5),
        "range": range(3, 30, 4),
        "slice": slice(1, None, -2),
        "path": Path("/some/where.txt"),
        "numpy_scalars": [np.float32(1.5), np.int8(-3), np.uint64(2**64 - 1), np.bool_(True), np.datetime64("2020-01-01"), np.complex64(1j)],
        "dtype": np.dtype([("a", ">i4"), ("b", "U3")]),
        "point": Point(1.0, -2.5, ["a", "b"]),
        "slotted": Slotted([1], {"b": 2}),
        "color": Color(1, 2, 3),
        "type": Point,
        "builtin_func": len,
        "ellipsis": ...,
    }


@pytest.mark.parametrize("how", HOWS)
def test_plain_data(tmp_path, how) -> None:
    data = plain_data()
    # The test's own classes and a builtin function are not model data: trusted by name.
    got = roundtrip(data, how, tmp_path, trusted=[Point, Slotted, Color, len])
    assert got.keys() == data.keys()
    for key, value in data.items():
        assert got[key] == value, key
        assert type(got[key]) is type(value), key
    assert got["ordered"].popitem(last=False) == ("z", 1)  # order kept
    assert got["defaultdict"]["new"] == []  # default_factory kept
    assert got["deque"].maxlen == 5


def test_nan_float_round_trips() -> None:
    got = amber.loads(amber.dumps([float("nan"), np.float64("nan")]))
    assert math.isnan(got[0]) and np.isnan(got[1])


def test_object_with_custom_state_and_cycles(tmp_path) -> None:
    obj = WithState(50_000)  # the float32 weights are 200 KB: out of band
    cycle: list[Any] = [obj]
    cycle.append(cycle)
    shared = {"x": 1}
    data = {"cycle": cycle, "a": shared, "b": shared}
    got = amber.load(amber.dump(data, tmp_path / "c.amber"), trusted=[WithState])
    assert got["cycle"][1] is got["cycle"]
    assert got["a"] is got["b"]
    restored = got["cycle"][0]
    assert isinstance(restored, WithState) and restored.cache == "rebuilt"
    assert np.array_equal(restored.weights, obj.weights)
    assert n_arrays(tmp_path / "c.amber") == 1


def test_deep_nesting() -> None:
    nested: Any = []
    for i in range(200):
        nested = [nested, i] if i % 2 else {"k": nested}
    assert amber.loads(amber.dumps(nested)) == nested


# --------------------------------------------------------------------------
# scipy sparse


SPARSE_FORMATS = ["csr", "csc", "coo", "bsr", "lil", "dok", "dia"]


@pytest.mark.parametrize("container", ["matrix", "array"])
@pytest.mark.parametrize("fmt", SPARSE_FORMATS)
@pytest.mark.parametrize("size", ["small", "large"])
def test_scipy_sparse(tmp_path, container, fmt, size) -> None:
    shape, density = ((30, 20), 0.1) if size == "small" else ((400, 300), 0.2)
    base = sp.random(*shape, density=density, format="csr", random_state=7, dtype=np.float64)
    if fmt == "dia":
        # A banded matrix: few diagonals, so DIA is a sensible format for it.
        dense = np.arange(1.0, shape[0] * shape[1] + 1).reshape(shape)
        base = sp.csr_matrix(np.triu(np.tril(dense, 1), -2))
    build = getattr(sp, f"{fmt}_{container}")
    original = build(base)
    for how in ("bytes", "path", "mmap_r"):
        got = roundtrip(original, how, tmp_path)
        assert type(got) is type(original)
        assert got.format == original.format
        assert got.shape == original.shape and got.dtype == original.dtype
        assert np.array_equal(got.toarray(), original.toarray())
        if fmt in ("csr", "csc", "bsr"):
            assert np.array_equal(got.indices, original.indices)
            assert np.array_equal(got.indptr, original.indptr)
    if size == "large" and fmt in ("csr", "csc", "coo"):
        assert n_arrays(amber.dumps(original)) >= 2  # data and indices out of band


def test_sparse_mmap_gives_read_only_views_that_compute(tmp_path) -> None:
    mat = sp.random(2_000, 500, density=0.05, format="csr", random_state=1)
    path = amber.dump(mat, tmp_path / "s.amber")
    got = amber.load(path, mmap_mode="r")
    assert not got.data.flags.writeable
    vec = np.arange(500, dtype=float)
    assert np.allclose(got @ vec, mat @ vec)


# --------------------------------------------------------------------------
# targets: paths, path-likes, file objects, bytes


class CustomPathLike:
    """A minimal os.PathLike that is not a pathlib.Path."""

    def __init__(self, path: Path) -> None:
        self._path = str(path)

    def __fspath__(self) -> str:
        return self._path


@pytest.fixture
def sample() -> dict[str, Any]:
    return {
        "weights": random_array("<f8", 50_000),
        "ints": np.arange(30_000, dtype=">i4").reshape(100, 300),
        "small": np.arange(5),
        "label": "model",
    }


def assert_sample(expected: dict, got: dict) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            assert_same_array(value, got[key])
        else:
            assert got[key] == value


def test_dump_returns_the_path_as_str(tmp_path, sample) -> None:
    target = tmp_path / "m.amber"
    for spelling in (str(target), target, CustomPathLike(target)):
        result = amber.dump(sample, spelling)
        assert isinstance(result, str) and result == str(target)
        assert_sample(sample, amber.load(spelling))


def test_str_path_and_pathlib_and_custom_pathlike_are_interchangeable(tmp_path, sample) -> None:
    a, b, c = tmp_path / "a.amber", tmp_path / "b.amber", tmp_path / "c.amber"
    amber.dump(sample, str(a))
    amber.dump(sample, b)
    amber.dump(sample, CustomPathLike(c))
    for writer_path in (a, b, c):
        for reader in (str, Path, CustomPathLike):
            assert_sample(sample, amber.load(reader(writer_path)))
            assert_sample(sample, amber.load(reader(writer_path), mmap_mode="r"))


def test_relative_path_in_current_directory(tmp_path, sample, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    amber.dump(sample, "rel.amber")
    assert (tmp_path / "rel.amber").exists()
    assert_sample(sample, amber.load("rel.amber", mmap_mode="r"))


def test_bytes_as_dump_target_is_a_type_error(tmp_path, sample) -> None:
    """``bytes`` is file content for amber (``loads``), never a path: dump refuses it."""
    with pytest.raises(TypeError, match="path or a binary file object"):
        amber.dump(sample, os.fsencode(tmp_path / "b.amber"))
    assert not (tmp_path / "b.amber").exists()


def test_open_file_objects(tmp_path, sample) -> None:
    target = tmp_path / "f.amber"
    with open(target, "wb") as f:
        assert amber.dump(sample, f) is None
    assert_sample(sample, amber.load(target))  # what went through the file object is a real file
    with open(target, "rb") as f:
        assert_sample(sample, amber.load(f))
    with open(target, "rb", buffering=0) as f:
        assert_sample(sample, amber.load(f))


def test_file_object_at_an_offset(tmp_path, sample) -> None:
    """Writing appends at the current position; reading starts at the current position."""
    target = tmp_path / "offset.bin"
    with open(target, "wb") as f:
        f.write(b"HEADER--")
        amber.dump(sample, f)
        end = f.tell()
    assert end == os.path.getsize(target)
    with open(target, "rb") as f:
        assert f.read(8) == b"HEADER--"
        assert_sample(sample, amber.load(f))


def test_bytesio(sample) -> None:
    buffer = io.BytesIO()
    assert amber.dump(sample, buffer) is None
    assert buffer.getvalue()[:4] == b"PK\x03\x04"
    assert_sample(sample, amber.load(io.BytesIO(buffer.getvalue())))
    buffer.seek(0)
    assert_sample(sample, amber.load(buffer))


def test_dumps_loads_and_bytes_like_inputs(sample) -> None:
    data = amber.dumps(sample)
    assert isinstance(data, bytes)
    for form in (data, bytearray(data), memoryview(data)):
        assert_sample(sample, amber.loads(form))


def test_dump_and_dumps_write_the_same_container(tmp_path, sample) -> None:
    """Apart from the creation time, a path, a file object and dumps give the same bytes."""
    amber.dump(sample, tmp_path / "p.amber")
    buffer = io.BytesIO()
    amber.dump(sample, buffer)
    data = amber.dumps(sample)
    on_disk = (tmp_path / "p.amber").read_bytes()
    assert len(on_disk) == len(buffer.getvalue()) == len(data)
    manifest_start = data.rindex(b"PK\x03\x04")
    assert on_disk[:manifest_start] == buffer.getvalue()[:manifest_start] == data[:manifest_start]


def test_mmap_mode_with_a_file_object_warns_and_loads(tmp_path, sample) -> None:
    amber.dump(sample, tmp_path / "w.amber")
    with open(tmp_path / "w.amber", "rb") as f:
        with pytest.warns(UserWarning, match="needs a path"):
            got = amber.load(f, mmap_mode="r")
    assert_sample(sample, got)


# --------------------------------------------------------------------------
# mmap modes


def mapped_file_of(arr: np.ndarray) -> str | None:
    """The file backing the memory at ``arr``'s data pointer (Linux /proc/self/maps)."""
    address = arr.ctypes.data
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if start <= address < end:
                return parts[5].strip() if len(parts) == 6 else ""
    return None


needs_proc_maps = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mmap_none_gives_writable_private_arrays(tmp_path, sample) -> None:
    path = tmp_path / "n.amber"
    amber.dump(sample, path)
    before = digest(path)
    got = amber.load(path)
    assert got["weights"].flags.writeable
    got["weights"][:] = 0
    assert digest(path) == before
    assert_sample(sample, amber.load(path))


@needs_proc_maps
def test_mmap_r_arrays_are_read_only_views_of_the_file(tmp_path, sample) -> None:
    path = tmp_path / "r.amber"
    amber.dump(sample, path)
    got = amber.load(path, mmap_mode="r")
    assert_sample(sample, got)
    for key in ("weights", "ints"):
        arr = got[key]
        assert not arr.flags.writeable
        assert not arr.flags.owndata
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1
        with pytest.raises(ValueError):
            arr.setflags(write=True)
        assert mapped_file_of(arr) == str(path.resolve())
    # Small arrays inside the pickle are ordinary arrays.
    assert np.array_equal(got["small"], sample["small"])


@needs_proc_maps
def test_mmap_c_arrays_are_writable_and_changes_never_reach_the_file(tmp_path, sample) -> None:
    path = tmp_path / "c.amber"
    amber.dump(sample, path)
    before = digest(path)
    got = amber.load(path, mmap_mode="c")
    arr = got["weights"]
    assert arr.flags.writeable
    assert mapped_file_of(arr) == str(path.resolve())
    arr[:] = -1.0
    got["ints"][0, 0] = 7
    assert (arr == -1.0).all()
    # Neither the bytes on disk nor a second mapping see the change.
    assert digest(path) == before
    other = amber.load(path, mmap_mode="r")
    assert_sample(sample, other)
    amber.verify(path)


def test_mapped_arrays_outlive_the_loaded_object(tmp_path) -> None:
    path = tmp_path / "keep.amber"
    amber.dump({"a": np.arange(100_000.0)}, path)
    arr = amber.load(path, mmap_mode="r")["a"]
    import gc

    gc.collect()
    assert arr.sum() == np.arange(100_000.0).sum()


@pytest.mark.parametrize("mode", ["r+", "w+"])
def test_writing_mmap_modes_are_refused_with_a_reason(tmp_path, mode) -> None:
    path = tmp_path / "m.amber"
    amber.dump({"a": np.arange(100_000.0)}, path)
    before = digest(path)
    with pytest.raises(ValueError, match="in place") as caught:
        amber.load(path, mmap_mode=mode)
    assert repr(mode) in str(caught.value)
    assert "mmap_mode='c'" in str(caught.value)  # tells the user what to use instead
    assert digest(path) == before


@pytest.mark.parametrize("compress", [0, 3])
def test_background_array_copies_finish_before_their_buffers_are_released(tmp_path: Path, compress: int) -> None:
    # Loads copy the next batch of arrays on the pool while unpickling; a copy
    # whose handle is dropped unwaited (an unpickler that failed midway) must
    # still finish into its buffers, and a handle is waited for once.
    from amber import _amber

    arrays = [np.arange(n, dtype=np.float64) * (i + 1) for i, n in enumerate((9_000, 70_000, 300_000))]
    assert all(a.nbytes >= ARRAY_THRESHOLD for a in arrays)
    path = tmp_path / "m.amber"
    amber.dump(arrays, path, compress=compress)
    reader = _amber.Reader.open(str(path), None, threads=None)
    assert len(reader.array_sizes()) == len(arrays)
    buffers = [np.empty(n, dtype=np.uint8) for n in reader.array_sizes()]
    pending = reader.start_copy_arrays_into(buffers)
    del pending
    for buffer, expected in zip(buffers, arrays):
        assert bytes(buffer) == expected.tobytes()
    again = [np.zeros(n, dtype=np.uint8) for n in reader.array_sizes()]
    pending = reader.start_copy_arrays_into(again)
    pending.wait()
    with pytest.raises(ValueError, match="already waited"):
        pending.wait()
    assert [bytes(b) for b in again] == [a.tobytes() for a in arrays]


@pytest.mark.parametrize("kind", ["amber", "amber_trusted", "joblib", "joblib_trusted"])
def test_no_unpickler_outlives_the_collection_pause(tmp_path: Path, kind: str) -> None:
    # The unpickler's memo holds every memoized object of the stream. If the
    # unpickler were still alive when the paused collector resumes, the first
    # collection would walk all of them again, for nothing.
    import gc

    import joblib

    from amber import _pickling

    value = {f"k{i}": [np.arange(i % 7 + 3, dtype=np.float64), [i]] for i in range(3000)}
    path = tmp_path / "many.bin"
    if kind.startswith("joblib"):
        joblib.dump(value, path)
    else:
        amber.dump(value, path)
    # (objects in the youngest generation, unpicklers among them) at each collection
    seen: list[tuple[int, int]] = []

    def watch(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            young = gc.get_objects(0)
            seen.append((len(young), sum(isinstance(o, _pickling.Unpickler) for o in young)))

    was = gc.isenabled()
    gc.enable()
    gc.collect()
    gc.callbacks.append(watch)
    try:
        loaded = amber.load(path, trusted=True if kind.endswith("trusted") else None)
        # A few allocations are enough for the collector to notice the
        # thousands of objects the load left in the youngest generation.
        for _ in range(2000):
            [()]  # noqa: B018
    finally:
        gc.callbacks.remove(watch)
        if not was:
            gc.disable()
    # Collections before the pause see few young objects; the one after it
    # sees the lists the load made (two per item).
    after = [unpicklers for young, unpicklers in seen if young >= len(value)]
    assert after, f"no collection ran after the load: {seen}"
    assert after == [0] * len(after)
    assert loaded.keys() == value.keys() and np.array_equal(loaded["k5"][0], value["k5"][0])
