"""amber: save and load trained models fast, safely and transparently.

>>> import amber
>>> amber.loads(amber.dumps({"a": [1, 2, 3]}))
{'a': [1, 2, 3]}

``amber.dump``/``amber.load`` take the same arguments as ``joblib.dump`` and
``joblib.load``, so ``import amber as joblib`` keeps joblib scripts working.
"""

from amber._api import __version__, dump, dumps, info, load, loads, scan, verify
from amber._convert import convert
from amber._safety import Finding, ScanReport
from amber.exceptions import (
    AmberError,
    ChecksumError,
    CompanionFileError,
    CompressedStreamError,
    FormatError,
    LegacyFormatError,
    LimitExceededError,
    UnsafeModelError,
    UnsupportedError,
)

__all__ = [
    "AmberError",
    "ChecksumError",
    "CompanionFileError",
    "CompressedStreamError",
    "Finding",
    "FormatError",
    "LegacyFormatError",
    "LimitExceededError",
    "ScanReport",
    "UnsafeModelError",
    "UnsupportedError",
    "__version__",
    "convert",
    "dump",
    "dumps",
    "info",
    "load",
    "loads",
    "scan",
    "verify",
]
