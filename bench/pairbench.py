"""Ratio targets measured on interleaved pairs of runs: what safety costs
(``amber.load`` against ``amber.load(trusted=True)`` on one file) and what
compressing random floats costs (``amber.dump(compress="zstd")`` against the
uncompressed dump).

The methods of the main table run as separate blocks of runs, minutes apart;
on this VM the speed drifts 10-40% over minutes, which swamps a 5% target,
and a 1 GiB dump's time swings 2-3x with the state of the memory behind the
page cache (0.36-0.75 s for the same uncompressed dump, in a repeating
pattern, and 3 s for the first). Here the two operations alternate in pairs
(ABBA order, so neither always goes first), each with its freed memory
returned to the kernel first as in the main table: at least ``pairs`` pairs,
then more while they fit in ``budget_s`` seconds (up to ``max_pairs``). On this VM one
pair's load ratio scatters by 10-23% (robust standard deviation) about its
median, so 11 pairs would leave a 4-9% standard error on a 5% target.
Reported: each side's median, the number of pairs, the median of the
per-pair ratios (the judged figure) and that median's standard error.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import measure

#: Seconds of pairs after the first ``pairs``: 23-35 pairs of the suite's
#: 0.2-0.3 s loads, 130-145 of (d)'s millisecond ones.
BUDGET_S = 20.0
#: Most pairs measured.
MAX_PAIRS = 201


def interleaved(first: Callable[[], Any], second: Callable[[], Any], pairs: int, budget_s: float = 0.0,
                max_pairs: int = 0, after: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Times ``first()`` and ``second()`` alternately, ``first`` leading in
    even pairs and ``second`` in odd ones, each call under ``measure.timed``;
    ``after()``, if given, runs untimed after each call (a dump's flush, load
    and removal). The ratios are first ÷ second, pair by pair."""
    times: tuple[list[float], list[float]] = ([], [])
    started = time.perf_counter()
    i = 0
    while i < pairs or (time.perf_counter() - started < budget_s and i < max_pairs):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            sample = measure.timed(first if side == 0 else second)
            times[side].append(sample.seconds)
            del sample
            if after is not None:
                after()
        i += 1
    ratios = [a / b for a, b in zip(*times) if b > 0]
    return {"pairs": len(ratios), "first_s": statistics.median(times[0]), "second_s": statistics.median(times[1]),
            "ratio": statistics.median(ratios), "ratio_se": median_se(ratios), "ratios": ratios}


def safety_case(obj: Any, run_dir: Path, case: str, pairs: int, budget_s: float = 0.0,
                max_pairs: int = 0) -> dict[str, Any]:
    """Interleaved safe and trusted load times of this case's amber file."""
    import amber

    path = run_dir / f"{case}-safety.amber"
    amber.dump(obj, path)
    measure.fsync_tree(path)
    try:
        amber.load(path)  # warm the page cache, imports and the policy
        row = interleaved(lambda: amber.load(path), lambda: amber.load(path, trusted=True),
                          pairs, budget_s, max_pairs)
    finally:
        path.unlink(missing_ok=True)
    row["safe_s"], row["trusted_s"] = row.pop("first_s"), row.pop("second_s")
    return row


def compression_case(obj: Any, run_dir: Path, case: str, pairs: int, budget_s: float = 0.0,
                     max_pairs: int = 0) -> dict[str, Any]:
    """Interleaved zstd and uncompressed dump times of ``obj``, each run as the
    main table's: a dump to a fresh file, flushed to disk, loaded (untimed
    here) and removed, so the pairs differ from the table's blocks of runs in
    their order alone."""
    import amber

    paths = {"zstd": run_dir / f"{case}-pair-zstd.amber", "none": run_dir / f"{case}-pair-none.amber"}

    def dump(kind: str) -> None:
        amber.dump(obj, paths[kind], compress="zstd" if kind == "zstd" else None)

    def flush() -> None:
        for path in paths.values():
            if path.exists():
                measure.fsync_tree(path)
                loaded = amber.load(path)
                del loaded
                path.unlink()

    try:
        for kind in paths:  # the first dumps touch memory the page cache has never had
            dump(kind)
            flush()
        row = interleaved(lambda: dump("zstd"), lambda: dump("none"), pairs, budget_s, max_pairs, flush)
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)
    row["zstd_s"], row["none_s"] = row.pop("first_s"), row.pop("second_s")
    return row


def median_se(values: list[float]) -> float | None:
    """The standard error of the median of ``values``, from their spread:
    1.2533 x sigma / sqrt(n), sigma estimated from the interquartile range (so
    a few runs the VM stalled do not inflate it); None below four values."""
    if len(values) < 4:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4)
    return 1.2533 * (q3 - q1) / 1.349 / len(values) ** 0.5
