"""Atomic writes: a dump either replaces its target with a complete file or
leaves the previous content, whatever goes wrong.

Covers ``overwrite=False`` (including a file that appears during the write),
exceptions raised midway by the pickler (unpicklable objects, a
``KeyboardInterrupt`` from ``__reduce__``), a real process killed with
SIGKILL at many points of a large write, a full disk (``RLIMIT_FSIZE`` in a
subprocess, ``/dev/full``), ``sync=True``, file modes (umask for new files,
kept for replaced ones), readers that have the old file mapped, and
concurrent dumps and loads from several threads."""

from __future__ import annotations

import builtins
import errno
import fnmatch
import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import amber
from _testutil import TEMP_SUFFIX, temp_files

OLD = {"marker": "old", "weights": np.arange(50_000, dtype=np.float64)}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_old(path: Path) -> None:
    got = amber.load(path)
    assert got["marker"] == "old"
    assert np.array_equal(got["weights"], OLD["weights"])


@pytest.fixture
def target(tmp_path) -> Path:
    """A directory of its own holding one good amber file with the OLD object."""
    (tmp_path / "store").mkdir()
    path = tmp_path / "store" / "model.amber"
    amber.dump(OLD, path)
    return path


def only_target_left(path: Path) -> None:
    assert os.listdir(path.parent) == [path.name], os.listdir(path.parent)


# --------------------------------------------------------------------------
# overwrite=False


def test_overwrite_false_refuses_an_existing_file(target) -> None:
    before, mtime = digest(target), target.stat().st_mtime_ns
    with pytest.raises(FileExistsError) as caught:
        amber.dump({"marker": "new"}, target, overwrite=False)
    assert caught.value.errno == errno.EEXIST
    assert caught.value.filename == str(target)
    assert digest(target) == before and target.stat().st_mtime_ns == mtime
    only_target_left(target)


def test_overwrite_false_writes_a_new_file(tmp_path) -> None:
    path = tmp_path / "fresh.amber"
    amber.dump(OLD, path, overwrite=False)
    assert_old(path)


class CreatesTarget:
    """Pickling this creates ``path`` behind the writer's back."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        self.path.write_bytes(b"someone else's file")
        return (str, ("x",))


def test_overwrite_false_never_clobbers_a_file_created_during_the_write(tmp_path) -> None:
    path = tmp_path / "race.amber"
    with pytest.raises(FileExistsError):
        amber.dump([np.arange(100_000.0), CreatesTarget(path)], path, overwrite=False)
    assert path.read_bytes() == b"someone else's file"
    only_target_left(path)


# --------------------------------------------------------------------------
# exceptions while pickling


def generator() -> Any:
    yield 1


class ReduceRaises:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __reduce__(self) -> Any:
        raise self.exc


def local_class_instance() -> Any:
    class Local:  # defined inside a function: cannot be pickled by reference
        pass

    return Local()


BAD_VALUES = {
    "lambda": (lambda: lambda x: x, Exception),
    "generator": (lambda: generator(), TypeError),
    "local_class": (local_class_instance, Exception),
    "lock": (lambda: threading.Lock(), TypeError),
    "reduce_raises": (lambda: ReduceRaises(RuntimeError("boom")), RuntimeError),
    "keyboard_interrupt": (lambda: ReduceRaises(KeyboardInterrupt()), KeyboardInterrupt),
    "system_exit": (lambda: ReduceRaises(SystemExit(3)), SystemExit),
}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_error_midway_leaves_the_old_file_and_no_temp_file(target, name) -> None:
    make, exc_type = BAD_VALUES[name]
    before = digest(target)
    # Large arrays before and after the bad value: by the time it fails, bytes
    # have been written to the temporary file.
    value = {"a": np.ones(2_000_000), "bad": [1, make()], "z": np.zeros(500_000)}
    with pytest.raises(exc_type):
        amber.dump(value, target)
    assert digest(target) == before
    assert_old(target)
    only_target_left(target)


def test_error_midway_for_a_new_path_leaves_nothing(tmp_path) -> None:
    path = tmp_path / "never.amber"
    with pytest.raises(TypeError):
        amber.dump([np.ones(1_000_000), generator()], path)
    assert os.listdir(tmp_path) == []


def test_error_midway_into_a_file_object_writes_nothing(tmp_path) -> None:
    """A file object receives the file only once it is complete."""
    path = tmp_path / "fobj.amber"
    with open(path, "wb") as f:
        f.write(b"KEEP")
        with pytest.raises(TypeError):
            amber.dump([np.ones(1_000_000), generator()], f)
    assert path.read_bytes() == b"KEEP"


def test_bad_metadata_fails_before_anything_is_written(target) -> None:
    before = digest(target)
    with pytest.raises(TypeError, match="'when'"):
        amber.dump({"marker": "new"}, target, metadata={"when": object()})
    assert digest(target) == before
    only_target_left(target)


def test_after_a_failed_dump_the_next_one_works(target) -> None:
    with pytest.raises(TypeError):
        amber.dump([generator()], target)
    amber.dump({"marker": "new"}, target)
    assert amber.load(target) == {"marker": "new"}
    only_target_left(target)


# --------------------------------------------------------------------------
# a real process killed with SIGKILL mid-write


KILL_CHILD = """
import sys, time
import numpy as np
import amber

class Slow:
    # Pickling sleeps a little, so the write takes a while before the arrays.
    def __init__(self, i):
        self.i = i
    def __reduce__(self):
        time.sleep(0.01)
        return (complex, (self.i, 0.0))

arrays = [np.full(1_250_000, i, dtype=np.float64) for i in range(16)]  # 16 x 10 MB
new = {"marker": "new", "slow": [Slow(i) for i in range(20)], "arrays": arrays}
print("ready", flush=True)
start = time.perf_counter()
amber.dump(new, sys.argv[1])
print("done", time.perf_counter() - start, flush=True)
"""


def check_new(got: dict) -> None:
    assert got["slow"] == list(range(20))
    assert len(got["arrays"]) == 16
    for i, arr in enumerate(got["arrays"]):
        assert arr.shape == (1_250_000,) and (arr == i).all()


def start_child(script: Path, target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.slow
def test_sigkill_mid_write_leaves_old_or_new_never_partial(tmp_path) -> None:
    script = tmp_path / "child.py"
    script.write_text(KILL_CHILD)
    work = tmp_path / "models"
    work.mkdir()
    target = work / "model.amber"
    amber.dump(OLD, target)

    # Two uninterrupted runs (the first warms the page cache) measure how long
    # the dump takes on this machine.
    durations = []
    for _ in range(2):
        proc = start_child(script, target)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        durations.append(float(out.split()[1]))
        check_new(amber.load(target))
    duration = min(durations)

    outcomes, leftovers = [], 0
    # From 0 to 100 % of the dump, then once well after it (the commit must have happened).
    delays = [duration * k / 10 for k in range(11)] + [3 * duration + 0.5]
    for delay in delays:
        amber.dump(OLD, target)
        proc = start_child(script, target)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        # The target is always a whole, valid file: the old one or the new one.
        amber.verify(target)
        got = amber.load(target)
        assert got["marker"] in ("old", "new")
        if got["marker"] == "old":
            assert np.array_equal(got["weights"], OLD["weights"])
        else:
            check_new(got)
        outcomes.append(got["marker"])
        # A killed writer may leave its temporary file, under the documented name.
        for name in os.listdir(work):
            if name == target.name:
                continue
            assert fnmatch.fnmatch(name, f".{target.name}.*{TEMP_SUFFIX}"), name
            leftovers += 1
            (work / name).unlink()
    # The kills really landed before and after the commit, and some mid-write.
    assert "old" in outcomes and "new" in outcomes, outcomes
    assert leftovers >= 1


# --------------------------------------------------------------------------
# full disk


FSIZE_CHILD = """
import errno, os, resource, signal, sys
import numpy as np
import amber

target = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))  # files up to 2 MiB
value = {"marker": "new", "big": np.arange(1_000_000, dtype=np.float64)}  # 8 MB
try:
    amber.dump(value, target, compress=sys.argv[2] == "compressed" or None)
except OSError as e:
    print(type(e).__name__, e.errno, repr(str(e)))
else:
    print("no error")
"""


def run_fsize_child(tmp_path: Path, target: Path, mode: str) -> list[str]:
    """Runs FSIZE_CHILD; returns [exception class, errno, message] or ["no", "error"]."""
    code = FSIZE_CHILD
    if mode == "compressed":  # random data, so the compressed file still exceeds the limit
        code = code.replace("np.arange(1_000_000, dtype=np.float64)", "np.random.default_rng(0).random(1_000_000)")
    script = tmp_path / f"fsize_{mode}.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script), str(target), mode], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr  # not killed by SIGXFSZ, no uncaught exception
    return proc.stdout.split(maxsplit=2)


@pytest.mark.parametrize("mode", ["plain", "compressed"])
def test_file_size_limit_raises_oserror_and_keeps_the_old_file(target, tmp_path, mode) -> None:
    before = digest(target)
    result = run_fsize_child(tmp_path, target, mode)
    assert result[0] != "no", "the dump succeeded despite RLIMIT_FSIZE"
    assert issubclass(getattr(builtins, result[0]), OSError), result
    assert str(target) in result[2]  # the message names the target
    assert digest(target) == before
    assert_old(target)
    only_target_left(target)


def test_file_size_limit_error_has_errno_efbig(target, tmp_path) -> None:
    result = run_fsize_child(tmp_path, target, "plain")
    assert result[0] != "no", "the dump succeeded despite RLIMIT_FSIZE"
    assert int(result[1]) == errno.EFBIG, result


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("size", [10, 2_000_000])
def test_writing_to_dev_full_raises_enospc(size) -> None:
    # Unbuffered, so the failing write happens inside dump (not at close).
    with open("/dev/full", "wb", buffering=0) as f:
        with pytest.raises(OSError) as caught:
            amber.dump(np.arange(size, dtype=np.float64), f)
    assert caught.value.errno == errno.ENOSPC


# --------------------------------------------------------------------------
# sync, modes, readers of the old file


def test_sync_true(target) -> None:
    result = amber.dump({"marker": "synced"}, target, sync=True)
    assert result == str(target)
    assert amber.load(target) == {"marker": "synced"}
    new = target.with_name("new.amber")
    amber.dump(OLD, new, sync=True, overwrite=False)
    assert_old(new)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_mode_follows_the_umask(tmp_path, umask, expected) -> None:
    previous = os.umask(umask)
    try:
        path = amber.dump(OLD, tmp_path / f"mode{umask:o}.amber")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(path).st_mode) == expected


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444, 0o755])
def test_replaced_file_keeps_its_mode(target, mode) -> None:
    target.chmod(mode)
    previous = os.umask(0o022)
    try:
        amber.dump({"marker": "new"}, target)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert amber.load(target) == {"marker": "new"}


def test_readers_with_the_old_file_mapped_keep_the_old_content(target) -> None:
    mapped = amber.load(target, mmap_mode="r")
    copied = amber.load(target, mmap_mode="c")
    amber.dump({"marker": "new", "weights": -np.arange(50_000, dtype=np.float64)}, target)
    assert np.array_equal(mapped["weights"], OLD["weights"])
    assert np.array_equal(copied["weights"], OLD["weights"])
    assert amber.load(target)["marker"] == "new"


def test_replacing_a_file_that_is_being_read_through_a_file_object(target) -> None:
    with open(target, "rb") as f:
        amber.dump({"marker": "new"}, target)
        assert_old_from = amber.load(f)
    assert assert_old_from["marker"] == "old"


# --------------------------------------------------------------------------
# threads


def test_concurrent_dumps_to_different_paths(tmp_path) -> None:
    n_threads, per_thread = 6, 4
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                value = {"t": t, "i": i, "data": np.full(200_000, t * 100 + i, dtype=np.int64)}
                amber.dump(value, tmp_path / f"t{t}-{i}.amber", compress=(i % 2 == 1) or None)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for t in range(n_threads):
        for i in range(per_thread):
            got = amber.load(tmp_path / f"t{t}-{i}.amber")
            assert got["t"] == t and got["i"] == i and (got["data"] == t * 100 + i).all()
    assert temp_files(tmp_path) == []


def test_concurrent_writers_and_readers_of_one_path(target) -> None:
    """Readers only ever see complete versions while writers replace the file."""
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[int] = set()

    def writer(w: int) -> None:
        try:
            for i in range(8):
                version = w * 100 + i
                amber.dump({"marker": "v", "version": version, "weights": np.full(300_000, version, dtype=np.float64)}, target)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def reader() -> None:
        try:
            while not stop.is_set():
                got = amber.load(target, mmap_mode="r")
                if got["marker"] == "old":
                    assert np.array_equal(got["weights"], OLD["weights"])
                else:
                    assert (got["weights"] == got["version"]).all()
                    seen.add(got["version"])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for th in readers + writers:
        th.start()
    for th in writers:
        th.join()
    stop.set()
    for th in readers:
        th.join()
    assert not errors, errors
    final = amber.load(target)
    assert (final["weights"] == final["version"]).all()
    only_target_left(target)
