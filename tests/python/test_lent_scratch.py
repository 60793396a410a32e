"""Compressed loads lend a `Tree` its node and value arrays in scratch memory.

A `Tree` copies both arrays when it is built, so a compressed load decodes
them into a few buffers it reuses batch after batch instead of fresh memory
for each (see ``amber._api._Scratch``). These tests hold that to what it
must keep: each tree gets exactly its own bytes although the buffers are
reused, damage is still a typed error before a tree gets the bytes, an
array anything else can reach is never lent, and the load leaves about the
model's memory behind, not the model's plus the decoded copies'."""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import amber
from amber import _amber, _api

from _testutil import run_python


def _forest(n_estimators: int = 12, samples: int = 3000) -> tuple[Any, np.ndarray]:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.RandomState(0)
    X = rng.rand(samples, 4)  # random labels: (3,000) about 1,500 nodes a tree, arrays of 100 kB
    model = RandomForestClassifier(n_estimators=n_estimators, random_state=0).fit(X, rng.randint(0, 5, len(X)))
    return model, X


def _lent(path: Path) -> list[bool]:
    reader = _amber.Reader.open(str(path))
    reader.checked_pickle([], None, True)
    return reader.lent_arrays()


@pytest.mark.parametrize("threads", [None, 1])
def test_each_tree_gets_its_own_bytes_through_reused_scratch(tmp_path, monkeypatch, threads) -> None:
    model, X = _forest()
    path = tmp_path / "forest.amber"
    amber.dump(model, path, compress="zstd")
    assert all(_lent(path))  # every out-of-band array is a tree's nodes or values
    blocks: list[int] = []
    original = _api._arrays_on_demand

    def recording(reader: Any, *args: Any) -> Any:
        for buffer in original(reader, *args):
            blocks.append(id(buffer.base))
            yield buffer

    monkeypatch.setattr(_api, "_arrays_on_demand", recording)
    monkeypatch.setattr(_api, "_SCRATCH_BATCH", 150 << 10)  # a batch a tree or so
    loaded = amber.load(path, threads=threads)
    assert len(blocks) == 2 * len(model.estimators_)
    # Far fewer buffers than batches: they were decoded into again and again.
    assert len(set(blocks)) <= 5 < len(blocks) // 4
    for mine, theirs in zip(loaded.estimators_, model.estimators_):
        assert pickle.dumps(mine.tree_) == pickle.dumps(theirs.tree_)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def _damage_entry(path: Path, name: str, bad: Path) -> None:
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo(name)
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len + info.compress_size // 2] ^= 0x01
    bad.write_bytes(bytes(data))


@pytest.mark.parametrize("field", ["nodes", "values"])
def test_damaged_chunk_of_a_lent_compressed_array_is_a_checksum_error(tmp_path, field) -> None:
    model, _ = _forest(3)
    path = tmp_path / "forest.amber"
    amber.dump(model, path, compress="zstd")
    entries = [e for e in amber.info(path)["entries"] if e.get("dtype")]
    if field == "nodes":
        chosen = [e for e in entries if isinstance(e["dtype"], list)]
    else:
        chosen = [e for e in entries if len(e["shape"]) == 3]
    entry = chosen[len(chosen) // 2]  # a tree in the middle: its scratch is reused memory
    assert all(_lent(path))
    bad = tmp_path / "bad.amber"
    _damage_entry(path, entry["name"], bad)
    with pytest.raises(amber.ChecksumError) as excinfo:
        amber.load(bad)
    assert excinfo.value.entry == entry["name"]


class _TreeWithState:
    """Pickles as a `Tree` whose state is a dict this object holds, so a
    stream can reach the tree's node array a second time through the memo."""

    def __init__(self, tree: Any) -> None:
        self.reduced = tree.__reduce__()

    def __reduce__(self) -> Any:
        return self.reduced


def test_array_reachable_elsewhere_is_not_lent(tmp_path, monkeypatch) -> None:
    """The first tree's node array is also an item of the result: it must
    be decoded into memory of its own, or the trees decoded after it into the
    same scratch would overwrite what the result holds."""
    model, X = _forest(8)
    trees = [_TreeWithState(e.tree_) for e in model.estimators_]
    shared = trees[0].reduced[2]["nodes"]
    path = tmp_path / "shared.amber"
    amber.dump([trees, shared], path, compress="zstd")
    lent = _lent(path)
    assert not lent[0] and all(lent[1:])  # the shared array is the first buffer
    monkeypatch.setattr(_api, "_SCRATCH_BATCH", 150 << 10)
    loaded_trees, loaded_shared = amber.load(path)
    np.testing.assert_array_equal(loaded_shared, shared)
    for mine, theirs in zip(loaded_trees, model.estimators_):
        np.testing.assert_array_equal(mine.predict(X.astype(np.float32)), theirs.tree_.predict(X.astype(np.float32)))


def test_load_leaves_about_the_model_behind(tmp_path) -> None:
    """Resident memory a compressed forest's load leaves is about its trees'
    arrays (the copies the trees made), not twice that."""
    model, _ = _forest(16, 12000)  # 14 MB of arrays
    path = tmp_path / "forest.amber"
    amber.dump(model, path, compress="zstd")
    arrays = sum(e["nbytes"] for e in amber.info(path)["entries"] if e.get("dtype"))
    out = run_python(
        f"""
        import ctypes, gc
        import amber
        def rss():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
        amber.load({str(path)!r})  # imports, and the heap's first growth
        gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = rss()
        model = amber.load({str(path)!r})
        print(rss() - before)
        """
    )
    retained = int(out.stdout.split()[-1])
    # The trees' copies, plus at most the few scratch buffers and Python
    # objects (decoding into fresh memory instead left about twice the arrays).
    assert retained < arrays * 1.3 + (6 << 20), (retained, arrays)
