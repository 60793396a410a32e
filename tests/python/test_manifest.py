"""The manifest and the container seen from outside.

Covers ``amber.info`` reading a file without unpickling it (a class whose
``__setstate__`` raises; a module that a fresh process cannot import), every
manifest field (format, version, creation time, producer, environment and
package versions, user metadata with its conversions and its errors naming the
key, entry records), and the promise that the file is a plain zip archive:
``unzip -l``/``-p``/``-t``, ``zipfile.testzip``, ``numpy.load`` on an
extracted array entry, 64-byte alignment in the file and in mapped arrays, and
deterministic output (same object, same bytes but for ``created``)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import scipy
import scipy.sparse as sp
import sklearn

import amber
from _testutil import run_python

AMBER_CLI = shutil.which("amber", path=os.path.dirname(sys.executable)) or shutil.which("amber")
UNZIP = shutil.which("unzip")


def arrays_sample() -> dict[str, np.ndarray]:
    return {
        "c": np.arange(20_000, dtype="<f8"),
        "f": np.asfortranarray(np.arange(30_000, dtype=">i4").reshape(100, 300)),
        "rec": np.zeros(5_000, dtype=[("a", "<i4"), ("b", ">f8", (2,)), ("c", [("x", "u1"), ("y", "S3")])]),
        "utf8": np.ones(20_000, dtype=[("温度", "<f4")]),  # needs a version 3.0 .npy header
        "bool": np.ones((300, 300), dtype=bool),
        "strided": np.arange(60_000, dtype="<i8")[::3],  # stored C-contiguous
    }


@pytest.fixture
def sample_file(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    value = arrays_sample()
    path = tmp_path / "sample.amber"
    amber.dump(value, path, metadata={"owner": "tests"})
    return path, value


# --------------------------------------------------------------------------
# info reads without unpickling


class RefusesToLoad:
    def __init__(self) -> None:
        self.weights = np.arange(20_000, dtype=np.float64)

    def __setstate__(self, state: dict) -> None:
        raise RuntimeError("__setstate__ ran")


def test_info_does_not_unpickle(tmp_path) -> None:
    path = tmp_path / "refuses.amber"
    amber.dump(RefusesToLoad(), path, metadata={"k": 1})
    with pytest.raises(amber.UnsafeModelError):
        amber.load(path)  # not in the policy: refused before anything runs
    with pytest.raises(RuntimeError, match="__setstate__ ran"):
        amber.load(path, trusted=True)  # proves the class really cannot be loaded
    manifest = amber.info(path)
    assert manifest["metadata"] == {"k": 1}
    assert [e["kind"] for e in manifest["entries"]] == ["pickle", "array"]
    amber.verify(path)  # checksums need no unpickling either


def test_info_in_a_process_that_cannot_import_the_class(tmp_path, monkeypatch) -> None:
    modules = tmp_path / "mods"
    modules.mkdir()
    (modules / "ghostmod_amber_test.py").write_text(
        "__version__ = '9.9.9'\n"
        "class Ghost:\n"
        "    def __init__(self):\n"
        "        self.data = list(range(5))\n"
    )
    monkeypatch.syspath_prepend(str(modules))
    import ghostmod_amber_test  # noqa: PLC0415 - made just above

    path = tmp_path / "ghost.amber"
    try:
        amber.dump(ghostmod_amber_test.Ghost(), path, metadata={"about": "ghost"})
    finally:
        sys.modules.pop("ghostmod_amber_test", None)
    proc = run_python(
        f"""
        import json, amber
        info = amber.info({str(path)!r})
        amber.verify({str(path)!r})
        try:
            amber.load({str(path)!r}, trusted=["ghostmod_amber_test.Ghost"])
        except ModuleNotFoundError as e:
            error = "ModuleNotFoundError: " + e.name
        else:
            error = "loaded"
        print(json.dumps({{"info": info, "error": error}}))
        """,
        cwd=tmp_path,  # not the module's directory
    )
    result = json.loads(proc.stdout)
    assert result["error"] == "ModuleNotFoundError: ghostmod_amber_test"
    assert result["info"]["metadata"] == {"about": "ghost"}
    # The package of the class is recorded with its version.
    assert result["info"]["environment"]["packages"] == {"ghostmod_amber_test": "9.9.9"}
    if AMBER_CLI:
        cli = subprocess.run([AMBER_CLI, "info", "--json", str(path)], capture_output=True, text=True)
        assert cli.returncode == 0 and json.loads(cli.stdout)["metadata"] == {"about": "ghost"}


def test_info_accepts_paths_file_objects_and_bytes(sample_file) -> None:
    path, _ = sample_file
    by_path = amber.info(path)
    assert amber.info(str(path)) == by_path
    assert amber.info(path.read_bytes()) == by_path
    with open(path, "rb") as f:
        assert amber.info(f) == by_path


# --------------------------------------------------------------------------
# manifest fields


def test_top_level_fields(sample_file) -> None:
    path, _ = sample_file
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    amber.dump(arrays_sample(), path)
    after = dt.datetime.now(dt.timezone.utc)
    manifest = amber.info(path)
    assert manifest["format"] == "amber"
    assert manifest["format_version"] == 1
    assert manifest["producer"] == {"name": "amber", "version": amber.__version__}
    assert manifest["file_size"] == path.stat().st_size
    assert manifest["metadata"] == {}
    # created: RFC 3339 in UTC, to the second, between the two readings.
    created = manifest["created"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created), created
    when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    assert when.tzinfo is not None and when.utcoffset() == dt.timedelta(0)
    assert before <= when <= after


def test_environment(sample_file) -> None:
    path, _ = sample_file
    env = amber.info(path)["environment"]
    assert env["python"] == platform.python_version()
    assert env["implementation"] == platform.python_implementation()
    assert env["platform"] == platform.platform()
    assert env["machine"] == platform.machine()
    assert env["byteorder"] == sys.byteorder
    assert env["packages"] == {"numpy": np.__version__}


def test_package_versions_follow_the_content(tmp_path, fitted_models) -> None:
    model, _ = fitted_models["column_transformer"]
    cases = {
        "plain": ({"a": [1, 2], "b": "x"}, {}),
        "small_array": (np.arange(3), {"numpy": np.__version__}),
        "sparse": (sp.random(50, 50, density=0.1, format="csr", random_state=0), {"numpy": np.__version__, "scipy": scipy.__version__}),
        "model": (model, {"numpy": np.__version__, "sklearn": sklearn.__version__}),
    }
    for name, (value, expected) in cases.items():
        packages = amber.info(amber.dumps(value))["environment"]["packages"]
        assert packages == expected, name


def test_metadata_json_values_round_trip() -> None:
    metadata = {
        "str": "héllo 漢字 🙂",
        "int": -(2**62),
        "float": 0.1,
        "bool": False,
        "none": None,
        "list": [1, "two", [3.5, None]],
        "nested": {"a": {"b": {"c": []}}},
        "empty": {},
    }
    assert amber.info(amber.dumps(0, metadata=metadata))["metadata"] == metadata


def test_metadata_conversions() -> None:
    metadata = {
        "when": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc),
        "naive": dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
        "day": dt.date(2024, 5, 6),
        "time": dt.time(7, 8, 9),
        "path": Path("/models/m.amber"),
        "posix": PurePosixPath("rel/x"),
        "f32": np.float32(0.5),
        "i64": np.int64(-3),
        "u8": np.uint8(200),
        "np_bool": np.bool_(True),
        "array": np.arange(6).reshape(2, 3),
        "float_array": np.array([0.5, 1.5]),
        "tuple": (1, (2, 3)),
        "in_list": [np.int32(4), Path("a")],
    }
    got = amber.info(amber.dumps(0, metadata=metadata))["metadata"]
    assert got == {
        "when": "2024-05-06T07:08:09+00:00",
        "naive": "2024-05-06T07:08:09.123456",
        "day": "2024-05-06",
        "time": "07:08:09",
        "path": "/models/m.amber",
        "posix": "rel/x",
        "f32": 0.5,
        "i64": -3,
        "u8": 200,
        "np_bool": True,
        "array": [[0, 1, 2], [3, 4, 5]],
        "float_array": [0.5, 1.5],
        "tuple": [1, [2, 3]],
        "in_list": [4, "a"],
    }
    assert type(got["np_bool"]) is bool and type(got["u8"]) is int


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"thing": object()}, "thing"),
        ({"tags": {"a", "b"}}, "tags"),
        ({"blob": b"bytes"}, "blob"),
        ({"score": float("nan")}, "score"),
        ({"limit": float("inf")}, "limit"),
        ({"outer": {"inner": object()}}, "inner"),
        ({"items": [1, 2, object()]}, "items"),
        ({"huge": np.zeros(20_000)}, "huge"),
        ({"cplx": 1 + 2j}, "cplx"),
    ],
    ids=["object", "set", "bytes", "nan", "inf", "nested", "in_list", "big_array", "complex"],
)
def test_metadata_errors_name_the_key(tmp_path, metadata, key) -> None:
    with pytest.raises(TypeError) as caught:
        amber.dumps(0, metadata=metadata)
    assert key in str(caught.value)
    with pytest.raises(TypeError):
        amber.dump(0, tmp_path / "m.amber", metadata=metadata)
    assert not (tmp_path / "m.amber").exists()


def test_metadata_must_be_a_dict_with_string_keys() -> None:
    with pytest.raises(TypeError, match="dict"):
        amber.dumps(0, metadata=[("a", 1)])
    with pytest.raises(TypeError, match="key"):
        amber.dumps(0, metadata={1: "x"})


def test_entry_records(sample_file) -> None:
    path, value = sample_file
    entries = amber.info(path)["entries"]
    pickle_entry, arrays = entries[0], entries[1:]
    assert pickle_entry["kind"] == "pickle" and pickle_entry["name"] == "model.pkl"
    assert pickle_entry["protocol"] == 5
    assert pickle_entry["buffers"] == len(arrays) == len(value)
    assert set(pickle_entry) == {"kind", "name", "size", "crc32", "protocol", "buffers"}
    # Arrays are written in the order the pickler meets them (dict order here).
    expected = {
        "c": ("<f8", [20_000], "C"),
        "f": (">i4", [100, 300], "F"),
        "rec": ([["a", "<i4"], ["b", ">f8", [2]], ["c", [["x", "|u1"], ["y", "|S3"]]]], [5_000], "C"),
        "utf8": ([["温度", "<f4"]], [20_000], "C"),
        "bool": ("|b1", [300, 300], "C"),
        "strided": ("<i8", [20_000], "C"),
    }
    for index, (record, (key, (dtype, shape, order))) in enumerate(zip(arrays, expected.items())):
        assert record["kind"] == "array"
        assert record["name"] == f"arrays/{index:06d}.npy"
        assert record["dtype"] == dtype, key
        assert record["shape"] == shape, key
        assert record["order"] == order, key
        assert record["nbytes"] == value[key].nbytes
        assert record["data_offset"] % 64 == 0
        assert record["size"] == record["data_offset"] + record["nbytes"]
        assert set(record) == {"kind", "name", "size", "crc32", "data_offset", "nbytes", "dtype", "shape", "order"}


# --------------------------------------------------------------------------
# a standard zip archive


def test_zipfile_reads_it(sample_file) -> None:
    path, value = sample_file
    manifest = amber.info(path)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert names == ["mimetype"] + [e["name"] for e in manifest["entries"]] + ["manifest.json"]
        assert zf.read("mimetype") == b"application/x-amber"
        stored = json.loads(zf.read("manifest.json"))
        assert stored == {k: v for k, v in manifest.items() if k != "file_size"}
        for record in manifest["entries"]:
            info = zf.getinfo(record["name"])
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.file_size == record["size"]
            assert info.CRC == record["crc32"]
            assert info.date_time == (1980, 1, 1, 0, 0, 0)


def test_extracted_array_entries_load_with_numpy(sample_file, tmp_path) -> None:
    path, value = sample_file
    with zipfile.ZipFile(path) as zf:
        for index, (key, array) in enumerate(value.items()):
            raw = zf.read(f"arrays/{index:06d}.npy")
            got = np.load(io.BytesIO(raw), allow_pickle=False)
            assert got.dtype == array.dtype, key
            assert np.array_equal(got, array), key
            if key == "f":
                assert got.flags.f_contiguous
            if key == "utf8":
                assert raw[6] == 3  # .npy format version 3.0 for a non-Latin-1 name
            # Written out as a file, np.load can memory-map it too.
            out = tmp_path / f"{key}.npy"
            out.write_bytes(raw)
            assert np.array_equal(np.load(out, mmap_mode="r"), array), key


@pytest.mark.skipif(AMBER_CLI is None, reason="the amber CLI is not installed")
def test_amber_extract_writes_a_plain_npy(sample_file, tmp_path) -> None:
    path, value = sample_file
    out = tmp_path / "out.npy"
    proc = subprocess.run([AMBER_CLI, "extract", str(path), "arrays/000001.npy", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(out), value["f"])


@pytest.mark.skipif(UNZIP is None, reason="unzip is not installed")
def test_system_unzip(sample_file) -> None:
    path, _ = sample_file
    listing = subprocess.run([UNZIP, "-l", str(path)], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    for name in ["mimetype", "model.pkl", "arrays/000000.npy", "arrays/000005.npy", "manifest.json"]:
        assert re.search(rf"\s{re.escape(name)}$", listing.stdout, re.M), name
    printed = subprocess.run([UNZIP, "-p", str(path), "manifest.json"], capture_output=True)
    assert printed.returncode == 0
    manifest = json.loads(printed.stdout)
    assert manifest == {k: v for k, v in amber.info(path).items() if k != "file_size"}
    assert manifest["metadata"] == {"owner": "tests"}
    tested = subprocess.run([UNZIP, "-t", str(path)], capture_output=True, text=True)
    assert tested.returncode == 0 and "No errors detected" in tested.stdout


@pytest.mark.skipif(UNZIP is None, reason="unzip is not installed")
def test_system_unzip_extracts_a_loadable_npy(sample_file, tmp_path) -> None:
    path, value = sample_file
    out = tmp_path / "x"
    proc = subprocess.run([UNZIP, "-q", str(path), "arrays/000000.npy", "-d", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(out / "arrays" / "000000.npy"), value["c"])


# --------------------------------------------------------------------------
# alignment


def test_entries_are_64_byte_aligned_in_the_file(sample_file) -> None:
    path, _ = sample_file
    data = path.read_bytes()
    manifest = amber.info(path)
    records = {e["name"]: e for e in manifest["entries"]}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
            start = info.header_offset + 30 + name_len + extra_len
            assert start % 64 == 0, info.filename
            if info.filename in records and records[info.filename]["kind"] == "array":
                assert (start + records[info.filename]["data_offset"]) % 64 == 0


@pytest.mark.parametrize("mode", ["r", "c"])
def test_mapped_arrays_are_64_byte_aligned(sample_file, mode) -> None:
    path, value = sample_file
    got = amber.load(path, mmap_mode=mode)
    for key in value:
        assert got[key].ctypes.data % 64 == 0, key
        assert np.array_equal(got[key], value[key])


# --------------------------------------------------------------------------
# deterministic output


def assert_same_but_created(a: bytes, b: bytes) -> None:
    """Identical files except the manifest's `created` value (and so its CRC)."""
    assert len(a) == len(b)
    za, zb = zipfile.ZipFile(io.BytesIO(a)), zipfile.ZipFile(io.BytesIO(b))
    manifest_at = za.getinfo("manifest.json").header_offset
    assert zb.getinfo("manifest.json").header_offset == manifest_at
    assert a[:manifest_at] == b[:manifest_at]  # every entry before the manifest, byte for byte
    ma, mb = json.loads(za.read("manifest.json")), json.loads(zb.read("manifest.json"))
    assert ma.pop("created") and mb.pop("created")
    assert ma == mb
    if json.loads(za.read("manifest.json"))["created"] == json.loads(zb.read("manifest.json"))["created"]:
        assert a == b


def test_same_object_same_bytes(tmp_path, fitted_models) -> None:
    model, _ = fitted_models["random_forest"]
    value = {"model": model, "arrays": arrays_sample()}
    first = Path(amber.dump(value, tmp_path / "a.amber")).read_bytes()
    # Cross a second boundary so `created` really differs.
    time.sleep(1.05 - (time.time() % 1.0))
    second = Path(amber.dump(value, tmp_path / "b.amber")).read_bytes()
    assert first != second
    assert_same_but_created(first, second)
    assert_same_but_created(first, amber.dumps(value))


@pytest.mark.slow
def test_same_object_same_bytes_across_processes(tmp_path) -> None:
    code = textwrap.dedent(
        """
        import numpy as np, amber
        from sklearn.datasets import make_classification
        from sklearn.ensemble import RandomForestClassifier
        X, y = make_classification(n_samples=3000, n_features=8, n_informative=5, n_classes=3, flip_y=0.2, random_state=0)
        model = RandomForestClassifier(n_estimators=4, random_state=4).fit(X, y)
        amber.dump({"model": model, "w": np.arange(50_000.0), "meta": {"k": [1, 2]}}, "out.amber")
        """
    )
    children = []
    for name in ("one", "two"):  # two independent interpreters, run side by side
        (tmp_path / name).mkdir()
        children.append(subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path / name, stderr=subprocess.PIPE, text=True))
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    first = (tmp_path / "one" / "out.amber").read_bytes()
    assert len(amber.info(first)["entries"]) > 2  # the trees' node arrays are out of band
    assert_same_but_created(first, (tmp_path / "two" / "out.amber").read_bytes())
