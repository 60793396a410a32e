"""Wrong arguments to the public API: each is refused with the builtin
exception a Python user expects (TypeError for wrong types, ValueError for
wrong values, OSError subclasses for paths), with a message that helps, and
without touching any file."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

import amber

VALUE = {"w": np.arange(100_000, dtype=np.float64)}


@pytest.fixture
def existing(tmp_path):
    path = tmp_path / "m.amber"
    amber.dump(VALUE, path)
    return path


# --------------------------------------------------------------------------
# dump


@pytest.mark.parametrize("target", [123, 1.5, None, {}, [], object()], ids=["int", "float", "none", "dict", "list", "object"])
def test_dump_target_of_wrong_type(target) -> None:
    with pytest.raises(TypeError, match="filename must be a path or a binary file object"):
        amber.dump({}, target)


def test_dump_arguments_swapped(tmp_path) -> None:
    """joblib's order is dump(value, filename); the swap is named in the message."""
    with pytest.raises(TypeError, match="swapped"):
        amber.dump(str(tmp_path / "x.amber"), {})
    with pytest.raises(TypeError, match="swapped"):
        amber.dump({}, 123)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("compress", ["bogus", "ZIP", 10, -1, 1.5, ("zstd", 12), ("zstd",), ("nope", 3), [3], ("zstd", "3")])
def test_bad_compress_values(tmp_path, compress) -> None:
    path = tmp_path / "c.amber"
    with pytest.raises((ValueError, NotImplementedError)) as caught:
        amber.dump(VALUE, path, compress=compress)
    assert "compress" in str(caught.value)
    with pytest.raises((ValueError, NotImplementedError)):
        amber.dumps(VALUE, compress=compress)
    assert not path.exists()


@pytest.mark.parametrize("protocol", [6, -2, "5", 2**70])
def test_bad_protocol(tmp_path, protocol) -> None:
    with pytest.raises(ValueError, match="protocol"):
        amber.dump(VALUE, tmp_path / "p.amber", protocol=protocol)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("protocol", [None, -1, 0, 1, 2, 3, 4, 5])
def test_every_joblib_protocol_is_accepted(tmp_path, protocol) -> None:
    path = amber.dump(VALUE, tmp_path / "p.amber", protocol=protocol)
    assert amber.info(path)["entries"][0]["protocol"] == 5
    assert np.array_equal(amber.load(path)["w"], VALUE["w"])


@pytest.mark.parametrize("threads", [0, -1, "2", 1.5, True])
def test_bad_threads(tmp_path, threads) -> None:
    with pytest.raises(ValueError, match="threads"):
        amber.dump(VALUE, tmp_path / "t.amber", threads=threads)
    data = amber.dumps(VALUE)
    with pytest.raises(ValueError, match="threads"):
        amber.loads(data, threads=threads)
    assert os.listdir(tmp_path) == []


def test_options_after_protocol_are_keyword_only(tmp_path) -> None:
    with pytest.raises(TypeError):
        amber.dump(VALUE, tmp_path / "k.amber", None, None, False)  # type: ignore[misc]
    assert os.listdir(tmp_path) == []


def test_dump_into_a_file_opened_for_reading(existing) -> None:
    before = existing.read_bytes()
    with open(existing, "rb") as f:
        with pytest.raises((OSError, ValueError)):  # io.UnsupportedOperation is both
            amber.dump(VALUE, f)
    assert existing.read_bytes() == before


def test_dump_into_a_text_stream() -> None:
    with pytest.raises(TypeError):
        amber.dump(VALUE, io.StringIO())


def test_dump_into_a_directory_or_missing_directory(tmp_path) -> None:
    with pytest.raises(IsADirectoryError):
        amber.dump(VALUE, tmp_path)
    with pytest.raises(FileNotFoundError):
        amber.dump(VALUE, tmp_path / "missing" / "m.amber")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("operation", ["dump", "load", "info"])
def test_path_with_nul_byte_is_a_value_error(tmp_path, operation) -> None:
    bad = str(tmp_path / "a\0b.amber")
    with pytest.raises(ValueError, match="null"):
        if operation == "dump":
            amber.dump(VALUE, bad)
        elif operation == "load":
            amber.load(bad)
        else:
            amber.info(bad)


# --------------------------------------------------------------------------
# load, loads, info, verify


@pytest.mark.parametrize("source", [123, None, 1.5, ["a"], object()], ids=["int", "none", "float", "list", "object"])
@pytest.mark.parametrize("function", ["load", "info", "verify"])
def test_source_of_wrong_type(source, function) -> None:
    with pytest.raises(TypeError, match="expected a path, a binary file object or bytes"):
        getattr(amber, function)(source)


@pytest.mark.parametrize("data", ["str", None, 123, ["b"], io.BytesIO(b"x")], ids=["str", "none", "int", "list", "bytesio"])
def test_loads_wants_bytes(data) -> None:
    with pytest.raises(TypeError, match="loads expects bytes"):
        amber.loads(data)


@pytest.mark.parametrize("mode", ["x", "R", "rb", "", 1, True, "readonly"])
def test_bad_mmap_mode(existing, mode) -> None:
    with pytest.raises(ValueError, match="mmap_mode must be None, 'r' or 'c'"):
        amber.load(existing, mmap_mode=mode)


@pytest.mark.parametrize("mode", ["r+", "w+"])
def test_writing_mmap_modes_are_value_errors(existing, mode) -> None:
    before = existing.read_bytes()
    with pytest.raises(ValueError, match="not supported"):
        amber.load(existing, mmap_mode=mode)
    # Refused before opening anything: even a missing path gives the ValueError.
    with pytest.raises(ValueError):
        amber.load(existing.with_name("missing.amber"), mmap_mode=mode)
    assert existing.read_bytes() == before


def test_mmap_mode_is_the_second_positional_argument_like_joblib(existing) -> None:
    got = amber.load(existing, "r")
    assert not got["w"].flags.writeable


def test_load_from_a_text_stream() -> None:
    with pytest.raises(TypeError):
        amber.load(io.StringIO("not bytes"))
