"""Generate the benign fixtures of amber-scan's tests (real scikit-learn models).

    /path/to/venv/bin/python crates/amber-scan/tests/data/generate.py

with numpy 2.4.6, scipy 1.17.1, scikit-learn 1.9.1, joblib 1.6.0 and amber
installed (the repository's `make build` venv). Writes next to this script:

- `benign/*.pkl`: plain pickles (protocols 0, 2, 4, 5) of small fitted models
  and of plain data; every one must scan `safe`;
- `benign/*.joblib`: uncompressed joblib files (inline arrays, an object array);
- `benign/*.amber`: amber files (pickle entry with out-of-band buffers);
- `benign/*.stream` + `.buffers`: amber's pickle stream alone and its buffer count;
- `hostile/*.pkl`: real compiled-type objects with one crafted field (a tree
  child index out of range, a backward child, a feature index out of range,
  a wrong value shape, a HistGradientBoosting node out of range, a KDTree
  index out of range, CSR indices out of range), for the content validators.

Models are kept tiny (few trees, shallow) so the whole set stays well under 2 MB.
Seeds are fixed; models that record fit times (GridSearchCV, HistGradientBoosting) and
amber files (creation time) still differ byte-wise between runs.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import io
import pathlib
import pickle

import joblib
import numpy as np
import scipy.sparse as sp
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.decomposition import PCA
from sklearn.tree import DecisionTreeClassifier

import amber
from amber._pickling import Pickler

OUT = pathlib.Path(__file__).parent / "benign"
HOSTILE = pathlib.Path(__file__).parent / "hostile"


class Crafted:
    """Pickles as `cls` (NEWOBJ, or REDUCE with `args`) with the given state."""

    def __init__(self, cls: type, state: object, args: tuple | None = None, reduce_fn=None) -> None:
        self.cls, self.state, self.args, self.reduce_fn = cls, state, args, reduce_fn

    @property  # the pickler checks that __newobj__'s class is the object's class
    def __class__(self):  # type: ignore[override]
        return self.__dict__["cls"] or Crafted

    def __reduce_ex__(self, protocol: int):
        import copyreg

        if self.reduce_fn is not None:
            return (self.reduce_fn, self.args, self.state)
        if self.args is not None:
            return (self.cls, self.args, self.state)
        return (copyreg.__newobj__, (self.cls,), self.state)


def hostile() -> dict[str, object]:
    from sklearn.neighbors import KDTree

    rng = np.random.default_rng(0)
    X = rng.random((40, 4))
    y = np.tile([0, 1], 20)
    out: dict[str, object] = {}
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y).tree_
    cls, args, state = tree.__reduce__()

    def tree_with(field: str, index: int, value: int) -> object:
        s = dict(state)
        s["nodes"] = state["nodes"].copy()
        s["nodes"][field][index] = value
        return Crafted(cls, s, args)

    out["tree_child_out_of_range"] = tree_with("left_child", 0, 10**6)
    out["tree_cycle"] = tree_with("left_child", 1, 0)
    out["tree_feature_out_of_range"] = tree_with("feature", 0, 1000)
    s = dict(state)
    s["values"] = state["values"][:1].copy()
    out["tree_value_shape"] = Crafted(cls, s, args)

    hgb = HistGradientBoostingClassifier(max_iter=2).fit(X, y)
    pred = hgb._predictors[0][0]
    s = dict(pred.__dict__)
    s["nodes"] = pred.nodes.copy()
    internal = np.flatnonzero(~s["nodes"]["is_leaf"].astype(bool))[0]
    s["nodes"]["left"][internal] = 10**6
    out["hgb_node_out_of_range"] = Crafted(type(pred), s)

    kd = KDTree(X)
    fn, args_kd, st = kd.__reduce__()
    st = list(st)
    st[1] = st[1].copy()
    st[1][0] = 10**6
    out["kdtree_index_out_of_range"] = Crafted(None, tuple(st), args_kd, reduce_fn=fn)

    m = sp.random(6, 5, density=0.4, format="csr", random_state=0)
    s = dict(m.__dict__)
    s["indices"] = m.indices.copy()
    s["indices"][0] = 100
    out["csr_indices_out_of_range"] = Crafted(type(m), s)
    return out


def models() -> dict[str, object]:
    rng = np.random.default_rng(0)
    X = rng.random((40, 4))
    y = np.tile([0, 1], 20)
    cat = np.c_[np.arange(40) % 3, X]
    return {
        "logreg": LogisticRegression().fit(X, y),
        "tree": DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y),
        "forest": RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, y),
        "hgb": HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(cat, y),
        "knn_kd": KNeighborsClassifier(algorithm="kd_tree").fit(X, y),
        "knn_ball": KNeighborsClassifier(algorithm="ball_tree", metric="manhattan").fit(X, y),
        "sgd": SGDClassifier(random_state=0).fit(X, y),
        "pipeline": make_pipeline(FunctionTransformer(np.log1p), StandardScaler(), LogisticRegression()).fit(X, y),
        "column": ColumnTransformer([("s", StandardScaler(), [0, 1]), ("o", OneHotEncoder(), slice(2, 4))]).fit(X.round(1), y),
        "union": FeatureUnion([("p", PCA(2)), ("s", StandardScaler())]).fit(X, y),
        "grid": GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(X, y),
        "text": Pipeline([("t", TfidfVectorizer()), ("m", LogisticRegression())]).fit(["apple pie", "banana split", "cherry pie", "apple banana"] * 3, [0, 1, 0, 1] * 3),
    }


def plain() -> dict[str, object]:
    m = sp.random(6, 5, density=0.4, format="csr", random_state=0)
    return {
        "data": {
            "a": [1, 2.5, None, True, "x", b"y", bytearray(b"z"), 10**30, complex(1, 2)],
            "t": (1, (2, 3)), "s": {1, 2}, "f": frozenset({3}),
            "when": [datetime.date(2020, 1, 2), datetime.datetime(2020, 1, 2, 3, tzinfo=datetime.timezone.utc),
                     datetime.time(1, 2), datetime.timedelta(days=1)],
            "dec": decimal.Decimal("1.25"),
            "od": collections.OrderedDict(b=1), "dd": collections.defaultdict(list, a=[1]),
            "counter": collections.Counter("abca"),
        },
        "numpy": [np.float64(1.5), np.int32(3), np.dtype("f8"), np.dtype([("a", "<i4"), ("b", "<f8")]),
                  np.arange(6).reshape(2, 3), np.array(["a", None], dtype=object), np.matrix([[1, 2]]),
                  np.ma.masked_array([1, 2], mask=[0, 1]), np.random.RandomState(0), np.random.default_rng(0)],
        "sparse": [m.asformat(f) for f in ("csr", "csc", "coo", "bsr", "dia", "lil", "dok")]
        + [sp.csr_array(m), sp.coo_array(m)],
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    everything = {**models(), **plain()}
    for name, obj in everything.items():
        protos = (0, 2, 4, 5) if name in ("logreg", "tree", "data", "numpy", "sparse", "knn_kd") else (5,)
        for proto in protos:
            (OUT / f"{name}_p{proto}.pkl").write_bytes(pickle.dumps(obj, protocol=proto))
    for name in ("forest", "hgb", "numpy", "pipeline"):
        joblib.dump(everything[name], OUT / f"{name}.joblib")
    big = {"w": np.arange(20000, dtype=np.float64), "forest": everything["forest"]}
    amber.dump(big, OUT / "forest.amber")
    buf = io.BytesIO()
    p = Pickler(buf)
    p.dump(big)
    (OUT / "forest.stream").write_bytes(buf.getvalue())
    (OUT / "forest.buffers").write_text(f"{len(p.arrays)}\n")
    HOSTILE.mkdir(exist_ok=True)
    for old in HOSTILE.iterdir():
        old.unlink()
    for name, obj in hostile().items():
        (HOSTILE / f"{name}.pkl").write_bytes(pickle.dumps(obj, protocol=5))
    total = sum(f.stat().st_size for d in (OUT, HOSTILE) for f in d.iterdir())
    print(f"{len(list(OUT.iterdir()))} files, {total} bytes")


if __name__ == "__main__":
    main()
