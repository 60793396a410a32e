"""Building ``.npy`` headers for array entries.

Each array entry of an amber file is a complete ``.npy`` file, so that
``numpy.load`` reads it once extracted. The header follows NumPy's own layout
(version 1.0 when it fits, 2.0 for very long headers, 3.0 for non-Latin-1 field
names) and is padded so the data starts on a 64-byte boundary.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

import numpy as np
from numpy.lib import format as npformat

MAGIC = b"\x93NUMPY"
ALIGN = 64


@functools.lru_cache(maxsize=256)
def _descr(dtype: np.dtype) -> Any:
    # dtype_to_descr walks structured dtypes field by field; models reuse a few dtypes.
    return npformat.dtype_to_descr(dtype)


@functools.lru_cache(maxsize=256)
def _descr_text(dtype: np.dtype) -> str:
    # The repr of a structured descriptor costs more than the rest of a header.
    return repr(_descr(dtype))


def header_bytes(dtype: np.dtype, shape: tuple[int, ...], fortran_order: bool) -> bytes:
    """The ``.npy`` preamble and header for an array of this dtype, shape and order."""
    text = "{'descr': %s, 'fortran_order': %r, 'shape': %r, }" % (_descr_text(dtype), fortran_order, tuple(shape))
    try:
        body = text.encode("latin1")
        version = None
    except UnicodeEncodeError:
        body = text.encode("utf8")
        version = 3
    if version is None:
        version = 1 if len(body) + 1 + 10 < 65536 else 2
    length_format = "<H" if version == 1 else "<I"
    prefix = len(MAGIC) + 2 + struct.calcsize(length_format)
    pad = (ALIGN - (prefix + len(body) + 1) % ALIGN) % ALIGN
    body = body + b" " * pad + b"\n"
    return MAGIC + bytes([version, 0]) + struct.pack(length_format, len(body)) + body


@functools.lru_cache(maxsize=256)
def descr_json(dtype: np.dtype) -> object:
    """The dtype descriptor in a JSON-friendly form (tuples become lists).

    Cached per dtype, so the value is shared: read it, never change it."""

    def convert(value: object) -> object:
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    return convert(_descr(dtype))
