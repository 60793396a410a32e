"""Pickling with arrays taken out of the stream, and unpickling them back.

amber pickles with CPython's C pickler at protocol 5. A NumPy array large
enough to be worth it is *not* written into the stream: :meth:`reducer_override`
replaces it by NumPy's own protocol-5 reduction, ``_frombuffer(buffer, dtype,
shape, order)``, whose buffer goes out of band (a ``NEXT_BUFFER`` opcode). The
array's bytes are then written once, straight from the array's memory, into
their own ``.npy`` entry. Loading hands the entries back as the out-of-band
buffers, either copied into fresh NumPy memory or as views of the mapped file.

The stream is therefore an ordinary protocol-5 pickle: anything with NumPy can
load it with ``pickle.loads(stream, buffers=[...])``.
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from amber import _safety

#: Arrays smaller than this stay inside the pickle stream: for tiny arrays a
#: separate entry costs more than it saves (see docs/FORMAT.md, rule F-21).
ARRAY_THRESHOLD = 64 * 1024

#: NumPy's own rebuild function for protocol-5 array pickles, found the way
#: NumPy itself reaches it, so it is right under NumPy 1.x and 2.x alike.
_FROMBUFFER = np.arange(2).__reduce_ex__(5)[0]

_CALLABLE_TYPES = frozenset({type, types.FunctionType, types.BuiltinFunctionType, np.ufunc})
_ndarray = np.ndarray
_memmap = np.memmap


@dataclass
class OutOfBandArray:
    """An array whose bytes go to their own entry."""

    array: np.ndarray
    raw: np.ndarray  # the same bytes as a flat uint8 view, in memory order
    fortran_order: bool


class Pickler(pickle.Pickler):
    """A protocol-5 pickler that sends large plain arrays out of band."""

    def __init__(self, file: Any, threshold: int = ARRAY_THRESHOLD) -> None:
        super().__init__(file, protocol=5, buffer_callback=self._buffer_callback)
        self.threshold = threshold
        self.arrays: list[OutOfBandArray] = []
        self.modules: set[str] = set()
        self._seen: set[Any] = set()
        self._saw_array = False
        self._ours: dict[int, int] = {}
        self._emitted = 0

    def reducer_override(self, obj: Any) -> Any:
        # Called by the C pickler for every object that is not a builtin
        # container or scalar, so the common paths return as early as possible.
        cls = type(obj)
        if cls is _ndarray or cls is _memmap:
            self._saw_array = True
            if obj.nbytes >= self.threshold and not obj.dtype.hasobject:
                return self._out_of_band(obj)
            if cls is _memmap:
                # A memmap loads as a plain array anyway (its file is not
                # saved); pickled as one, it needs no subclass in the policy.
                return obj.view(_ndarray).__reduce_ex__(5)
            return NotImplemented
        # Classes and functions are pickled by reference: note their package once.
        key = obj if cls in _CALLABLE_TYPES else cls
        if key not in self._seen:
            self._seen.add(key)
            module = getattr(key, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module.partition(".")[0])
        return NotImplemented

    def _out_of_band(self, obj: np.ndarray) -> tuple[Any, tuple[Any, ...]]:
        if obj.flags.c_contiguous:
            data, fortran = obj, False
        elif obj.flags.f_contiguous:
            data, fortran = obj, True
        else:
            # A strided view: written C-contiguous, as joblib and pickle do.
            data, fortran = np.ascontiguousarray(obj), False
        raw = data.ravel(order="K").view(np.uint8)
        buffer = pickle.PickleBuffer(raw)
        self._ours[id(buffer)] = len(self.arrays)
        self.arrays.append(OutOfBandArray(data, raw, fortran))
        return _FROMBUFFER, (buffer, obj.dtype, obj.shape, "F" if fortran else "C")

    def _buffer_callback(self, buffer: pickle.PickleBuffer) -> bool:
        # NumPy also offers buffers of the small arrays we left alone; a true
        # return value tells the pickler to keep those in band.
        # The reduce tuple keeps our buffer alive until this call, and its id is
        # dropped here, so a recycled id can never be mistaken for ours.
        # Ours is the one just reduced, so most calls (small arrays) find none pending.
        ours = self._ours
        if ours and ours.pop(id(buffer), None) is not None:
            self._emitted += 1
            return False
        return True

    def check(self) -> None:
        """Confirms every array taken out of band was written as a buffer, and
        records NumPy among the packages if any array was pickled."""
        if self._saw_array:
            self.modules.add("numpy")
        if self._emitted != len(self.arrays):
            raise RuntimeError(
                f"internal error: {len(self.arrays)} arrays taken out of band, {self._emitted} buffers emitted"
            )


#: NumPy 2 moved ``numpy.core`` to ``numpy._core``; files name whichever wrote them.
_NUMPY2 = int(np.__version__.split(".")[0]) >= 2


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Holds off the cyclic garbage collector while a pickler or unpickler
    runs: both allocate a few objects per object they handle, which sets off
    collections that walk the growing graph again and again, for nothing,
    since the graph is kept whole. Collection resumes (if it was on) as soon
    as the block ends, however it ends."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def running_numpy_module(module: str) -> str:
    """The module a pickled NumPy name lives in under the running NumPy, so a
    model saved under NumPy 2 loads under NumPy 1.x and the reverse (and
    NumPy 2 never warns about the deprecated ``numpy.core`` alias)."""
    old, new = ("numpy.core", "numpy._core") if _NUMPY2 else ("numpy._core", "numpy.core")
    if module == old or module.startswith(old + "."):
        return new + module[len(old) :]
    return module


class Unpickler(pickle.Unpickler):
    """The unpickler that runs on a stream amber has already analysed.

    ``allowed`` is the second wall: the exact names the Rust analyser accepted
    in this stream (``None`` only for ``trusted=True``). ``find_class``
    resolves those and nothing else, importing only their modules and walking
    only their exact dotted names. Python 2 names (``copy_reg``,
    ``__builtin__``) are renamed as CPython does for protocols 0-2 when that
    renamed name is the one the analyser accepted.
    """

    def __init__(self, file: Any, *, allowed: frozenset[str] | None = None, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if self._allowed is None:
            return super().find_class(running_numpy_module(module), name)
        resolved = _safety.accepted(module, name, self._allowed)
        if resolved is None:
            raise _safety.second_wall_error(f"{module}.{name}")
        module, name = resolved
        module = running_numpy_module(module)
        obj: Any = sys.modules.get(module)
        if obj is None:
            __import__(module)
            obj = sys.modules[module]
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
