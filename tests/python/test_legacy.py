"""Opening pickle and joblib files amber did not write, and converting them.

joblib's own test data (shipped in its wheel), fresh joblib 1.6 dumps with
every compressor and protocol, pre-0.10 multi-file dumps, real scikit-learn
models, memory mapping, damaged files and ``amber convert``.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import subprocess
import sys
import json
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

import amber
from amber import _amber
from amber._convert import compare

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")

DATA = Path(joblib.__file__).parent / "test" / "data"
FIXTURES = sorted(
    p for p in DATA.iterdir() if p.name.startswith("joblib_") and ".npy" not in p.name
)

#: What every file in joblib's test data holds (joblib's create_numpy_pickle.py).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    MATRIX = np.matrix([0, 1, 2], dtype="<i8")
EXPECTED = [
    np.arange(5, dtype="<i8"),
    np.arange(5, dtype="<f8"),
    np.array([1, "abc", {"a": 1, "b": 2}], dtype="O"),
    np.arange(256, dtype=np.uint8).tobytes(),
    MATRIX,
    "C'est l'\xe9t\xe9 !",
]


def joblib_load(path: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return joblib.load(path, **kwargs)


def assert_same(a: Any, b: Any) -> None:
    """Recursive equality; arrays equal in type, dtype, shape, memory order and values."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), type(b)
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        assert a.flags.f_contiguous == b.flags.f_contiguous and a.flags.c_contiguous == b.flags.c_contiguous
        if a.dtype.hasobject:
            for x, y in zip(a.ravel(), b.ravel()):
                assert_same(x, y)
        else:
            np.testing.assert_array_equal(a, b)
        return
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_joblib_ships_the_test_data_we_expect() -> None:
    assert len([p for p in DATA.iterdir() if p.is_file()]) >= 65
    assert len(FIXTURES) == 42


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_every_file_of_joblibs_test_data(path: Path) -> None:
    got = amber.load(path)
    # np.matrix comes back as np.matrix (joblib 1.6 under NumPy 2 drops it to ndarray).
    assert type(got[4]) is np.matrix
    if "py27" in path.name:
        # joblib refuses Python 2 files; amber reads them with latin-1 strings, as Python 2 meant.
        with pytest.raises(ValueError, match="python 2"):
            joblib_load(path)
        expected = list(EXPECTED)
        expected[3] = EXPECTED[3].decode("latin1")
        assert_same(got, expected)
        return
    reference = joblib_load(path)
    reference[4] = np.asmatrix(reference[4])
    assert_same(got, reference)
    assert_same(got, EXPECTED)


@pytest.mark.parametrize(
    "content",
    [b"", b"N", b"N.", b"\x80\x05N.", pickle.dumps({"a": 1}, protocol=2), b"PK\x03\x04" + bytes(40),
     gzip.compress(b"x" * 100), b"ZF" + bytes(30), b"\x00" * 15 + b".", b"hello world, not a pickle"],
    ids=lambda c: repr(c[:6]),
)
def test_sniffing_a_path_reads_what_sniffing_its_bytes_reads(tmp_path: Path, content: bytes) -> None:
    # Loads sniff paths in Rust (first 16 bytes and the last one); the verdict
    # must be the one the bytes themselves get.
    path = tmp_path / "f"
    path.write_bytes(content)
    head = content[:16] + content[-1:] if content else b""
    expected = bool(head) and _amber.is_legacy(head)
    assert _amber.is_legacy_path(str(path)) is expected
    assert amber._legacy.is_legacy(content) is expected
    assert amber._legacy.is_legacy(str(path)) is expected
    assert _amber.is_legacy_path(str(tmp_path)) is False  # a directory
    assert _amber.is_legacy_path(str(tmp_path / "missing")) is False


def test_old_uncompressed_files_with_mmap_copy_unaligned_arrays() -> None:
    path = DATA / "joblib_0.11.0_pickle_py36_np111.pkl"
    with pytest.warns(UserWarning, match="not aligned"):
        got = amber.load(path, mmap_mode="r")
    assert_same(got[:2], EXPECTED[:2])


def sample() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "i8": np.arange(1000, dtype="<i8"),
        "f32": rng.normal(size=(37, 11)).astype(np.float32),
        "fortran": np.asfortranarray(rng.normal(size=(20, 7))),
        "u8_odd": np.arange(13, dtype=np.uint8),
        "big_endian": np.arange(9, dtype=">i4"),
        "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
        "objects": np.array([1, "x", None, {"k": (1, 2)}], dtype=object),
        "matrix": np.matrix([[1, 2], [3, 4]]),
        "empty": np.zeros((0, 3)),
        "scalar": np.float64(2.5),
        "nested": [np.arange(3), (np.ones(2, dtype=bool), "s")],
        "text": "été",
        "raw": b"\x00\xff",
    }


def expected_from_joblib(path: Path) -> Any:
    ref = joblib_load(path)
    ref["matrix"] = np.asmatrix(ref["matrix"])  # joblib drops np.matrix under NumPy 2
    return ref


CODECS = ["zlib", "gzip", "bz2", "lzma", "xz"]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_fresh_joblib_dumps_every_protocol(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(sample(), path, protocol=protocol)
    got = amber.load(path)
    assert type(got["matrix"]) is np.matrix
    assert_same(got, expected_from_joblib(path))
    assert got["big_endian"].dtype == np.dtype("<i4")  # native, as joblib gives
    info = amber.info(path)
    assert info["format"] == "joblib" and info["compression"] is None
    assert info["arrays"] == 11 and info["object_arrays"] == 1


@pytest.mark.parametrize("codec", CODECS)
def test_fresh_joblib_dumps_every_compressor(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "m.bin"  # the name says nothing: detection is by content
    joblib.dump(sample(), path, compress=(codec, 3))
    assert_same(amber.load(path), expected_from_joblib(path))
    with open(path, "rb") as f:
        assert_same(amber.load(f), expected_from_joblib(path))
    assert_same(amber.loads(path.read_bytes()), expected_from_joblib(path))
    assert amber.info(path)["compression"] == codec
    with pytest.warns(UserWarning, match="cannot map a compressed file"):
        amber.load(path, mmap_mode="r")


def test_lz4(tmp_path: Path) -> None:
    pytest.importorskip("lz4", reason="the lz4 package is not installed (Rust tests cover lz4 frames)")
    path = tmp_path / "m.bin"
    joblib.dump(sample(), path, compress=("lz4", 3))
    assert_same(amber.load(path), expected_from_joblib(path))


def test_plain_pickles_and_python2_pickles() -> None:
    value = {"a": [1, 2.5, "x"], "arr": np.arange(4.0), "m": np.matrix([[1.0]])}
    for protocol in range(6):
        data = pickle.dumps(value, protocol=protocol)
        got = amber.loads(data)
        assert_same(got, value)
        assert amber.info(data)["format"] == "pickle"
        assert amber.info(data)["protocol"] == protocol
    # A Python 2 protocol-2 pickle: a `str` (latin-1) and `__builtin__`/`copy_reg` names.
    py2 = (
        b"\x80\x02}q\x00(U\x01aq\x01U\x03\xe9t\xe9q\x02U\x01sq\x03c__builtin__\nset\nq\x04]q\x05K\x01a\x85q\x06Rq\x07u."
    )
    got = amber.loads(py2)
    assert got == {"a": "\xe9t\xe9", "s": {1}}
    assert amber.info(py2)["python2"] is True


def test_numpy_array_pickled_by_python2() -> None:
    # Python 2.7 / NumPy 1.x: pickle.dumps(np.arange(3, dtype='<i4'), 2)
    py2 = (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87Rq\x03"
        b"(K\x01K\x03\x85cnumpy\ndtype\nq\x04U\x02i4K\x00K\x01\x87Rq\x05(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff"
        b"\xff\xffK\x00tb\x89U\x0c\x00\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00tb."
    )
    got = amber.loads(py2)
    assert_same(got, np.arange(3, dtype="<i4"))


def test_mmap_shares_the_files_pages_where_aligned(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    data = {"a": np.arange(10_000, dtype=np.float64), "b": np.arange(7, dtype=np.uint8), "o": np.array([None])}
    joblib.dump(data, path)
    got = amber.load(path, mmap_mode="r")
    for key in ("a", "b"):
        arr = got[key]
        assert not arr.flags.writeable and arr.flags.aligned
        assert arr.ctypes.data % 16 == 0  # joblib >= 1.2 pads to 16 bytes in the file
        assert isinstance(arr.base, memoryview) or arr.base is not None
        np.testing.assert_array_equal(arr, data[key])
    # The pages are the file's: the bytes at the array's address are the file's bytes at its offset.
    raw = path.read_bytes()
    offset = raw.index(data["a"].tobytes())
    assert offset % 16 == 0
    assert bytes(memoryview(got["a"]).cast("B")[:64]) == raw[offset : offset + 64]
    # Without mmap_mode the arrays are private, writable copies.
    copy = amber.load(path)
    assert copy["a"].flags.writeable
    assert not np.shares_memory(copy["a"], got["a"])


def test_mmap_view_outlives_everything_else(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(np.arange(1000.0), path)
    arr = amber.load(path, mmap_mode="r")
    import gc

    gc.collect()
    assert arr.sum() == 499500.0


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(n_samples=300, n_features=8, random_state=0)
    return {
        "X": X,
        "forest": RandomForestClassifier(n_estimators=15, random_state=0).fit(X, y),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y),
    }


@pytest.mark.parametrize("name", ["forest", "pipeline"])
@pytest.mark.parametrize("compress", [0, 3])
def test_scikit_learn_models(tmp_path: Path, models: dict[str, Any], name: str, compress: int) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(models[name], path, compress=compress)
    got = amber.load(path)
    X = models["X"]
    np.testing.assert_array_equal(got.predict(X), models[name].predict(X))
    np.testing.assert_array_equal(got.predict_proba(X), models[name].predict_proba(X))
    if not compress:
        mapped = amber.load(path, mmap_mode="r")
        np.testing.assert_array_equal(mapped.predict(X), models[name].predict(X))
    compare(got, joblib_load(path))


def test_sklearn_externals_joblib_class_paths() -> None:
    buf = io.BytesIO()
    joblib.dump({"a": np.arange(6, dtype="<i8")}, buf, protocol=2)
    raw = buf.getvalue().replace(b"joblib.numpy_pickle", b"sklearn.externals.joblib.numpy_pickle")
    got = amber.loads(raw)
    assert_same(got, {"a": np.arange(6, dtype="<i8")})


def multi_file(tmp_path: Path, source: str = "joblib_0.9.2_pickle_py35_np19.pkl") -> Path:
    for p in DATA.iterdir():
        if p.name.startswith(source):
            shutil.copy(p, tmp_path / p.name)
    return tmp_path / source


def test_pre_010_companion_files_are_mapped(tmp_path: Path) -> None:
    path = multi_file(tmp_path)
    got = amber.load(path, mmap_mode="r")
    assert not got[0].flags.writeable
    assert_same(got[0], EXPECTED[0])
    assert amber.info(path)["companions"] == [f"{path.name}_0{i}.npy" for i in range(1, 5)]


def test_companion_names_must_be_bare_file_names(tmp_path: Path) -> None:
    path = multi_file(tmp_path)
    raw = path.read_bytes()
    name = path.name + "_01.npy"
    sub = tmp_path / "sub"
    sub.mkdir()
    evil = sub / path.name
    # Same length, so the pickle's length fields stay right: "../" + name minus 3 chars.
    escaped = ("../" + name[3:]).encode()
    shutil.copy(tmp_path / name, tmp_path / name[3:])
    evil.write_bytes(raw.replace(name.encode(), escaped, 1))
    with pytest.raises(amber.CompanionFileError, match="bare file name") as e:
        amber.load(evil)
    assert e.value.code == "legacy.companion_name"
    assert isinstance(e.value, amber.FormatError)


def test_missing_companion_file(tmp_path: Path) -> None:
    path = multi_file(tmp_path)
    os.remove(str(path) + "_02.npy")
    with pytest.raises(amber.CompanionFileError, match="_02.npy") as e:
        amber.load(path)
    assert e.value.code == "legacy.companion_missing"
    with pytest.raises(amber.CompanionFileError, match="open it by path") as e:
        amber.loads(path.read_bytes())
    assert e.value.code == "legacy.companion_needs_directory"


def dumped(tmp_path: Path, codec: str | None) -> bytes:
    path = tmp_path / f"m.{codec}"
    joblib.dump({"a": np.arange(20_000, dtype=np.float64)}, path, compress=(codec, 3) if codec else 0)
    return path.read_bytes()


@pytest.mark.parametrize("codec", ["zlib", "gzip", "bz2", "xz", "lzma"])
@pytest.mark.parametrize("cut", [1, 8, 0.5])
def test_truncated_compressed_files_are_refused(tmp_path: Path, codec: str, cut: float) -> None:
    raw = dumped(tmp_path, codec)
    n = int(len(raw) * cut) if isinstance(cut, float) else cut
    damaged = raw[: len(raw) - n]
    if codec in ("zlib", "gzip") and cut == 1:
        # joblib loads this without a word; amber does not.
        joblib_load(io.BytesIO(damaged))
    with pytest.raises(amber.CompressedStreamError) as e:
        amber.loads(damaged)
    assert e.value.code in ("legacy.truncated", "legacy.corrupt")
    assert codec in str(e.value)


@pytest.mark.parametrize("codec", ["zlib", "gzip", "bz2", "xz"])
def test_corrupt_compressed_files_are_refused(tmp_path: Path, codec: str) -> None:
    raw = bytearray(dumped(tmp_path, codec))
    for i in range(len(raw) // 2, len(raw) // 2 + 8):
        raw[i] ^= 0x5A
    with pytest.raises(amber.FormatError) as e:
        amber.loads(bytes(raw))
    assert e.value.code.startswith("legacy.")


def test_wrong_declared_array_size_is_refused(tmp_path: Path) -> None:
    raw = dumped(tmp_path, None)
    # shape (20000,) is `M` 20000 (BININT2): claim 40000 elements.
    marker = b"M" + (20_000).to_bytes(2, "little")
    assert raw.count(marker) == 1
    damaged = raw.replace(marker, b"M" + (40_000).to_bytes(2, "little"))
    with pytest.raises(amber.LegacyFormatError, match="declares 320000 bytes") as e:
        amber.loads(damaged)
    assert e.value.code == "legacy.array_size"


def test_not_a_pickle() -> None:
    # Neither amber nor pickle/joblib: the amber reader says what it is.
    with pytest.raises(amber.FormatError) as e:
        amber.loads(b"\x01\x02garbage")
    assert e.value.code == "format.not_amber"
    # Looks like a pickle (PROTO) but is not one.
    with pytest.raises(amber.LegacyFormatError) as e:
        amber.loads(b"\x80\x04garbage")
    assert e.value.code == "legacy.pickle"
    with pytest.raises(amber.CompressedStreamError):
        amber.loads(gzip.compress(b"not a pickle")[:-2])


def test_convert_round_trip_and_check(tmp_path: Path, models: dict[str, Any]) -> None:
    src = tmp_path / "model.joblib"
    joblib.dump({"model": models["forest"], "extra": sample()}, src, compress=3)
    dst = tmp_path / "model.amber"
    assert amber.convert(src, dst, check=True, compress="zstd") == str(dst)
    got = amber.load(dst)
    assert amber.info(dst)["format_version"]
    X = models["X"]
    np.testing.assert_array_equal(got["model"].predict(X), models["forest"].predict(X))
    assert_same(got["extra"], amber.load(src)["extra"])
    # Every joblib test file converts and loads equal.
    for path in FIXTURES[:6] + [DATA / "joblib_0.9.4.dev0_compressed_cache_size_pickle_py35_np19.gz"]:
        out = tmp_path / (path.name + ".amber")
        amber.convert(path, out, check=True)
        assert_same(amber.load(out), amber.load(path))


def test_convert_back_to_joblib(tmp_path: Path) -> None:
    src = tmp_path / "m.amber"
    amber.dump({"a": np.arange(5)}, src)
    back = tmp_path / "m.joblib"
    amber.convert(src, back, check=True)
    assert_same(joblib_load(back), {"a": np.arange(5)})


def test_compare_finds_differences() -> None:
    compare({"a": np.arange(3)}, {"a": np.arange(3)})
    with pytest.raises(ValueError, match=r"\['a'\]: array values differ"):
        compare({"a": np.arange(3)}, {"a": np.arange(1, 4)})
    with pytest.raises(ValueError, match="float64"):
        compare(np.zeros(2), np.zeros(2, dtype=np.float32))


def amber_cli() -> str:
    exe = Path(sys.executable).parent / "amber"
    if not exe.exists():
        pytest.skip("the amber CLI is not installed in this environment")
    return str(exe)


def test_cli_convert(tmp_path: Path) -> None:
    src = tmp_path / "in.pkl"
    joblib.dump([np.arange(4), "x"], src)
    dst = tmp_path / "out.amber"
    proc = subprocess.run(
        [amber_cli(), "convert", str(src), str(dst), "--compress", "zstd:5", "--check"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "checked" in proc.stdout
    assert_same(amber.load(dst), [np.arange(4), "x"])
    assert amber.info(dst)["entries"]
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(gzip.compress(pickle.dumps(1))[:-3])
    proc = subprocess.run([amber_cli(), "convert", str(bad), str(dst)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "legacy.truncated" in proc.stderr
    env = dict(os.environ, AMBER_PYTHON=str(tmp_path / "no-such-python"))
    proc = subprocess.run([amber_cli(), "convert", str(src), str(dst)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2 and "AMBER_PYTHON" in proc.stderr


def test_python_m_amber_convert(tmp_path: Path) -> None:
    src = tmp_path / "in.pkl"
    src.write_bytes(pickle.dumps({"k": np.arange(3)}, protocol=2))
    dst = tmp_path / "out.amber"
    proc = subprocess.run([sys.executable, "-m", "amber", "convert", str(src), str(dst)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert_same(amber.load(dst), {"k": np.arange(3)})


def test_legacy_binding_exposes_the_original_stream(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump({"a": np.arange(8), "o": np.array([None, 1])}, path, compress=3)
    legacy = _amber.Legacy.open(str(path))
    stream = bytes(legacy.stream())
    assert stream.startswith(b"\x80\x04") and np.arange(8).tobytes() in stream
    load = bytes(legacy.load_stream())
    assert np.arange(8).tobytes() not in load and b"\x95" not in load[:3]
    assert [legacy.array_info(k)[0] for k in range(legacy.array_count())] == ["inline", "pickle"]
    nested = bytes(legacy.array_region(1))
    assert pickle.loads(nested).tolist() == [None, 1]


def test_dump_to_a_stream_without_tell_has_no_padding() -> None:
    class NoTell:
        def __init__(self) -> None:
            self.buffer = io.BytesIO()

        def write(self, data: bytes) -> int:
            return self.buffer.write(data)

        def tell(self) -> int:
            raise io.UnsupportedOperation("not seekable")

    value = {"a": np.arange(7.0), "o": np.array([None, "x"]), "f": np.asfortranarray(np.ones((3, 2)))}
    out = NoTell()
    joblib.dump(value, out)
    raw = out.buffer.getvalue()
    assert b"numpy_array_alignment_bytes" in raw  # written as None: the data follows BUILD directly
    assert_same(amber.loads(raw), joblib_load(io.BytesIO(raw)))


def test_mmap_keeps_fortran_order(tmp_path: Path) -> None:
    path = tmp_path / "f.joblib"
    value = np.asfortranarray(np.arange(60.0).reshape(5, 12))
    joblib.dump(value, path)
    got = amber.load(path, mmap_mode="r")
    assert got.flags.f_contiguous and not got.flags.writeable
    np.testing.assert_array_equal(got, value)


def test_large_arrays_of_compressed_files_are_not_copied_twice(tmp_path: Path) -> None:
    path = tmp_path / "big.z"
    big = np.zeros(9_000_000)  # 72 MB: above the 64 MiB threshold
    big[::1000] = 1.5
    joblib.dump({"big": big, "small": np.arange(5)}, path, compress=("zlib", 1))
    got = amber.load(path)
    # A writable view of the decompressed stream, which the array keeps alive.
    assert type(got["big"].base).__name__ == "Region"
    assert got["big"].flags.writeable and got["big"].flags.aligned
    np.testing.assert_array_equal(got["big"], big)
    got["big"][1] = 7.0
    assert amber.load(path)["big"][1] == 0.0
    assert type(got["small"].base).__name__ != "Region"


def test_large_arrays_are_private_copies_of_the_file(tmp_path: Path) -> None:
    # Arrays of 8 MiB or more are read in parallel pieces (on at most
    # `threads` threads); the copies stay the caller's own.
    path = tmp_path / "big.joblib"
    rng = np.random.default_rng(5)
    big = rng.random(1_700_001)  # 13.6 MB: several pieces and a partial one
    wide = np.asfortranarray(rng.integers(0, 1 << 30, size=(1500, 1501), dtype=np.int32))
    joblib.dump({"big": big, "wide": wide}, path)
    got = amber.load(path)
    np.testing.assert_array_equal(got["big"], big)
    np.testing.assert_array_equal(got["wide"], wide)
    assert got["wide"].flags.f_contiguous
    one = amber.load(path, threads=1)
    np.testing.assert_array_equal(one["big"], big)
    np.testing.assert_array_equal(one["wide"], wide)
    for value in got.values():
        assert value.flags.writeable and value.flags.aligned
    got["big"][0] = -1.0
    # Loaded again: the file is as written.
    again = amber.load(path)
    np.testing.assert_array_equal(again["big"], big)
    # Rewritten in place (joblib truncates the same file): the copies do not change.
    joblib.dump({"big": big * 2, "wide": wide}, path)
    assert got["big"][0] == -1.0
    np.testing.assert_array_equal(got["big"][1:], big[1:])
    np.testing.assert_array_equal(again["big"], big)
    np.testing.assert_array_equal(amber.load(path)["big"], big * 2)


@pytest.mark.parametrize("compress", [0, 1])
def test_small_arrays_copied_a_block_at_a_time(tmp_path: Path, compress: int) -> None:
    """Small arrays are copied into shared blocks by one call per block: more
    than a block's worth, interleaved with object, large, empty, Fortran and
    byte-swapped arrays, all come back equal, writable and independent."""
    rng = np.random.default_rng(7)
    value: dict[str, Any] = {f"s{i}": rng.random(110_000 + i) for i in range(12)}  # 0.9 MB each
    value.update(
        {
            "o": np.array([1, "x", None], dtype=object),
            "large": np.arange(300_000, dtype="<i8"),  # 2.4 MB: its own allocation
            "empty": np.zeros((0, 3)),
            "f": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
            "be": np.arange(7, dtype=">i4"),
            "tiny": np.arange(3, dtype="u1"),
        }
    )
    path = tmp_path / "many.joblib"
    joblib.dump(value, path, compress=compress)
    got = amber.load(path)
    assert got.keys() == value.keys()
    for key, want in value.items():
        np.testing.assert_array_equal(got[key], want)
        assert got[key].dtype == want.dtype.newbyteorder("=") or want.dtype.hasobject
    assert got["f"].flags.f_contiguous
    for key in ("s0", "s11", "tiny", "large"):
        assert got[key].flags.writeable
    got["s0"][:] = 0.0
    np.testing.assert_array_equal(got["s1"], value["s1"])
    np.testing.assert_array_equal(got["s11"], value["s11"])


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_scan_from_the_open_parse_equals_a_fresh_parse(path: Path, tmp_path: Path) -> None:
    """Opening with ``scan=`` analyses the graph the open parses anyway;
    the report is the one a separate parse of the stream gives, and
    ``amber.scan`` (the same single parse) agrees."""
    from amber import _amber

    for trusted in ([], ["collections.OrderedDict"]):
        opened = _amber.Legacy.open(str(path), scan=trusted)
        fresh = _amber.Legacy.open(str(path)).scan(trusted)
        assert json.loads(opened.report) == json.loads(fresh)
        try:
            in_memory = _amber.Legacy.from_bytes(path.read_bytes(), scan=trusted)
        except amber.CompanionFileError:
            continue  # a pre-0.10 dump whose arrays are in other files
        assert json.loads(in_memory.report) == json.loads(fresh)
    assert amber.scan(path).verdict == json.loads(fresh)["verdict"]
    # A hostile joblib-looking file: the open's analysis refuses it too.
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(b"\x80\x04cos\nsystem\n\x8c\x04true\x85R.")
    report = json.loads(_amber.Legacy.open(str(hostile), scan=[]).report)
    assert report["verdict"] == "unsafe"
    assert report == json.loads(_amber.Legacy.open(str(hostile)).scan([]))
