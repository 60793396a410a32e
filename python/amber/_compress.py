"""What ``compress=`` means: joblib's vocabulary mapped onto amber's codecs.

amber writes two codecs: ``"zstd"`` (the default) and ``"lz4"`` (fastest,
lower ratio). Everything joblib accepts is accepted with the same meaning of
"how hard to try":

- ``None``, ``False``, ``0``: no compression (unless the file name asks for it);
- ``True``: zstd at amber's default level (3);
- an int 1-9: zstd, 1 fastest, 9 smallest;
- a codec name, or ``(name, level)`` with level 0-9 (0 means no compression);
- joblib's codec names ``"zlib"``, ``"gzip"``, ``"bz2"``, ``"lzma"``, ``"xz"``
  mean "compress": amber writes zstd at a level chosen to give a file no
  larger than that codec would at that level (zstd with byte-shuffling beats
  zlib clearly and matches the lzma family on model data, at a fraction of the
  time). Such files are amber files, not zlib/bz2/xz streams.

A target path ending in ``.z``, ``.gz``, ``.bz2``, ``.lzma``, ``.xz``, ``.zst``
or ``.lz4`` is compressed without being asked, as joblib does.
"""

from __future__ import annotations

import os
from typing import Any

#: joblib's 1-9 scale onto zstd levels.
ZSTD_LEVELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 9, 7: 12, 8: 16, 9: 19}
DEFAULT_LEVEL = 3
#: joblib's default level for each of its codecs.
JOBLIB_DEFAULTS = {"zlib": 3, "gzip": 3, "bz2": 9, "lzma": 6, "xz": 6}
EXTENSIONS = {".z": "zlib", ".gz": "gzip", ".bz2": "bz2", ".lzma": "lzma", ".xz": "xz", ".zst": "zstd", ".lz4": "lz4"}
ACCEPTED = (
    "None/False/0, True, an int 0-9, 'zstd', 'lz4', 'zlib', 'gzip', 'bz2', 'lzma', 'xz', "
    "or a (name, level) tuple with a level from 0 to 9"
)


def _zstd_for(name: str, level: int) -> tuple[str, int]:
    if name in ("zlib", "gzip"):
        # zstd level n+1 gives files at least as small as zlib level n on model data.
        return "zstd", ZSTD_LEVELS[min(level + 1, 9)]
    if name in ("bz2", "lzma", "xz"):
        return "zstd", 19
    return "zstd", ZSTD_LEVELS[level]


def resolve(compress: Any, filename: Any = None) -> tuple[str, int] | None:
    """``(codec, level)`` for a ``compress`` argument and target, or ``None``."""
    if compress is None or compress is False or (isinstance(compress, int) and not isinstance(compress, bool) and compress == 0):
        if isinstance(filename, (str, os.PathLike)):
            ext = os.path.splitext(os.fspath(filename))[1].lower()
            if ext in EXTENSIONS:
                return resolve(EXTENSIONS[ext])
        return None
    if compress is True:
        return "zstd", ZSTD_LEVELS[DEFAULT_LEVEL]
    if isinstance(compress, int):
        if 1 <= compress <= 9:
            return "zstd", ZSTD_LEVELS[compress]
        raise ValueError(f"compress={compress!r}: a compression level must be from 0 to 9; accepted: {ACCEPTED}")
    if isinstance(compress, str):
        name = compress.lower()
        if name == "zstd":
            return "zstd", ZSTD_LEVELS[DEFAULT_LEVEL]
        if name == "lz4":
            return "lz4", 0
        if name in JOBLIB_DEFAULTS:
            return _zstd_for(name, JOBLIB_DEFAULTS[name])
        raise ValueError(f"compress={compress!r} is not a known codec; accepted: {ACCEPTED}")
    if isinstance(compress, tuple):
        if len(compress) != 2:
            raise ValueError(f"compress={compress!r}: a tuple must be (name, level); accepted: {ACCEPTED}")
        name, level = compress
        if not isinstance(name, str) or not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 9:
            raise ValueError(f"compress={compress!r}: expected (name, level 0-9); accepted: {ACCEPTED}")
        if level == 0:
            return None
        name = name.lower()
        if name == "zstd":
            return "zstd", ZSTD_LEVELS[level]
        if name == "lz4":
            return "lz4", level
        if name in JOBLIB_DEFAULTS:
            return _zstd_for(name, level)
        raise ValueError(f"compress={compress!r}: unknown codec {name!r}; accepted: {ACCEPTED}")
    raise ValueError(f"compress={compress!r} is not understood; accepted: {ACCEPTED}")


def threads(value: int | None) -> int | None:
    """The thread cap: the argument, else ``AMBER_NUM_THREADS``, else all cores (``None``)."""
    if value is None:
        env = os.environ.get("AMBER_NUM_THREADS", "").strip()
        if not env:
            return None
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"AMBER_NUM_THREADS={env!r} is not an integer") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"threads must be a positive integer, not {value!r}")
    return value
