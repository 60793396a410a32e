"""Research for the default policy of amber-scan (not part of the library).

Fits every scikit-learn estimator that can be built with defaults (plus
Pipeline, ColumnTransformer, FeatureUnion, GridSearchCV and plain data:
containers, numbers, datetime, Decimal, numpy scalars/dtypes/random states,
scipy sparse matrices and arrays), pickles each with protocols 0, 2, 4, 5,
amber's pickler and joblib, and replays every stream through a *symbolic*
unpickler that never imports or calls anything. For every global it records
how the streams use it: referenced as a value, called by REDUCE (with the
argument shape), instantiated by NEWOBJ / REDUCE / copyreg._reconstructor,
given BUILD state (dict / tuple / other), or mutated by SETITEMS / APPENDS.

    /path/to/venv/bin/python crates/amber-scan/tools/collect_policy.py > /tmp/uses.json

The roles in crates/amber-scan/src/policy.txt were chosen from that output.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import io
import json
import pickle
import sys
import warnings
from collections import Counter, OrderedDict, defaultdict

import pathlib

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "tools"))
from collect_globals import fit as basic_fit  # noqa: E402


class Sym:
    """A global or an object the stream made; never the real thing."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind  # "global" or "obj"
        self.name = name

    def append(self, item: object) -> None:
        note(self.name, "items")

    def extend(self, items: object) -> None:
        note(self.name, "items")

    def __setitem__(self, key: object, value: object) -> None:
        note(self.name, "items")

    def add(self, item: object) -> None:
        note(self.name, "items")


USES: dict[str, Counter] = defaultdict(Counter)


def note(name: str, use: str) -> None:
    USES[name][use] += 1


def shape(v: object) -> str:
    if isinstance(v, Sym):
        return f"{v.kind}:{v.name}"
    if isinstance(v, tuple):
        return "(" + ",".join(shape(x) for x in v) + ")"
    return type(v).__name__


class Symbolic(pickle._Unpickler):  # type: ignore[misc]
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Sym:
        if self.proto < 3 and self.fix_imports:
            import _compat_pickle

            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        note(f"{module}.{name}", "global")
        return Sym("global", f"{module}.{name}")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        name = func.name if isinstance(func, Sym) else "?"
        note(name, "reduce " + shape(args))
        made = name
        if name in ("copyreg._reconstructor", "numpy._core.multiarray._reconstruct",
                    "numpy.core.multiarray._reconstruct") and isinstance(args[0], Sym):
            made = args[0].name
            note(made, "instantiated via " + name)
        self.stack[-1] = Sym("obj", made)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        note(cls.name, "newobj " + shape(args))
        self.append(Sym("obj", cls.name))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        kind = type(state).__name__
        if isinstance(state, dict):
            dunder = [k for k in state if isinstance(k, str) and k.startswith("__")]
            kind = "dict" + (f" dunder={dunder}" if dunder else "")
            if not all(isinstance(k, str) for k in state):
                kind += " nonstr-keys"
        elif isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            kind = "slotstate"
        note(inst.name if isinstance(inst, Sym) else "?" + type(inst).__name__, "build " + kind)

    dispatch[pickle.BUILD[0]] = load_build

    def load_next_buffer(self) -> None:
        self.append(b"")

    dispatch[pickle.NEXT_BUFFER[0]] = load_next_buffer


def replay(data: bytes) -> None:
    Symbolic(io.BytesIO(data)).load()


def fit(cls: type) -> object | None:
    """tools/collect_globals.py's fit, then other input shapes for the estimators it skips."""
    from sklearn.utils._testing import ignore_warnings

    model = basic_fit(cls)
    if model is not None:
        return model
    try:
        est = cls()
    except TypeError:
        return None
    rng = np.random.default_rng(0)
    X = rng.random((60, 4))
    y = np.tile([0, 1, 2], 20)
    texts = ["apple banana", "banana cherry", "cherry apple"] * 20
    for args in ((X, np.c_[rng.random(60), rng.random(60)]), (y,), (X[:, 0], rng.random(60)),
                 (texts,), ([{"a": 1, "b": 2}, {"a": 3}] * 30,), (X @ X.T,), ([[1, 2], [2]] * 30,)):
        try:
            with ignore_warnings():
                return est.fit(*args)
        except Exception:
            continue
    return None


def composites() -> list[object]:
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    X = rng.random((60, 4))
    y = np.tile([0, 1, 2], 20)
    out: list[object] = []
    out.append(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y))
    out.append(ColumnTransformer([("s", StandardScaler(), [0, 1]), ("o", OneHotEncoder(), slice(2, 4))]).fit(X.round(1), y))
    out.append(FeatureUnion([("p", PCA(2)), ("s", StandardScaler())]).fit(X, y))
    out.append(GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(X, y))
    out.append(make_pipeline(FunctionTransformer(np.log1p), KNeighborsClassifier(algorithm="kd_tree")).fit(X, y))
    out.append(KNeighborsClassifier(algorithm="ball_tree").fit(X, y))
    out.append(Pipeline([("t", TfidfVectorizer()), ("m", LogisticRegression())]).fit(["apple banana", "banana cherry", "cherry apple"] * 4, [0, 1, 0] * 4))
    from sklearn import ensemble, feature_selection, linear_model, multiclass, multioutput, neighbors
    from sklearn import calibration, frozen, model_selection, random_projection, semi_supervised
    from sklearn.decomposition import SparseCoder
    from sklearn.tree import DecisionTreeClassifier

    lr = LogisticRegression()
    y2 = np.c_[y, y[::-1]]
    rg = linear_model.Ridge()
    metas = [
        (multiclass.OneVsRestClassifier(lr), X, y), (multiclass.OneVsOneClassifier(lr), X, y),
        (multiclass.OutputCodeClassifier(lr), X, y), (multioutput.MultiOutputClassifier(lr), X, y2),
        (multioutput.MultiOutputRegressor(rg), X, y2), (multioutput.ClassifierChain(lr), X, y2),
        (multioutput.RegressorChain(rg), X, y2),
        (ensemble.StackingClassifier([("a", lr), ("t", DecisionTreeClassifier())]), X, y),
        (ensemble.StackingRegressor([("a", rg)]), X, y),
        (ensemble.VotingClassifier([("a", lr), ("t", DecisionTreeClassifier())], voting="soft"), X, y),
        (ensemble.VotingRegressor([("a", rg)]), X, y),
        (feature_selection.RFE(lr), X, y), (feature_selection.RFECV(lr), X, y),
        (feature_selection.SelectFromModel(lr), X, y),
        (feature_selection.SequentialFeatureSelector(lr, n_features_to_select=2), X, y),
        (semi_supervised.SelfTrainingClassifier(lr), X, np.where(np.arange(60) % 4 == 0, -1, y)),
        (model_selection.FixedThresholdClassifier(lr), X, y % 2),
        (model_selection.TunedThresholdClassifierCV(lr), X, y % 2),
        (frozen.FrozenEstimator(lr.fit(X, y)), X, y),
        (model_selection.RandomizedSearchCV(lr, {"C": [0.1, 1.0]}, n_iter=2, cv=2), X, y),
        (random_projection.GaussianRandomProjection(2), X, y),
        (random_projection.SparseRandomProjection(2), X, y),
        (SparseCoder(rng.random((3, 4))), X, y),
        (calibration.CalibratedClassifierCV(lr, method="isotonic"), X, y),
    ]
    for metric in ("manhattan", "chebyshev", "minkowski", "cosine", "hamming", "canberra"):
        metas.append((neighbors.KNeighborsClassifier(metric=metric, algorithm="brute" if metric in ("cosine",) else "auto"), X, y))
    metas.append((neighbors.KNeighborsClassifier(metric="minkowski", p=3, algorithm="ball_tree"), X, y))
    metas.append((neighbors.KNeighborsClassifier(algorithm="kd_tree"), X.astype(np.float32), y))
    metas.append((neighbors.BallTree(X[:, :2], metric="haversine"), None, None))
    metas.append((neighbors.KDTree(X), None, None))
    for loss in ("log_loss", "modified_huber", "squared_hinge", "perceptron", "huber", "epsilon_insensitive", "squared_error"):
        metas.append((linear_model.SGDClassifier(loss=loss), X, y))
    for loss in ("huber", "epsilon_insensitive", "squared_epsilon_insensitive"):
        metas.append((linear_model.SGDRegressor(loss=loss), X, y))
    metas.append((ensemble.HistGradientBoostingClassifier(categorical_features=[0], max_iter=3), np.c_[np.arange(60) % 3, X], y))
    metas.append((ensemble.HistGradientBoostingRegressor(loss="poisson", max_iter=3), X, np.abs(y) + 1.0))
    metas.append((ensemble.GradientBoostingClassifier(n_estimators=3), X, y % 2))
    metas.append((ensemble.GradientBoostingRegressor(loss="huber", n_estimators=3), X, y))
    metas.append((linear_model.LogisticRegression(solver="liblinear"), X, y % 2))
    from sklearn.gaussian_process import GaussianProcessRegressor, kernels
    for k in (kernels.Matern() + kernels.WhiteKernel(), kernels.DotProduct() * kernels.RationalQuadratic(), kernels.RBF() ** 2):
        metas.append((GaussianProcessRegressor(kernel=k, alpha=1.0), X, y))
    for est, a, b in metas:
        try:
            out.append(est if a is None else est.fit(a, b))
        except Exception as e:
            print("meta failed", type(est).__name__, repr(e), file=sys.stderr)
    return out


def plain_data() -> list[object]:
    m = sp.random(5, 4, density=0.5, format="csr", random_state=0)
    items: list[object] = [
        {"a": 1, "b": [1, 2.5, None, True], "c": (1, "x"), "d": {1, 2}, "e": frozenset({3})},
        "s", b"b", bytearray(b"ba"), 10**30, 1.5, complex(1, 2),
        datetime.date(2020, 1, 2), datetime.datetime(2020, 1, 2, 3, 4, tzinfo=datetime.timezone.utc),
        datetime.time(1, 2), datetime.timedelta(days=1), datetime.timezone(datetime.timedelta(hours=2)),
        decimal.Decimal("1.5"), fractions.Fraction(1, 3), OrderedDict(a=1), defaultdict(list, a=[1]),
        defaultdict(int), Counter("abca"), slice(1, 2), range(3),
        np.float64(1.5), np.int32(3), np.bool_(True), np.str_("x"), np.dtype("f8"), np.dtype([("a", "<i4"), ("b", "O")]),
        np.dtype("M8[ns]"), np.datetime64("2020-01-01"), np.timedelta64(1, "s"),
        np.arange(6).reshape(2, 3), np.asfortranarray(np.ones((2, 3))), np.array(["a", None], dtype=object),
        np.array([("x", 1)], dtype=[("n", "U3"), ("v", "<i8")]),
        np.matrix([[1, 2]]), np.ma.masked_array([1, 2], mask=[0, 1]),
        np.random.RandomState(0), np.random.default_rng(0), np.random.Generator(np.random.MT19937(1)),
        np.random.Generator(np.random.Philox(1)), np.random.Generator(np.random.SFC64(1)), np.random.Generator(np.random.PCG64DXSM(1)),
        np.log1p, np.exp, np.sqrt, np.float32, np.int64,
    ]
    for fmt in ("csr", "csc", "coo", "bsr", "dia", "lil", "dok"):
        items.append(m.asformat(fmt))
        items.append(sp.csr_array(m).asformat(fmt))
    return items


def main() -> None:
    warnings.simplefilter("ignore")
    from sklearn.utils import all_estimators
    from amber._pickling import Pickler

    objs: list[object] = plain_data() + composites()
    skipped = []
    n = 0
    for name, cls in all_estimators():
        model = fit(cls)
        if model is None:
            skipped.append(name)
            continue
        objs.append(model)
        n += 1
    for obj in objs:
        streams = []
        for proto in (0, 2, 4, 5):
            try:
                streams.append(pickle.dumps(obj, protocol=proto))
            except Exception:
                pass
        buf = io.BytesIO()
        try:
            Pickler(buf).dump(obj)
            streams.append(buf.getvalue())
        except Exception:
            pass
        for s in streams:
            try:
                replay(s)
            except Exception as e:  # report and go on
                print("replay failed", type(obj).__name__, repr(e), file=sys.stderr)
    json.dump({"estimators": n, "skipped": skipped,
               "uses": {k: dict(v) for k, v in sorted(USES.items())}}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
