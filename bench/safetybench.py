"""What safety costs: ``amber.load`` against ``amber.load(trusted=True)`` on
the same file, runs interleaved.

The methods of the main table run as separate blocks of runs, minutes apart;
on this VM the speed drifts 10-40% over minutes, which swamps a 5% target.
Here one amber file of the case is loaded in pairs, alternating safe and
trusted loads (in ABBA order, so neither always goes first), each with its
freed memory returned to the kernel first as in the main table: at least
``pairs`` pairs, then more while they fit in ``budget_s`` seconds (up to
``max_pairs``). On this VM one pair's ratio scatters by 10-23% (robust
standard deviation) about its median, so 11 pairs would leave a 4-9% standard
error on a 5% target. Reported: each mode's median, the number
of pairs, the median of the per-pair ratios (the judged figure) and that
median's standard error.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import measure

#: Seconds of pairs after the first ``pairs``: 23-35 pairs of the suite's
#: 0.2-0.3 s loads, 130-145 of (d)'s millisecond ones.
BUDGET_S = 20.0
#: Most pairs measured.
MAX_PAIRS = 201


def measure_case(obj: Any, run_dir: Path, case: str, pairs: int, budget_s: float = 0.0,
                 max_pairs: int = 0) -> dict[str, Any]:
    """Interleaved safe and trusted load times of this case's amber file:
    ``pairs`` pairs, and more while they fit in ``budget_s`` (up to ``max_pairs``)."""
    import amber

    path = run_dir / f"{case}-safety.amber"
    amber.dump(obj, path)
    measure.fsync_tree(path)
    try:
        amber.load(path)  # warm the page cache, imports and the policy
        safe: list[float] = []
        trusted: list[float] = []
        started = time.perf_counter()
        i = 0
        while i < pairs or (time.perf_counter() - started < budget_s and i < max_pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            for is_trusted in order:
                sample = measure.timed(lambda t=is_trusted: amber.load(path, trusted=True if t else None))
                (trusted if is_trusted else safe).append(sample.seconds)
                del sample
            i += 1
    finally:
        path.unlink(missing_ok=True)
    ratios = [s / t for s, t in zip(safe, trusted) if t > 0]
    return {"pairs": len(ratios), "safe_s": statistics.median(safe), "trusted_s": statistics.median(trusted),
            "ratio": statistics.median(ratios), "ratio_se": median_se(ratios), "ratios": ratios}


def median_se(values: list[float]) -> float | None:
    """The standard error of the median of ``values``, from their spread:
    1.2533 x sigma / sqrt(n), sigma estimated from the interquartile range (so
    a few runs the VM stalled do not inflate it); None below four values."""
    if len(values) < 4:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4)
    return 1.2533 * (q3 - q1) / 1.349 / len(values) ** 0.5
