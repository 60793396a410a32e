"""The ways of saving and loading that the benchmark compares.

Each method is a small adapter: ``dump(obj, path)`` writes, ``load(path)``
reads back (``None``: nothing to load, as for ``memcpy``). To add one, write a
``Method`` in a factory below and list its name in ``CATALOGUE`` (which group
it belongs to, which cases it runs on) and ``FACTORIES``. A method whose
library is missing is reported as "n/a" rather than stopping the run.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from suite import PUBLIC_CASES

Dump = Callable[[Any, Path], None]
Load = Callable[[Path], Any]

# "core" always runs; "limit" is the machine's own limits (case a only);
# "compressed" runs with --compressed.
CORE, LIMIT, COMPRESSED = "core", "limit", "compressed"


def _never_skip(case: str, quick: bool) -> str | None:
    return None


def _nothing(*args: Any) -> None:
    return None


@dataclass
class Method:
    """One way to save and load."""

    name: str
    dump: Dump
    load: Load | None
    suffix: str = ".bin"  # never .gz/.z/.lz4/...: joblib and amber pick a codec from the extension
    #: Exceptions that mean "this method does not support this" (reported as
    #: n/a with the message) rather than a bug (reported as an error).
    na_errors: tuple[type[BaseException], ...] = ()
    #: Reason not to run it on a (case, quick) pair, or None.
    skip: Callable[[str, bool], str | None] = _never_skip
    #: Untimed set-up before the first dump (given the object), and clean-up after the last.
    prepare: Callable[[Any], None] = _nothing
    cleanup: Callable[[], None] = _nothing
    note: str = ""
    #: Always run --repeat times, whatever the time budget (amber: the subject of the targets).
    full_repeats: bool = False


@dataclass
class Unavailable:
    """A method that cannot run here (its library is missing or broken)."""

    name: str
    reason: str
    note: str = ""


# --------------------------------------------------------------------------- pickle, joblib, skops


def pickle_dump(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=5)


def pickle_load(path: Path) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


def pickle_methods() -> list[Method]:
    return [Method("pickle", pickle_dump, pickle_load, ".pkl", note="protocol 5 into open(path, 'wb')")]


def joblib_methods() -> list[Method]:
    import joblib

    def dump_with(compress: Any) -> Dump:
        def dump(obj: Any, path: Path) -> None:
            joblib.dump(obj, path, compress=compress)

        return dump

    def load_with(mmap_mode: str | None) -> Load:
        return lambda path: joblib.load(path, mmap_mode=mmap_mode)

    return [
        Method("joblib", dump_with(0), load_with(None), ".joblib", note="uncompressed"),
        # joblib maps each array with a file descriptor of its own: "Too many open files" is a result.
        Method("joblib_mmap", dump_with(0), load_with("r"), ".joblib", na_errors=(OSError,),
               note="dump is joblib's; load(mmap_mode='r')"),
        Method("joblib_z3", dump_with(3), load_with(None), ".joblib", note="compress=3 (zlib level 3, one core)"),
        # joblib raises ValueError for lz4 when the lz4 package is missing.
        Method("joblib_lz4", dump_with(("lz4", 3)), load_with(None), ".joblib", na_errors=(ValueError,),
               note="compress=('lz4', 3), one core"),
    ]


def skops_methods() -> list[Method]:
    import skops.io as sio

    def load(path: Path) -> Any:
        # What a user must do to load a model with non-default types: trust what the file lists.
        return sio.load(path, trusted=sio.get_untrusted_types(file=path))

    def skip(case: str, quick: bool) -> str | None:
        # skops' save time grows quadratically with the number of arrays
        # (16k arrays: 9 s), so 100,000 would take ~6 minutes per dump.
        if case == "e" and not quick:
            return "skipped: skops.io.dump is quadratic in the number of arrays (~6 min per dump here)"
        return None

    def dump(obj: Any, path: Path) -> None:
        sio.dump(obj, path)

    # Whatever skops fails on is recorded as n/a with its message.
    return [Method("skops", dump, load, ".skops", na_errors=(Exception,), skip=skip,
                   note="skops.io; load trusts get_untrusted_types(file=...)")]


# --------------------------------------------------------------------------- amber


def amber_methods() -> list[Method]:
    import amber

    load_takes_threads = "threads" in inspect.signature(amber.load).parameters
    na = (ValueError, NotImplementedError)  # a compress value amber does not (yet) accept

    def dump_with(compress: Any = None, sync: bool = False, threads: int | None = None) -> Dump:
        kwargs: dict[str, Any] = {}
        if sync:
            kwargs["sync"] = True
        if threads is not None:
            kwargs["threads"] = threads

        def dump(obj: Any, path: Path) -> None:
            amber.dump(obj, path, compress, **kwargs)

        return dump

    def load_with(mmap_mode: str | None = None, threads: int | None = None, trusted: bool = False) -> Load:
        kwargs: dict[str, Any] = {"threads": threads} if threads is not None and load_takes_threads else {}
        if trusted:
            kwargs["trusted"] = True

        def load(path: Path) -> Any:
            return amber.load(path, mmap_mode, **kwargs)

        return load

    methods = [
        Method("amber", dump_with(), load_with(), ".amber", note="uncompressed"),
        Method("amber_trusted", dump_with(), load_with(trusted=True), ".amber",
               note="load(trusted=True): no safety analysis (what safe loading costs)"),
        Method("amber_mmap", dump_with(), load_with("r"), ".amber", note="dump is amber's; load(mmap_mode='r')"),
        Method("amber_sync", dump_with(sync=True), load_with(), ".amber", note="dump(sync=True): durable on return"),
        Method("amber_zstd", dump_with("zstd"), load_with(), ".amber", na, note="compress='zstd', all cores"),
        Method("amber_lz4", dump_with("lz4"), load_with(), ".amber", na, note="compress='lz4', all cores"),
        Method("amber_zstd_1thread", dump_with("zstd", threads=1), load_with(threads=1), ".amber", na,
               note="compress='zstd', threads=1 (dump and load)"),
    ]
    for method in methods:
        method.full_repeats = True
    return methods


def amber_legacy_methods() -> list[Method]:
    """amber.load of files joblib.dump wrote (issue 5): compare with joblib and joblib_z3's loads."""
    import amber
    import joblib

    def dump_with(compress: Any) -> Dump:
        def dump(obj: Any, path: Path) -> None:
            joblib.dump(obj, path, compress=compress)

        return dump

    def load(path: Path) -> Any:
        return amber.load(path)

    methods = [
        Method("amber_of_joblib", dump_with(0), load, ".joblib", note="dump is joblib's (uncompressed); amber.load"),
        Method("amber_of_joblib_z3", dump_with(3), load, ".joblib",
               note="dump is joblib's (compress=3, zlib); amber.load"),
    ]
    # The uncompressed load is the subject of a target; the compressed one's time is mostly joblib's dump.
    methods[0].full_repeats = True
    return methods


# --------------------------------------------------------------------------- the machine's limits (case a)


def tofile_dump(obj: dict[str, np.ndarray], path: Path) -> None:
    """Each array's raw bytes into a file of its own in one directory (dtype kept in the name)."""
    path.mkdir()
    for i, (key, value) in enumerate(obj.items()):
        value.tofile(path / f"{i:04d}-{key}.{value.dtype.name}")


def fromfile_load(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted(path.iterdir()):
        key, dtype = p.name.split("-", 1)[1].rsplit(".", 1)
        out[key] = np.fromfile(p, dtype=dtype)
    return out


class MemcpyLimit:
    """np.copyto into preallocated, already-touched arrays of the same sizes:
    memory bandwidth with no page faults and no I/O. Its 'dump' writes no file."""

    def __init__(self) -> None:
        self.targets: dict[str, np.ndarray] = {}

    def prepare(self, obj: dict[str, np.ndarray]) -> None:
        for key, value in obj.items():
            target = np.empty_like(value)
            target.fill(1)  # touch every page now, outside the timing
            self.targets[key] = target

    def dump(self, obj: dict[str, np.ndarray], path: Path) -> None:
        for key, value in obj.items():
            np.copyto(self.targets[key], value)

    def cleanup(self) -> None:
        self.targets.clear()


def limit_methods() -> list[Method]:
    memcpy = MemcpyLimit()
    return [
        Method("tofile", tofile_dump, fromfile_load, ".d", note="ndarray.tofile / np.fromfile, one file per array"),
        Method("memcpy", memcpy.dump, None, ".none", prepare=memcpy.prepare, cleanup=memcpy.cleanup,
               note="np.copyto into preallocated, touched arrays; no file"),
    ]


# --------------------------------------------------------------------------- blosc2 (case a)


def blosc2_methods() -> list[Method]:
    import blosc2

    def dump_with(codec: Any) -> Dump:
        # blosc2 maps clevel n to zstd level 2n-1: clevel 2 is zstd 3, amber's default level.
        cparams = blosc2.CParams(codec=codec, clevel=2, filters=[blosc2.Filter.SHUFFLE])

        def dump(obj: dict[str, np.ndarray], path: Path) -> None:
            path.mkdir()
            for i, (key, value) in enumerate(obj.items()):
                blosc2.asarray(value, urlpath=str(path / f"{i:04d}-{key}.b2nd"), mode="w", cparams=cparams)

        return dump

    def load(path: Path) -> dict[str, np.ndarray]:
        return {p.stem.split("-", 1)[1]: blosc2.open(str(p))[:] for p in sorted(path.iterdir())}

    return [
        Method("blosc2_zstd", dump_with(blosc2.Codec.ZSTD), load, ".d",
               note="blosc2 NDArray per array, zstd level 3 + shuffle, all cores"),
        Method("blosc2_lz4", dump_with(blosc2.Codec.LZ4), load, ".d",
               note="blosc2 NDArray per array, lz4 + shuffle, all cores"),
    ]


# --------------------------------------------------------------------------- registry

A_AND_INT32 = PUBLIC_CASES + ("a_int32",)
#: amber with and without compression also runs on (a)'s float64 array alone.
A_AND_SUBS = A_AND_INT32 + ("a_float64",)
#: Every method, in table order: its group and the cases it runs on.
CATALOGUE: dict[str, tuple[str, tuple[str, ...]]] = {
    "pickle": (CORE, PUBLIC_CASES),
    "joblib": (CORE, PUBLIC_CASES),
    "joblib_mmap": (CORE, PUBLIC_CASES),
    "skops": (CORE, PUBLIC_CASES),
    "amber": (CORE, A_AND_SUBS),  # the uncompressed reference in the one-array cases
    "amber_trusted": (CORE, PUBLIC_CASES),
    "amber_mmap": (CORE, PUBLIC_CASES),
    "amber_sync": (CORE, PUBLIC_CASES),
    "amber_of_joblib": (CORE, PUBLIC_CASES),
    "tofile": (LIMIT, ("a",)),
    "memcpy": (LIMIT, ("a",)),
    "joblib_z3": (COMPRESSED, A_AND_INT32),
    "joblib_lz4": (COMPRESSED, A_AND_INT32),
    "amber_zstd": (COMPRESSED, A_AND_SUBS),
    "amber_lz4": (COMPRESSED, A_AND_INT32),
    "amber_zstd_1thread": (COMPRESSED, A_AND_INT32),
    "amber_of_joblib_z3": (COMPRESSED, PUBLIC_CASES),
    "blosc2_zstd": (COMPRESSED, ("a", "a_int32")),
    "blosc2_lz4": (COMPRESSED, ("a", "a_int32")),
}
#: Which factory (one library each) provides which methods.
FACTORIES: list[tuple[Callable[[], list[Method]], tuple[str, ...]]] = [
    (pickle_methods, ("pickle",)),
    (joblib_methods, ("joblib", "joblib_mmap", "joblib_z3", "joblib_lz4")),
    (skops_methods, ("skops",)),
    (amber_methods, ("amber", "amber_trusted", "amber_mmap", "amber_sync", "amber_zstd", "amber_lz4", "amber_zstd_1thread")),
    (amber_legacy_methods, ("amber_of_joblib", "amber_of_joblib_z3")),
    (limit_methods, ("tofile", "memcpy")),
    (blosc2_methods, ("blosc2_zstd", "blosc2_lz4")),
]


def instantiate(names: set[str]) -> list[Method | Unavailable]:
    """The named methods in catalogue order. A library that fails to import
    makes its methods Unavailable (reported as n/a) instead of stopping the run;
    a library nobody asked for is never imported."""
    found: dict[str, Method | Unavailable] = {}
    for factory, provided in FACTORIES:
        if not names.intersection(provided):
            continue
        try:
            found.update((m.name, m) for m in factory())
        except Exception as e:  # ImportError, or an import that fails (a broken build)
            found.update((n, Unavailable(n, f"not available: {type(e).__name__}: {e}")) for n in provided)
    return [found[n] for n in CATALOGUE if n in names and n in found]


def names_for(case: str, compressed: bool, only: set[str] | None) -> set[str]:
    """The names of the methods that apply to a case under the command-line
    filters (naming a compressed method in ``only`` runs it without --compressed)."""
    return {
        name
        for name, (group, cases) in CATALOGUE.items()
        if case in cases
        and (only is None or name in only)
        and (group != COMPRESSED or compressed or only is not None)
    }


def select(case: str, compressed: bool, only: set[str] | None) -> list[Method | Unavailable]:
    """The methods that apply to a case, ready to run."""
    return instantiate(names_for(case, compressed, only))
