"""Builders of hostile pickle streams for the safety tests.

Every payload is a harmless marker: it creates an empty file at a path the
test chooses (``open(path, "w")``, ``os.system("touch path")``...), so a test
can prove that nothing ran by checking that the file does not exist. The
streams are written opcode by opcode: the attacks are shapes that CPython's
pickler never produces.
"""

from __future__ import annotations

import struct
from typing import Callable

PROTO2 = b"\x80\x02"
PROTO4 = b"\x80\x04"
STOP = b"."
MARK = b"("
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
TUPLE3 = b"\x87"
EMPTY_TUPLE = b")"
EMPTY_DICT = b"}"
EMPTY_LIST = b"]"
REDUCE = b"R"
BUILD = b"b"
NEWOBJ = b"\x81"
NONE = b"N"
MEMOIZE = b"\x94"
STACK_GLOBAL = b"\x93"
SETITEM = b"s"
APPEND = b"a"


def glob(module: str, name: str) -> bytes:
    """``GLOBAL module name``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def s(text: str) -> bytes:
    """A ``str`` constant (``SHORT_BINUNICODE`` or ``BINUNICODE``)."""
    data = text.encode()
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + struct.pack("<I", len(data)) + data


def b(data: bytes) -> bytes:
    """A ``bytes`` constant (``SHORT_BINBYTES``/``BINBYTES``)."""
    if len(data) < 256:
        return b"C" + bytes([len(data)]) + data
    return b"B" + struct.pack("<I", len(data)) + data


def i(value: int) -> bytes:
    """``BININT``."""
    return b"J" + struct.pack("<i", value)


def call(callable_: bytes, *args: bytes) -> bytes:
    """``callable(*args)`` with ``REDUCE``."""
    return callable_ + MARK + b"".join(args) + TUPLE + REDUCE


def touch_open(marker: str) -> bytes:
    """``builtins.open(marker, "w")``: creates the marker file."""
    return call(glob("builtins", "open"), s(marker), s("w"))


def touch_system(marker: str, module: str = "os") -> bytes:
    """``os.system("touch marker")``."""
    return call(glob(module, "system"), s(f"touch {marker}"))


def pickle_of(body: bytes, proto: bytes = PROTO4) -> bytes:
    """A complete stream whose root is ``body``."""
    return proto + body + STOP


Builder = Callable[[str], bytes]
