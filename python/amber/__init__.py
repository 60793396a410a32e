"""amber: save and load trained models fast, safely and transparently.

>>> import amber
>>> amber.loads(amber.dumps({"a": [1, 2, 3]}))
{'a': [1, 2, 3]}

``amber.dump``/``amber.load`` take the same arguments as ``joblib.dump`` and
``joblib.load``, so ``import amber as joblib`` keeps joblib scripts working.
"""

from amber._api import __version__, dump, dumps, info, load, loads, verify
from amber._diff import diff
from amber._store import ModelRef, Store
from amber._versions import VersionMismatch
from amber.exceptions import (
    AliasInUseError,
    AmberError,
    ChecksumError,
    FormatError,
    InvalidNameError,
    InvalidVersionError,
    LimitExceededError,
    NoHistoryError,
    StoreCorruptError,
    StoreError,
    UnknownAliasError,
    UnknownModelError,
    UnknownVersionError,
    UnsupportedError,
    VersionExistsError,
    VersionMismatchError,
    VersionMismatchWarning,
)

__all__ = [
    "AliasInUseError",
    "AmberError",
    "InvalidNameError",
    "InvalidVersionError",
    "ModelRef",
    "NoHistoryError",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "UnknownAliasError",
    "UnknownModelError",
    "UnknownVersionError",
    "VersionExistsError",
    "VersionMismatch",
    "VersionMismatchError",
    "VersionMismatchWarning",
    "ChecksumError",
    "FormatError",
    "LimitExceededError",
    "UnsupportedError",
    "__version__",
    "diff",
    "dump",
    "dumps",
    "info",
    "load",
    "loads",
    "verify",
]
