"""``dump``, ``load`` and friends: the public functions of amber.

These functions resolve their arguments (paths, file objects, options) and
drive the Rust writer and reader; the file format itself lives in Rust.
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import os
import pathlib
import warnings
from typing import IO, Any, Union

import numpy as np

from amber import _amber, _compress, _legacy, _manifest, _safety, _versions
from amber._npy import header_bytes
from amber._pickling import Pickler, Unpickler, collection_paused

PathLike = Union[str, "os.PathLike[str]"]
Target = Union[PathLike, IO[bytes]]

#: Bytes copied per write when dumping into a file object.
_COPY_CHUNK = 8 << 20

__version__ = "0.1.0"


def _check_protocol(protocol: Any) -> None:
    if protocol is None or protocol == 5 or protocol == -1:
        return
    if isinstance(protocol, int) and 0 <= protocol <= 4:
        # joblib accepts any protocol; amber always writes protocol 5, which
        # every Python amber supports can read. Say so rather than fail.
        return
    raise ValueError(f"protocol must be None or an int from 0 to 5, not {protocol!r}")


_PosixPath = pathlib.PosixPath


def _is_path(target: Any) -> bool:
    return isinstance(target, (str, os.PathLike))


def _fspath(target: Any) -> str:
    """``os.fspath``, refusing NUL bytes as ``open()`` does."""
    path = os.fspath(target)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if "\0" in path:
        raise ValueError(f"embedded null byte in path {path!r}")
    return path


def _write_all(writer: Any, obj: Any, metadata: dict[str, Any], codec: tuple[str, int] | None) -> Any:
    """Pickles ``obj`` into ``writer`` and finishes the file; aborts on any error."""
    name, level = codec if codec else (None, 0)
    try:
        writer.begin_entry(_manifest.pickle_entry_name(codec is not None), name, level)
        pickler = Pickler(writer)
        # The collections the pickler's hooks set off took about 5% of a small
        # model's dump.
        with collection_paused():
            pickler.dump(obj)
        pickler.check()
        pickle_record = writer.end_entry()
        headers = [header_bytes(a.array.dtype, a.array.shape, a.fortran_order) for a in pickler.arrays]
        # Arrays of one dtype, trailing shape and order (a forest's node arrays)
        # are of one kind, and may share the compressor's choice of filter.
        kinds: dict[Any, int] = {}
        items = [
            (
                _manifest.array_entry_name(i, codec is not None),
                header,
                a.raw,
                a.array.dtype.itemsize,
                kinds.setdefault((a.array.dtype, a.array.shape[1:], a.fortran_order), len(kinds)),
            )
            for i, (a, header) in enumerate(zip(pickler.arrays, headers))
        ]
        records: list[dict[str, Any]] = writer.add_arrays(items, name, level)
        manifest = _manifest.build(
            pickle_record,
            records,
            pickler.arrays,
            headers,
            _versions.capture(pickler.modules),
            metadata,
            __version__,
            writer.content_hash(),
        )
        return writer.finish(manifest)
    except BaseException:
        writer.abort()
        raise


def dump(
    value: Any,
    filename: Target,
    compress: Any = None,
    protocol: int | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = True,
    sync: bool = False,
    threads: int | None = None,
) -> str | None:
    """Saves ``value`` (any picklable object) to an amber file.

    ``filename`` is a path (``str`` or ``os.PathLike``) or a binary file
    object opened for writing. A path is replaced atomically: the file is
    written beside it under a temporary name and renamed into place, so an
    error, a Ctrl-C or a crash leaves either the old file or the new one.

    ``metadata`` is a dict of JSON values stored in the manifest (readable
    with :func:`info` without unpickling). ``datetime``/``date`` become ISO
    8601 strings, ``pathlib.Path`` a string, NumPy scalars Python numbers and
    numeric NumPy arrays of at most 1,000 elements lists; any other value
    raises :class:`TypeError` naming its key path (``metadata['metrics']['auc']``).
    The manifest also records, without asking, the creation time (UTC), the
    amber, Python and platform versions, the version and distribution of
    every package the pickle references, and a BLAKE3 content hash. ``overwrite=False`` raises
    :class:`FileExistsError` if the path exists. ``sync=True`` flushes the
    file and its directory to disk before returning, so the file survives a
    power cut (slower). ``protocol`` is accepted for joblib compatibility;
    amber always writes pickle protocol 5.

    ``compress`` takes what joblib's takes: ``None``/``False``/``0`` (none),
    ``True`` (zstd, default level), an int 1-9 (zstd, how hard to try),
    ``"zstd"``, ``"lz4"``, or ``(name, level)``. joblib's ``"zlib"``,
    ``"gzip"``, ``"bz2"``, ``"lzma"`` and ``"xz"`` mean "compress" and are
    written as zstd at a level giving a file no larger than that codec would
    (the file is an amber file either way). Paths ending in ``.z``, ``.gz``,
    ``.bz2``, ``.lzma``, ``.xz``, ``.zst`` or ``.lz4`` are compressed without
    being asked. Arrays and the pickle stream are compressed in chunks on
    every core (``threads=`` or ``AMBER_NUM_THREADS`` caps it), with a
    byte-shuffle or bit-shuffle filter for typed arrays when it helps and raw
    storage for chunks that do not compress.

    Returns the path written, or ``None`` for a file object.

    >>> import amber, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "m.amber")
    >>> amber.dump({"w": np.arange(3)}, path, metadata={"run": 7})  # doctest: +ELLIPSIS
    '...m.amber'
    >>> amber.load(path)["w"]
    array([0, 1, 2])
    """
    codec = _compress.resolve(compress, filename)
    _check_protocol(protocol)
    meta = _manifest.user_metadata(metadata)
    n_threads = _compress.threads(threads)
    if _is_path(filename):
        path = _fspath(filename)
        writer = _amber.Writer.to_path(path, overwrite=overwrite, sync=sync, threads=n_threads)
        return os.fspath(_write_all(writer, value, meta, codec))
    if hasattr(filename, "write"):
        region = _write_all(_amber.Writer.to_temporary(threads=n_threads), value, meta, codec)
        view = memoryview(region)
        for start in range(0, len(view), _COPY_CHUNK):
            filename.write(view[start : start + _COPY_CHUNK])
        return None
    raise TypeError(
        f"filename must be a path or a binary file object opened for writing, "
        f"not {type(filename).__name__} (are the arguments of dump swapped?)"
    )


def dumps(
    value: Any,
    compress: Any = None,
    protocol: int | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    threads: int | None = None,
) -> bytes:
    """Like :func:`dump`, but returns the file's bytes."""
    codec = _compress.resolve(compress)
    _check_protocol(protocol)
    writer = _amber.Writer.to_memory(threads=_compress.threads(threads))
    data = _write_all(writer, value, _manifest.user_metadata(metadata), codec)
    assert isinstance(data, bytes)
    return data


def _check_mmap_mode(mmap_mode: str | None) -> None:
    if mmap_mode in (None, "r", "c"):
        return
    if mmap_mode in ("r+", "w+"):
        raise ValueError(
            f"mmap_mode={mmap_mode!r} is not supported: it would write into the model file in place, "
            "which breaks its checksums and the guarantee that files are replaced atomically. "
            "Use mmap_mode='c' for writable copy-on-write arrays, or load, change and dump again."
        )
    raise ValueError(f"mmap_mode must be None, 'r' or 'c', not {mmap_mode!r}")


#: Arrays below this size are packed into shared blocks when loaded into memory.
_PACK_BELOW = 1 << 20
#: Size of those blocks: large enough for NumPy to back them with huge pages
#: (first touch several times cheaper than with 4 KiB pages), small enough
#: that one block more than the model is all a load holds at its peak.
_BLOCK = 8 << 20


class _Scratch:
    """Memory for the compressed arrays a load lends to something that
    copies them (a `Tree`'s nodes and values), reused batch after batch: a
    forest's arrays pass through a few buffers that stay in the CPU's cache
    rather than each taking fresh pages, and the load leaves no more than
    those buffers behind.

    The analysis lends an array only when nothing but its tree can reach it
    and the tree copies it before the unpickler asks for the buffer two
    after it (see `amber_scan`'s lending rules). So once the unpickler has
    asked for array ``k``, every array below ``k - 1`` has been copied, and a
    buffer that held only such arrays may be decoded into again."""

    def __init__(self) -> None:
        self.free: list[Any] = []
        self.held: collections.deque[tuple[int, Any]] = collections.deque()

    def take(self, first: int, end: int, sizes: list[int]) -> list[tuple[int, Any]]:
        """Views, one per array of ``first..end``, into a free buffer."""
        need = sum(_aligned(sizes[i]) for i in range(first, end))
        found = next((k for k, b in enumerate(self.free) if len(b) >= need), None)
        block = self.free.pop(found) if found is not None else np.empty(max(need, _SCRATCH_BATCH), dtype=np.uint8)
        self.held.append((end, block))
        views, at = [], 0
        for i in range(first, end):
            views.append((i, block[at : at + sizes[i]]))
            at += _aligned(sizes[i])
        return views

    def asked(self, index: int) -> None:
        """The unpickler asks for array ``index``: buffers whose arrays all lie
        below ``index - 1`` are free again."""
        while self.held and self.held[0][0] <= index - 1:
            self.free.append(self.held.popleft()[1])


class _Blocks:
    """Carves the buffers of small arrays out of shared blocks, in order,
    across calls: a load's batches may be smaller than a block."""

    def __init__(self) -> None:
        self.block: Any = None
        self.used = 0

    def take(self, size: int) -> Any:
        if self.block is None or self.used + size > len(self.block):
            self.block = np.empty(_BLOCK, dtype=np.uint8)
            self.used = 0
        view = self.block[self.used : self.used + size]
        self.used = _aligned(self.used + size)
        return view


def _allocate(sizes: list[int], indices: list[int], blocks: _Blocks | None = None) -> list[Any]:
    """Fresh buffers for the arrays at ``indices`` (``None`` elsewhere): small
    ones are views into shared blocks (``blocks``' if given), large ones have
    their own allocation."""
    buffers: list[Any] = [None] * len(sizes)
    blocks = blocks if blocks is not None else _Blocks()
    for i in indices:
        if sizes[i] >= _PACK_BELOW:
            buffers[i] = np.empty(sizes[i], dtype=np.uint8)
        else:
            buffers[i] = blocks.take(sizes[i])
    return buffers


#: Bytes of lent arrays checked together, one batch ahead of the unpickler:
#: the file's pages a load holds besides the copies are about two of these.
_LENT_BLOCK = 4 << 20

#: Bytes of small compressed arrays decoded together. Decoding runs ahead of
#: the unpickler, and the thread that waits for a batch helps decode it, so
#: small batches let the unpickler start sooner and leave less of the end of
#: the load to it alone; each costs a call and a wake-up.
_COPY_BATCH = 2 << 20
#: Batches started ahead of the one the unpickler takes arrays from.
_AHEAD = 2

#: Bytes of lent compressed arrays decoded together into one scratch buffer
#: (see `_Scratch`): the load's few such buffers stay in the CPU's cache.
_SCRATCH_BATCH = 2 << 20

_FILLED, _LENT, _SCRATCH, _COPY = "filled", "lent", "scratch", "copy"


def _aligned(size: int) -> int:
    """``size`` rounded up to a multiple of 64 (where a block's next array starts)."""
    return (size + 63) // 64 * 64


def _batches(sizes: list[int], filled: list[bool], lent: list[bool], packed: list[bool]) -> Any:
    """``(first, end, kind)`` ranges of arrays read together: one array the
    checks already filled; uncompressed arrays lent as views of the file, up
    to ``_LENT_BLOCK`` bytes; compressed lent ones, decoded into scratch
    memory, up to ``_SCRATCH_BATCH`` bytes; one large array to copy; or small
    ones, up to ``_COPY_BATCH`` bytes."""
    index = 0
    while index < len(sizes):
        first = index
        if filled[index]:
            index += 1
            yield first, index, _FILLED
            continue
        if lent[index]:
            scratch = packed[index]
            limit = _SCRATCH_BATCH if scratch else _LENT_BLOCK
            used = 0
            while (
                index < len(sizes)
                and lent[index]
                and not filled[index]
                and packed[index] == scratch
                and (used == 0 or used + sizes[index] <= limit)
            ):
                used += _aligned(sizes[index]) if scratch else sizes[index]
                index += 1
            yield first, index, _SCRATCH if scratch else _LENT
            continue
        if sizes[index] >= _PACK_BELOW:
            index += 1
        else:
            used = 0
            while index < len(sizes) and not filled[index] and not lent[index] and sizes[index] < _PACK_BELOW:
                if used > 0 and used + sizes[index] > _COPY_BATCH:
                    break
                used = _aligned(used + sizes[index])
                index += 1
        yield first, index, _COPY


def _arrays_on_demand(reader: Any, ready: list[Any], filled: list[bool], lent: list[bool] | None = None) -> Any:
    """Each array, read into fresh memory (and its CRC checked) as the
    unpickler comes to it, rather than all of them before it starts. (The
    unpickler's memo keeps every array it was given until the load ends, so
    a load that copies its arrays holds them all, and whatever copies objects
    made of them, at its end.) Small arrays are views carved in order out of
    shared blocks, and up to ``_COPY_BATCH`` bytes of them are read together by
    one call (in parallel: one call per array would decompress a model's many
    single-chunk arrays one at a time). Large arrays get their own allocation.

    Reading runs ``_AHEAD`` batches ahead, on the pool and without the GIL:
    while the unpickler builds objects from one batch, the next ones are
    copied or decompressed, so the two overlap on a machine with cores to
    spare; compressed batches are decoded by one thread fewer than the pool
    has, and by the unpickler's own thread when it has to wait for one. So a
    load holds at most ``_AHEAD`` batches more than the arrays already handed
    over.

    ``ready`` holds, for the arrays marked ``filled``, what the content checks
    already decoded (the memory they read) and, for a mapped load, memory set
    aside for the compressed arrays the checks did not read (``None`` items
    otherwise); filled arrays are handed over as they are. The arrays marked
    ``lent`` (given only to something that copies them, and reachable by
    nothing else: a scikit-learn ``Tree``'s node and value arrays) are not
    given memory of their own: uncompressed ones are handed over as
    read-only views of the file once their CRCs and deferred checks have
    passed there, their pages released batch by batch behind the unpickler;
    compressed ones are decoded (and checked) into a few scratch buffers
    reused batch after batch (``_Scratch``). Either way the load does not
    hold the decoded arrays and the copies made of them at once."""
    sizes = reader.array_sizes()
    lent = lent if lent is not None else [False] * len(sizes)
    regions = reader.array_regions() if any(lent) else None
    packed = [r is None for r in regions] if regions is not None else [True] * len(sizes)
    blocks = _Blocks()
    scratch = _Scratch()

    def start(batch: tuple[int, int, str]) -> Any:
        first, end, kind = batch
        if kind == _FILLED:
            return first, end, None, None
        if kind == _LENT:
            return first, end, regions, reader.start_check_views(list(range(first, end)))
        if kind == _SCRATCH:
            views: list[Any] = [None] * len(sizes)
            for i, view in scratch.take(first, end, sizes):
                views[i] = view
            return first, end, views, reader.start_copy_arrays_into(views)
        # A batch may mix arrays with memory set aside (compressed ones the
        # checks did not read) and arrays without.
        buffers = _allocate(sizes, [i for i in range(first, end) if ready[i] is None], blocks)
        for i in range(first, end):
            if ready[i] is not None:
                buffers[i], ready[i] = ready[i], None
        # Nothing touches `buffers` until `wait()` has returned.
        return first, end, buffers, reader.start_copy_arrays_into(buffers)

    batches = _batches(sizes, filled, lent, packed)
    released = 0  # with lent arrays: the file's pages before this array are released
    started = collections.deque(start(batch) for batch in itertools.islice(batches, _AHEAD))
    while started:
        first, end, buffers, pending = started.popleft()
        # The unpickler asks for array `first`: the batch started next may
        # decode into scratch memory of arrays copied already.
        scratch.asked(first)
        following = next(batches, None)
        if following is not None:
            started.append(start(following))
        if regions is not None and first - 1 > released:
            # Each array before the previous one has been copied by what it was
            # lent to (a tree's arrays come just before its state is set).
            reader.release_arrays(released, first - 1)
            released = first - 1
        if pending is None:
            buffer, ready[first] = ready[first], None
            yield buffer
        else:
            pending.wait()
            for i in range(first, end):
                buffer, buffers[i] = buffers[i], None
                yield buffer


def _unpickle(reader: Any, mmap_mode: str | None, trusted: Any, source: str) -> Any:
    extra = _safety.trusted_names(trusted)
    entries = reader.array_entries()
    sizes = [nbytes for _, nbytes, _ in entries]
    compressed = [i for i, (_, _, packed) in enumerate(entries) if packed]
    # A safe load that copies its arrays leaves tree node walks to the copies
    # (see `_checked_load`); the compressed arrays the other checks decode to
    # read them are handed over as decoded (`take_decoded`), not decoded again.
    # With `mmap_mode`, compressed arrays (which cannot be mapped) are decoded
    # once, into memory set aside here, and the checks read them there.
    defer = extra is not None and mmap_mode is None
    wanted = compressed if mmap_mode is not None else []
    ready = _allocate(sizes, wanted)
    # The analysed bytes are the loaded bytes: Rust reads the file (or decodes
    # the stream) into one `bytes` object, analyses the stream there, and the
    # unpickler reads that same object.
    stream, report_json, filled = reader.checked_pickle(extra, ready if wanted else None, defer)
    if defer:
        # No memory was set aside (`wanted` is empty): what the checks decoded is filled.
        ready = reader.take_decoded()
        filled = [r is not None for r in ready]
    allowed = None
    if extra is not None:
        # A clean report needs no decoding: the names it accepted are all a load uses.
        accepted = reader.accepted_globals()
        if accepted is not None:
            allowed = _safety.allowed_names(accepted)
        else:
            allowed = _safety.check(_safety.report_from_json(report_json, source))
    if mmap_mode is None:
        buffers: Any = _arrays_on_demand(reader, ready, filled, reader.lent_arrays() if defer else None)
        if defer:
            # The checks of in-band arrays the analysis left (predictor nodes)
            # gate the stream: the unpickler gets no array before its check passed.
            gate = reader.stream_gate()
            file = gate if gate is not None else _stream_file(stream, reader)
            return _checked_load(Unpickler(file, buffers=buffers, allowed=allowed), reader, extra, source)
    else:
        buffers = reader.array_regions()
        rest: list[Any] = [None] * len(sizes)
        for i in compressed:
            if not filled[i]:
                rest[i] = ready[i]
        if any(b is not None for b in rest):
            reader.copy_arrays_into(rest)
        for i in compressed:
            buffers[i] = ready[i]
        if compressed:
            names = ", ".join(entries[i][0] for i in compressed)
            warnings.warn(
                f"mmap_mode={mmap_mode!r} cannot map compressed arrays; "
                f"{len(compressed)} loaded into memory instead: {names}",
                UserWarning,
                stacklevel=3,
            )
    # As in dump: the collections the unpickler's allocations set off walk the
    # growing graph again and again, for nothing.
    with collection_paused():
        return Unpickler(_stream_file(stream, reader), buffers=buffers, allowed=allowed).load()


def _stream_file(stream: bytes, reader: Any) -> io.BytesIO:
    """The unpickler's file over ``stream``, as ``checked_pickle`` gave it: a
    ``BytesIO`` shares a ``bytes`` object rather than copying it, and the stream
    starts at ``stream_offset()`` (inside the whole file's bytes, for a small
    file read at once)."""
    file = io.BytesIO(stream)
    file.seek(reader.stream_offset())
    return file


def _checked_load(unpickler: Unpickler, reader: Any, extra: list[str], source: str) -> Any:
    """Runs ``unpickler``, whose arrays are checked as they are copied: an
    array that fails its check is never handed over, and the file is then
    analysed again, without deferring, for the report :func:`scan` gives.

    Everything the stream names was accepted before unpickling began, so what
    was built before the failure is of accepted types only, and is dropped."""
    try:
        with collection_paused():
            loaded = unpickler.load()
            # The unpickler's memo holds every object the stream memoized: if
            # it outlived the pause, the first collection would walk them all
            # (on a dict of 100,000 small arrays, 35 ms instead of 16).
            del unpickler
            return loaded
    except _amber.ContentCheckError as failed:
        _, report_json, _ = reader.checked_pickle(extra, None, False)
        _safety.check(_safety.report_from_json(report_json, source))
        # The analysis passed bytes the copy then refused: the file changed.
        raise _safety.changed_error(str(failed)) from None


def _source_name(source: Any) -> str:
    if _is_path(source):
        return _fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<bytes>"


def _reader(source: Any, mmap_mode: str | None = None, threads: int | None = None) -> Any:
    n_threads = _compress.threads(threads)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _amber.Reader.from_bytes(source, threads=n_threads)
    if _is_path(source):
        return _amber.Reader.open(_fspath(source), mmap_mode, threads=n_threads)
    if hasattr(source, "read"):
        return _amber.Reader.from_bytes(source.read(), threads=n_threads)
    raise TypeError(
        f"expected a path, a binary file object or bytes, not {type(source).__name__}"
    )


def load(
    filename: Target,
    mmap_mode: str | None = None,
    *,
    trusted: Any = None,
    threads: int | None = None,
    strict_versions: bool = False,
) -> Any:
    """Loads the object saved in an amber file.

    ``filename`` is a path or a binary file object opened for reading.
    Before anything is unpickled, the file's structure, manifest and the
    checksum of its pickle stream are checked. With ``mmap_mode=None`` every
    array is read into memory and its checksum verified. ``mmap_mode="r"``
    maps the file and returns read-only arrays that share its pages (instant
    whatever the size); ``"c"`` gives writable copy-on-write arrays whose
    changes never reach the file. In both mapped modes array checksums are
    not verified on load (that would read every byte): use :func:`verify`.
    ``"r+"`` and ``"w+"`` are refused, since writing into a model file in
    place would break it. Compressed arrays cannot be mapped: with
    ``mmap_mode`` they are decompressed into memory, with a warning naming
    them. Decompression runs on every core (``threads=`` caps it).

    Pickle and joblib files (every joblib version and compressor, detected
    by content) are opened too: arrays are mapped with ``mmap_mode="r"`` when
    the file is uncompressed and they are aligned, and copied otherwise
    (arrays of 8 MiB or more on every core, which ``threads=`` caps too).

    Loading is safe by default: before any object is built, Rust reads the
    whole pickle stream without executing or importing anything, and refuses
    the file with :class:`amber.UnsafeModelError` (listing each finding, its
    byte offset and why) if it references anything outside the trusted policy,
    which covers scikit-learn, NumPy and SciPy models and plain Python data.
    The unpickler then runs on the very bytes that were analysed and resolves
    only the names the analyser accepted. ``trusted=["pkg.mod.Name", ...]``
    (names, classes or functions) adds exact names to the policy;
    ``trusted=True`` turns it off (plain pickle: only for files you made).

    Before unpickling, the versions the file records for the packages its
    pickle references (and Python's major.minor) are compared with the
    running ones: any difference gives one :class:`amber.VersionMismatchWarning`
    listing each (package, saved, running), or, with ``strict_versions=True``,
    raises :class:`amber.VersionMismatchError` instead.

    Raises :class:`amber.FormatError` (or :class:`amber.ChecksumError`) on a
    damaged, truncated or non-amber file, and :class:`FileNotFoundError` and
    the other :class:`OSError` subclasses on I/O problems.
    """
    _check_mmap_mode(mmap_mode)
    if not _is_path(filename) and mmap_mode is not None:
        warnings.warn(
            f"mmap_mode={mmap_mode!r} needs a path; it is ignored for {type(filename).__name__} objects",
            UserWarning,
            stacklevel=2,
        )
        mmap_mode = None
    source = _legacy_source(filename)
    if _legacy.is_legacy(source):
        return _legacy.load(source, mmap_mode, trusted, _source_name(filename), threads)
    reader = _reader(source, mmap_mode, threads)
    manifest = _versions.parse(reader.manifest())
    _start_analysis(reader, mmap_mode, trusted, manifest)
    _versions.check(manifest, strict_versions, filename)
    return _unpickle(reader, mmap_mode, trusted, _source_name(filename))


def _start_analysis(reader: Any, mmap_mode: str | None, trusted: Any, manifest: Any) -> None:
    """Starts, on another thread, the analysis ``_unpickle`` asks for, so it
    runs while the versions are compared; ``_unpickle`` waits for it before
    anything is unpickled. (Only for the loads that copy their arrays and
    have a policy; a ``trusted`` that is not valid is refused by ``_unpickle``.)
    Only worth it when the comparison has a package to look up (one the file
    records that is not imported yet): reading the versions of imported
    modules takes less than handing the analysis to another thread and
    waking up for its result."""
    if mmap_mode is not None or _versions.all_imported(manifest):
        return
    try:
        extra = _safety.trusted_names(trusted)
    except (TypeError, ValueError):
        return
    if extra is not None:
        reader.start_checked_pickle(extra, True)


def _legacy_source(source: Any) -> Any:
    """A path (``str``) or the bytes of a file object, so the content can be sniffed."""
    if _is_path(source):
        return _fspath(source)
    if hasattr(source, "read") and not isinstance(source, (bytes, bytearray, memoryview)):
        data = source.read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected a binary file object, but read() gave {type(data).__name__}")
        return data
    return source


def loads(
    data: bytes | bytearray | memoryview,
    *,
    trusted: Any = None,
    threads: int | None = None,
    strict_versions: bool = False,
) -> Any:
    """Loads an object from the bytes of an amber file (see :func:`load`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"loads expects bytes, not {type(data).__name__}")
    if _legacy.is_legacy(data):
        return _legacy.load(data, None, trusted, "<bytes>", threads)
    reader = _reader(data, None, threads)
    manifest = _versions.parse(reader.manifest())
    _start_analysis(reader, None, trusted, manifest)
    _versions.check(manifest, strict_versions, None)
    return _unpickle(reader, None, trusted, "<bytes>")


def info(source: Target | bytes) -> dict[str, Any]:
    """The manifest of an amber file, read without unpickling anything.

    It holds the format version, creation time, the amber, Python and package
    versions that wrote the file (``environment``: ``packages`` by import name,
    ``distributions`` with each one's distribution name and version), the
    ``content_hash`` (``blake3:<hex>``, checked by :func:`verify`), the user's
    ``metadata``, and the list of entries (name, kind, size, CRC-32; dtype,
    shape and order for arrays). Files written before a field existed lack it.
    For a pickle or joblib file it describes that file instead: ``format``,
    ``protocol``, ``compression``, sizes and the number of arrays.
    """
    source = _legacy_source(source)
    if _legacy.is_legacy(source):
        return _legacy.info(source)
    reader = _reader(source)
    manifest: dict[str, Any] = json.loads(reader.manifest())
    manifest["file_size"] = len(reader)
    return manifest


def verify(source: Target | bytes) -> None:
    """Checks the checksum of every entry of an amber file.

    Also recomputes the content hash the manifest records (when it does) and
    compares it (error code ``format.content_hash``).

    Returns ``None`` when the file is intact; raises
    :class:`amber.ChecksumError` naming the damaged entry otherwise (or
    :class:`amber.FormatError` if its structure is broken).
    """
    _reader(source).verify()


def scan(source: Target | bytes, *, trusted: Any = None) -> _safety.ScanReport:
    """Analyses a file without loading it, and says whether :func:`load` would.

    Works on amber files, plain pickles (protocols 0-5) and joblib files,
    told apart by their content. Nothing in the file is executed or imported:
    the Rust analyser reads the pickle stream (skipping array bytes) and
    checks every global, call and state against the trusted policy.
    ``trusted`` adds exact names, as for :func:`load`.

    Returns a :class:`amber.ScanReport`: ``verdict`` (``"safe"``,
    ``"unsafe"`` or ``"malformed"``), ``findings`` with stable codes,
    severities and byte offsets, and ``globals``, every global with its count.
    """
    names = [] if trusted is None else _safety.trusted_names(trusted)
    if names is None:
        raise ValueError("scan(trusted=True) would check nothing; pass None or a list of names")
    # The common cases first: a str or a pathlib path by exact type skip the
    # PathLike check (an ABC's, several times the cost of the rest).
    cls = type(source)
    if cls is str or cls is _PosixPath or isinstance(source, (str, os.PathLike)):
        path = _fspath(source)
        return _safety.report_from_parts(_amber.scan_path(path, names), path)
    data = _legacy_source(source)  # bytes (a file object is read)
    if isinstance(data, str):
        parts = _amber.scan_path(data, names)
        name = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        parts = _amber.scan_bytes(data, names)
        name = _source_name(source)
    else:
        raise TypeError(f"expected a path, a binary file object or bytes, not {type(source).__name__}")
    return _safety.report_from_parts(parts, name)
