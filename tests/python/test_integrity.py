"""Damaged, truncated and foreign files: amber refuses them with a typed error
that says what and where, never crashes and never returns a wrong object.

Covers one-byte damage in each entry (mimetype, pickle, arrays, manifest), in
local headers, the central directory and the end record, plus a sweep over
every structural byte; the documented difference between ``load()`` (checks
array CRCs), ``load(mmap_mode="r")`` (does not) and ``verify``; truncation at
many points; empty files, directories, missing and unreadable files, plain
pickles, joblib files, random bytes, foreign zips and trailing garbage; and
the ``amber verify`` / ``amber info`` command line (exit codes, ``--json``)."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import amber
from amber import _amber

AMBER_CLI = shutil.which("amber", path=os.path.dirname(sys.executable)) or shutil.which("amber")


# --------------------------------------------------------------------------
# a real file and its layout


def make_object() -> dict[str, Any]:
    return {
        "floats": np.linspace(0.0, 1.0, 10_000),  # 80 KB: out of band
        "ints": np.arange(20_000, dtype=np.int32),  # 80 KB: out of band
        "small": np.arange(10),
        "text": "hello " * 20,
    }


def same_object(got: Any) -> bool:
    want = make_object()
    return (
        isinstance(got, dict)
        and got.keys() == want.keys()
        and all(np.array_equal(got[k], want[k]) and got[k].dtype == want[k].dtype for k in ("floats", "ints", "small"))
        and got["text"] == want["text"]
    )


@dataclass
class Entry:
    name: str
    header: int  # offset of the local header
    data: int  # offset of the entry's data
    size: int


@dataclass
class Layout:
    data: bytes
    entries: dict[str, Entry]
    central_directory: int
    end_record: int


@pytest.fixture(scope="module")
def layout() -> Layout:
    data = amber.dumps(make_object())
    entries = {}
    for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        entries[info.filename] = Entry(info.filename, info.header_offset, start, info.file_size)
    names = list(entries)
    assert names == ["mimetype", "model.pkl", "arrays/000000.npy", "arrays/000001.npy", "manifest.json"]
    return Layout(data, entries, data.index(b"PK\x01\x02"), data.rindex(b"PK\x05\x06"))


def damaged(data: bytes, pos: int, mask: int = 0xFF) -> bytes:
    out = bytearray(data)
    out[pos] ^= mask
    return bytes(out)


def write(tmp_path: Path, data: bytes, name: str = "damaged.amber") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


Operation = Callable[[Path], Any]
OPERATIONS: dict[str, Operation] = {
    "load": amber.load,
    "load_mmap_r": lambda p: amber.load(p, mmap_mode="r"),
    "load_mmap_c": lambda p: amber.load(p, mmap_mode="c"),
    "loads": lambda p: amber.loads(p.read_bytes()),
    "load_fileobj": lambda p: amber.load(io.BytesIO(p.read_bytes())),
    "verify": amber.verify,
    "info": amber.info,
}


def expect_error(path: Path, operation: str, cls: type = amber.FormatError) -> amber.AmberError:
    with pytest.raises(cls) as caught:
        OPERATIONS[operation](path)
    err = caught.value
    assert isinstance(err.code, str) and err.code.startswith("format."), err.code
    assert str(err)  # a message
    return err


def test_the_fixture_file_is_good(layout, tmp_path) -> None:
    path = write(tmp_path, layout.data, "good.amber")
    for name, op in OPERATIONS.items():
        result = op(path)
        if name.startswith("load"):
            assert same_object(result), name


# --------------------------------------------------------------------------
# one flipped byte in each entry's data


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_damaged_pickle_entry(layout, tmp_path, where) -> None:
    entry = layout.entries["model.pkl"]
    pos = {"first": entry.data, "middle": entry.data + entry.size // 2, "last": entry.data + entry.size - 1}[where]
    path = write(tmp_path, damaged(layout.data, pos))
    for op in ("load", "load_mmap_r", "load_mmap_c", "loads", "load_fileobj", "verify"):
        err = expect_error(path, op, amber.ChecksumError)
        assert err.code == "format.checksum"
        assert err.entry == "model.pkl"
        assert "model.pkl" in str(err)
    # The manifest is intact and is read without touching the pickle.
    assert amber.info(path)["entries"][0]["name"] == "model.pkl"


@pytest.mark.parametrize("name", ["arrays/000000.npy", "arrays/000001.npy"])
@pytest.mark.parametrize("where", ["header", "first_data_byte", "middle", "last"])
def test_damaged_array_data(layout, tmp_path, name, where) -> None:
    entry = layout.entries[name]
    pos = {
        "header": entry.data + 100,  # in the .npy header's padding
        "first_data_byte": entry.data + 128,
        "middle": entry.data + entry.size // 2,
        "last": entry.data + entry.size - 1,
    }[where]
    path = write(tmp_path, damaged(layout.data, pos))
    if where == "header":
        # Damage in the .npy header (even in its padding) breaks the header that
        # F-22 requires, so every reader refuses it at open, mapped loads too.
        for op in OPERATIONS:
            err = expect_error(path, op)
            assert err.code == "format.mismatch" and err.entry == name, (op, err)
        return
    # A full load and verify check every array's CRC and name the entry.
    for op in ("load", "loads", "load_fileobj", "verify"):
        err = expect_error(path, op, amber.ChecksumError)
        assert err.entry == name, (op, err)
        assert name in str(err)
    # A mapped load checks structure, not array bytes (docs: F-30): it succeeds.
    for op in ("load_mmap_r", "load_mmap_c"):
        got = OPERATIONS[op](path)
        assert got["text"] == make_object()["text"]
        key = "floats" if name.endswith("0.npy") else "ints"
        assert not np.array_equal(got[key], make_object()[key])  # the damage is visible, not hidden
    # The CLI agrees with verify.
    if AMBER_CLI:
        proc = subprocess.run([AMBER_CLI, "verify", "--json", str(path)], capture_output=True, text=True)
        assert proc.returncode == 1
        record = json.loads(proc.stdout)
        assert record["ok"] is False and record["entry"] == name and record["code"] == "format.checksum"


def test_damaged_manifest(layout, tmp_path) -> None:
    entry = layout.entries["manifest.json"]
    for pos in (entry.data, entry.data + entry.size // 2, entry.data + entry.size - 1):
        path = write(tmp_path, damaged(layout.data, pos))
        for op in OPERATIONS:
            err = expect_error(path, op, amber.ChecksumError)
            assert err.entry == "manifest.json"


def test_damaged_mimetype(layout, tmp_path) -> None:
    entry = layout.entries["mimetype"]
    for pos in range(entry.data, entry.data + entry.size):
        path = write(tmp_path, damaged(layout.data, pos, 0x01))
        for op in ("load", "load_mmap_r", "verify", "info"):
            err = expect_error(path, op)
            assert err.code in ("format.not_amber", "format.checksum"), err.code


# --------------------------------------------------------------------------
# zip structures


LOCAL_HEADER_FIELDS = {"signature": 0, "crc32": 14, "compressed_size": 18, "name_length": 26, "name": 30}


@pytest.mark.parametrize("field", sorted(LOCAL_HEADER_FIELDS))
@pytest.mark.parametrize("name", ["mimetype", "model.pkl", "arrays/000000.npy", "manifest.json"])
def test_damaged_local_header(layout, tmp_path, name, field) -> None:
    pos = layout.entries[name].header + LOCAL_HEADER_FIELDS[field]
    path = write(tmp_path, damaged(layout.data, pos))
    for op in ("load", "load_mmap_r", "verify", "info"):
        expect_error(path, op)


CENTRAL_FIELDS = {"signature": 0, "crc32": 16, "compressed_size": 20, "size": 24, "name_length": 28, "local_header_offset": 42, "name": 46}


@pytest.mark.parametrize("field", sorted(CENTRAL_FIELDS))
@pytest.mark.parametrize("index", [0, 2, 4])
def test_damaged_central_directory(layout, tmp_path, index, field) -> None:
    record = layout.central_directory
    for _ in range(index):  # walk to the index-th record
        n, m, k = struct.unpack("<HHH", layout.data[record + 28 : record + 34])
        record += 46 + n + m + k
    assert layout.data[record : record + 4] == b"PK\x01\x02"
    path = write(tmp_path, damaged(layout.data, record + CENTRAL_FIELDS[field]))
    for op in ("load", "load_mmap_r", "verify", "info"):
        expect_error(path, op)


@pytest.mark.parametrize("offset", [0, 8, 10, 12, 16, 20], ids=["signature", "entries_disk", "entries", "cd_size", "cd_offset", "comment_length"])
def test_damaged_end_record(layout, tmp_path, offset) -> None:
    path = write(tmp_path, damaged(layout.data, layout.end_record + offset))
    for op in ("load", "verify", "info"):
        with pytest.raises(amber.AmberError) as caught:
            OPERATIONS[op](path)
        assert caught.value.code.startswith("format.")


ZIP_FIELD_DAMAGE = {
    # (structure, offset in it, xor mask): all single bit flips of a valid file
    "local_flags_encrypted": ("local", 6, 0x01),
    "local_method": ("local", 8, 0x01),
    "central_flags_encrypted": ("central", 8, 0x01),
    "central_method": ("central", 10, 0x01),
    "end_disk_number": ("end", 4, 0x01),
}


@pytest.mark.parametrize("what", sorted(ZIP_FIELD_DAMAGE))
def test_damaged_zip_fields_are_format_errors(layout, tmp_path, what) -> None:
    structure, offset, mask = ZIP_FIELD_DAMAGE[what]
    base = {
        "local": layout.entries["model.pkl"].header,
        "central": layout.central_directory,
        "end": layout.end_record,
    }[structure]
    path = write(tmp_path, damaged(layout.data, base + offset, mask))
    expect_error(path, "load", amber.FormatError)


def test_every_structural_byte_flipped(layout) -> None:
    """Flip each byte outside the array payloads (and a sample inside them).

    Whatever the byte, ``loads`` and ``verify`` raise an AmberError with a code
    or succeed; success is allowed only for bytes that readers ignore (zip
    times, version fields, alignment padding) and then the object is exact.
    Damage inside any entry's data is always caught by ``loads``."""
    data = layout.data
    payload = [(e.data + 128, e.data + e.size) for n, e in layout.entries.items() if n.startswith("arrays/")]
    in_entry_data = [(e.data, e.data + e.size) for e in layout.entries.values()]
    positions = [i for i in range(len(data)) if not any(a <= i < b for a, b in payload)]
    positions += [i for a, b in payload for i in range(a, b, 4099)]
    problems = []
    for pos in positions:
        for mask in (0x01, 0x80):
            bad = damaged(data, pos, mask)
            inside = any(a <= pos < b for a, b in in_entry_data)
            try:
                got = amber.loads(bad)
            except amber.AmberError as e:
                if not (isinstance(e.code, str) and e.code.startswith("format.")):
                    problems.append((pos, mask, "loads", "bad code", e.code))
            except Exception as e:  # anything else is a bug
                problems.append((pos, mask, "loads", type(e).__name__, str(e)[:100]))
            else:
                if inside or not same_object(got):
                    problems.append((pos, mask, "loads", "accepted", "inside entry data" if inside else "wrong object"))
            try:
                amber.verify(bad)
            except amber.AmberError:
                pass
            except Exception as e:
                problems.append((pos, mask, "verify", type(e).__name__, str(e)[:100]))
            else:
                if inside:
                    problems.append((pos, mask, "verify", "accepted", "inside entry data"))
    assert not problems, problems[:20]


# --------------------------------------------------------------------------
# .npy headers of array entries


NPY_HEADER_DAMAGE = {
    # position in the entry, replacement byte, what it does to the header
    "minor_version": (7, 0x01, "format version 1.1, which numpy.load refuses"),
    "key_name": (12, ord("D"), "'Descr' instead of 'descr'"),
    "quote": (20, ord("&"), "descr value loses its opening quote"),
    "separator": (25, ord("-"), "',' between items becomes '-'"),
    "brace": (10, ord("["), "the dict opens with '['"),
}


@pytest.mark.parametrize("what", sorted(NPY_HEADER_DAMAGE))
def test_damaged_npy_header_is_caught_by_full_load_and_verify(layout, tmp_path, what) -> None:
    offset, byte, _ = NPY_HEADER_DAMAGE[what]
    entry = layout.entries["arrays/000000.npy"]
    bad = bytearray(layout.data)
    bad[entry.data + offset] = byte
    path = write(tmp_path, bytes(bad))
    for op in ("load", "verify"):
        err = expect_error(path, op)
        assert err.entry == "arrays/000000.npy"


@pytest.mark.parametrize("what", sorted(NPY_HEADER_DAMAGE))
def test_damaged_npy_header_is_refused_by_mapped_load(layout, tmp_path, what) -> None:
    offset, byte, _ = NPY_HEADER_DAMAGE[what]
    entry = layout.entries["arrays/000000.npy"]
    bad = bytearray(layout.data)
    bad[entry.data + offset] = byte
    raw = bytes(bad[entry.data : entry.data + entry.size])
    with pytest.raises((ValueError, SyntaxError)):
        np.load(io.BytesIO(raw))  # the entry is no longer a valid .npy file
    path = write(tmp_path, bytes(bad))
    err = expect_error(path, "load_mmap_r")
    assert err.entry == "arrays/000000.npy"


# --------------------------------------------------------------------------
# truncation


def truncation_points(size: int) -> list[int]:
    return sorted({size * k // 50 for k in range(50)} | set(range(size - 100, size)))


def test_truncated_anywhere(layout) -> None:
    data = layout.data
    for n in truncation_points(len(data)):
        for op in (amber.loads, amber.verify, amber.info):
            with pytest.raises(amber.FormatError) as caught:
                op(data[:n])
            assert caught.value.code in ("format.truncated", "format.corrupt", "format.not_amber"), (n, caught.value)


def test_truncated_files_on_disk_and_mapped(layout, tmp_path) -> None:
    data = layout.data
    for n in truncation_points(len(data))[::3]:
        path = write(tmp_path, data[:n], "truncated.amber")
        for op in ("load", "load_mmap_r", "load_mmap_c", "verify", "info"):
            expect_error(path, op)


def test_truncated_message_says_so(layout, tmp_path) -> None:
    path = write(tmp_path, layout.data[: len(layout.data) // 2])
    with pytest.raises(amber.FormatError, match="truncated"):
        amber.load(path)


# --------------------------------------------------------------------------
# not amber files at all


def test_empty_file(tmp_path) -> None:
    path = write(tmp_path, b"", "empty.amber")
    for op in ("load", "load_mmap_r", "load_mmap_c", "verify", "info"):
        err = expect_error(path, op)
        assert err.code == "format.not_amber"
        assert "empty" in str(err)
    with pytest.raises(amber.FormatError, match="empty"):
        amber.loads(b"")


def test_directory(tmp_path) -> None:
    for op in ("load", "load_mmap_r", "verify", "info"):
        with pytest.raises(IsADirectoryError) as caught:
            OPERATIONS[op](tmp_path)
        assert caught.value.filename == str(tmp_path)


def test_missing_file(tmp_path) -> None:
    missing = tmp_path / "nope" / "missing.amber"
    for op in ("load", "load_mmap_r", "load_mmap_c", "verify", "info"):
        with pytest.raises(FileNotFoundError) as caught:
            OPERATIONS[op](missing)
        assert caught.value.filename == str(missing)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_unreadable_file(layout, tmp_path) -> None:
    path = write(tmp_path, layout.data, "secret.amber")
    path.chmod(0)
    try:
        for op in ("load", "load_mmap_r", "verify", "info"):
            with pytest.raises(PermissionError):
                OPERATIONS[op](path)
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_pickle_opens_and_verify_names_it(tmp_path, protocol) -> None:
    # Pickles open by content whatever their name (issue 5); verify is for amber files only.
    path = write(tmp_path, pickle.dumps(make_object(), protocol=protocol), "model.pkl")
    for op in ("load", "load_mmap_r", "loads", "load_fileobj"):
        assert same_object(OPERATIONS[op](path)), op
    assert amber.info(path)["format"] == "pickle"
    err = expect_error(path, "verify")
    assert err.code == "format.not_amber"
    assert "pickle" in str(err) and f"protocol {protocol}" in str(err)


@pytest.mark.parametrize("protocol", [0, 1])
def test_old_protocol_pickle_opens(tmp_path, protocol) -> None:
    path = write(tmp_path, pickle.dumps({"a": [1, 2]}, protocol=protocol), "old.pkl")
    assert amber.load(path) == {"a": [1, 2]}
    assert "pickle" in str(expect_error(path, "verify"))


@pytest.mark.parametrize("compress", [0, 3, "gzip", "bz2", "xz", "lzma", "lz4"])
def test_joblib_file_opens_and_verify_names_it(tmp_path, compress) -> None:
    joblib = pytest.importorskip("joblib")
    if compress == "lz4":
        pytest.importorskip("lz4")
    path = tmp_path / "model.joblib"
    joblib.dump(make_object(), path, compress=compress)
    assert same_object(amber.load(path))
    assert amber.info(path)["format"] == "joblib"
    expected = {0: "joblib", 3: "joblib", "gzip": "gzip", "bz2": "bzip2", "xz": "xz", "lzma": "lzma", "lz4": "LZ4"}[compress]
    err = expect_error(path, "verify")
    assert err.code == "format.not_amber"
    assert expected in str(err), str(err)


def test_random_bytes(tmp_path) -> None:
    rng = np.random.default_rng(99)
    for size in (1, 7, 83, 4096, 100_000):
        blob = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        if blob.startswith(b"PK"):
            continue
        path = write(tmp_path, blob, "random.bin")
        for op in ("load", "load_mmap_r", "verify", "info"):
            expect_error(path, op)


def test_random_bytes_behind_amber_signature(layout, tmp_path) -> None:
    """The first 83 bytes of a real file followed by noise: refused, no crash."""
    rng = np.random.default_rng(7)
    head = layout.data[:83]
    for size in (0, 100, 10_000):
        blob = head + rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        path = write(tmp_path, blob, "noise.amber")
        for op in ("load", "load_mmap_r", "verify", "info"):
            expect_error(path, op)


def test_zip_that_is_not_amber(tmp_path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("hello.txt", "hello")
        zf.writestr("manifest.json", "{}")
    for op in ("load", "load_mmap_r", "verify", "info"):
        err = expect_error(path, op)
        assert err.code == "format.not_amber"
        assert "zip" in str(err)


def test_zip_with_amber_mimetype_but_deflated_entries(tmp_path) -> None:
    """Looks like amber at the start (stored `mimetype` first) but is not one."""
    path = tmp_path / "fake.amber"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), b"application/x-amber")
        zf.writestr("model.pkl", pickle.dumps(1), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("manifest.json", json.dumps({"format": "amber", "format_version": 1, "entries": []}))
    for op in ("load", "verify", "info"):
        with pytest.raises(amber.AmberError):
            OPERATIONS[op](path)


def test_npy_file(tmp_path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.arange(10))
    err = expect_error(path, "load")
    assert ".npy" in str(err)


@pytest.mark.parametrize("garbage", [b"x", b"\0" * 100, b"PK\x05\x06" + b"\0" * 18, None])
def test_trailing_garbage(layout, tmp_path, garbage) -> None:
    data = layout.data + (garbage if garbage is not None else layout.data)
    path = write(tmp_path, data, "trailing.amber")
    for op in ("load", "load_mmap_r", "verify", "info"):
        err = expect_error(path, op)
        assert err.code == "format.corrupt"


def test_leading_garbage(layout, tmp_path) -> None:
    path = write(tmp_path, b"#!/bin/sh\n" + layout.data, "leading.amber")
    for op in ("load", "verify", "info"):
        expect_error(path, op)


# --------------------------------------------------------------------------
# the command line


needs_cli = pytest.mark.skipif(AMBER_CLI is None, reason="the amber CLI is not installed")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AMBER_CLI, *args], capture_output=True, text=True, timeout=60)


@needs_cli
def test_cli_verify_exit_codes(layout, tmp_path) -> None:
    good = write(tmp_path, layout.data, "good.amber")
    bad = write(tmp_path, damaged(layout.data, layout.entries["model.pkl"].data + 3), "bad.amber")
    trunc = write(tmp_path, layout.data[:1000], "trunc.amber")
    missing = tmp_path / "missing.amber"
    assert cli("verify", str(good)).returncode == 0
    assert cli("verify", str(bad)).returncode == 1
    assert cli("verify", str(trunc)).returncode == 1
    assert cli("verify", str(missing)).returncode == 2
    assert cli("verify", str(tmp_path)).returncode == 2
    # Several files: the worst outcome wins.
    assert cli("verify", str(good), str(good)).returncode == 0
    assert cli("verify", str(good), str(bad)).returncode == 1
    assert cli("verify", str(bad), str(missing), str(good)).returncode == 2
    # No file at all is a usage error.
    assert cli("verify").returncode == 2


@needs_cli
def test_cli_verify_text_output(layout, tmp_path) -> None:
    good = write(tmp_path, layout.data, "good.amber")
    bad = write(tmp_path, damaged(layout.data, layout.entries["arrays/000001.npy"].data + 5000), "bad.amber")
    ok = cli("verify", str(good))
    assert "ok" in ok.stdout and str(good) in ok.stdout
    failed = cli("verify", str(bad))
    assert "arrays/000001.npy" in failed.stderr and str(bad) in failed.stderr


@needs_cli
def test_cli_verify_json(layout, tmp_path) -> None:
    good = write(tmp_path, layout.data, "good.amber")
    bad = write(tmp_path, damaged(layout.data, layout.entries["manifest.json"].data + 10), "bad.amber")
    missing = tmp_path / "missing.amber"
    proc = cli("verify", "--json", str(good), str(bad), str(missing))
    assert proc.returncode == 2
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(good), str(bad), str(missing)]
    assert records[0] == {"file": str(good), "ok": True, "entries": 5, "arrays": 2}
    assert records[1]["ok"] is False and records[1]["code"] == "format.checksum" and records[1]["entry"] == "manifest.json"
    assert records[2]["ok"] is False and records[2]["code"] == "io"


@needs_cli
def test_cli_info_json_equals_python_info(tmp_path) -> None:
    path = tmp_path / "m.amber"
    amber.dump(make_object(), path, metadata={"owner": "tests", "n": [1, 2.5, None]})
    proc = cli("info", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == amber.info(path)
    assert json.loads(proc.stdout)["file_size"] == path.stat().st_size


@needs_cli
def test_cli_info_on_bad_files(layout, tmp_path) -> None:
    bad = write(tmp_path, damaged(layout.data, layout.entries["manifest.json"].data + 10), "bad.amber")
    assert cli("info", str(bad)).returncode == 1
    assert cli("info", "--json", str(tmp_path / "missing.amber")).returncode == 2
    plain = write(tmp_path, pickle.dumps(1, protocol=4), "p.pkl")
    proc = cli("info", str(plain))  # a pickle is described (issue 5), verify refuses it
    assert proc.returncode == 0 and "not an amber file" in proc.stdout and '"pickle"' in proc.stdout
    proc = cli("verify", str(plain))
    assert proc.returncode == 1 and "pickle" in proc.stderr
    broken = write(tmp_path, pickle.dumps(1, protocol=4)[:-1], "broken.pkl")
    assert cli("info", str(broken)).returncode == 1


@pytest.mark.parametrize("compress", [None, True])
def test_damaged_tree_array_read_by_the_checks(tmp_path, compress) -> None:
    """Damage in an array the content checks read is a checksum error naming
    the entry, not an unsafe verdict (nor a wrong model): a compressed array
    is decoded, CRC checked, before it is checked; an uncompressed one is
    checked in the map, and a failed check has every CRC verified."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.RandomState(0)
    X = rng.rand(4000, 3)
    model = DecisionTreeRegressor(random_state=0).fit(X, rng.rand(len(X)))
    path = tmp_path / "tree.amber"
    amber.dump(model, path, compress=compress)
    (nodes,) = [e for e in amber.info(path)["entries"] if ["left_child", "<i8"] in e.get("dtype", [])]
    _load_with_middle_byte_damaged(path, nodes["name"], tmp_path / "bad.amber", 0xFF)


def _load_with_middle_byte_damaged(path: Path, name: str, bad: Path, xor: int) -> None:
    """XORs a byte in the middle of entry ``name``'s stored data into a copy at
    ``bad``, whose load must then be a checksum error naming the entry."""
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo(name)
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len + info.compress_size // 2] ^= xor
    bad.write_bytes(bytes(data))
    with pytest.raises(amber.ChecksumError) as excinfo:
        amber.load(bad)
    assert excinfo.value.entry == name


def _rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_released_arrays_leave_memory_but_keep_their_bytes(tmp_path) -> None:
    """`Reader.release_arrays` drops the file's pages of those arrays from the
    process's resident set, and reading them again still gives their bytes."""
    data = np.arange(1 << 21, dtype=np.float64)  # 16 MiB
    path = tmp_path / "big.amber"
    amber.dump({"a": data}, path)
    reader = _amber.Reader.open(str(path))
    (region,) = reader.array_regions()
    view = np.frombuffer(region, dtype=np.float64)
    before = _rss_file_kib()
    assert view.sum() == data.sum()  # touches every page
    touched = _rss_file_kib()
    assert touched - before > 12 << 10
    reader.release_arrays(0, 1)
    assert touched - _rss_file_kib() > 12 << 10
    np.testing.assert_array_equal(view, data)
    reader.release_arrays(1, 1)  # an empty or out-of-range request does nothing
    reader.release_arrays(0, 7)


def test_lent_tree_arrays_released_behind_the_unpickler(tmp_path, monkeypatch) -> None:
    """A safe load lends a forest's tree arrays as views of the file and,
    batch by batch, releases the pages of those already copied: every array
    before the last one handed out is released, in order, once each."""
    from sklearn.ensemble import RandomForestClassifier

    from amber import _api

    rng = np.random.RandomState(0)
    X = rng.rand(3000, 4)  # random labels: about 1,500 nodes a tree, arrays of 100 kB
    model = RandomForestClassifier(n_estimators=8, random_state=0).fit(X, rng.randint(0, 5, len(X)))
    path = tmp_path / "forest.amber"
    amber.dump(model, path)
    calls: list[tuple[int, int]] = []
    handed: list[int] = []

    class Recording:
        def __init__(self, reader: Any) -> None:
            self._reader = reader

        def __getattr__(self, name: str) -> Any:
            return getattr(self._reader, name)

        def release_arrays(self, first: int, end: int) -> None:
            assert end <= len(handed)  # only arrays already handed over
            calls.append((first, end))
            self._reader.release_arrays(first, end)

    original = _api._arrays_on_demand

    def recording(reader: Any, *args: Any) -> Any:
        for buffer in original(Recording(reader), *args):
            handed.append(len(handed))
            yield buffer

    monkeypatch.setattr(_api, "_arrays_on_demand", recording)
    monkeypatch.setattr(_api, "_LENT_BLOCK", 150 << 10)  # a batch a tree or so
    np.testing.assert_array_equal(amber.load(path).predict(X), model.predict(X))
    assert len(calls) > 3
    assert calls[0][0] == 0
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(calls, calls[1:]))
    assert calls[-1][1] >= len(handed) - 3  # all but the last batch or so


@pytest.mark.parametrize("field", ["nodes", "values"])
def test_damaged_tree_array_lent_to_the_tree(tmp_path, field) -> None:
    """A safe load hands a `Tree` its node and value arrays as views of the
    file (the tree copies them): their CRCs are still checked where they
    lie, before the tree gets them, so damage in either is a checksum error
    naming the entry, not a wrong model."""
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.RandomState(0)
    X = rng.rand(4000, 3)
    model = DecisionTreeClassifier(random_state=0).fit(X, rng.randint(0, 12, len(X)))
    path = tmp_path / "tree.amber"
    amber.dump(model, path)
    entries = [e for e in amber.info(path)["entries"] if e.get("dtype")]
    if field == "nodes":
        (entry,) = [e for e in entries if isinstance(e["dtype"], list) and ["left_child", "<i8"] in e["dtype"]]
    else:
        (entry,) = [e for e in entries if len(e["shape"]) == 3]
    reader = _amber.Reader.open(str(path))
    reader.checked_pickle([], None, True)
    lent = [name for (name, _, _), is_lent in zip(reader.array_entries(), reader.lent_arrays()) if is_lent]
    assert sorted(lent) == sorted(e["name"] for e in entries)  # both tree arrays, nothing else
    np.testing.assert_array_equal(amber.load(path).predict(X), model.predict(X))
    _load_with_middle_byte_damaged(path, entry["name"], tmp_path / "bad.amber", 0x01)
