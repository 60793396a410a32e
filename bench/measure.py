"""Timing, peak memory, model size and round-trip checks for one operation.

Peak memory uses Linux's per-process high-water mark: writing "5" to
``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS, so
``VmHWM`` after an operation minus ``VmRSS`` before it is the most extra
resident memory the operation needed at any instant (sampled by the kernel,
exact, no polling thread).
"""

from __future__ import annotations

import bisect
import ctypes
import gc
import hashlib
import os
import pickle
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- /proc


def _status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Hand memory that is free but still mapped back to the kernel (glibc's
    malloc_trim), so RSS before an operation holds only live data, and what the
    operation allocates shows up as new RSS instead of reusing pages that an
    earlier run freed."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def file_backed_ranges() -> tuple[list[int], list[int]]:
    """Sorted (starts, ends) of this process's file-backed memory mappings."""
    starts, ends = [], []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) >= 5 and parts[4] != "0":  # inode 0: anonymous memory
                lo, hi = parts[0].split("-")
                starts.append(int(lo, 16))
                ends.append(int(hi, 16))
    order = sorted(range(len(starts)), key=starts.__getitem__)
    return [starts[i] for i in order], [ends[i] for i in order]


# --------------------------------------------------------------------------- arrays in an object


class _ArrayCollector(pickle.Pickler):
    """Pickles an object with every numeric ndarray replaced by a reference,
    collecting the arrays: finds all arrays reachable the way pickle reaches
    them (dicts, lists, estimator attributes, tree state...), and yields the
    rest of the stream (the model without its array data)."""

    def __init__(self, sink: Any) -> None:
        super().__init__(sink, protocol=5)
        self.arrays: list[np.ndarray] = []

    def persistent_id(self, obj: Any) -> int | None:
        if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
            self.arrays.append(obj)
            return len(self.arrays) - 1
        return None


class _HashSink:
    """A write-only file that keeps only the length and a hash of what it is given."""

    def __init__(self) -> None:
        self.size = 0
        self.hash = hashlib.blake2b()

    def write(self, data: bytes) -> int:
        self.size += len(data)
        self.hash.update(data)
        return len(data)


@dataclass
class Skeleton:
    """An object split into its arrays and the rest of its pickle stream."""

    arrays: list[np.ndarray]
    stream_bytes: int  # size of the pickle stream without the array data
    stream_hash: str


def skeleton(obj: Any) -> Skeleton:
    sink = _HashSink()
    collector = _ArrayCollector(sink)
    collector.dump(obj)
    return Skeleton(collector.arrays, sink.size, sink.hash.hexdigest())


def reference_skeleton(obj: Any) -> Skeleton:
    """The skeleton a faithful loader's result must have.

    Taken from a pickle round trip of ``obj`` rather than ``obj`` itself: a
    round trip can change which equal strings are the same object, and so the
    memo references in the stream, without changing the object. Arrays travel
    out of band, so the round trip copies (almost) no array data.
    """
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return skeleton(pickle.loads(data, buffers=buffers))


def _intervals(arrays: list[np.ndarray]) -> list[tuple[int, int]]:
    """The memory each array spans, merged so shared memory counts once."""
    spans = sorted(
        (a.__array_interface__["data"][0], a.__array_interface__["data"][0] + a.nbytes) for a in arrays if a.nbytes
    )
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def array_bytes(arrays: list[np.ndarray]) -> int:
    """Distinct bytes of array data (views of one buffer count once)."""
    return sum(hi - lo for lo, hi in _intervals(arrays))


def anonymous_array_bytes(arrays: list[np.ndarray]) -> int:
    """Distinct array bytes in anonymous memory, i.e. not mapped from a file.

    A memory-mapped load leaves its arrays in the file's mapping: they take no
    RSS until touched, so they must not be subtracted from the load's peak.
    """
    starts, ends = file_backed_ranges()
    total = 0
    for lo, hi in _intervals(arrays):
        i = bisect.bisect_right(starts, lo) - 1
        if i >= 0 and lo < ends[i]:
            continue  # inside a file mapping
        total += hi - lo
    return total


def model_size(obj: Any) -> dict[str, int]:
    """Model size = distinct array bytes + the pickle stream without them."""
    sk = skeleton(obj)
    arrays = array_bytes(sk.arrays)
    return {"array_bytes": arrays, "stream_bytes": sk.stream_bytes, "model_bytes": arrays + sk.stream_bytes,
            "n_arrays": len(sk.arrays)}


def _same_array(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 24) -> bool:
    """Equal dtype, shape and bytes (so NaN equals NaN and -0.0 is not 0.0),
    in chunks to avoid full-size temporaries. Structured arrays are compared
    field by field: their padding bytes are uninitialised memory."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.names:
        return all(_same_array(a[name], b[name], chunk) for name in a.dtype.names)
    if a.dtype.itemsize == 0:
        return True
    a, b = a.reshape(-1), b.reshape(-1)
    for start in range(0, a.size, chunk):
        x = np.ascontiguousarray(a[start : start + chunk]).view(np.uint8)
        y = np.ascontiguousarray(b[start : start + chunk]).view(np.uint8)
        if not np.array_equal(x, y):
            return False
    return True


def same_content(original: Skeleton, loaded: Any) -> str:
    """'ok' when ``loaded`` has the same pickle stream and the same array bytes
    as the original; otherwise what differs."""
    other = skeleton(loaded)
    if len(other.arrays) != len(original.arrays):
        return f"{len(other.arrays)} arrays instead of {len(original.arrays)}"
    for i, (a, b) in enumerate(zip(original.arrays, other.arrays)):
        if not _same_array(a, b):
            return f"array {i} of {len(original.arrays)} differs (shape {a.shape} vs {b.shape})"
    if other.stream_hash != original.stream_hash:
        return "arrays equal; the rest of the pickle stream differs"
    return "ok"


# --------------------------------------------------------------------------- one timed operation


@dataclass
class Sample:
    """One run of one operation."""

    seconds: float
    rss_before: int
    peak: int  # VmHWM after - VmRSS before
    rss_after: int
    result: Any


def timed(fn: Callable[[], Any]) -> Sample:
    """Run ``fn`` once: wall time, and peak resident memory above the start."""
    release_free_memory()
    reset_peak()
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    hwm = _status_bytes("VmHWM")
    after = _status_bytes("VmRSS")
    return Sample(seconds, before, hwm - before, after, result)


def fsync_tree(path: Path) -> None:
    """Flush a written file (or every file of a written directory) to disk, so
    the next operation does not share the disk with background writeback."""
    paths = sorted(path.rglob("*")) if path.is_dir() else [path]
    for p in paths:
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def path_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
