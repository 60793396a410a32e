"""``amber.diff``: what differs between two amber files, without unpickling."""

from __future__ import annotations

import json
import os
from typing import Any

from amber import _amber


def diff(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> dict[str, Any]:
    """Compares two amber files from their manifests and entries (the same
    report as ``amber diff --json``).

    ``identical_content`` is true when the model is the same (pickle stream and
    arrays, compared decompressed when the codecs differ), whatever the
    metadata, environment, times and compression. The other keys list what
    differs: ``content_hash`` and ``created`` (``{"a", "b"}``), ``pickle_changed``,
    ``entries`` (``added``, ``removed``, ``changed`` with ``data_changed`` and
    ``changes``), and ``metadata``, ``environment`` and ``producer`` as lists
    of ``{"key", "a", "b"}`` (dotted keys, ``None`` when absent on one side).

    >>> import amber, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> a = amber.dump([1, 2], os.path.join(d, "a.amber"), metadata={"run": 1})
    >>> b = amber.dump([1, 2], os.path.join(d, "b.amber"), metadata={"run": 2})
    >>> report = amber.diff(a, b)
    >>> report["identical_content"], report["metadata"]
    (True, [{'a': 1, 'b': 2, 'key': 'run'}])
    """
    report: dict[str, Any] = json.loads(_amber.diff(os.fspath(a), os.fspath(b)))
    return report
