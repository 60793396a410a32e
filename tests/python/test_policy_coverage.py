"""The default policy loads real models: every scikit-learn estimator that can
be built with defaults, fitted and pickled saves and loads with a default
``amber.load`` and gives identical outputs; so do the usual compositions and
plain data. A model refused here is a gap in the policy, not a user error.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import pickle
import warnings
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import amber

_OUTPUTS = ("predict", "predict_proba", "decision_function", "transform", "score_samples")


def _fit(cls: type) -> Any:
    """``cls()`` fitted on a small seeded dataset, or ``None`` if it cannot be."""
    rng = np.random.default_rng(0)
    X = rng.random((60, 4))
    y = np.tile([0, 1, 2], 20)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated estimators warn when built
            est = cls()
    except TypeError:
        return None
    for args in ((X, y), (X,), (X, rng.random(60)), (np.abs(X), y)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return est.fit(*args)
        except Exception:
            continue
    return None


def _estimators() -> list[tuple[str, type]]:
    from sklearn.utils import all_estimators

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return all_estimators()


def _outputs(model: Any, X: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in _OUTPUTS:
        fn = getattr(model, method, None)
        if fn is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = fn(X)
        except Exception as exc:  # e.g. transform on a predictor-only model
            value = type(exc)
        out[method] = value.toarray() if sp.issparse(value) else value
    return out


def _drop_random_outputs(outputs: dict[str, Any], model: Any, X: np.ndarray) -> None:
    """Drops outputs that differ between two calls on the same model (e.g.
    BernoulliRBM.score_samples draws from NumPy's global random state)."""
    again = _outputs(model, X)
    for method in list(outputs):
        try:
            _assert_same(outputs[method], again[method], method)
        except AssertionError:
            del outputs[method]


def _assert_same(a: Any, b: Any, what: str) -> None:
    if isinstance(a, type):
        assert a is b, what
        return
    if isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y, what)
        return
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=what)


def test_every_estimator_loads_safely_with_identical_outputs() -> None:
    X = np.random.default_rng(1).random((20, 4))
    loaded, refused, skipped = [], [], []
    for name, cls in _estimators():
        model = _fit(cls)
        if model is None:
            skipped.append(name)
            continue
        try:
            pickle.dumps(model, protocol=5)
        except Exception:
            skipped.append(name)  # not picklable at all: nothing to load
            continue
        # Saved before any output is computed: some outputs draw from the
        # model's own random state, which the copy must start from too.
        data = amber.dumps(model)
        before = _outputs(model, X)
        _drop_random_outputs(before, model, X)
        try:
            with warnings.catch_warnings():
                # Deprecated estimators warn in __new__, under plain pickle too.
                warnings.simplefilter("ignore", FutureWarning)
                back = amber.loads(data)
        except amber.UnsafeModelError as exc:
            refused.append(f"{name}: {exc}")
            continue
        assert type(back) is cls
        after = _outputs(back, X)
        assert after.keys() >= before.keys(), name
        for method, value in before.items():
            _assert_same(value, after[method], f"{name}.{method}")
        loaded.append(name)
    assert not refused, "\n".join(refused)
    # scikit-learn 1.9.1 fits 167 of its estimators with these defaults.
    assert len(loaded) >= 160, (len(loaded), skipped)


def test_compositions(fitted_models, classification_data) -> None:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    X, y = classification_data
    union = Pipeline(
        [
            ("features", FeatureUnion([("pca", PCA(n_components=3)), ("log", FunctionTransformer(np.log1p))])),
            ("clf", LogisticRegression(max_iter=300)),
        ]
    ).fit(np.abs(X), y)
    search = GridSearchCV(
        Pipeline([("scale", StandardScaler()), ("rf", RandomForestClassifier(n_estimators=5, random_state=0))]),
        {"rf__max_depth": [2, None]},
        cv=2,
    ).fit(X, y)
    models = {"union": (union, np.abs(X)), "search": (search, X), **fitted_models}
    for name, (model, data) in models.items():
        back = amber.loads(amber.dumps(model))
        np.testing.assert_array_equal(back.predict(data), model.predict(data), err_msg=name)


def _matrix() -> np.matrix:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix([[1, 2], [3, 4]])


def test_plain_data_loads_safely() -> None:
    value = {
        "list": [1, 2.5, "x", b"y", None, True],
        "tuple": (1, (2, 3)),
        "set": {1, 2},
        "frozenset": frozenset({"a"}),
        "bytearray": bytearray(b"ab"),
        "complex": 1 + 2j,
        "big": 1 << 100,
        "date": dt.date(2026, 12, 1),
        "datetime": dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.timezone.utc),
        "naive": dt.datetime(2026, 12, 1, 8, 30),
        "time": dt.time(8, 30),
        "delta": dt.timedelta(days=2, seconds=3),
        "decimal": decimal.Decimal("3.14"),
        "ordered": collections.OrderedDict(a=1),
        "counter": collections.Counter("abca"),
        "defaultdict": collections.defaultdict(list, {"k": [1]}),
        "np_scalars": [np.float64(1.5), np.int32(3), np.bool_(True), np.float32(2.0)],
        "dtypes": [np.dtype("f8"), np.dtype([("a", "<i4"), ("b", "<f8")]), np.dtype(">u2")],
        "arrays": [np.arange(5), np.zeros((3, 3), order="F"), np.array(["a", "bc"]), np.arange(10**5)],
        "matrix": _matrix(),
        "rng": np.random.RandomState(0),
        "generator": np.random.default_rng(0),
        "csr": sp.csr_matrix(np.eye(3)),
        "csc_array": sp.csc_array(np.eye(4)),
        "coo": sp.coo_matrix(np.eye(2)),
        "slice": slice(1, 5, 2),
    }
    back = amber.loads(amber.dumps(value))
    for key in ("list", "tuple", "set", "frozenset", "bytearray", "complex", "big", "date", "datetime", "naive",
                "time", "delta", "decimal", "ordered", "counter", "defaultdict", "np_scalars", "dtypes", "slice"):
        assert back[key] == value[key], key
        assert type(back[key]) is type(value[key]), key
    assert back["defaultdict"].default_factory is list
    for a, b in zip(value["arrays"], back["arrays"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert type(back["matrix"]) is np.matrix
    assert back["rng"].random() == np.random.RandomState(0).random()
    assert back["generator"].random() == np.random.default_rng(0).random()
    for key in ("csr", "csc_array", "coo"):
        assert type(back[key]) is type(value[key])
        assert (back[key] != value[key]).nnz == 0


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_pickles_of_every_protocol_scan_safe(protocol: int, fitted_models) -> None:
    """The analyser accepts real model pickles whatever the protocol that wrote them."""
    for name, (model, _) in fitted_models.items():
        report = amber.scan(pickle.dumps(model, protocol=protocol))
        assert report.safe, f"{name} (protocol {protocol}): {report}"
