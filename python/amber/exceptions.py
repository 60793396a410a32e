"""The exceptions amber raises.

Every error about a file's *content* is an :class:`AmberError` with a stable
``code`` attribute (for example ``"format.checksum"``); errors that concern a
part of the file also carry ``entry`` (the archive entry) or ``offset`` (a byte
offset). Operating-system problems are the builtin :class:`OSError` subclasses
(:class:`FileNotFoundError`, :class:`PermissionError`,
:class:`IsADirectoryError`, :class:`FileExistsError`…) with ``errno`` and
``filename`` set.

>>> import amber
>>> try:
...     amber.loads(b"not an amber file")
... except amber.FormatError as e:
...     print(e.code)
format.not_amber
"""

from amber._amber import (
    AmberError,
    ChecksumError,
    FormatError,
    LimitExceededError,
    UnsupportedError,
)

from amber._store import (
    AliasInUseError,
    InvalidNameError,
    InvalidVersionError,
    NoHistoryError,
    StoreCorruptError,
    StoreError,
    UnknownAliasError,
    UnknownModelError,
    UnknownVersionError,
    VersionExistsError,
)
from amber._versions import VersionMismatchError, VersionMismatchWarning

__all__ = [
    "AliasInUseError",
    "InvalidNameError",
    "InvalidVersionError",
    "NoHistoryError",
    "StoreCorruptError",
    "StoreError",
    "UnknownAliasError",
    "UnknownModelError",
    "UnknownVersionError",
    "VersionExistsError",
    "VersionMismatchError",
    "VersionMismatchWarning",
    "AmberError",
    "ChecksumError",
    "FormatError",
    "LimitExceededError",
    "UnsupportedError",
]
