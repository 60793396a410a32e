"""``amber.convert``: turn a pickle or joblib file into an amber file (and back).

The source is opened by content, with the same safety policy as
:func:`amber.load`; the result is written with :func:`amber.dump`.
``check=True`` loads both files again and compares them: arrays by dtype,
shape and values, estimators' predictions on a small probe when that is
cheap, everything else structurally (through each object's pickle
reduction, the state pickle itself would save).
"""

from __future__ import annotations

import math
import os
import types
from typing import Any

import numpy as np

from amber import _legacy

#: Pickled by reference (module and name): equal only if identical.
_BY_REFERENCE = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, np.ufunc)


def _load(src: Any, trusted: Any) -> Any:
    from amber import _api

    source = _api._legacy_source(src)
    if _legacy.is_legacy(source):
        return _legacy.load(source, None, trusted)
    kwargs = {} if trusted is None else {"trusted": trusted}
    return _api.load(source, **kwargs)


def convert(src: Any, dst: Any, *, trusted: Any = None, check: bool = False, **dump_kwargs: Any) -> Any:
    """Opens ``src`` (a pickle, a joblib file of any version, or an amber file)
    and writes its object to ``dst`` as an amber file; returns what
    :func:`amber.dump` returns.

    ``trusted`` has :func:`amber.load`'s meaning. ``dump_kwargs`` go to
    :func:`amber.dump` (``compress=``, ``metadata=``...). With ``check=True``
    both files are loaded again and compared; a difference raises
    :class:`ValueError` naming where it is.

    If ``dst`` ends in ``.joblib``, ``.pkl`` or ``.pickle`` and joblib is
    installed, a file ``joblib.load`` reads is written instead (going back).
    """
    from amber import _api

    value = _load(src, trusted)
    if isinstance(dst, (str, os.PathLike)) and os.fspath(dst).endswith((".joblib", ".pkl", ".pickle")):
        import joblib

        joblib.dump(value, dst, compress=dump_kwargs.get("compress") or 0)
        written: Any = os.fspath(dst)
        if check:
            compare(value, joblib.load(dst))
        return written
    written = _api.dump(value, dst, **dump_kwargs)
    if check:
        compare(_load(src, trusted), _api.load(dst))
    return written


def _probe(a: Any, b: Any, where: str) -> None:
    n = getattr(a, "n_features_in_", None)
    if not isinstance(n, int) or not hasattr(a, "predict") or n > 10_000:
        return
    X = np.random.default_rng(0).normal(size=(8, n))
    try:
        pa = a.predict(X)
    except Exception:  # noqa: BLE001 - not every estimator takes numeric input: skip the probe
        return
    pb = b.predict(X)
    if not np.array_equal(np.asarray(pa), np.asarray(pb)):
        raise ValueError(f"{where}: predictions on a probe differ")


def compare(a: Any, b: Any, where: str = "value") -> None:
    """Raises :class:`ValueError` if ``a`` and ``b`` differ (see the module docs)."""
    _Comparer().run(a, b, where)


class _Comparer:
    def __init__(self) -> None:
        self.seen: set[tuple[int, int]] = set()

    def run(self, a: Any, b: Any, where: str) -> None:
        work = [(a, b, where, 0)]
        while work:
            x, y, at, depth = work.pop()
            if depth > 200:
                raise ValueError(f"{at}: nested too deeply to compare")
            work.extend((p, q, w, depth + 1) for p, q, w in self.step(x, y, at))

    def step(self, a: Any, b: Any, where: str) -> list[tuple[Any, Any, str]]:
        if type(a) is not type(b):
            raise ValueError(f"{where}: {type(a).__name__} vs {type(b).__name__}")
        if a is None or isinstance(a, (bool, int, str, bytes, bytearray, complex)):
            if a != b:
                raise ValueError(f"{where}: {a!r} != {b!r}")
            return []
        if isinstance(a, float):
            if not (a == b or (math.isnan(a) and math.isnan(b))):
                raise ValueError(f"{where}: {a!r} != {b!r}")
            return []
        key = (id(a), id(b))
        if key in self.seen:
            return []
        self.seen.add(key)
        if isinstance(a, np.ndarray):
            if a.dtype != b.dtype or a.shape != b.shape:
                raise ValueError(f"{where}: array {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
            if a.dtype.hasobject:
                return [(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a.ravel(), b.ravel()))]
            if not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
                raise ValueError(f"{where}: array values differ")
            return []
        if isinstance(a, (np.generic, np.dtype)):
            if a != b and not (isinstance(a, np.floating) and np.isnan(a) and np.isnan(b)):
                raise ValueError(f"{where}: {a!r} != {b!r}")
            return []
        if isinstance(a, (list, tuple)):
            if len(a) != len(b):
                raise ValueError(f"{where}: length {len(a)} vs {len(b)}")
            return [(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
        if isinstance(a, dict):
            if list(a) != list(b):
                raise ValueError(f"{where}: keys differ")
            return [(a[k], b[k], f"{where}[{k!r}]") for k in a]
        if isinstance(a, (set, frozenset)):
            if a != b:
                raise ValueError(f"{where}: sets differ")
            return []
        if isinstance(a, _BY_REFERENCE):
            if a is not b:
                raise ValueError(f"{where}: {a!r} is not {b!r}")
            return []
        _probe(a, b, where)
        ra, rb = a.__reduce_ex__(4), b.__reduce_ex__(4)
        if isinstance(ra, str) or isinstance(rb, str):
            if ra != rb:
                raise ValueError(f"{where}: {ra!r} != {rb!r}")
            return []
        return [(x, y, f"{where}<{i}>") for i, (x, y) in enumerate(zip(_plain(ra), _plain(rb)))]


def _plain(reduced: tuple[Any, ...]) -> list[Any]:
    """A reduce tuple with its iterators (list/dict items) turned into lists."""
    out = list(reduced[:3])
    for it in reduced[3:]:
        out.append(None if it is None else list(it))
    return out
