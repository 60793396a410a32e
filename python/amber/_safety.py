"""The Python side of the safety policy: scan reports, ``trusted=``, and the
second wall.

The first wall is Rust: before anything is unpickled, ``amber-scan`` reads the
whole pickle stream without executing or importing anything and decides on
names alone (see ``docs/SECURITY.md``). This module turns its JSON report into
:class:`ScanReport`, raises :class:`~amber.UnsafeModelError` when it refuses,
and builds the set of names the unpickler's ``find_class`` may resolve: only
the globals the analyser accepted in *this* stream, so a name it never saw
cannot be imported even if the two walls disagreed about the bytes.
"""

from __future__ import annotations

import _compat_pickle
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from amber.exceptions import FormatError, UnsafeModelError


@dataclass(frozen=True)
class Finding:
    """One thing the analyser found: a stable ``code``, its ``severity``
    (``critical``, ``high``, ``medium``, ``low``), where it is and why."""

    code: str
    severity: str
    message: str
    offset: int | None = None
    opcode: str | None = None
    global_name: str | None = None
    #: How many times the stream does this (findings of one kind are reported once).
    count: int = 1

    def __str__(self) -> str:
        where = f" at byte {self.offset}" if self.offset is not None else ""
        op = f" ({self.opcode})" if self.opcode else ""
        times = f" [{self.count} times]" if self.count > 1 else ""
        return f"[{self.code}]{where}{op}{times}: {self.message}"


@dataclass(frozen=True)
class ScanReport:
    """What :func:`amber.scan` found in a file, without running any of it.

    ``verdict`` is ``"safe"`` (everything it references is in the trusted
    policy), ``"unsafe"`` (something is not) or ``"malformed"`` (the stream
    cannot be read as one well-formed pickle). ``globals`` maps every global
    the stream references to how often, ``findings`` says what was refused.
    """

    verdict: str
    findings: tuple[Finding, ...]
    globals: dict[str, int]
    source: str = ""
    format: str = ""
    protocol: int | None = None
    allowed: frozenset[str] = field(default=frozenset(), repr=False)
    #: The analyser's whole report as JSON text; :attr:`details` decodes it.
    report_json: str | bytes = field(default="", repr=False, compare=False)

    @property
    def details(self) -> dict[str, Any]:
        """The analyser's whole report (``opcodes`` executed, ``stream_len``
        scanned, ``joblib_arrays``, and everything above), decoded on first use."""
        decoded = self.__dict__.get("_details")
        if decoded is None:
            decoded = json.loads(self.report_json) if self.report_json else {}
            object.__setattr__(self, "_details", decoded)
        return decoded

    @property
    def safe(self) -> bool:
        """``True`` when the verdict is ``"safe"``."""
        return self.verdict == "safe"

    def __str__(self) -> str:
        head = f"{self.source or 'stream'}: {self.verdict}"
        if self.format:
            head += f" ({self.format})"
        lines = [head] + [f"  {f}" for f in self.findings]
        return "\n".join(lines)


def report_from_json(text: str | bytes, source: str = "") -> ScanReport:
    """Builds a :class:`ScanReport` from the Rust analyser's JSON report."""
    raw: dict[str, Any] = json.loads(text)
    findings = tuple(
        Finding(
            code=f["code"],
            severity=f["severity"],
            message=f["message"],
            offset=f.get("offset"),
            opcode=f.get("opcode"),
            global_name=f.get("global"),
            count=f.get("count", 1),
        )
        for f in raw.get("findings", ())
    )
    used = raw.get("globals", ())
    return ScanReport(
        verdict=raw["verdict"],
        findings=findings,
        globals={g["name"]: g["count"] for g in used},
        source=source,
        format=raw.get("format", ""),
        protocol=raw.get("protocol"),
        allowed=allowed_names(g["name"] for g in used if g.get("allowed")),
        report_json=text,
    )


def report_from_parts(parts: tuple[Any, ...], source: str = "") -> ScanReport:
    """Builds a :class:`ScanReport` from the parts ``_amber.scan_path`` and
    ``_amber.scan_bytes`` return (no JSON to decode): format, verdict,
    findings as ``Finding`` field tuples, globals as ``{name: count}``, the
    accepted names as :func:`allowed_names` gives them, protocol, and the
    report as JSON for :attr:`ScanReport.details`."""
    fmt, verdict, found, used, allowed, protocol, text = parts
    # A frozen dataclass's __init__ sets each field through object.__setattr__,
    # which cost a scan of a small file more than the rest of this function:
    # the fields go into the new instance's __dict__ at once instead (the same
    # object: equality, hashing and repr read the attributes).
    report = object.__new__(ScanReport)
    report.__dict__.update(
        verdict=verdict,
        findings=tuple([Finding(*f) for f in found]) if found else (),
        globals=used,
        source=source,
        format=fmt,
        protocol=protocol,
        allowed=allowed,
        report_json=text,
    )
    return report


def allowed_names(names: Iterable[str]) -> frozenset[str]:
    """The names ``find_class`` may resolve, from the globals a report accepted."""
    return frozenset([_normal(name) if name.startswith("numpy.core.") else name for name in names])


def trusted_names(trusted: Any) -> list[str] | None:
    """The extra names ``trusted=`` adds to the policy, or ``None`` for
    ``trusted=True`` (no policy: plain pickle behaviour).

    Entries are exact dotted names (``"mypkg.models.MyModel"``) or the
    classes and functions themselves.
    """
    if trusted is None or trusted is False:
        return []
    if trusted is True:
        return None
    if isinstance(trusted, (str, bytes)) or not isinstance(trusted, Iterable):
        raise TypeError(
            "trusted must be None, True, or a list of exact dotted names "
            f"(e.g. ['mypkg.models.MyModel']) or classes/functions, not {trusted!r}"
        )
    names: list[str] = []
    for item in trusted:
        if isinstance(item, str):
            name = item
        else:
            module = getattr(item, "__module__", None)
            qualname = getattr(item, "__qualname__", None)
            if not isinstance(module, str) or not isinstance(qualname, str):
                raise TypeError(f"trusted entries must be dotted names, classes or functions, not {item!r}")
            name = f"{module}.{qualname}"
        if "." not in name or "<" in name or name.startswith(".") or name.endswith("."):
            raise ValueError(f"trusted name {name!r} is not an exact dotted name such as 'mypkg.models.MyModel'")
        names.append(name)
    return names


def check(report: ScanReport) -> frozenset[str]:
    """Raises unless the report is safe; returns the names ``find_class`` may resolve."""
    if report.verdict == "safe":
        return report.allowed
    if report.verdict == "malformed":
        first = report.findings[0] if report.findings else None
        err = FormatError(
            f"{report.source or 'the pickle stream'} is not a well-formed pickle"
            + (f": {first}" if first else "")
        )
        err.code = first.code if first else "pickle.malformed"
        err.entry = None
        err.offset = first.offset if first else None
        err.report = report
        raise err
    raise UnsafeModelError(report)


def _normal(name: str) -> str:
    """One spelling per name for comparisons: NumPy 1.x ``numpy.core`` is
    NumPy 2's ``numpy._core``."""
    if name.startswith("numpy.core."):
        return "numpy._core." + name[len("numpy.core.") :]
    return name


def canonical(module: str, name: str) -> tuple[str, str]:
    """``(module, name)`` after CPython's Python 2 renaming, as ``find_class``
    applies it for protocols 0-2."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def accepted(module: str, name: str, allowed: frozenset[str]) -> tuple[str, str] | None:
    """The name the second wall resolves for ``module.name``, or ``None``.

    The analyser reports names after Python 2 renaming where the stream's
    protocol calls for it, so the name as written is tried first, then its
    renamed form; whichever matches is the one resolved, so the object
    imported is always one the analyser accepted.
    """
    if _normal(f"{module}.{name}") in allowed:
        return module, name
    renamed = canonical(module, name)
    if renamed != (module, name) and _normal(f"{renamed[0]}.{renamed[1]}") in allowed:
        return renamed
    return None


def changed_error(detail: str) -> UnsafeModelError:
    """The error for an array whose copy failed a check its bytes in the file passed."""
    finding = Finding(
        code="content.changed",
        severity="critical",
        message=f"an array as loaded fails the check it passed when analysed (did the file change?): {detail}",
    )
    return UnsafeModelError(ScanReport(verdict="unsafe", findings=(finding,), globals={}))


def second_wall_error(name: str) -> UnsafeModelError:
    """The error for a name the unpickler was asked for but the analyser did not accept."""
    finding = Finding(
        code="second_wall.refused",
        severity="critical",
        message=f"the unpickler was asked for {name}, which the analysis of this stream did not accept",
        global_name=name,
    )
    return UnsafeModelError(ScanReport(verdict="unsafe", findings=(finding,), globals={name: 1}))
