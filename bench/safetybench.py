"""What safety costs: ``amber.load`` against ``amber.load(trusted=True)`` on
the same file, runs interleaved.

The methods of the main table run as separate blocks of runs, minutes apart;
on this VM the speed drifts 10-40% over minutes, which swamps a 5% target.
Here one amber file of the case is loaded ``2 x pairs`` times, alternating
safe and trusted loads (in ABBA order, so neither always goes first), each
with its freed memory returned to the kernel first as in the main table.
Reported: each mode's median, and the median of the per-pair ratios.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import measure


def measure_case(obj: Any, run_dir: Path, case: str, pairs: int) -> dict[str, Any]:
    """Interleaved safe and trusted load times of this case's amber file."""
    import amber

    path = run_dir / f"{case}-safety.amber"
    amber.dump(obj, path)
    measure.fsync_tree(path)
    try:
        amber.load(path)  # warm the page cache, imports and the policy
        safe: list[float] = []
        trusted: list[float] = []
        for i in range(pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            for is_trusted in order:
                sample = measure.timed(lambda t=is_trusted: amber.load(path, trusted=True if t else None))
                (trusted if is_trusted else safe).append(sample.seconds)
                del sample
    finally:
        path.unlink(missing_ok=True)
    ratios = [s / t for s, t in zip(safe, trusted) if t > 0]
    return {"pairs": pairs, "safe_s": statistics.median(safe), "trusted_s": statistics.median(trusted),
            "ratio": statistics.median(ratios), "ratios": ratios}
