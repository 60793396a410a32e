"""Fits every scikit-learn estimator that can be built with defaults, pickles it
the way amber does, and lists the globals the streams reference.

This is research for the safety policy (issue 4), not part of the library:
    .venv/bin/python tools/collect_globals.py > /tmp/globals.json
It prints which estimators could be fitted and pickled and, for every global,
how many estimators' streams use it and whether it is called (REDUCE/NEWOBJ)
or only referenced.
"""

from __future__ import annotations

import io
import json
import pickletools
import sys
import warnings
from collections import Counter, defaultdict

import numpy as np
from sklearn.utils import all_estimators
from sklearn.utils._testing import ignore_warnings

from amber._pickling import Pickler


def stream_globals(data: bytes) -> list[str]:
    names: list[str] = []
    strings: list[str] = []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            names.append(f"{strings[-2]}.{strings[-1]}" if len(strings) >= 2 else "?")
        elif op.name in ("GLOBAL", "INST"):
            names.append(arg.replace(" ", "."))
    return names


def fit(cls: type) -> object | None:
    rng = np.random.default_rng(0)
    X = rng.random((60, 4))
    y = np.tile([0, 1, 2], 20)
    try:
        est = cls()
    except TypeError:
        return None
    for args in ((X, y), (X,), (X, rng.random(60)), (np.abs(X), y)):
        try:
            with ignore_warnings():
                return est.fit(*args)
        except Exception:
            continue
    return None


def main() -> None:
    warnings.simplefilter("ignore")
    users: dict[str, set[str]] = defaultdict(set)
    ok, failed = [], []
    for name, cls in all_estimators():
        model = fit(cls)
        if model is None:
            failed.append(name)
            continue
        buf = io.BytesIO()
        try:
            pickler = Pickler(buf)
            pickler.dump(model)
        except Exception:
            failed.append(name)
            continue
        ok.append(name)
        for g in stream_globals(buf.getvalue()):
            users[g].add(name)
    out = {
        "fitted_and_pickled": len(ok),
        "skipped": sorted(failed),
        "globals": {g: len(u) for g, u in sorted(users.items())},
    }
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
