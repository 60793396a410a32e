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

from __future__ import annotations

from typing import Any

from amber._amber import (
    AmberError,
    ChecksumError,
    CompanionFileError,
    CompressedStreamError,
    FormatError,
    LegacyFormatError,
    LimitExceededError,
    UnsupportedError,
)


class UnsafeModelError(AmberError):
    """The file references something outside the trusted policy, so it was
    not loaded: nothing in it ran and nothing it names was imported.

    ``findings`` lists what was refused (each with a stable ``code``, the byte
    ``offset`` and the global or opcode); ``report`` is the whole
    :class:`amber.ScanReport`. The message says how to trust a name when the
    file comes from someone you trust: ``amber.load(path, trusted=["pkg.Name"])``.
    """

    code = "scan.unsafe"
    entry = None

    def __init__(self, report: Any) -> None:
        self.report = report
        self.findings = tuple(report.findings)
        self.offset = self.findings[0].offset if self.findings else None
        names = sorted({f.global_name for f in self.findings if f.global_name})
        lines = [f"{report.source or 'the file'} was not loaded: its pickle stream is outside amber's trusted policy"]
        lines += [f"  {f}" for f in self.findings[:20]]
        if len(self.findings) > 20:
            lines.append(f"  ... and {len(self.findings) - 20} more findings (see .findings)")
        if names:
            lines.append(
                f"If you trust whoever made this file, load it with trusted={names!r}; "
                "trusted=True turns the policy off (plain pickle: only for files you made)."
            )
        super().__init__("\n".join(lines))

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
    "CompanionFileError",
    "CompressedStreamError",
    "FormatError",
    "LegacyFormatError",
    "LimitExceededError",
    "UnsafeModelError",
    "UnsupportedError",
]
