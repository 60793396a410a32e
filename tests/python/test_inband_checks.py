"""Content checks of in-band arrays left for the load (HistGradientBoosting predictors).

A small model's arrays travel inside the pickle stream. A safe load that
copies its arrays leaves the node checks of each predictor (and the
ensemble's bound on its features) to the load: the unpickler reads the
stream through `Reader.stream_gate()`, which hands it no byte of a node
array before that array's checks passed. A crafted predictor is then
refused before any object is given it, with exactly what `amber.scan`
reports; a good model loads as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import amber
from amber import _amber


def _model(categorical: bool = False) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.RandomState(0)
    X = rng.rand(1500, 5)
    if categorical:
        X[:, 0] = rng.randint(0, 6, len(X))
    y = ((X[:, 1] + (X[:, 0] % 2 if categorical else 0) + rng.rand(len(X)) * 0.5) > 1).astype(int)
    kwargs = {"categorical_features": [0]} if categorical else {}
    return HistGradientBoostingClassifier(max_iter=6, random_state=0, **kwargs).fit(X, y), X


def _split(nodes: np.ndarray, categorical: bool = False) -> int:
    splits = (nodes["is_leaf"] == 0) & ((nodes["is_categorical"] == 1) if categorical else True)
    return int(np.flatnonzero(splits)[0])


_EDITS: dict[str, tuple[bool, Callable[[np.ndarray], None]]] = {
    "hist.node_out_of_range": (False, lambda n: n["left"].__setitem__(_split(n), len(n) + 7)),
    "hist.cycle": (False, lambda n: n["right"].__setitem__(_split(n[1:]) + 1, 0)),
    "hist.feature_out_of_range": (False, lambda n: n["feature_idx"].__setitem__(_split(n), 40)),
    "hist.bitset_out_of_range": (True, lambda n: n["bitset_idx"].__setitem__(_split(n, True), 99)),
}

#: The predictor edited: one in the middle, so the objects before it are built.
_VICTIM = 3


def _crafted(tmp_path: Path, code: str) -> tuple[Path, np.ndarray]:
    categorical, edit = _EDITS[code]
    model, _ = _model(categorical)
    predictor = model._predictors[_VICTIM][0]
    nodes = predictor.nodes.copy()
    edit(nodes)
    predictor.nodes = nodes
    path = tmp_path / "bad.amber"
    amber.dump(model, path)
    return path, nodes


@pytest.mark.parametrize("code", sorted(_EDITS))
def test_crafted_predictor_is_refused_before_it_is_built(
    tmp_path: Path, code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    path, bad_nodes = _crafted(tmp_path, code)
    reader = _amber.Reader.open(str(path))
    assert reader.array_sizes() == []  # every array is in the stream
    _, deferred, _ = reader.checked_pickle([], None, True)
    assert code not in deferred and '"verdict":"safe"' in deferred.replace(" ", "")
    gate = reader.stream_gate()
    assert gate is not None
    with pytest.raises(_amber.ContentCheckError, match=code.replace(".", r"\.")):
        gate.read()
    _, in_place, _ = reader.checked_pickle([], None, False)
    assert code in in_place
    assert reader.stream_gate() is None

    # Every predictor state the unpickler sets, in order: the crafted one never.
    built: list[np.ndarray] = []

    def record(self: Any, state: dict[str, Any]) -> None:
        built.append(state["nodes"])
        self.__dict__.update(state)

    monkeypatch.setattr(TreePredictor, "__setstate__", record, raising=False)
    with pytest.raises(amber.UnsafeModelError) as excinfo:
        amber.load(path)
    assert code in {f.code for f in excinfo.value.findings}
    assert not any(np.array_equal(nodes, bad_nodes) for nodes in built)
    assert len(built) <= _VICTIM
    report = amber.scan(path)
    assert report.verdict == "unsafe"
    assert [(f.code, f.offset) for f in excinfo.value.findings] == [(f.code, f.offset) for f in report.findings]


@pytest.mark.parametrize("categorical", [False, True])
def test_good_model_loads_through_the_gate(tmp_path: Path, categorical: bool) -> None:
    model, X = _model(categorical)
    path = tmp_path / "good.amber"
    amber.dump(model, path)
    reader = _amber.Reader.open(str(path))
    reader.checked_pickle([], None, True)
    gate = reader.stream_gate()
    assert gate is not None
    # The gate reads the stream as a file would: what it returns is the stream.
    whole = bytes(gate.read(10)) + bytes(gate.read())
    assert bytes(gate.read()) == b""
    assert whole[:2] == b"\x80\x05" and whole[-1:] == b"."
    loaded = amber.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    trusted = amber.load(path, trusted=True)
    for a, b in zip(loaded._predictors, trusted._predictors):
        np.testing.assert_array_equal(a[0].nodes, b[0].nodes)
    assert amber.scan(path).verdict == "safe"
    assert amber.loads(path.read_bytes()).n_iter_ == model.n_iter_


def test_gate_readinto_and_readline(tmp_path: Path) -> None:
    model, _ = _model()
    path = tmp_path / "good.amber"
    amber.dump(model, path)
    reader = _amber.Reader.open(str(path))
    reader.checked_pickle([], None, True)
    gate = reader.stream_gate()
    buffer = bytearray(64)
    assert gate.readinto(buffer) == 64
    line = bytes(gate.readline())
    assert line.endswith(b"\n") or len(line) == 0 or bytes(gate.read()) == b""
    rest = bytes(gate.read())
    reader.checked_pickle([], None, True)
    assert bytes(buffer) + line + rest == bytes(reader.stream_gate().read())


class _EditedTree:
    """Pickles as a fitted tree's `Tree` whose first split points at the root."""

    def __init__(self, tree: Any) -> None:
        self.args = (tree.n_features, tree.n_classes, tree.n_outputs)
        self.state = tree.__getstate__()
        nodes = self.state["nodes"] = self.state["nodes"].copy()
        nodes["right_child"][int(np.flatnonzero(nodes["left_child"] != -1)[-1])] = 0

    def __reduce__(self) -> Any:
        from sklearn.tree._tree import Tree

        return (Tree, self.args, self.state)


def test_small_crafted_tree_is_refused_through_the_gate(tmp_path: Path) -> None:
    """A small tree's node array lies in the stream: its walk is left to the
    gate too, and the load refuses it with what `amber.scan` reports."""
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.RandomState(0)
    X = rng.rand(300, 3)
    model = DecisionTreeClassifier(random_state=0).fit(X, rng.randint(0, 2, len(X)))
    good = tmp_path / "good.amber"
    amber.dump(model, good)
    np.testing.assert_array_equal(amber.load(good).predict_proba(X), model.predict_proba(X))
    model.tree_ = _EditedTree(model.tree_)
    bad = tmp_path / "bad.amber"
    amber.dump(model, bad)
    reader = _amber.Reader.open(str(bad))
    assert reader.array_sizes() == []
    _, deferred, _ = reader.checked_pickle([], None, True)
    assert "tree.cycle" not in deferred
    assert reader.stream_gate() is not None
    with pytest.raises(amber.UnsafeModelError) as excinfo:
        amber.load(bad)
    assert "tree.cycle" in {f.code for f in excinfo.value.findings}
    report = amber.scan(bad)
    assert [(f.code, f.offset) for f in excinfo.value.findings] == [(f.code, f.offset) for f in report.findings]
