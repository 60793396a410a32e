"""Which package versions wrote a file, and warning when others load it.

On dump, every top-level package whose classes or functions the pickle
references is recorded twice in the manifest's ``environment``: ``packages``
maps its import name to its version (``__version__``, else its distribution's),
and ``distributions`` maps the import name to the installed distribution that
provides it (``sklearn`` -> ``{"name": "scikit-learn", "version": "1.9.1"}``),
found with :func:`importlib.metadata.packages_distributions`.

On load, before anything is unpickled, those versions are compared with the
running ones. Nothing is imported to find a running version (a file must not
make amber import a module before the safety analysis): a package already
imported gives its ``__version__``, one that is not gives its distribution's
version from the installed metadata, and one that cannot be found at all is
"not installed". The Python version counts when its major.minor differs
(pickles are stable across patch releases). All differences are reported at
once: one :class:`VersionMismatchWarning`, or :class:`VersionMismatchError`
with ``strict_versions=True``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import warnings
from typing import Any, NamedTuple

from amber._amber import AmberError

#: At most this many recorded packages are compared (a manifest is untrusted input).
MAX_CHECKED = 1_000

#: What the ``running`` field says for a package that is not installed.
NOT_INSTALLED = "not installed"


class VersionMismatch(NamedTuple):
    """One package whose running version differs from the one that saved the file."""

    package: str  #: import name (``"sklearn"``), or ``"python"``
    saved: str
    running: str  #: the running version, or ``"not installed"``
    distribution: str | None = None  #: the distribution name (``"scikit-learn"``) when known


def _describe(mismatches: list[VersionMismatch]) -> str:
    parts = []
    for m in mismatches:
        label = m.package if not m.distribution or m.distribution == m.package else f"{m.distribution} ({m.package})"
        running = NOT_INSTALLED if m.running == NOT_INSTALLED else f"{m.running} running"
        parts.append(f"{label}: {m.saved} saved, {running}")
    return "; ".join(parts)


class VersionMismatchWarning(UserWarning):
    """The file was saved under other package versions than the running ones.

    ``mismatches`` lists each :class:`VersionMismatch` (package, saved, running).
    """

    def __init__(self, message: str, mismatches: list[VersionMismatch]) -> None:
        super().__init__(message)
        self.mismatches = mismatches


class VersionMismatchError(AmberError):
    """Raised instead of :class:`VersionMismatchWarning` with ``strict_versions=True``."""

    code = "version.mismatch"

    def __init__(self, message: str, mismatches: list[VersionMismatch]) -> None:
        super().__init__(message)
        self.mismatches = mismatches


@functools.cache
def _providers() -> dict[str, list[str]]:
    # Scans the installed metadata once per process (tens of milliseconds).
    return importlib.metadata.packages_distributions()


def _distribution_of(name: str) -> str | None:
    # Fast path: a distribution named like the package (numpy, scipy) needs no scan.
    try:
        return importlib.metadata.distribution(name).metadata["Name"] or name
    except importlib.metadata.PackageNotFoundError:
        pass
    dists = _providers().get(name)
    if not dists:
        return None
    # Several distributions can ship files into one package; prefer the one named after it.
    wanted = name.replace("_", "-").lower()
    return next((d for d in dists if d.replace("_", "-").lower() == wanted), sorted(dists)[0])


def _distribution_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _installed(name: str) -> tuple[str | None, str | None]:
    # Reading a distribution's metadata parses files (about 0.3 ms a package),
    # which dominated the dump of a small model. Once a package is imported its
    # code cannot change within the process, so neither does what a dump
    # should record for it: looked up once per process.
    dist = _distribution_of(name)
    return dist, _distribution_version(dist) if dist else None


def capture(modules: set[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``(packages, distributions)`` for the manifest, from the top-level
    module names the pickler saw (standard library and ``__main__`` left out)."""
    packages: dict[str, str] = {}
    distributions: dict[str, dict[str, str]] = {}
    for name in sorted(modules):
        if name in sys.stdlib_module_names or name in ("builtins", "__main__"):
            continue
        version = getattr(sys.modules.get(name), "__version__", None)
        dist, dist_version = _installed(name)
        if dist and dist_version:
            distributions[name] = {"name": dist, "version": dist_version}
        if isinstance(version, str):
            packages[name] = version
        elif dist_version:
            packages[name] = dist_version
    return packages, distributions


def _running(name: str, recorded_dist: dict[str, Any] | None) -> tuple[str | None, str]:
    """The running version of ``name`` and which kind of version it is (``module``/``dist``)."""
    module = sys.modules.get(name)
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version, "module"
    dist = recorded_dist.get("name") if recorded_dist else None
    if isinstance(dist, str):
        found = _distribution_version(dist)
        if found is not None:
            return found, "dist"
    if module is None and importlib.util.find_spec(name) is None:
        return NOT_INSTALLED, "missing"
    dist = _distribution_of(name)
    found = _distribution_version(dist) if dist else None
    return (found, "dist") if found else (None, "unknown")


def mismatches(manifest: dict[str, Any]) -> list[VersionMismatch]:
    """The differences between the versions a manifest records and the running ones."""
    env = manifest.get("environment")
    if not isinstance(env, dict):
        return []
    found: list[VersionMismatch] = []
    saved_python = env.get("python")
    if isinstance(saved_python, str):
        running_python = platform.python_version()
        if saved_python.split(".")[:2] != running_python.split(".")[:2]:
            found.append(VersionMismatch("python", saved_python, running_python))
    packages = env.get("packages")
    dists = env.get("distributions")
    dists = dists if isinstance(dists, dict) else {}
    if not isinstance(packages, dict):
        return found
    # The manifest is untrusted input: only plain top-level names are looked up
    # (a dotted name would make find_spec import its parent), and only so many.
    for name, saved in sorted(packages.items())[:MAX_CHECKED]:
        if not isinstance(name, str) or not name.isidentifier() or not isinstance(saved, str):
            continue
        recorded = dists.get(name) if isinstance(dists.get(name), dict) else None
        running, kind = _running(name, recorded)
        if running is None:
            continue
        # Compare like with like: a distribution's version with the recorded distribution version.
        if kind == "dist" and recorded and isinstance(recorded.get("version"), str):
            saved = recorded["version"]
        if running != saved:
            dist = recorded.get("name") if recorded else None
            found.append(VersionMismatch(name, saved, running, dist if isinstance(dist, str) else None))
    return found


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside amber
    (``amber.load`` and ``Store.load`` alike)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def parse(manifest_json: str | bytes) -> Any:
    """The manifest's JSON decoded, or ``None`` if it is not JSON."""
    try:
        return json.loads(manifest_json)
    except ValueError:
        return None


def all_imported(manifest: Any) -> bool:
    """Whether every package the decoded ``manifest`` records is imported
    already: :func:`check` then looks nothing up."""
    env = manifest.get("environment") if isinstance(manifest, dict) else None
    packages = env.get("packages") if isinstance(env, dict) else None
    return isinstance(packages, dict) and all(name in sys.modules for name in packages)


def check(manifest_json: str | bytes | dict[str, Any] | None, strict: bool, source: Any) -> None:
    """Warns once (or raises, if ``strict``) when the file's versions differ
    from the running ones (``manifest_json`` may be decoded already: see :func:`parse`)."""
    manifest = manifest_json if isinstance(manifest_json, dict) or manifest_json is None else parse(manifest_json)
    found = mismatches(manifest) if isinstance(manifest, dict) else []
    if not found:
        return
    if isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
    else:
        where = getattr(source, "name", None) or "the file"
    message = f"{where} was saved under other versions: {_describe(found)}"
    if strict:
        raise VersionMismatchError(message, found)
    warnings.warn(VersionMismatchWarning(message, found), stacklevel=_caller_level())
