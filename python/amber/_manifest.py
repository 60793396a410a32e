"""Composing the manifest: entries, environment and user metadata.

The manifest is written last, from the records the Rust writer returns, and
the writer checks it against what it actually wrote. Its schema is in
``docs/FORMAT.md``; what is here is only how Python fills it in.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from amber import _amber
from amber._npy import descr_json
from amber._pickling import OutOfBandArray

def pickle_entry_name(compressed: bool) -> str:
    """Name of the pickle entry; a ``c`` suffix marks a chunked compressed payload."""
    return "model.pklc" if compressed else "model.pkl"


def array_entry_name(index: int, compressed: bool = False) -> str:
    """Name of the ``index``-th array entry (``.npyc`` when compressed)."""
    return f"arrays/{index:06d}.npy{'c' if compressed else ''}"


#: Arrays in metadata are converted to lists up to this many elements; larger
#: ones belong in the model, not the manifest.
MAX_METADATA_ARRAY = 1_000


def environment(packages: dict[str, str], distributions: dict[str, dict[str, str]]) -> dict[str, Any]:
    """What wrote the file: Python, platform and the versions of the packages used."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "byteorder": sys.byteorder,
        "packages": packages,
        "distributions": distributions,
    }


def _jsonable(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{path} is {value!r}, which JSON cannot represent")
        return float(value)
    if isinstance(value, np.generic):
        if isinstance(value, (np.datetime64, np.timedelta64, np.void)) or value.dtype.hasobject:
            raise TypeError(f"{path} is a NumPy {value.dtype} scalar, which is not JSON-serialisable")
        return _jsonable(value.item(), path)
    if isinstance(value, np.ndarray):
        if value.size > MAX_METADATA_ARRAY:
            raise TypeError(
                f"{path} is an array of {value.size} elements (metadata takes arrays of at most "
                f"{MAX_METADATA_ARRAY:,}); store large arrays in the model"
            )
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{path} is an array of dtype {value.dtype}; metadata takes numeric arrays only")
        return _jsonable(value.tolist(), path)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} has a key {key!r} that is not a string")
            out[key] = _jsonable(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{path} is a {type(value).__name__}, which is not JSON-serialisable")


def user_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checks and converts user metadata to JSON values.

    Accepted: JSON types (dicts with string keys, lists, tuples, strings,
    finite numbers, booleans, ``None``); NumPy scalars (as Python numbers);
    numeric NumPy arrays of at most 1,000 elements (as nested lists);
    ``datetime``/``date``/``time`` (ISO 8601 strings); ``os.PathLike`` such
    as ``pathlib.Path`` (strings). Anything else raises :class:`TypeError`
    naming its key path, e.g. ``metadata['metrics']['auc']``.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    converted = _jsonable(metadata, "metadata")
    assert isinstance(converted, dict)
    return converted


def build(
    pickle_record: dict[str, Any],
    array_records: list[dict[str, Any]],
    arrays: list[OutOfBandArray],
    headers: list[bytes],
    packages: tuple[dict[str, str], dict[str, dict[str, str]]],
    metadata: dict[str, Any],
    version: str,
    content_hash: str,
) -> bytes:
    """The manifest JSON for a file with these entries."""
    pickle_entry: dict[str, Any] = {
        "kind": "pickle",
        "name": pickle_record["name"],
        "size": pickle_record["size"],
        "crc32": pickle_record["crc32"],
        "protocol": 5,
        "buffers": len(arrays),
    }
    if "codec" in pickle_record:
        pickle_entry["codec"] = pickle_record["codec"]
        pickle_entry["raw_size"] = pickle_record["raw_size"]
    entries: list[dict[str, Any]] = [pickle_entry]
    for record, array, header in zip(array_records, arrays, headers):
        entry = {
            "kind": "array",
            "name": record["name"],
            "size": record["size"],
            "crc32": record["crc32"],
            "data_offset": len(header),
            "nbytes": int(array.array.nbytes),
            "dtype": descr_json(array.array.dtype),
            "shape": list(array.array.shape),
            "order": "F" if array.fortran_order else "C",
        }
        if "codec" in record:
            entry["codec"] = record["codec"]
            entry["filter"] = record["filter"]
        entries.append(entry)
    # SOURCE_DATE_EPOCH (the reproducible-builds convention) pins the creation
    # time, so the same object gives the same bytes (F-32), e.g. for test vectors.
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        now = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
    else:
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    manifest = {
        "format": "amber",
        "format_version": _amber.FORMAT_VERSION,
        "created": now.isoformat().replace("+00:00", "Z"),
        "producer": {"name": "amber", "version": version},
        "environment": environment(*packages),
        "content_hash": content_hash,
        "metadata": metadata,
        "entries": entries,
    }
    # Compact separators keep json on its C encoder (indent= would not).
    return json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode("utf8")
