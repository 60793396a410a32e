"""``amber.scan`` of a path reads an amber file in pieces (a few ``pread``s
of its head, directory and headers, the file mapped only when a check needs
array bytes), and builds its report without a JSON round trip. Neither may
change a report or an error: a path and the same bytes in memory (read the
old way, whole) must give exactly the same answer, for good and damaged files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

import amber
from amber import _amber


def _answer(source: Any) -> tuple[Any, ...]:
    """Everything ``amber.scan`` says about ``source``, or its error."""
    try:
        r = amber.scan(source)
    except Exception as e:  # the very error is what is compared
        return ("error", type(e).__name__, str(e), getattr(e, "code", None), getattr(e, "offset", None))
    findings = [(f.code, f.severity, f.message, f.offset, f.opcode, f.global_name, f.count) for f in r.findings]
    return (r.verdict, r.format, r.protocol, findings, r.globals, sorted(r.allowed), r.details)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An amber file well over the size read whole: a forest (whose tree
    checks read node arrays from the file) beside a 640 kB array."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=3, max_depth=4, random_state=0).fit(X, y)
    path = tmp_path_factory.mktemp("scan") / "big.amber"
    amber.dump({"forest": forest, "big": np.arange(80_000, dtype=np.float64)}, path)
    assert path.stat().st_size > 600 << 10  # above the size read whole (512 KiB)
    return path


def test_a_large_file_scans_as_its_bytes_do(big_file: Path) -> None:
    by_path = _answer(big_file)
    assert by_path[0] == "safe" and by_path[1] == "amber"
    assert by_path == _answer(big_file.read_bytes())


def test_a_large_file_without_checked_arrays_scans_as_its_bytes_do(tmp_path: Path) -> None:
    path = tmp_path / "arrays.amber"
    amber.dump([np.zeros(300_000), np.ones((700, 300), dtype=np.float32)], path)
    by_path = _answer(path)
    assert by_path[0] == "safe"
    assert by_path == _answer(path.read_bytes())


def test_damaged_large_files_fail_as_their_bytes_do(big_file: Path, tmp_path: Path) -> None:
    data = big_file.read_bytes()
    n = len(data)
    # Where the open reads: the head, the arrays' local and `.npy` headers,
    # the manifest and the directory at the end; and a few cuts anywhere.
    offsets = sorted(
        set(range(0, 200, 7)) | set(range(n - 1200, n, 5)) | {n // 3, n // 2, n - 40_000} | _header_offsets(data)
    )
    damaged = tmp_path / "damaged.amber"
    refused = 0
    for at in offsets:
        for bad in (data[:at], data[:at] + bytes([data[at] ^ 0x24]) + data[at + 1 :]):
            damaged.write_bytes(bad)
            by_path = _answer(damaged)
            assert by_path == _answer(bad), f"damage at {at} of {n}"
            refused += by_path[0] == "error"
    assert refused > len(offsets)


def _header_offsets(data: bytes) -> set[int]:
    """Bytes of each entry's local header and the start of its data."""
    out: set[int] = set()
    at = data.find(b"PK\x03\x04")
    while at != -1 and len(out) < 600:
        out.update(range(at, at + 160, 9))
        at = data.find(b"PK\x03\x04", at + 4)
    return out


def test_details_is_the_analysers_whole_report(big_file: Path) -> None:
    report = amber.scan(big_file)
    details = report.details
    assert details is report.details  # decoded once
    assert details["verdict"] == report.verdict and details["format"] == report.format
    assert details["protocol"] == report.protocol
    assert {g["name"]: g["count"] for g in details["globals"]} == report.globals
    assert details["opcodes"] > 0 and details["stream_len"] > 0
    assert details["findings"] == []
    assert json.loads(report.report_json) == details


def test_findings_come_through_in_full(tmp_path: Path) -> None:
    """A refused stream's findings: every field, as the JSON report has them."""
    import os

    hostile = tmp_path / "hostile.pkl"
    import pickle

    class Evil:
        def __reduce__(self) -> Any:
            return (os.system, ("true",))

    hostile.write_bytes(pickle.dumps([Evil(), Evil()], protocol=4))
    report = amber.scan(hostile)
    assert report.verdict == "unsafe" and report.findings
    raw = report.details["findings"]
    assert [(f.code, f.severity, f.message, f.offset, f.opcode, f.global_name, f.count) for f in report.findings] == [
        (d["code"], d["severity"], d["message"], d.get("offset"), d.get("opcode"), d.get("global"), d["count"]) for d in raw
    ]
    assert any(f.global_name in ("posix.system", "os.system") for f in report.findings)
    assert report.findings[0].offset is not None
    assert _answer(hostile) == _answer(hostile.read_bytes())


def test_the_binding_returns_the_report_parts(big_file: Path) -> None:
    fmt, verdict, findings, used, allowed, protocol, text = _amber.scan_path(str(big_file), [])
    assert (fmt, verdict, findings, protocol) == ("amber", "safe", [], 5)
    assert used and all(isinstance(name, str) and count >= 1 for name, count in used.items())
    listed = json.loads(text)["globals"]
    assert list(used.items()) == [(g["name"], g["count"]) for g in listed]
    assert all(g["allowed"] for g in listed) and allowed == frozenset(used)


def test_the_accepted_names_are_the_ones_find_class_may_resolve() -> None:
    """The binding's set of accepted names is ``allowed_names`` of the
    globals the report accepts: NumPy 1.x names in NumPy 2's spelling, a
    refused name left out."""
    from amber import _safety

    stream = b"\x80\x02cnumpy.core.multiarray\nscalar\ncposix\nsystem\ncnumpy\ndtype\n\x87."
    fmt, verdict, _, used, allowed, protocol, text = _amber.scan_bytes(stream, [])
    assert (fmt, verdict, protocol) == ("pickle", "unsafe", 2)
    listed = json.loads(text)["globals"]
    assert used == {g["name"]: g["count"] for g in listed} and len(used) == 3
    assert allowed == _safety.allowed_names(g["name"] for g in listed if g["allowed"])
    assert allowed == {"numpy._core.multiarray.scalar", "numpy.dtype"}
    report = amber.scan(stream)
    assert (report.globals, report.allowed) == (used, allowed)


def test_a_file_of_many_entries_scans_as_its_bytes_do(tmp_path: Path) -> None:
    """Past the first block of pieces: a forest beside 100 arrays stored as
    entries of their own, each local header read as a piece of its own;
    damage to late ones is found alike."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4000, 3))
    # Random labels: deep trees, whose node arrays are entries the checks read.
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, rng.integers(0, 2, 4000))
    path = tmp_path / "many.amber"
    arrays = [np.full(8192, k, dtype=np.float64) for k in range(100)]
    amber.dump({"arrays": arrays, "forest": forest}, path)
    data = path.read_bytes()
    assert data.count(b"PK\x03\x04") > 100 and len(data) > 600 << 10
    assert _answer(path)[0] == "safe" and _answer(path) == _answer(data)
    headers = sorted(_header_offsets(data))
    for at in headers[-400::37] + [len(data) - 30, len(data) - 700]:
        bad = data[:at] + bytes([data[at] ^ 0x11]) + data[at + 1 :]
        path.write_bytes(bad)
        assert _answer(path) == _answer(bad), f"damage at {at}"


def test_a_report_from_parts_is_the_dataclass_built_from_its_fields() -> None:
    from amber import _safety

    parts = (
        "joblib",
        "unsafe",
        [("global.denied", "critical", "no", 12, "STACK_GLOBAL", "posix.system", 2)],
        {"numpy.core.multiarray._reconstruct": 3, "posix.system": 2, "numpy.dtype": 1},
        frozenset({"numpy._core.multiarray._reconstruct", "numpy.dtype"}),
        4,
        '{"format":"joblib","verdict":"unsafe","opcodes":9}',
    )
    fast = _safety.report_from_parts(parts, "f.joblib")
    built = _safety.ScanReport(
        verdict="unsafe",
        findings=(_safety.Finding("global.denied", "critical", "no", 12, "STACK_GLOBAL", "posix.system", 2),),
        globals={"numpy.core.multiarray._reconstruct": 3, "posix.system": 2, "numpy.dtype": 1},
        source="f.joblib",
        format="joblib",
        protocol=4,
        allowed=frozenset({"numpy._core.multiarray._reconstruct", "numpy.dtype"}),
        report_json=parts[6],
    )
    assert fast == built and repr(fast) == repr(built) and str(fast) == str(built)
    assert vars(fast) == vars(built)
    assert fast.allowed == built.allowed and fast.details == {"format": "joblib", "verdict": "unsafe", "opcodes": 9}
    with pytest.raises(AttributeError):
        fast.verdict = "safe"  # type: ignore[misc]
    empty = _safety.report_from_parts(("amber", "safe", [], {}, frozenset(), None, ""), "")
    assert empty == _safety.ScanReport(verdict="safe", findings=(), globals={}, format="amber") and empty.details == {}


def test_a_manifest_beyond_the_plain_subset_scans_alike(tmp_path: Path) -> None:
    """The scan reads a manifest written by amber by hand and hands any
    other text to serde: user metadata with escapes, non-ASCII text,
    floats and negative numbers takes the second road, with the same report."""
    value = {"w": np.arange(10.0), "model": RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0)}
    value["model"].fit(np.eye(4), [0, 1, 0, 1])
    plain, odd = tmp_path / "plain.amber", tmp_path / "odd.amber"
    amber.dump(value, plain)
    amber.dump(value, odd, metadata={"note": 'caf\u00e9 "q"\n', "score": -0.5, "deep": [[[1e3]]]})
    a, b = _answer(plain), _answer(odd)
    assert a[0] == "safe" and a[:6] == b[:6]
    assert b"caf\\u00e9" in odd.read_bytes() or "café".encode() in odd.read_bytes()
    assert _answer(odd) == _answer(odd.read_bytes())


def test_paths_of_any_characters_scan_alike(big_file: Path, tmp_path: Path) -> None:
    """The binding reads an ASCII path in place and converts any other as
    ``os.fsencode`` does: a non-ASCII name and one of bytes that are not
    UTF-8 (a surrogate escape) open the same file."""
    import os
    import shutil

    expected = _answer(big_file)
    for name in ("plain.amber", "caf\u00e9 \u6a21\u578b.amber", os.fsdecode(b"\xff\xfe.amber")):
        target = tmp_path / name
        shutil.copyfile(big_file, target)
        assert _answer(target) == expected and _answer(str(target)) == expected, name
        assert _amber.scan_path(str(target), [])[:2] == ("amber", "safe")
    with pytest.raises(FileNotFoundError):
        amber.scan(tmp_path / "caf\u00e9-missing.amber")
