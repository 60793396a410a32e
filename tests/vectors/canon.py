"""A canonical, comparable description of a loaded value, shared by the vector
generator and the tests: arrays become (dtype, shape, order, sha256 of their
bytes), containers are walked, everything else is its repr."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def canon(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        order = "F" if value.flags.f_contiguous and not value.flags.c_contiguous else "C"
        data = np.ascontiguousarray(value).tobytes() if value.dtype != object else repr(value.tolist()).encode()
        return {"dtype": value.dtype.str if not value.dtype.fields else str(value.dtype.descr), "shape": list(value.shape),
                "order": order, "sha256": hashlib.sha256(data).hexdigest()}
    if isinstance(value, dict):
        return {"dict": [[repr(k), canon(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [canon(v) for v in value]}
    return repr(value)
