"""Write the content-validator fixtures: real pickles and crafted variants.

Run from the repository root with the project venv:

    .venv/bin/python crates/amber-scan/tests/content/gen_fixtures.py

It rewrites `fixtures/` beside this file and `fixtures/MANIFEST.txt`, one line
per file: `name<TAB>expected<TAB>class=count,...` where `expected` is `ok` for
a real pickle (every validated object must pass), the one issue code a
crafted file must be refused with, or `array` for a file the array decoder
tests read directly. Models are tiny and seeded (and `Tree` padding bytes
zeroed), so the files are small and byte-for-byte the same on every run of
the pinned versions. `--forest PATH` writes a 200-tree forest for timing
instead (see `forest_timing` in checks.rs).

File forms: `.pkl` is a plain pickle (protocol in the name); `.oob` is a
protocol 5 pickle with out-of-band buffers, stored as `OOB1`, a u32 count,
then each buffer as a u64 length and its bytes, then the pickle; `.joblib`
is `joblib.dump` output (arrays inline after their wrappers).
"""

import copy
import io
import os
import pickle
import shutil
import struct
import sys
from collections import Counter
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.neighbors import BallTree, KDTree, KNeighborsClassifier
from sklearn.neighbors._ball_tree import newObj as ball_new_obj
from sklearn.neighbors._kd_tree import newObj as kd_new_obj
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.tree._tree import Tree

OUT = Path(__file__).resolve().parent / "fixtures"

VALIDATED = {
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
}


def walk(obj):
    """Every object reachable the way pickle would save it (roughly)."""
    seen = set()
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        yield o
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif isinstance(o, np.ndarray) and o.dtype == object:
            stack.extend(o.ravel().tolist())
        elif hasattr(o, "__dict__") and not isinstance(o, type):
            stack.extend(vars(o).values())


def class_name(o):
    return f"{type(o).__module__}.{type(o).__qualname__}"


def validated_counts(obj):
    return Counter(
        class_name(o)
        for o in walk(obj)
        if class_name(o) in VALIDATED or (sp.issparse(o) and class_name(o).startswith("scipy.sparse._"))
    )


def clean_nodes(nodes):
    """The same records with zeroed padding: `Tree` nodes are a C struct
    whose padding bytes are whatever memory held, which would make the
    fixtures differ from run to run."""
    out = np.zeros(nodes.shape, dtype=nodes.dtype)
    for name in nodes.dtype.names:
        out[name] = nodes[name]
    return out


def scrub(obj):
    for o in walk(obj):
        if isinstance(o, Tree):
            state = o.__getstate__()
            state["nodes"] = clean_nodes(state["nodes"])
            o.__setstate__(state)
    return obj


def dump_oob(obj):
    buffers = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    out = io.BytesIO()
    out.write(b"OOB1")
    out.write(struct.pack("<I", len(buffers)))
    for b in buffers:
        raw = b.raw().tobytes()
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
    out.write(data)
    return out.getvalue()


def dump_joblib(obj):
    out = io.BytesIO()
    joblib.dump(obj, out)
    return out.getvalue()


def forms(obj, protocols=(2, 4, 5), oob=True, jl=True):
    """`(suffix, bytes)` for each way the object is written."""
    for p in protocols:
        yield f"p{p}.pkl", pickle.dumps(obj, protocol=p)
    if oob:
        yield "p5.oob", dump_oob(obj)
    if jl:
        yield "joblib", dump_joblib(obj)


manifest = []


def write(name, data, expected, counts):
    (OUT / name).write_bytes(data)
    classes = ",".join(f"{k}={v}" for k, v in sorted(counts.items()))
    manifest.append(f"{name}\t{expected}\t{classes}")


def real(stem, obj, **kw):
    counts = validated_counts(obj)
    assert counts, stem
    for suffix, data in forms(obj, **kw):
        write(f"{stem}.{suffix}", data, "ok", counts)
        if suffix.endswith(".pkl"):
            assert type(pickle.loads(data)) is type(obj), stem
        elif suffix == "joblib":
            assert type(joblib.load(io.BytesIO(data))) is type(obj), stem


def crafted(stem, obj, code, counts, **kw):
    # Never loaded here: these crash or corrupt the process that loads them.
    for suffix, data in forms(obj, **kw):
        write(f"crafted_{stem}.{suffix}", data, code, counts)


# ---------------------------------------------------------------- real models
rng = np.random.RandomState(0)
X = rng.rand(60, 4)
y = (X[:, 0] + X[:, 1] > 1).astype(int) + (X[:, 2] > 0.5)
Xc = X.copy()
Xc[:, 3] = rng.randint(0, 5, size=60)


def models():
    yield "decision_tree", DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y)
    yield "decision_tree_reg", DecisionTreeRegressor(max_depth=3, random_state=0).fit(
        X, np.c_[X[:, 0], X[:, 1]]
    )
    yield "random_forest", RandomForestClassifier(
        n_estimators=3, max_depth=3, random_state=0
    ).fit(X, y)
    yield "gradient_boosting", GradientBoostingClassifier(
        n_estimators=2, max_depth=2, random_state=0
    ).fit(X, y)
    yield "hist_gradient_boosting", HistGradientBoostingClassifier(
        max_iter=3, categorical_features=[3], min_samples_leaf=5, random_state=0
    ).fit(Xc, np.isin(Xc[:, 3], [1, 3]).astype(int) + (Xc[:, 0] > 0.5))
    yield "kneighbors_kd", KNeighborsClassifier(algorithm="kd_tree", leaf_size=5).fit(X, y)
    yield "kneighbors_ball", KNeighborsClassifier(algorithm="ball_tree", leaf_size=5).fit(X, y)
    yield "kdtree", KDTree(X, leaf_size=4)
    yield "balltree", BallTree(X, leaf_size=4)
    m = sp.random(6, 7, density=0.4, format="csr", random_state=0)
    for f in ("csr", "csc", "coo", "bsr"):
        yield f"{f}_matrix", sp.csr_matrix(m).asformat(f)
        yield f"{f}_array", sp.csr_array(m).asformat(f)
    # Read-only arrays travel as READONLY_BUFFER(NEXT_BUFFER) in protocol 5.
    ro = sp.csr_matrix(m)
    for a in (ro.data, ro.indices, ro.indptr):
        a.flags.writeable = False
    yield "csr_readonly", ro


def tree_state(tree, **edits):
    state = tree.__getstate__()
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    state["nodes"] = clean_nodes(state["nodes"])
    for key, fn in edits.items():
        state[key] = fn(state[key])
    return state


class CraftedTree:
    """Pickles as a `Tree` with the given state (what a crafted file holds)."""

    def __init__(self, tree, state):
        self.args = (tree.n_features, tree.n_classes, tree.n_outputs)
        self.state = state

    def __reduce__(self):
        return (Tree, self.args, self.state)


class LyingArray:
    """Pickles as `_frombuffer(buf, dtype, shape, 'C')` with a shape the bytes do not fill."""

    def __init__(self, array, extra_rows):
        self.array = array
        self.shape = (array.shape[0] + extra_rows,) + array.shape[1:]

    def __reduce_ex__(self, protocol):
        from numpy._core.numeric import _frombuffer

        raw = self.array.tobytes()
        buf = pickle.PickleBuffer(bytearray(raw)) if protocol >= 5 else raw
        return (_frombuffer, (buf, self.array.dtype, self.shape, "C"))


class CraftedKD:
    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return (kd_new_obj, (KDTree,), self.state)


def internal_nodes(tree):
    return [i for i in range(tree.node_count) if tree.children_left[i] != -1]


def with_node(field, index, value):
    def edit(nodes):
        nodes[field][index] = value
        return nodes

    return edit


def crafted_trees(model):
    tree = model.tree_
    inner = internal_nodes(tree)
    second = inner[1]
    tree_count = {"sklearn.tree._tree.Tree": 1}
    cases = [
        ("tree_child_out_of_range", "tree.child_out_of_range",
         dict(nodes=with_node("left_child", second, 10**6))),
        ("tree_cycle", "tree.cycle", dict(nodes=with_node("left_child", second, 0))),
        ("tree_self_loop", "tree.cycle", dict(nodes=with_node("right_child", second, second))),
        ("tree_negative_feature", "tree.feature_out_of_range",
         dict(nodes=with_node("feature", 0, -3))),
        ("tree_feature_too_big", "tree.feature_out_of_range",
         dict(nodes=with_node("feature", second, tree.n_features))),
        ("tree_node_count", "tree.node_count", dict(node_count=lambda n: n + 3)),
        ("tree_value_shape", "tree.value_shape", dict(values=lambda v: v[:-1].copy())),
        ("tree_max_depth", "tree.max_depth", dict(max_depth=lambda d: 1)),
    ]
    for stem, code, edits in cases:
        crafted(stem, CraftedTree(tree, tree_state(tree, **edits)), code, tree_count)

    def shared(nodes):
        nodes["right_child"][0] = nodes["left_child"][0]
        return nodes

    crafted("tree_shared_node", CraftedTree(tree, tree_state(tree, nodes=shared)),
            "tree.shared_node", tree_count)
    crafted("tree_byte_length", CraftedTree(
        tree, tree_state(tree, nodes=lambda n: LyingArray(n, 2))),
        "content.undecodable", tree_count, jl=False)
    # A crafted tree inside a whole estimator, as a user would receive it:
    # `predict` on it crashes the process (tests/python/test_crafted_tree.py).
    evil = DecisionTreeClassifier(random_state=0).fit(X, y)
    evil.tree_ = CraftedTree(evil.tree_, tree_state(
        evil.tree_, nodes=with_node("right_child", 0, 1 << 40)))
    crafted("estimator_child_out_of_range", evil, "tree.child_out_of_range",
            {**tree_count, "sklearn.tree._classes.DecisionTreeClassifier": 1})


def crafted_estimators(fitted):
    """Estimators whose `n_features_in_` does not bound their trees' features."""
    narrow = scrub(copy.deepcopy(fitted["decision_tree"]))
    narrow.n_features_in_ = 2
    crafted("estimator_n_features", narrow, "tree.n_features", validated_counts(narrow))
    unchecked = scrub(copy.deepcopy(fitted["decision_tree"]))
    del unchecked.n_features_in_
    crafted("estimator_no_n_features", unchecked, "tree.n_features", validated_counts(unchecked))
    gb = scrub(copy.deepcopy(fitted["gradient_boosting"]))
    gb.n_features_in_ = 2
    crafted("gradient_boosting_n_features", gb, "tree.n_features", validated_counts(gb))
    hgb = scrub(copy.deepcopy(fitted["hist_gradient_boosting"]))
    hgb.n_features_in_ = 1
    crafted("hist_gradient_boosting_n_features", hgb, "hist.feature_out_of_range",
            validated_counts(hgb))


def crafted_hist(model):
    pred = next(
        p for stage in model._predictors for p in stage if p.nodes["is_categorical"].any()
    )
    count = {"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor": 1}

    def variant(edit):
        nodes = pred.nodes.copy()
        edit(nodes)
        return TreePredictor(nodes, pred.binned_left_cat_bitsets, pred.raw_left_cat_bitsets)

    inner = [i for i in range(len(pred.nodes)) if not pred.nodes["is_leaf"][i]]
    cat = [i for i in inner if pred.nodes["is_categorical"][i]]
    assert cat, "the fixture model needs a categorical split"
    crafted("hist_child_out_of_range", variant(
        lambda n: n["left"].__setitem__(inner[0], 10**6)), "hist.node_out_of_range", count)
    crafted("hist_cycle", variant(
        lambda n: n["right"].__setitem__(inner[-1], 0)), "hist.cycle", count)
    crafted("hist_negative_feature", variant(
        lambda n: n["feature_idx"].__setitem__(inner[0], -1)), "hist.feature_out_of_range", count)
    crafted("hist_bitset", variant(
        lambda n: n["bitset_idx"].__setitem__(cat[0], 50)), "hist.bitset_out_of_range", count)


def crafted_kd():
    tree = KDTree(X, leaf_size=4)
    count = {"sklearn.neighbors._kd_tree.KDTree": 1}

    def variant(index, edit):
        state = list(tree.__getstate__())
        state[index] = edit(state[index].copy())
        return CraftedKD(tuple(state))

    def idx(a):
        a[3] = len(X) + 7
        return a

    def node_end(a):
        a["idx_end"][1] = len(X) + 1
        return a

    crafted("kdtree_idx_array", variant(1, idx), "neighbors.index_out_of_range", count)
    ball = BallTree(X, leaf_size=4)
    state = list(ball.__getstate__())
    state[3] = np.zeros((2,) + state[3].shape[1:])  # a KD tree's two bound planes

    class CraftedBall:
        def __reduce__(self):
            return (ball_new_obj, (BallTree,), tuple(state))

    crafted("balltree_node_bounds", CraftedBall(), "neighbors.node_bounds",
            {"sklearn.neighbors._ball_tree.BallTree": 1})
    crafted("kdtree_node_data", variant(2, node_end), "neighbors.node_data", count)
    crafted("kdtree_node_bounds", variant(3, lambda b: b[:, :-1].copy()),
            "neighbors.node_bounds", count)


def crafted_sparse():
    m = sp.random(6, 7, density=0.4, format="csr", random_state=0)

    def csr(edit, cls=sp.csr_matrix):
        x = cls(m).copy()
        edit(x)
        return x

    def swap_indptr(x):
        x.indptr[2], x.indptr[3] = x.indptr[3] + 1, x.indptr[2]

    def big_index(x):
        x.indices[0] = x.shape[1]

    crafted("csr_indptr", csr(swap_indptr), "sparse.indptr",
            {"scipy.sparse._csr.csr_matrix": 1})
    crafted("csr_array_indices", csr(big_index, sp.csr_array), "sparse.indices",
            {"scipy.sparse._csr.csr_array": 1})
    c = sp.csc_matrix(m)
    c.indices[-1] = c.shape[0] + 2
    crafted("csc_indices", c, "sparse.indices", {"scipy.sparse._csc.csc_matrix": 1})
    b = sp.bsr_array(sp.random(6, 8, density=0.5, random_state=1), blocksize=(2, 2))
    b.indices[0] = 4  # 8 columns are 4 blocks
    crafted("bsr_indices", b, "sparse.indices", {"scipy.sparse._bsr.bsr_array": 1})
    coo = sp.coo_array(m)
    coo.coords = (coo.coords[0].copy(), coo.coords[1].copy())
    coo.coords[0][1] = 99
    crafted("coo_row", coo, "sparse.coords", {"scipy.sparse._coo.coo_array": 1})
    # A state dict that sets `indptr` twice (the key `_shape` renamed in the
    # bytes): which value the object got depends on when the second was set.
    for p in (2, 4, 5):
        data = pickle.dumps(sp.csr_matrix(m), protocol=p)
        assert data.count(b"_shape") == 1
        write(f"crafted_csr_duplicate_key.p{p}.pkl", data.replace(b"_shape", b"indptr"),
              "content.duplicate_key", {"scipy.sparse._csr.csr_matrix": 1})


def py2_array():
    """A protocol 1 array as Python 2 and NumPy 1.x wrote it: `numpy.core`
    names, a big-endian dtype and the raw data as a Python 2 `str`."""
    raw = np.array([1, -2, 3], dtype=">i8").tobytes()
    data = (
        b"cnumpy.core.multiarray\n_reconstruct\nq\x00(cnumpy\nndarray\nq\x01(K\x00tU\x01btR"
        b"(K\x01(K\x03tcnumpy\ndtype\n(U\x02i8K\x00K\x01tR"
        b"(K\x03U\x01>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbK\x00"
        + b"U" + bytes([len(raw)]) + raw + b"tb."
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = pickle.loads(data, encoding="latin1")
    assert loaded.tolist() == [1, -2, 3] and loaded.dtype.byteorder in ">=", loaded.dtype.str
    write("py2_ndarray.p1.pkl", data, "array", {})


def dtype_fanout():
    """A small pickle whose dtype reaches 27,931 dtypes: 30 fields of 30
    fields of 30 bytes, each level one memoized dtype shared by its fields."""
    inner = np.dtype([(f"b{i}", "u1") for i in range(30)])
    mid = np.dtype([(f"m{i}", inner) for i in range(30)])
    outer = np.dtype([(f"o{i}", mid) for i in range(30)])
    data = pickle.dumps(np.zeros(0, outer), protocol=4)
    assert len(data) < 4096, len(data)
    write("dtype_fanout.p4.pkl", data, "array", {})


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    fitted = {}
    for stem, obj in models():
        fitted[stem] = scrub(obj)
        real(stem, obj)
    crafted_trees(fitted["decision_tree"])
    crafted_estimators(fitted)
    crafted_hist(fitted["hist_gradient_boosting"])
    crafted_kd()
    crafted_sparse()
    py2_array()
    dtype_fanout()
    (OUT / "MANIFEST.txt").write_text("\n".join(manifest) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"{len(manifest)} fixtures, {total} bytes", file=sys.stderr)


def forest(path):
    """A 200-tree forest for timing (not a fixture): `--forest PATH` writes
    PATH.p4.pkl and PATH.p5.oob."""
    from sklearn.datasets import make_classification

    Xf, yf = make_classification(n_samples=int(os.environ.get("FOREST_SAMPLES", 5000)), n_features=20, random_state=0)
    model = RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=2).fit(Xf, yf)
    Path(f"{path}.p4.pkl").write_bytes(pickle.dumps(model, protocol=4))
    Path(f"{path}.p5.oob").write_bytes(dump_oob(model))
    nodes = sum(t.tree_.node_count for t in model.estimators_)
    print(f"{len(model.estimators_)} trees, {nodes} nodes", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--forest"]:
        forest(sys.argv[2])
    else:
        main()
