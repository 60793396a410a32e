"""amber: save and load trained models fast, safely and transparently.

>>> import amber
>>> amber.loads(amber.dumps({"a": [1, 2, 3]}))
{'a': [1, 2, 3]}

``amber.dump``/``amber.load`` take the same arguments as ``joblib.dump`` and
``joblib.load``, so ``import amber as joblib`` keeps joblib scripts working.
"""

from amber._api import __version__, dump, dumps, info, load, loads, scan, verify
from amber._convert import convert
from amber._diff import diff
from amber._safety import Finding, ScanReport
from amber._store import ModelRef, Store
from amber._versions import VersionMismatch
from amber.exceptions import (
    AliasInUseError,
    AmberError,
    ChecksumError,
    CompanionFileError,
    CompressedStreamError,
    FormatError,
    InvalidNameError,
    InvalidVersionError,
    LegacyFormatError,
    LimitExceededError,
    NoHistoryError,
    StoreCorruptError,
    StoreError,
    UnknownAliasError,
    UnknownModelError,
    UnknownVersionError,
    UnsafeModelError,
    UnsupportedError,
    VersionExistsError,
    VersionMismatchError,
    VersionMismatchWarning,
)

__all__ = [
    "AliasInUseError",
    "AmberError",
    "ChecksumError",
    "CompanionFileError",
    "CompressedStreamError",
    "convert",
    "diff",
    "dump",
    "dumps",
    "Finding",
    "FormatError",
    "info",
    "InvalidNameError",
    "InvalidVersionError",
    "LegacyFormatError",
    "LimitExceededError",
    "load",
    "loads",
    "ModelRef",
    "NoHistoryError",
    "scan",
    "ScanReport",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "UnknownAliasError",
    "UnknownModelError",
    "UnknownVersionError",
    "UnsafeModelError",
    "UnsupportedError",
    "verify",
    "VersionExistsError",
    "VersionMismatch",
    "VersionMismatchError",
    "VersionMismatchWarning",
    "__version__",
]
