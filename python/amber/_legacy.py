"""Loading pickle and joblib files that amber did not write.

The Rust side (``amber._amber.Legacy``) recognises the file by content,
decompresses it, parses it once without executing anything, finds every
array's bytes and rewrites the stream for CPython's C unpickler: frames are
dropped and each joblib array wrapper is followed by ``persistent_load((wrapper,
k))``. Here that call builds array ``k`` from the wrapper's own (already
unpickled) ``dtype``/``shape``/``order``/``subclass`` and the ``k``-th data
region: a view of the mapped file with ``mmap_mode`` where alignment allows,
otherwise a copy. joblib's wrapper classes are replaced by small stand-ins
defined here, so joblib need not be installed and none of its code runs.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from typing import Any

import numpy as np

from amber import _amber, _compress, _safety
from amber._pickling import Unpickler, collection_paused

#: Modules joblib's wrapper classes were pickled from (joblib itself and
#: scikit-learn's vendored copy, removed in scikit-learn 0.23).
_WRAPPER_MODULES = frozenset(
    {
        "joblib.numpy_pickle",
        "joblib.numpy_pickle_compat",
        "sklearn.externals.joblib.numpy_pickle",
        "sklearn.externals.joblib.numpy_pickle_compat",
    }
)

#: Arrays of compressed files (or of bytes) at least this large are views of
#: the decompressed stream (a private copy) rather than copies of it.
_VIEW_DECOMPRESSED = 64 << 20


def _error(cls: type, code: str, message: str) -> Exception:
    err = cls(message)
    err.code = code
    err.entry = None
    err.offset = None
    err.chunk = None
    return err


def _refuse(message: str) -> Exception:
    return _error(_amber.LegacyFormatError, "legacy.bad_wrapper", message)


class _Wrapper:
    """Stand-in for a joblib array wrapper: only holds its pickled state."""

    __slots__ = ("state",)

    def __setstate__(self, state: Any) -> None:
        if type(state) is not dict:
            raise _refuse(f"{type(self).__name__} state is not a dict")
        self.state = state

    def __reduce__(self) -> Any:
        raise TypeError(f"amber's stand-in for joblib's {type(self).__name__} cannot be pickled")


class NumpyArrayWrapper(_Wrapper):
    """Stand-in for ``joblib.numpy_pickle.NumpyArrayWrapper`` (joblib >= 0.10)."""

    __slots__ = ()


class NDArrayWrapper(_Wrapper):
    """Stand-in for ``joblib.numpy_pickle.NDArrayWrapper`` (companion ``.npy``)."""

    __slots__ = ()


class ZNDArrayWrapper(_Wrapper):
    """Stand-in for ``joblib.numpy_pickle.ZNDArrayWrapper`` (companion ``ZF`` file)."""

    __slots__ = ()


_STANDINS = {cls.__name__: cls for cls in (NumpyArrayWrapper, NDArrayWrapper, ZNDArrayWrapper)}


def _native(array: np.ndarray) -> np.ndarray:
    """joblib's ``ensure_native_byte_order``: byte-swap whole non-native arrays."""
    dt = array.dtype
    other = ">" if np.little_endian else "<"
    if dt.byteorder == other or (
        dt.byteorder == "|" and dt.fields and all(f[0].byteorder == other for f in dt.fields.values())
    ):
        return array.byteswap().view(dt.newbyteorder("="))
    return array


def _subclass(array: np.ndarray, subclass: Any) -> np.ndarray:
    if subclass is None or subclass is np.ndarray or subclass is np.memmap:
        return array
    if not (isinstance(subclass, type) and issubclass(subclass, np.ndarray)):
        raise _refuse(f"array subclass {subclass!r} is not an ndarray subclass")
    return array.view(subclass)


def _shape(value: Any) -> tuple[int, ...]:
    if type(value) is tuple:
        for d in value:
            if type(d) is not int or d < 0:
                break
        else:
            return value
    raise _refuse(f"array shape {value!r} is not a tuple of non-negative ints")


class LegacyUnpickler(Unpickler):
    """amber's unpickler plus joblib's wrappers, resolved through ``persistent_load``."""

    def __init__(
        self, file: Any, legacy: Any, mmap_mode: str | None, threads: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(file, **kwargs)
        self._legacy = legacy
        self._mmap_mode = mmap_mode
        self._threads = threads
        self._kwargs = kwargs
        self._infos = legacy.array_infos()
        self._count = len(self._infos)
        self._used = bytearray(self._count)
        self._blocks = _Blocks()
        # Small arrays copied ahead, a block at a time (see ``_pack_from``):
        # array ``_pack_first + i`` is at ``_pack_offsets[i]`` in the block.
        self._pack_first = 0
        self._pack_offsets: list[int] = []
        self._pack_block: Any = None
        self._plain_dtype: Any = None
        self._in_place = False
        self.copied: list[int] = []

    def find_class(self, module: str, name: str) -> Any:
        if module in _WRAPPER_MODULES and name in _STANDINS:
            return _STANDINS[name]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        # Persistent ids only come from amber's rewrite (the analysis refuses
        # them in original streams); check anyway.
        if type(pid) is not tuple or len(pid) != 2:
            raise _refuse(f"unexpected persistent id {type(pid).__name__}")
        wrapper, k = pid
        if type(k) is not int or not 0 <= k < self._count:
            raise _refuse(f"persistent id names array {k!r} of {self._count}")
        if self._used[k]:
            raise _refuse(f"array {k} is referenced twice")
        self._used[k] = 1
        source, wrapper_name, nbytes, mapped, npy = self._infos[k]
        cls = _STANDINS[wrapper_name]
        if type(wrapper) is not cls or not hasattr(wrapper, "state"):
            raise _refuse(f"array {k} belongs to a {cls.__name__}, not a {type(wrapper).__name__}")
        state = wrapper.state
        if source == "inline":
            array = self._raw(k, state["dtype"], _shape(state["shape"]), state.get("order", "C") == "F",
                              nbytes, mapped)
        elif source == "pickle" or source == "npy-pickle":
            array = self._nested(k)
        elif source == "npy":
            descr, shape, fortran = npy
            array = self._raw(k, np.dtype(descr), tuple(shape), fortran, nbytes, mapped)
        else:  # zfile: ZNDArrayWrapper keeps ndarray.__setstate__'s arguments but the data
            init_args, setstate = state.get("init_args"), state.get("state")
            if not (isinstance(setstate, tuple) and len(setstate) == 4 and isinstance(init_args, tuple)):
                raise _refuse(f"ZNDArrayWrapper {k} has no (version, shape, dtype, fortran) state")
            _, shape, dtype, fortran = setstate
            array = self._raw(k, dtype, _shape(shape), bool(fortran), nbytes, False)
            return _subclass(array, init_args[0] if init_args else None)
        subclass = state.get("subclass")
        return array if subclass is np.ndarray else _subclass(array, subclass)

    def _raw(self, k: int, dtype: Any, shape: tuple[int, ...], fortran: bool, nbytes: int, mapped: bool) -> Any:
        # The arrays of a file share a few dtype objects (the pickle memoizes
        # them), and a dtype never changes: check each one once.
        if dtype is not self._plain_dtype:
            if not isinstance(dtype, np.dtype) or dtype.hasobject:
                raise _refuse(f"array {k} has dtype {dtype!r}, not a plain numpy dtype")
            self._plain_dtype = dtype
            self._in_place = dtype.isnative and dtype.subdtype is None
        count = math.prod(shape)
        if count * dtype.itemsize != nbytes:
            raise _error(
                _amber.LegacyFormatError,
                "legacy.array_size",
                f"array {k}: shape {shape} of {dtype} needs {count * dtype.itemsize} bytes, the file holds {nbytes}",
            )
        array = None
        if self._mmap_mode == "r" and mapped:
            view = np.frombuffer(self._legacy.array_region(k), dtype=dtype, count=count)
            if view.flags.aligned:
                array = view
        elif nbytes >= _VIEW_DECOMPRESSED and not mapped and self._mmap_mode is None and self._infos[k][0] == "inline":
            # A second copy of a large array would double the load's peak memory:
            # a writable view of the decompressed stream instead (freed with its last view).
            view = np.frombuffer(self._legacy.owned_array_region(k), dtype=dtype, count=count)
            if view.flags.aligned and view.flags.writeable:
                array = view if dtype.isnative else _native(view)
        if array is None:
            if self._mmap_mode is None and nbytes < _Blocks.PACK_BELOW:
                i = k - self._pack_first
                if 0 <= i < len(self._pack_offsets):
                    block, start = self._pack_block, self._pack_offsets[i]
                else:
                    block, start = self._pack_from(k, nbytes), 0
                if count and self._in_place:
                    # Made in place, in its shape and order, by one call.
                    return np.ndarray(shape, dtype, block, start, None, "F" if fortran else "C")
                buffer = block[start : start + nbytes]
            else:
                if self._mmap_mode is not None:
                    self.copied.append(k)
                buffer = self._blocks.take(nbytes)
                self._legacy.copy_array_into(k, buffer, self._threads)
            array = buffer.view(dtype) if count else np.empty(0, dtype=dtype)
            if not dtype.isnative:
                array = _native(array)
        if fortran:
            return array.reshape(shape[::-1]).transpose()
        if len(shape) == 1:
            return array
        return array.reshape(shape)

    def _pack_from(self, k: int, nbytes: int) -> np.ndarray:
        """A new block holding copies of array ``k``'s bytes (at its start) and
        of the small arrays that follow it in the file. Without ``mmap_mode``
        every small array is copied, and the unpickler asks for them in file
        order, so one call copies a block of them instead of one call each."""
        block = np.empty(_Blocks.BLOCK, dtype=np.uint8)
        offsets = self._legacy.pack_arrays_into(k, block, _Blocks.PACK_BELOW, 64)
        if not offsets:
            raise _refuse(f"array {k} of {nbytes} bytes cannot be copied")
        self._pack_first, self._pack_offsets, self._pack_block = k, offsets, block
        return block

    def _nested(self, k: int) -> Any:
        data = self._legacy.array_region(k)
        return Unpickler(_reader(data), **self._kwargs).load()


class _Blocks:
    """Fresh memory for arrays loaded into memory: small ones are carved from
    shared 8 MiB blocks (which NumPy backs with huge pages, so first touch is
    several times cheaper), large ones get their own allocation."""

    #: Arrays at least this large get their own allocation.
    PACK_BELOW = 1 << 20
    BLOCK = 8 << 20

    def __init__(self) -> None:
        self._block: np.ndarray | None = None
        self._used = 0

    def take(self, nbytes: int) -> np.ndarray:
        if nbytes >= self.PACK_BELOW:
            return np.empty(nbytes, dtype=np.uint8)
        if self._block is None or self._used + nbytes > len(self._block):
            self._block = np.empty(self.BLOCK, dtype=np.uint8)
            self._used = 0
        buffer = self._block[self._used : self._used + nbytes]
        self._used = (self._used + nbytes + 63) // 64 * 64
        return buffer


def _reader(data: Any) -> io.BufferedReader:
    """A file over ``data`` with ``peek``: the C unpickler then reads ahead in
    large chunks instead of calling ``read`` once per opcode (the rewritten
    stream has no frames to batch its reads)."""
    return io.BufferedReader(io.BytesIO(data), buffer_size=max(8192, min(len(data), 1 << 20)))


def _open(source: Any, scan: list[str] | None = None) -> Any:
    """Opens a legacy file; with ``scan`` (extra trusted names) it is analysed
    from the parse the open makes anyway (``legacy.report``)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _amber.Legacy.from_bytes(source, scan=scan)
    return _amber.Legacy.open(os.fspath(source), scan=scan)


def unpickle(
    legacy: Any, mmap_mode: str | None = None, trusted: Any = None, source: str = "", threads: int | None = None
) -> Any:
    """Unpickles an opened :class:`amber._amber.Legacy` file. A file opened
    with ``scan=`` carries the report of that scan, which is used as it is:
    it must have been opened with ``trusted_names(trusted)``. Large arrays are
    read on at most ``threads`` threads (else ``AMBER_NUM_THREADS``, else all)."""
    # Nothing has been unpickled yet. Rust analyses the original stream (and
    # object-array pickles kept in companion files); the load stream differs
    # from it only by dropped FRAMEs and the persistent-id triples amber inserted.
    names = _safety.trusted_names(trusted)
    guard: dict[str, Any] = {}
    if names is not None:
        report_json = legacy.report if legacy.report is not None else legacy.scan(names)
        report = _safety.report_from_json(report_json, source)
        guard = {"allowed": _safety.check(report)}
    if mmap_mode is not None and legacy.compression is not None:
        warnings.warn(
            f"mmap_mode={mmap_mode!r} cannot map a compressed file ({legacy.compression}); "
            "its arrays are loaded into memory",
            UserWarning,
            stacklevel=3,
        )
        mmap_mode = None
    kwargs: dict[str, Any] = {"encoding": "latin1"} if legacy.py2 else {}
    kwargs.update(guard)
    unpickler = LegacyUnpickler(
        _reader(legacy.load_stream()), legacy, mmap_mode, _compress.threads(threads), **kwargs
    )
    # Every wrapper and its state dict is a container the collector would walk.
    with collection_paused():
        value = unpickler.load()
    if unpickler.copied:
        warnings.warn(
            f"mmap_mode={mmap_mode!r}: {len(unpickler.copied)} array(s) are not aligned in the file "
            "(written by joblib < 1.2) or not mappable, and were copied into memory",
            UserWarning,
            stacklevel=3,
        )
    return value


def load(
    source: Any, mmap_mode: str | None = None, trusted: Any = None, name: str = "", threads: int | None = None
) -> Any:
    """Loads a pickle or joblib file (a path or its bytes), safely unless ``trusted=True``."""
    return unpickle(_open(source, _safety.trusted_names(trusted)), mmap_mode, trusted, name, threads)


def info(source: Any) -> dict[str, Any]:
    """What a pickle or joblib file holds, read without unpickling anything."""
    legacy = _open(source)
    kinds = [legacy.array_info(k) for k in range(legacy.array_count())]
    return {
        "format": legacy.kind,
        "protocol": legacy.protocol,
        "compression": legacy.compression,
        "python2": legacy.py2,
        "file_size": legacy.file_size,
        "stream_size": len(legacy.stream()),
        "arrays": len(kinds),
        "object_arrays": sum(1 for a in kinds if a[0] in ("pickle", "npy-pickle")),
        "array_bytes": sum(a[2] for a in kinds if a[0] not in ("pickle", "npy-pickle")),
        "companions": [name for name, _ in legacy.companions()],
    }


def is_legacy(source: Any) -> bool:
    """Whether ``source`` (a path or bytes) holds a pickle or a joblib file,
    judged by its first bytes (and last byte, for protocol 0/1 pickles).
    Anything else, amber files included, goes to the amber reader, which
    names what it found."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        if len(view) == 0:
            return False
        head = bytes(view[:16]) + bytes(view[-1:])
    elif isinstance(source, str):
        return _amber.is_legacy_path(source)
    else:
        return False
    return bool(head) and _amber.is_legacy(head)


__all__ = ["LegacyUnpickler", "NDArrayWrapper", "NumpyArrayWrapper", "ZNDArrayWrapper", "info", "is_legacy", "load"]
