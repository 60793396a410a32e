"""Regenerates the test vectors of docs/FORMAT.md.

Run with the project's venv after `make build`:  .venv/bin/python tests/vectors/generate.py

Valid vectors are written by amber itself. Invalid ones are valid files damaged
in one precise way each, with CRCs repaired where the damage must get past the
checksum to reach the rule under test. Every file gets an `.expected.json`:
the rules it exercises and the outcome of each operation (`open`: parse and
manifest; `load`: full load; `load_mmap`: `mmap_mode="r"`; `verify`), either
"ok" or an error code, plus for valid files the canonical value (see canon.py).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

# Fixed creation time: regenerating the vectors changes no byte unless the format did.
os.environ["SOURCE_DATE_EPOCH"] = "1795000000"

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import amber  # noqa: E402
from canon import canon  # noqa: E402

OK = "ok"

#: Files kept as they are when regenerating: written by an older amber, they
#: cannot be regenerated (F-17: readers take manifests without the newer fields).
KEPT = {"legacy-no-content-hash.amber", "legacy-shuffle-lz4.amber"}


def write(kind: str, name: str, data: bytes, rules: list[str], outcomes: dict, value=None, note: str = "") -> None:
    path = HERE / kind / name
    path.write_bytes(data)
    expected = {"rules": rules, "note": note, **outcomes}
    if value is not None:
        expected["value"] = canon(value)
    (HERE / kind / (name + ".expected.json")).write_text(json.dumps(expected, indent=1) + "\n")


def entry_offsets(data: bytes, name: str) -> tuple[int, int, int]:
    """(local header offset, data offset, central record offset) of an entry."""
    z = zipfile.ZipFile(io.BytesIO(data))
    info = z.getinfo(name)
    local = info.header_offset
    name_len, extra_len = struct.unpack_from("<HH", data, local + 26)
    start = local + 30 + name_len + extra_len
    central = data.index(b"PK\x01\x02", 0)
    while True:
        n, e, c = struct.unpack_from("<HHH", data, central + 28)
        if data[central + 46 : central + 46 + n] == name.encode():
            return local, start, central
        central += 46 + n + e + c


def patch(data: bytes, name: str, at: int, new: bytes, fix_crc: bool) -> bytes:
    """Overwrites bytes at `at` (relative to the entry's data); optionally repairs its CRC."""
    local, start, central = entry_offsets(data, name)
    size = zipfile.ZipFile(io.BytesIO(data)).getinfo(name).file_size
    out = bytearray(data)
    out[start + at : start + at + len(new)] = new
    if fix_crc:
        crc = zlib.crc32(out[start : start + size])
        struct.pack_into("<I", out, local + 14, crc)
        struct.pack_into("<I", out, central + 16, crc)
    return bytes(out)


def keep_crc(data: bytes, name: str, at: int, new: bytes) -> bytes:
    """Overwrites bytes at `at` of an entry and 4 more right after them, chosen so
    the entry's CRC-32 is unchanged (CRC-32 is linear over GF(2))."""
    _, start, _ = entry_offsets(data, name)
    size = zipfile.ZipFile(io.BytesIO(data)).getinfo(name).file_size
    body = data[start : start + size]
    zero = zlib.crc32(bytes(size))

    def lin(delta: bytes) -> int:
        return zlib.crc32(delta) ^ zero

    delta = bytearray(size)
    for i, b in enumerate(new):
        delta[at + i] = body[at + i] ^ b
    target = lin(bytes(delta))
    fix_at = at + len(new)
    # One basis vector per bit of the 4 bytes after the change; solve sum(basis) == target.
    rows = []
    for bit in range(32):
        d = bytearray(size)
        d[fix_at + bit // 8] = 1 << (bit % 8)
        rows.append((lin(bytes(d)), 1 << bit))
    pivots: list[tuple[int, int]] = []
    for value, mask in rows:
        for pv, pm in pivots:
            if value ^ pv < value:
                value, mask = value ^ pv, mask ^ pm
        if value:
            pivots.append((value, mask))
            pivots.sort(reverse=True)
    value, mask = target, 0
    for pv, pm in pivots:
        if value ^ pv < value:
            value, mask = value ^ pv, mask ^ pm
    assert value == 0, "no CRC-preserving fix"
    for bit in range(32):
        if mask >> bit & 1:
            delta[fix_at + bit // 8] ^= 1 << (bit % 8)
    out = bytearray(data)
    for i in range(at, fix_at + 4):
        out[start + i] ^= delta[i]
    assert zlib.crc32(out[start : start + size]) == zlib.crc32(body)
    return bytes(out)


def replace_in_manifest(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new)
    manifest = zipfile.ZipFile(io.BytesIO(data)).read("manifest.json")
    at = manifest.index(old)
    return patch(data, "manifest.json", at, new, fix_crc=True)


def main() -> None:
    for kind in ("valid", "invalid"):
        for old in (HERE / kind).glob("*"):
            if old.name not in KEPT:
                old.unlink()
    all_ok = {"open": OK, "load": OK, "load_mmap": OK, "verify": OK}

    # --- valid -------------------------------------------------------------------
    small = {"answer": 42, "name": "amber", "values": [1.5, None, True], "tiny": np.arange(4)}
    write("valid", "no-arrays.amber", amber.dumps(small), ["F-1", "F-2", "F-11", "F-14", "F-20"], all_ok, small,
          "a pickle entry and no array entries (the tiny array stays in the stream)")

    arrays = {
        "c": np.arange(8192, dtype="<f8"),
        "f": np.asfortranarray(np.arange(16384, dtype="<i4").reshape(64, 256)),
        "be": np.arange(8192, dtype=">f8"),
        "dt": np.arange(8192).astype("<M8[s]"),
        "rec": np.zeros(2700, dtype=[("left", "<i8"), ("right", "<i8"), ("thr", "<f8"), ("flag", "u1")]),
        "view": np.arange(32768.0).reshape(128, 256)[::2, :],
    }
    arrays["again"] = arrays["c"]
    write("valid", "arrays.amber", amber.dumps(arrays, metadata={"purpose": "test vector"}),
          ["F-4", "F-12", "F-13", "F-20", "F-21", "F-22", "F-23"], all_ok, arrays,
          "C, F, big-endian, datetime, structured and strided arrays; one array referenced twice")

    # Written by amber before `content_hash` and `distributions` existed (kept, not regenerated).
    legacy = HERE / "valid" / "legacy-no-content-hash.amber"
    write("valid", legacy.name, legacy.read_bytes(), ["F-15", "F-16", "F-17"], all_ok, arrays,
          "the arrays vector as amber wrote it before the content hash: no `content_hash`, no `distributions`")

    # The damaged files start from one small valid file: one array entry just
    # above the out-of-band threshold and one F-order array.
    base = amber.dumps({"w": np.arange(8192, dtype="<f8"), "f": np.asfortranarray(np.ones((128, 64), "<f8")), "n": 3})

    # --- invalid -----------------------------------------------------------------
    write("invalid", "empty.amber", b"", ["F-2"], {"open": "format.not_amber", "load": "format.not_amber",
          "load_mmap": "format.not_amber", "verify": "format.not_amber"}, note="a zero-byte file")
    pkl = pickle.dumps({"a": 1}, protocol=5)
    write("invalid", "plain-pickle.amber", pkl, ["F-2"], {"open": "format.not_amber", "load": "format.not_amber",
          "load_mmap": "format.not_amber", "verify": "format.not_amber",
          "api": {"open": "ok", "load": "ok", "load_mmap": "ok"}}, value={"a": 1},
          note="a plain pickle named .amber: not an amber file (F-2); amber's public API opens it by content "
          "as a pickle (issue 5), see `api`")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo("hello.txt", date_time=(2026, 1, 1, 0, 0, 0)), "hi")
    write("invalid", "other-zip.amber", buf.getvalue(), ["F-2"], {"open": "format.not_amber", "load": "format.not_amber",
          "load_mmap": "format.not_amber", "verify": "format.not_amber"}, note="a zip archive of something else")
    bad = {"open": "format.corrupt", "load": "format.corrupt", "load_mmap": "format.corrupt", "verify": "format.corrupt"}
    write("invalid", "truncated.amber", base[: len(base) // 2], ["F-5"], bad, note="cut in half")
    write("invalid", "truncated-tail.amber", base[:-1], ["F-5"], bad, note="last byte missing")
    write("invalid", "trailing-data.amber", base + b"\x80\x05hidden", ["F-5"], bad, note="bytes appended after the archive")
    eocd = base.rindex(b"PK\x05\x06")
    commented = bytearray(base)
    struct.pack_into("<H", commented, eocd + 20, 4)
    write("invalid", "archive-comment.amber", bytes(commented) + b"note", ["F-5"], bad, note="an archive comment")

    _, start, _ = entry_offsets(base, "model.pkl")
    flip = lambda data, name, at: patch(data, name, at, bytes([data[entry_offsets(data, name)[1] + at] ^ 0x01]), False)  # noqa: E731
    write("invalid", "damaged-pickle.amber", flip(base, "model.pkl", 20), ["F-9", "F-30"],
          {"open": OK, "load": "format.checksum", "load_mmap": "format.checksum", "verify": "format.checksum",
           "entry": "model.pkl"}, note="one bit flipped in the pickle stream")
    write("invalid", "damaged-array.amber", flip(base, "arrays/000000.npy", 5000), ["F-9", "F-30"],
          {"open": OK, "load": "format.checksum", "load_mmap": OK, "verify": "format.checksum",
           "entry": "arrays/000000.npy"}, note="one bit flipped in array data: mapped loads do not read array bytes")
    write("invalid", "damaged-manifest.amber", flip(base, "manifest.json", 10), ["F-9"],
          {"open": "format.checksum", "load": "format.checksum", "load_mmap": "format.checksum",
           "verify": "format.checksum", "entry": "manifest.json"}, note="one bit flipped in the manifest")
    future = replace_in_manifest(base, b'"format_version":1', b'"format_version":9')
    write("invalid", "future-version.amber", future, ["F-11"],
          {"open": "format.unsupported", "load": "format.unsupported", "load_mmap": "format.unsupported",
           "verify": "format.unsupported"}, note="format_version 9, CRC repaired")
    mismatch = replace_in_manifest(base, b'"dtype":"<f8"', b'"dtype":"<i8"')
    write("invalid", "dtype-mismatch.amber", mismatch, ["F-22"],
          {"open": "format.mismatch", "load": "format.mismatch", "load_mmap": "format.mismatch",
           "verify": "format.mismatch", "entry": "arrays/000000.npy"},
          note="manifest dtype differs from the .npy header, CRC repaired")
    npy_bad = patch(base, "arrays/000000.npy", 0, b"\x93NUMPZ", fix_crc=True)
    write("invalid", "npy-magic.amber", npy_bad, ["F-22"],
          {"open": "format.mismatch", "load": "format.mismatch", "load_mmap": "format.mismatch",
           "verify": "format.mismatch", "entry": "arrays/000000.npy"}, note="bad .npy magic, CRC repaired")
    listed = replace_in_manifest(base, b'"kind":"array"', b'"kind":"other"')
    write("invalid", "unknown-kind.amber", listed, ["F-12"],
          {"open": "format.manifest", "load": "format.manifest", "load_mmap": "format.manifest",
           "verify": "format.manifest"}, note="an entry record of unknown kind, CRC repaired")
    local, _, central = entry_offsets(base, "arrays/000001.npy")
    deflated = bytearray(base)
    struct.pack_into("<H", deflated, local + 8, 8)
    struct.pack_into("<H", deflated, central + 10, 8)
    write("invalid", "compressed-entry.amber", bytes(deflated), ["F-3"], bad,
          note="an entry claims deflate compression (amber never writes that: damage, not a newer file)")
    local, _, central = entry_offsets(base, "model.pkl")
    renamed = bytearray(base)
    renamed[local + 30 : local + 30 + 9] = b"model.pkX"
    write("invalid", "header-disagrees.amber", bytes(renamed), ["F-7"], bad,
          note="local header names a different entry than the central directory")
    tampered = keep_crc(base, "arrays/000000.npy", 5000, b"\x00\x01")
    write("invalid", "content-hash.amber", tampered, ["F-16"],
          {"open": OK, "load": OK, "load_mmap": OK, "verify": "format.content_hash"},
          note="array bytes changed so that the CRC-32 stays the same: only the content hash (checked by verify) sees it")
    # --- compression (F-40 .. F-44) ---------------------------------------------------
    packed = {"ints": np.arange(40000, dtype="<i4") // 7, "floats": np.linspace(0, 1, 9000), "text": "abc" * 1000}
    for codec in ("zstd", "lz4"):
        data = amber.dumps(packed, compress=codec)
        used = {e.get("filter") for e in amber.info(data)["entries"]}
        filter_rules = [rule for rule, name in (("F-43", "shuffle"), ("F-45", "bitshuffle")) if name in used]
        write("valid", f"compressed-{codec}.amber", data, ["F-40", "F-41", "F-42", *filter_rules, "F-44"],
              {"open": OK, "load": OK, "load_mmap": OK, "verify": OK, "warns": True}, packed,
              f"pickle stream and arrays compressed with {codec}; mapped loads copy compressed arrays (with a warning)")
    # Written by amber before the bit-shuffle filter existed (kept, not regenerated):
    # the same object, both arrays byte-shuffled, as older files are.
    legacy = HERE / "valid" / "legacy-shuffle-lz4.amber"
    write("valid", legacy.name, legacy.read_bytes(), ["F-43", "F-17"],
          {"open": OK, "load": OK, "load_mmap": OK, "verify": OK, "warns": True}, packed,
          "the compressed-lz4 vector as amber wrote it before F-45: both arrays byte-shuffled")
    zbase = amber.dumps(packed, compress="zstd")
    write("invalid", "damaged-chunk.amber", flip(zbase, "arrays/000000.npyc", 200), ["F-41", "F-9"],
          {"open": OK, "load": "format.checksum", "load_mmap": "format.checksum", "verify": "format.checksum",
           "entry": "arrays/000000.npyc"}, note="one bit flipped inside a compressed chunk")
    # Small integers take the bit-shuffle filter (F-45): 10 random bits per value in
    # 16-, 32- and 64-bit elements, with counts that leave a tail of elements
    # outside the whole groups of 8.
    rng = np.random.default_rng(45)
    bits = {"labels": rng.integers(0, 1000, 50_003).astype("<i4"),
            "small": rng.integers(0, 1000, 40_001).astype("<u2"),
            "wide": rng.integers(0, 1000, 40_005).astype("<i8"),
            "mask": rng.random(70_001) < 0.5}
    bitshuffled = amber.dumps(bits, compress="zstd")
    filters = {e["name"]: e["filter"] for e in amber.info(bitshuffled)["entries"] if e["kind"] == "array"}
    assert set(filters.values()) == {"bitshuffle"}, filters
    write("valid", "compressed-bitshuffle.amber", bitshuffled, ["F-40", "F-41", "F-42", "F-45"],
          {"open": OK, "load": OK, "load_mmap": OK, "verify": OK, "warns": True}, bits,
          "integers from 0..999 as <i4, <u2 and <i8 and a random bool mask, each bit-shuffled: "
          "10 bit planes of each integer array (1 of the mask) stored raw, the others zero and left out")
    write("invalid", "damaged-bitshuffle-chunk.amber", flip(bitshuffled, "arrays/000000.npyc", 300), ["F-41", "F-45"],
          {"open": OK, "load": "format.checksum", "load_mmap": "format.checksum", "verify": "format.checksum",
           "entry": "arrays/000000.npyc"}, note="one bit flipped inside a raw bit plane of a bit-shuffled chunk")
    print("vectors written to", HERE)


if __name__ == "__main__":
    main()
