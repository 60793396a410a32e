"""Compression (issue 3): what compress= accepts, that every codec round-trips
real models and arrays exactly, that damage in compressed data is refused with
the entry and chunk named, threads=, and the mmap fallback for compressed arrays."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import amber
from amber import _compress


@pytest.fixture(scope="module")
def arrays() -> dict:
    rng = np.random.default_rng(1)
    return {
        "ints": (np.arange(2_000_000, dtype=np.int32) // 13),
        "floats": rng.random(300_000),
        "fortran": np.asfortranarray(rng.integers(0, 50, size=(400, 300)).astype(np.int16)),
        "be": np.arange(100_000, dtype=">f8"),
        "rec": np.zeros(20_000, dtype=[("a", "<i8"), ("b", "<f4")]),
        "strided": np.arange(400_000.0)[::3],
        "text": ["x" * 50] * 1000,
    }


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, np.ndarray):
            assert b[key].dtype == value.dtype and b[key].shape == value.shape, key
            assert np.array_equal(b[key], value), key
            if value.flags.f_contiguous and not value.flags.c_contiguous:
                assert b[key].flags.f_contiguous, key
        else:
            assert b[key] == value


@pytest.mark.parametrize(
    "compress",
    [True, 1, 3, 9, "zstd", "lz4", ("zstd", 5), ("lz4", 3), "zlib", "gzip", ("bz2", 3), "lzma", "xz"],
)
def test_every_accepted_value_round_trips(tmp_path, arrays, compress) -> None:
    path = tmp_path / "m.amber"
    amber.dump(arrays, path, compress=compress)
    same(arrays, amber.load(path))
    amber.verify(path)
    entries = amber.info(path)["entries"]
    expected_codec = "lz4" if (compress == "lz4" or (isinstance(compress, tuple) and compress[0] == "lz4")) else "zstd"
    assert all(e.get("codec") == expected_codec for e in entries), entries
    assert entries[0]["name"] == "model.pklc"
    assert os.path.getsize(path) < sum(v.nbytes for v in arrays.values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("compress", [None, False, 0, ("zstd", 0)])
def test_off_values_write_uncompressed_files(tmp_path, arrays, compress) -> None:
    path = tmp_path / "m.amber"
    amber.dump(arrays, path, compress=compress)
    assert all("codec" not in e for e in amber.info(path)["entries"])


@pytest.mark.parametrize("ext", [".z", ".gz", ".bz2", ".lzma", ".xz", ".zst", ".lz4"])
def test_extension_turns_compression_on(tmp_path, arrays, ext) -> None:
    path = tmp_path / f"model.joblib{ext}"
    amber.dump(arrays, path)
    codec = "lz4" if ext == ".lz4" else "zstd"
    assert amber.info(path)["entries"][1]["codec"] == codec
    same(arrays, amber.load(path))


@pytest.mark.parametrize(
    "bad", [-1, 10, "snappy", ("zstd",), ("zstd", 1, 2), ("zstd", 10), ("zstd", "x"), 1.5, {}, ("brotli", 3)]
)
def test_bad_values_raise_value_error_listing_what_is_accepted(bad) -> None:
    with pytest.raises(ValueError, match="accepted"):
        amber.dumps({"a": 1}, compress=bad)


def test_shuffle_is_used_for_typed_arrays_and_random_data_is_stored_raw(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = {"smooth": np.arange(1_000_000, dtype=np.float64), "noise": rng.integers(0, 256, 4_000_000, dtype=np.uint8)}
    path = tmp_path / "m.amber"
    amber.dump(data, path, compress=True)
    by_name = {e["name"]: e for e in amber.info(path)["entries"]}
    smooth, noise = by_name["arrays/000000.npyc"], by_name["arrays/000001.npyc"]
    assert smooth["filter"] == "shuffle"
    assert smooth["size"] < smooth["nbytes"] / 10
    # Incompressible bytes cost at most the header, the index and the footer.
    assert noise["size"] - noise["data_offset"] < noise["nbytes"] + 1024


def test_small_integers_are_bit_shuffled_to_their_entropy_and_damage_names_the_chunk(tmp_path) -> None:
    # Labels in 0..999: 10 random bits in each int32, over several chunks.
    labels = np.random.default_rng(3).integers(0, 1000, 3_000_000, dtype=np.int32)
    path = tmp_path / "labels.amber"
    amber.dump({"labels": labels}, path, compress=True)
    (entry,) = [e for e in amber.info(path)["entries"] if e["kind"] == "array"]
    assert entry["filter"] == "bitshuffle"
    assert entry["size"] - entry["data_offset"] < labels.nbytes * 10 / 32 * 1.005
    assert np.array_equal(amber.load(path)["labels"], labels)
    # A bit flipped in the third chunk's raw planes: refused naming entry and chunk.
    chunk = 4 << 20  # the writer's chunk size; each compresses to 10/32 of it
    bad = _flip(path.read_bytes(), entry["name"], entry["data_offset"] + 2 * chunk * 10 // 32 + 5000)
    with pytest.raises(amber.ChecksumError) as caught:
        amber.loads(bad)
    assert (caught.value.entry, caught.value.chunk) == (entry["name"], 2)


def test_threads_and_environment_cap(tmp_path, arrays) -> None:
    path = tmp_path / "m.amber"
    amber.dump(arrays, path, compress=True, threads=1)
    one = path.read_bytes()
    amber.dump(arrays, path, compress=True, threads=2)
    two = path.read_bytes()
    # Thread count changes speed, never bytes (beyond the creation time in the manifest).
    za, zb = zipfile.ZipFile(io.BytesIO(one)), zipfile.ZipFile(io.BytesIO(two))
    for name in za.namelist():
        if name != "manifest.json":
            assert za.read(name) == zb.read(name), name
    same(arrays, amber.load(path, threads=1))
    env = dict(os.environ, AMBER_NUM_THREADS="1")
    code = f"import amber; amber.dump({{'a': list(range(10))}}, {str(path)!r}, compress=True); print(amber.load({str(path)!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "[0, 1" in out.stdout
    for bad in (0, -2, "4"):
        with pytest.raises(ValueError):
            amber.dumps({}, threads=bad)
    env["AMBER_NUM_THREADS"] = "many"
    out = subprocess.run([sys.executable, "-c", "import amber; amber.dumps({})"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "AMBER_NUM_THREADS" in out.stderr


def test_mmap_on_compressed_file_warns_and_loads_into_memory(tmp_path, arrays) -> None:
    path = tmp_path / "m.amber"
    amber.dump(arrays, path, compress="lz4")
    with pytest.warns(UserWarning, match=r"cannot map compressed arrays; \d+ loaded into memory instead: arrays/000000.npyc"):
        loaded = amber.load(path, mmap_mode="r")
    same(arrays, loaded)
    assert loaded["ints"].flags.writeable


def _flip(data: bytes, name: str, at: int) -> bytes:
    z = zipfile.ZipFile(io.BytesIO(data))
    info = z.getinfo(name)
    n, e = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + n + e
    out = bytearray(data)
    out[start + at] ^= 0x20
    return bytes(out)


def test_damaged_compressed_data_is_refused_naming_the_entry(arrays) -> None:
    data = amber.dumps(arrays, compress="zstd")
    bad = _flip(data, "arrays/000000.npyc", 1000)
    with pytest.raises(amber.ChecksumError) as caught:
        amber.loads(bad)
    assert caught.value.entry == "arrays/000000.npyc"
    with pytest.raises(amber.ChecksumError):
        amber.verify(bad)
    bad = _flip(data, "model.pklc", 30)
    with pytest.raises(amber.ChecksumError) as caught:
        amber.loads(bad)
    assert caught.value.entry == "model.pklc"


def test_compressed_sklearn_model_predicts_identically(tmp_path) -> None:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(3000, 20, random_state=0)
    model = RandomForestClassifier(30, random_state=0).fit(X, y)
    for compress in (True, "lz4", 9):
        path = tmp_path / "rf.amber"
        amber.dump(model, path, compress=compress)
        np.testing.assert_array_equal(amber.load(path).predict_proba(X), model.predict_proba(X))


def test_compressed_dump_into_file_object_and_bytes(arrays) -> None:
    buf = io.BytesIO()
    assert amber.dump(arrays, buf, compress=3) is None
    same(arrays, amber.load(io.BytesIO(buf.getvalue())))
    same(arrays, amber.loads(amber.dumps(arrays, compress="lz4")))


def test_resolve_maps_joblib_names_onto_zstd() -> None:
    assert _compress.resolve(True) == ("zstd", 3)
    assert _compress.resolve(9) == ("zstd", 19)
    assert _compress.resolve("xz") == ("zstd", 19)
    assert _compress.resolve(("zlib", 1))[0] == "zstd"
    assert _compress.resolve(0, "model.pkl") is None
    assert _compress.resolve(0, "model.pkl.gz") == _compress.resolve("gzip")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _compress.resolve(None) is None


@pytest.mark.parametrize("threads", [1, 2])
def test_large_compressed_pickle_stream_round_trips(threads) -> None:
    # Object-heavy: the pickle stream itself spans several chunks, written in
    # batches whose size depends on the thread count (regression: a batch once
    # ended in a partial chunk, which made the file unreadable).
    rng = np.random.default_rng(2)
    obj = {f"k{i}": rng.random(10) for i in range(160_000)}
    data = amber.dumps(obj, compress="zstd", threads=threads)
    entry = amber.info(data)["entries"][0]
    assert entry["name"] == "model.pklc" and entry["raw_size"] > 4 * 4 * 2**20
    back = amber.loads(data, threads=1)
    assert back.keys() == obj.keys()
    assert all(np.array_equal(back[k], obj[k]) for k in obj)


@pytest.mark.parametrize("threads", [None, 1, 2])
@pytest.mark.parametrize("n", [2_000, 7_500, 16_000])
def test_short_compressed_pickle_streams_round_trip(threads, n) -> None:
    # About 0.3, 1.2 and 2.5 MiB of stream: written in short chunks compressed
    # while pickling, taken back just past the 1 MiB limit, or in full chunks;
    # finished on a pool thread (threads=n) or on the caller's (all cores).
    rng = np.random.default_rng(n)
    obj = {f"k{i}": rng.integers(0, 50, size=16) for i in range(n)}
    data = amber.dumps(obj, compress="zstd", threads=threads)
    entry = amber.info(data)["entries"][0]
    assert entry["name"] == "model.pklc" and entry["size"] < entry["raw_size"]
    back = amber.loads(data, threads=threads)
    assert back.keys() == obj.keys()
    assert all(np.array_equal(back[k], obj[k]) for k in obj)


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_small_arrays_read_a_block_at_a_time_round_trip_and_name_damage(compress) -> None:
    # Small arrays (< 1 MiB) are read into shared 8 MiB blocks, a block's worth
    # per call; large ones on their own. Mixed sizes cross block boundaries.
    rng = np.random.default_rng(3)
    sizes = [900_000] * 5 + [3_000_000] + [900_000] * 6 + [70_000] * 3
    obj = [rng.integers(0, 100, n // 8).astype(np.int64) for n in sizes]
    data = amber.dumps(obj, compress=compress)
    back = amber.loads(data)
    assert len(back) == len(obj)
    for a, b in zip(obj, back):
        assert np.array_equal(a, b)
    ext = "npyc" if compress else "npy"
    bad = _flip(data, f"arrays/000008.{ext}", 5000)
    with pytest.raises(amber.ChecksumError) as caught:
        amber.loads(bad)
    assert caught.value.entry == f"arrays/000008.{ext}"


@pytest.mark.parametrize("trusted", [None, True])
def test_file_mixing_compressed_and_stored_arrays_loads(tmp_path, trusted) -> None:
    """Array entries of one file may differ in codec (FORMAT.md allows it per
    entry): a safe load sets memory aside for the compressed ones only, and
    arrays of both kinds read in one batch all arrive."""
    from amber import __version__, _amber, _manifest, _versions
    from amber._npy import header_bytes
    from amber._pickling import Pickler

    rng = np.random.default_rng(3)
    value = [rng.integers(0, 9, size=20_000, dtype=np.int64) for _ in range(6)]
    path = tmp_path / "mixed.amber"
    writer = _amber.Writer.to_path(str(path), threads=None)
    writer.begin_entry(_manifest.pickle_entry_name(False), None, 0)
    pickler = Pickler(writer)
    pickler.dump(value)
    pickler.check()
    pickle_record = writer.end_entry()
    headers = [header_bytes(a.array.dtype, a.array.shape, a.fortran_order) for a in pickler.arrays]
    records = []
    for i, (a, header) in enumerate(zip(pickler.arrays, headers)):
        packed = i % 2 == 0  # the first of a batch compressed, the next stored
        item = (_manifest.array_entry_name(i, packed), header, a.raw, a.array.dtype.itemsize, 0)
        records += writer.add_arrays([item], "zstd" if packed else None, 3)
    manifest = _manifest.build(
        pickle_record, records, pickler.arrays, headers, _versions.capture(pickler.modules), {}, __version__,
        writer.content_hash(),
    )
    writer.finish(manifest)
    assert [e.get("codec") for e in amber.info(path)["entries"][1:]] == ["zstd", None] * 3
    amber.verify(path)
    got = amber.load(path, trusted=trusted)
    for a, b in zip(got, value):
        np.testing.assert_array_equal(a, b)


class _Fails:
    def __reduce__(self):
        raise ValueError("cannot pickle this")


@pytest.mark.parametrize("collecting", [True, False])
def test_dump_leaves_garbage_collection_as_it_found_it(tmp_path, collecting) -> None:
    # Collection is paused while pickling; it must come back on, after an
    # error too, and stay off for a caller who had turned it off.
    import gc

    was = gc.isenabled()
    try:
        gc.enable() if collecting else gc.disable()
        amber.dump({"w": np.arange(10)}, tmp_path / "ok.amber", compress=True)
        assert gc.isenabled() is collecting
        with pytest.raises(ValueError, match="cannot pickle this"):
            amber.dump([1, _Fails()], tmp_path / "bad.amber")
        assert gc.isenabled() is collecting
        assert not (tmp_path / "bad.amber").exists()
    finally:
        gc.enable() if was else gc.disable()
