"""``amber.Store``: named, versioned, immutable models in a directory.

The layout, version rules, locking and the alias registry are implemented in
Rust (``crates/amber-store``, shared with ``amber store`` on the command
line); this module writes each model file with :func:`amber.dump` and asks
Rust to register it. On disk::

    ROOT/churn/churn_v1.0.0_20261122T101500Z.amber   plain amber files, read-only
    ROOT/churn/churn_v1.0.1_20261123T080000Z.amber
    ROOT/churn/store.json                             aliases and their history
    ROOT/churn/.lock                                  serialises writers

>>> import amber, tempfile
>>> store = amber.Store(tempfile.mkdtemp())
>>> store.save({"w": [1, 2]}, "churn", alias="production").version
'1.0.0'
>>> store.save({"w": [1, 3]}, "churn").version
'1.0.1'
>>> store.load("churn", alias="production")
{'w': [1, 2]}
"""

from __future__ import annotations

import builtins
import datetime as _dt
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, TypeVar

from amber import _amber
from amber._amber import AmberError

T = TypeVar("T")


class StoreError(AmberError):
    """Base class of the errors of :class:`Store` (``code`` starts with ``store.``)."""


class InvalidNameError(StoreError, ValueError):
    """A model or alias name outside ``[A-Za-z0-9][A-Za-z0-9._-]*`` (at most 128, no ``..``)."""


class InvalidVersionError(StoreError, ValueError):
    """Not a semantic version ``MAJOR.MINOR.PATCH[-PRERELEASE]``."""


class UnknownModelError(StoreError, LookupError):
    """No model of that name (with at least one version) in the store."""


class UnknownVersionError(StoreError, LookupError):
    """The model has no such version."""


class UnknownAliasError(StoreError, LookupError):
    """The model has no such alias."""


class VersionExistsError(StoreError, FileExistsError):
    """Saving a version that already exists: versions are immutable."""


class AliasInUseError(StoreError):
    """Deleting a version an alias points to (pass ``force=True`` to do it anyway)."""


class NoHistoryError(StoreError):
    """Rolling back an alias that never had another target."""


class StoreCorruptError(StoreError):
    """A store file (``store.json``) that cannot be understood."""


_BY_CODE: dict[str, type[StoreError]] = {
    "store.invalid_name": InvalidNameError,
    "store.invalid_version": InvalidVersionError,
    "store.unknown_model": UnknownModelError,
    "store.unknown_version": UnknownVersionError,
    "store.unknown_alias": UnknownAliasError,
    "store.version_exists": VersionExistsError,
    "store.alias_in_use": AliasInUseError,
    "store.no_history": NoHistoryError,
    "store.corrupt": StoreCorruptError,
    "store.not_pending": StoreError,
}


def _raise(error: AmberError) -> NoReturn:
    code = getattr(error, "code", "")
    cls = _BY_CODE.get(code)
    if cls is None:
        raise error
    mapped = cls(str(error))
    mapped.code = code
    raise mapped from None


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except AmberError as error:
        if type(error) is AmberError:
            _raise(error)
        raise


@dataclass(frozen=True, order=False)
class ModelRef:
    """One version of a model in a store."""

    name: str
    version: str
    path: str
    created: _dt.datetime  #: when it was saved (UTC, to the second)

    @classmethod
    def _from(cls, record: dict[str, Any]) -> ModelRef:
        created = _dt.datetime.fromisoformat(record["created"].replace("Z", "+00:00"))
        return cls(record["name"], record["version"], os.fspath(record["path"]), created)


class Store:
    """A directory of named models, each with immutable semantic versions and aliases.

    ``save`` writes a new version (``version=None`` takes ``1.0.0`` first,
    then the next patch after the highest); ``load`` reads the newest, a given
    version or an alias's target. Saves are durable once they return (file and
    directory fsynced), safe under concurrent writers in several processes (a
    lock file per model), and a process killed mid-save leaves no partial
    version and a valid ``store.json``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self._core = _call(_amber.StoreCore, self.root)

    def __repr__(self) -> str:
        return f"amber.Store({self.root!r})"

    def save(
        self,
        obj: Any,
        name: str,
        *,
        version: str | None = None,
        metadata: dict[str, Any] | None = None,
        alias: str | None = None,
        compress: Any = None,
    ) -> ModelRef:
        """Saves ``obj`` as a new version of model ``name`` and returns it.

        Raises :class:`VersionExistsError` if ``version`` exists,
        :class:`InvalidNameError`/:class:`InvalidVersionError` on bad names.
        With ``alias``, that alias points to the new version once saved.
        """
        from amber._api import dump

        pending = _call(self._core.prepare, name, version)
        try:
            dump(obj, pending, compress=compress, metadata=metadata, overwrite=False, sync=True)
            record = _call(self._core.commit, name, pending, version, alias)
        except BaseException:
            try:
                os.unlink(pending)
            except FileNotFoundError:
                pass
            raise
        return ModelRef._from(record)

    def load(self, name: str, version: str | None = None, *, alias: str | None = None, **load_kwargs: Any) -> Any:
        """Loads the newest version of ``name``, the ``version`` given, or ``alias``'s target.

        ``load_kwargs`` go to :func:`amber.load` (``mmap_mode``, ``strict_versions``…).
        """
        from amber._api import load

        ref = self.ref(name, version, alias=alias)
        return load(ref.path, **load_kwargs)

    def ref(self, name: str, version: str | None = None, *, alias: str | None = None) -> ModelRef:
        """The :class:`ModelRef` that :meth:`load` would read."""
        return ModelRef._from(_call(self._core.resolve, name, version, alias))

    def list(self) -> builtins.list[str]:
        """The names of the models in the store, sorted."""
        return _call(self._core.models)

    def versions(self, name: str) -> builtins.list[ModelRef]:
        """Every version of ``name``, lowest first (semantic version order)."""
        return [ModelRef._from(r) for r in _call(self._core.versions, name)]

    def aliases(self, name: str) -> dict[str, dict[str, Any]]:
        """``{alias: {"version", "previous", "history"}}`` for model ``name``."""
        self.versions(name)
        registry: dict[str, Any] = json.loads(_call(self._core.registry, name))
        return registry["aliases"]

    def info(self, name: str, version: str | None = None, *, alias: str | None = None) -> dict[str, Any]:
        """The file's manifest (see :func:`amber.info`) plus a ``store`` field:
        name, version, path, created and the aliases pointing to it."""
        from amber._api import info

        ref = self.ref(name, version, alias=alias)
        manifest = info(ref.path)
        pointing = sorted(a for a, entry in self.aliases(name).items() if entry["version"] == ref.version)
        manifest["store"] = {
            "name": ref.name,
            "version": ref.version,
            "path": ref.path,
            "created": ref.created.isoformat().replace("+00:00", "Z"),
            "aliases": pointing,
        }
        return manifest

    def set_alias(self, name: str, alias: str, version: str) -> ModelRef:
        """Points ``alias`` at an existing ``version``; its old target is kept for :meth:`rollback`."""
        return ModelRef._from(_call(self._core.set_alias, name, alias, version))

    def rollback(self, name: str, alias: str) -> ModelRef:
        """Moves ``alias`` back to its previous target and returns it.

        Raises :class:`NoHistoryError` when it had none. The change is logged in
        the alias's history, which is never shortened.
        """
        _, to = _call(self._core.rollback, name, alias)
        return ModelRef._from(to)

    def delete(self, name: str, version: str, *, force: bool = False) -> None:
        """Deletes a version. Refuses (:class:`AliasInUseError`) one an alias points
        to unless ``force``; then each such alias goes back to its previous
        target, or is removed if it had none."""
        _call(self._core.delete, name, version, force)

    def prune(self, older_than: float = 3600.0) -> builtins.list[str]:
        """Removes the hidden temporary files that interrupted saves left behind
        (see :meth:`check`'s ``leftovers``), if last modified more than
        ``older_than`` seconds ago; returns their paths."""
        return [os.fspath(p) for p in _call(self._core.prune, float(older_than))]

    def check(self) -> dict[str, Any]:
        """The full consistency check: ``{"models", "versions", "aliases",
        "leftovers", "problems"}``; a consistent store has no ``problems``."""
        report: dict[str, Any] = json.loads(_call(self._core.check))
        return report
