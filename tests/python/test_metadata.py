"""User metadata, the captured environment and the content hash (F-15, F-16),
through amber.info, amber.verify and the `amber` CLI (which has no Python)."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

import amber

AMBER = shutil.which("amber")


@pytest.fixture(scope="module")
def tree() -> DecisionTreeClassifier:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    return DecisionTreeClassifier(random_state=0).fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))


@pytest.mark.parametrize(
    ("metadata", "where"),
    [
        ({"metrics": {"auc": object()}}, "metadata['metrics']['auc']"),
        ({"runs": [1, {"seed": {1, 2}}]}, "metadata['runs'][1]['seed']"),
        ({"a": {"b": b"raw"}}, "metadata['a']['b']"),
        ({"when": np.datetime64("2026-01-01")}, "metadata['when']"),
        ({"objects": np.array([object()], dtype=object)}, "metadata['objects']"),
        ({"text": np.array(["a", "b"])}, "metadata['text']"),
    ],
)
def test_errors_name_the_key_path(metadata, where) -> None:
    with pytest.raises(TypeError) as caught:
        amber.dumps(0, metadata=metadata)
    assert where in str(caught.value)


def test_small_arrays_are_lists_large_ones_refused() -> None:
    ok = amber.info(amber.dumps(0, metadata={"w": np.arange(1000), "m": np.eye(2, dtype=np.float32)}))["metadata"]
    assert ok == {"w": list(range(1000)), "m": [[1.0, 0.0], [0.0, 1.0]]}
    with pytest.raises(TypeError, match=r"metadata\['w'\] is an array of 1001 elements.*at most 1,000"):
        amber.dumps(0, metadata={"w": np.arange(1001)})


def test_conversions_nested(tmp_path) -> None:
    metadata = {
        "trained": dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.timezone.utc),
        "data": {"path": tmp_path / "train.csv", "rows": np.int64(1200), "auc": np.float32(0.75)},
        "history": [(dt.date(2026, 1, 2), np.float64(0.5))],
    }
    path = amber.dump(0, tmp_path / "m.amber", metadata=metadata)
    assert amber.info(path)["metadata"] == {
        "trained": "2026-11-22T10:15:00+00:00",
        "data": {"path": str(tmp_path / "train.csv"), "rows": 1200, "auc": 0.75},
        "history": [["2026-01-02", 0.5]],
    }


def test_environment_is_captured(tree) -> None:
    manifest = amber.info(amber.dumps(tree, metadata={"run": 7}))
    env = manifest["environment"]
    assert set(env) >= {"python", "implementation", "platform", "machine", "byteorder", "packages", "distributions"}
    assert env["distributions"]["sklearn"]["name"] == "scikit-learn"
    assert re.fullmatch(r"blake3:[0-9a-f]{64}", manifest["content_hash"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["created"])
    assert manifest["producer"] == {"name": "amber", "version": amber.__version__}


def test_content_hash_covers_content_not_metadata(tree) -> None:
    def digest(obj, **kw) -> str:
        return amber.info(amber.dumps(obj, **kw))["content_hash"]

    assert digest(tree) == digest(tree, metadata={"other": "metadata"})
    other = DecisionTreeClassifier(random_state=0, max_depth=1).fit(np.eye(4), [0, 1, 0, 1])
    assert digest(tree) != digest(other)
    assert digest(tree) != digest(tree, compress="zstd")  # stored bytes differ
    big = {"x": np.arange(2_000_000, dtype=np.float64)}  # large arrays hash on another thread
    changed = {"x": big["x"].copy()}
    changed["x"][1_999_999] = -1
    assert digest(big) != digest(changed)


def test_verify_checks_the_content_hash(tmp_path) -> None:
    vector = Path(__file__).parents[1] / "vectors" / "invalid" / "content-hash.amber"
    amber.load(vector)  # CRC-32s all match: the loader does not see it
    with pytest.raises(amber.ChecksumError) as caught:
        amber.verify(vector)
    assert caught.value.code == "format.content_hash"
    assert "content hash" in str(caught.value)


@pytest.mark.skipif(AMBER is None, reason="the amber CLI is not on PATH")
def test_cli_info_shows_everything_without_python(tree, tmp_path) -> None:
    path = amber.dump(tree, tmp_path / "m.amber", metadata={"metrics": {"auc": 0.91}})
    env = {"PATH": "/usr/bin:/bin"}  # no Python environment at all
    text = subprocess.run([AMBER, "info", path], capture_output=True, text=True, check=True, env=env).stdout
    manifest = amber.info(path)
    assert manifest["content_hash"] in text
    assert "sklearn" in text and "(scikit-learn)" in text
    assert '"auc":0.91' in text
    as_json = json.loads(
        subprocess.run([AMBER, "info", "--json", path], capture_output=True, text=True, check=True, env=env).stdout
    )
    assert as_json == manifest
    bad = Path(__file__).parents[1] / "vectors" / "invalid" / "content-hash.amber"
    done = subprocess.run([AMBER, "verify", "--json", str(bad)], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert json.loads(done.stdout)["code"] == "format.content_hash"
