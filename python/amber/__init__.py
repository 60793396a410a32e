"""amber: save and load trained models fast, safely and transparently.

>>> import amber
>>> amber.loads(amber.dumps({"a": [1, 2, 3]}))
{'a': [1, 2, 3]}

``amber.dump``/``amber.load`` take the same arguments as ``joblib.dump`` and
``joblib.load``, so ``import amber as joblib`` keeps joblib scripts working.
"""

from amber._api import __version__, dump, dumps, info, load, loads, scan, verify
from amber._safety import Finding, ScanReport
from amber.exceptions import (
    AmberError,
    ChecksumError,
    FormatError,
    LimitExceededError,
    UnsafeModelError,
    UnsupportedError,
)

__all__ = [
    "AmberError",
    "ChecksumError",
    "Finding",
    "FormatError",
    "LimitExceededError",
    "ScanReport",
    "UnsafeModelError",
    "UnsupportedError",
    "__version__",
    "dump",
    "dumps",
    "info",
    "load",
    "loads",
    "scan",
    "verify",
]
