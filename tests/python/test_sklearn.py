"""Real scikit-learn models through amber: dump, load (in this process, memory-
mapped, and in a fresh interpreter) and identical predict / predict_proba /
decision_function / transform output; the manifest names the package
versions; and ``import amber as joblib`` runs a typical joblib script
unchanged in a subprocess."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn

import amber
from _testutil import run_python

MODEL_NAMES = [
    "random_forest",
    "gradient_boosting",
    "hist_gradient_boosting",
    "decision_tree_regressor",
    "logistic_regression",
    "scaler_svc",
    "column_transformer",
    "tfidf_logreg",
    "kmeans",
    "knn_kd_tree",
    "grid_search",
]

OUTPUT_METHODS = ("predict", "predict_proba", "decision_function", "transform", "score_samples")


def outputs(model: Any, X: Any) -> dict[str, Any]:
    """Every output method the model has, evaluated on X."""
    out = {}
    for name in OUTPUT_METHODS:
        method = getattr(model, name, None)
        if method is None:
            continue
        try:
            result = method(X)
        except (AttributeError, NotImplementedError):
            continue  # e.g. GridSearchCV.transform when the estimator has none
        out[name] = result.toarray() if hasattr(result, "toarray") else np.asarray(result)
    return out


def assert_same_outputs(expected: dict[str, Any], got: dict[str, Any]) -> None:
    assert got.keys() == expected.keys()
    assert "predict" in expected or "transform" in expected
    for name, value in expected.items():
        # Same code on the same parameters: bit-identical, not merely close.
        assert np.array_equal(got[name], value), name


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_model_round_trip_gives_identical_outputs(tmp_path, fitted_models, name, mmap_mode) -> None:
    model, X = fitted_models[name]
    expected = outputs(model, X)
    path = tmp_path / f"{name}.amber"
    amber.dump(model, path)
    loaded = amber.load(path, mmap_mode=mmap_mode)
    assert type(loaded) is type(model)
    assert loaded is not model
    assert_same_outputs(expected, outputs(loaded, X))
    # The fitted parameters agree too (get_params covers nested estimators).
    assert repr(loaded.get_params()) == repr(model.get_params())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_round_trip_through_bytes_matches_pickle(fitted_models, name) -> None:
    """amber and pickle rebuild the same model: their own pickles are equal."""
    model, X = fitted_models[name]
    loaded = amber.loads(amber.dumps(model))
    via_pickle = pickle.loads(pickle.dumps(model, protocol=5))
    assert_same_outputs(outputs(via_pickle, X), outputs(loaded, X))


def test_tree_arrays_are_out_of_band_and_manifest_names_versions(tmp_path) -> None:
    """Deep trees have node arrays above the threshold: they become array entries,
    load memory-mapped, and predict the same; the manifest names the versions."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(n_samples=3000, n_features=8, n_informative=5, n_classes=3, flip_y=0.2, random_state=0)
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    path = amber.dump(model, tmp_path / "rf.amber")
    manifest = amber.info(path)
    packages = manifest["environment"]["packages"]
    assert packages["sklearn"] == sklearn.__version__
    assert packages["numpy"] == np.__version__
    arrays = [e for e in manifest["entries"] if e["kind"] == "array"]
    assert len(arrays) >= 3, manifest["entries"]  # one node array per tree at least
    assert manifest["entries"][0]["buffers"] == len(arrays)
    node_fields = {field[0] for field in arrays[0]["dtype"]}
    assert {"left_child", "right_child", "feature", "threshold"} <= node_fields
    for mode in (None, "r", "c"):
        assert np.array_equal(amber.load(path, mmap_mode=mode).predict_proba(X), model.predict_proba(X))


def test_mmap_loaded_model_keeps_working_after_the_file_is_replaced(tmp_path, fitted_models) -> None:
    """Replacing a file (atomic rename) never disturbs a process that has it mapped."""
    model, X = fitted_models["knn_kd_tree"]
    other, _ = fitted_models["logistic_regression"]
    path = tmp_path / "knn.amber"
    amber.dump(model, path)
    loaded = amber.load(path, mmap_mode="r")
    amber.dump(other, path)
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert type(amber.load(path)) is type(other)


def test_refitting_a_copy_on_write_loaded_model(tmp_path, fitted_models, classification_data) -> None:
    """mmap_mode='c' gives writable arrays: a loaded model can be refitted, the file stays."""
    model, X = fitted_models["logistic_regression"]
    path = tmp_path / "lr.amber"
    amber.dump(model, path)
    before = path.read_bytes()
    loaded = amber.load(path, mmap_mode="c")
    Xc, y = classification_data
    loaded.set_params(C=0.01).fit(Xc[:300], y[:300])
    assert path.read_bytes() == before
    assert_same_outputs(outputs(model, X), outputs(amber.load(path), X))


# --------------------------------------------------------------------------
# a fresh interpreter


@pytest.mark.parametrize("name", ["column_transformer", "tfidf_logreg", "hist_gradient_boosting"])
def test_pipeline_loads_in_a_fresh_process(tmp_path, fitted_models, name) -> None:
    model, X = fitted_models[name]
    expected = outputs(model, X)
    amber.dump({"model": model, "X": X}, tmp_path / "bundle.amber", metadata={"name": name})
    code = f"""
        import sys, numpy as np, amber
        assert "sklearn" not in sys.modules  # nothing imported it yet: loading must
        bundle = amber.load("bundle.amber")
        mapped = amber.load("bundle.amber", mmap_mode="r")
        model, X = bundle["model"], bundle["X"]
        out = {{}}
        for which, m in (("plain", model), ("mapped", mapped["model"])):
            for name in {OUTPUT_METHODS!r}:
                method = getattr(m, name, None)
                if method is None:
                    continue
                try:
                    r = method(X)
                except (AttributeError, NotImplementedError):
                    continue
                out[which + "." + name] = r.toarray() if hasattr(r, "toarray") else np.asarray(r)
        np.savez("out.npz", **out)
        print(type(model).__module__, type(model).__name__)
    """
    proc = run_python(code, cwd=tmp_path)
    assert proc.stdout.split() == [type(model).__module__, type(model).__name__]
    with np.load(tmp_path / "out.npz", allow_pickle=False) as child:
        for which in ("plain", "mapped"):
            got = {k.split(".", 1)[1]: child[k] for k in child.files if k.startswith(which + ".")}
            assert_same_outputs(expected, got)


# --------------------------------------------------------------------------
# import amber as joblib


JOBLIB_SCRIPT = """
import io, os
import numpy as np
import amber as joblib
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

X, y = make_classification(n_samples=300, n_features=6, random_state=1)
clf = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=15, random_state=1)).fit(X, y)
expected = clf.predict_proba(X)

# The usual pair.
returned = joblib.dump(clf, "model.joblib")
clf2 = joblib.load("model.joblib")
assert np.array_equal(clf2.predict_proba(X), expected)
print("returned", returned)

# Positional compress (joblib's third argument), and compress= spelled out.
joblib.dump(clf, "m.pkl", 0)
joblib.dump(clf, "m3.pkl", 3)
joblib.dump(clf, "mz.pkl", compress=("zlib", 3))
joblib.dump(clf, "ext.joblib.gz")  # compressed because of the extension, as joblib does
for name in ("m.pkl", "m3.pkl", "mz.pkl", "ext.joblib.gz"):
    assert np.array_equal(joblib.load(name).predict_proba(X), expected), name

# protocol= is accepted.
joblib.dump(clf, "proto.pkl", protocol=4)
assert np.array_equal(joblib.load("proto.pkl").predict_proba(X), expected)

# Open file objects, both ways.
with open("fobj.bin", "wb") as fobj:
    joblib.dump({"clf": clf, "X": X}, fobj)
with open("fobj.bin", "rb") as fobj:
    obj = joblib.load(fobj)
assert np.array_equal(obj["clf"].predict_proba(obj["X"]), expected)

# Memory-mapped loading, joblib's way.
big = np.arange(1_000_000, dtype=np.float64)
joblib.dump(big, "big.joblib")
mapped = joblib.load("big.joblib", mmap_mode="r")
assert not mapped.flags.writeable and mapped.sum() == big.sum()

# A BytesIO.
buf = io.BytesIO()
joblib.dump(clf, buf)
buf.seek(0)
assert np.array_equal(joblib.load(buf).predict_proba(X), expected)
print("ok")
"""


@pytest.mark.slow
def test_import_amber_as_joblib_runs_a_typical_joblib_script(tmp_path) -> None:
    proc = run_python(JOBLIB_SCRIPT, cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert lines[-1] == "ok", proc.stdout
    assert lines[0] == "returned model.joblib"
    # What the script wrote are amber files (not pickles), each complete and intact.
    for name in ("model.joblib", "m.pkl", "m3.pkl", "mz.pkl", "ext.joblib.gz", "proto.pkl", "fobj.bin", "big.joblib"):
        path = tmp_path / name
        assert path.read_bytes()[:4] == b"PK\x03\x04", name
        amber.verify(path)
    codecs = lambda p: {e.get("codec") for e in amber.info(tmp_path / p)["entries"]}  # noqa: E731
    assert codecs("m.pkl") == {None}
    assert codecs("m3.pkl") == {"zstd"}
    assert codecs("ext.joblib.gz") == {"zstd"}
    assert amber.info(tmp_path / "model.joblib")["environment"]["packages"]["sklearn"] == sklearn.__version__


def test_joblib_dump_return_value_is_a_path_string(tmp_path, fitted_models) -> None:
    """joblib.dump returns a list of file names; amber returns the one path (documented)."""
    model, _ = fitted_models["logistic_regression"]
    result = amber.dump(model, Path(tmp_path) / "x.joblib")
    assert result == str(tmp_path / "x.joblib")
