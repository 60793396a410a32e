"""A crafted scikit-learn tree pickle crashes the process that predicts with it.

This is why amber validates tree content (crates/amber-scan/src/content/):
`Tree.__setstate__` copies the node array without checking child indices,
and `predict` follows them in native code. Each case runs in a fresh
subprocess with plain `pickle`, independent of amber; the same crafted file
is among the Rust fixtures, where the validator refuses it
(`tree.child_out_of_range`). The same holds for the other validated types:
a KDTree index, a CSR column index (both SIGSEGV) and a HistGradientBoosting
node cycle (`predict` never returns).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from _testutil import run_python

FIXTURES = Path(__file__).resolve().parents[2] / "crates/amber-scan/tests/content/fixtures"

BUILD = """
import pickle
import numpy as np
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import Tree

rng = np.random.RandomState(0)
X = rng.rand(60, 4)
y = (X[:, 0] > 0.5).astype(int)
model = DecisionTreeClassifier(random_state=0).fit(X, y)

class Crafted:
    # Pickles as the model's Tree with one child index changed.
    def __init__(self, tree, child):
        self.args = (tree.n_features, tree.n_classes, tree.n_outputs)
        self.state = tree.__getstate__()
        self.state["nodes"] = self.state["nodes"].copy()
        if child is not None:
            self.state["nodes"]["right_child"][0] = child

    def __reduce__(self):
        return (Tree, self.args, self.state)
"""


def predict_in_child(child: int | None):
    code = BUILD + f"""
model.tree_ = Crafted(model.tree_, {child!r})
loaded = pickle.loads(pickle.dumps(model, protocol=5))
print(loaded.predict(X).sum(), flush=True)
"""
    return run_python(code, check=False, timeout=60)


def test_untouched_tree_round_trips():
    proc = predict_in_child(None)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[0]) > 0


def test_out_of_range_child_segfaults_predict():
    proc = predict_in_child(1 << 40)
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stderr)


def test_the_rust_fixture_is_a_real_threat():
    path = FIXTURES / "crafted_estimator_child_out_of_range.p4.pkl"
    code = f"""
import pickle
import numpy as np
model = pickle.loads(open({str(path)!r}, "rb").read())
X = np.random.RandomState(0).rand(60, 4)
print(model.predict(X))
"""
    proc = run_python(code, check=False, timeout=60)
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stderr)


def test_out_of_range_kdtree_index_segfaults_query():
    code = """
import pickle
import numpy as np
from sklearn.neighbors import KDTree
from sklearn.neighbors._kd_tree import newObj

X = np.random.RandomState(0).rand(60, 4)
state = list(KDTree(X, leaf_size=4).__getstate__())
state[1] = np.full_like(state[1], 1 << 40)  # idx_array

class Crafted:
    def __reduce__(self):
        return (newObj, (KDTree,), tuple(state))

print(pickle.loads(pickle.dumps(Crafted())).query(X[:5], k=3))
"""
    proc = run_python(code, check=False, timeout=60)
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stderr)


def test_out_of_range_csr_index_segfaults_matvec():
    code = """
import pickle
import numpy as np
import scipy.sparse as sp

m = sp.random(6, 7, density=0.4, format="csr", random_state=0)
m.indices = m.indices.astype(np.int64)
m.indptr = m.indptr.astype(np.int64)
m.indices[0] = 1 << 40
print(pickle.loads(pickle.dumps(m)) @ np.ones(7))
"""
    proc = run_python(code, check=False, timeout=60)
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stderr)


def test_hist_gradient_boosting_node_cycle_hangs_predict():
    code = """
import pickle
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

X = np.random.RandomState(0).rand(200, 4)
model = HistGradientBoostingRegressor(max_iter=2).fit(X, X[:, 0])
predictor = model._predictors[0][0]
predictor.nodes = predictor.nodes.copy()
predictor.nodes["left"][0] = predictor.nodes["right"][0] = 0
loaded = pickle.loads(pickle.dumps(model))
print("loaded", flush=True)
loaded.predict(X[:3])
print("returned", flush=True)
"""
    try:
        proc = run_python(code, check=False, timeout=8)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        assert "loaded" in out and "returned" not in out
    else:
        raise AssertionError(f"predict returned: {proc.returncode} {proc.stdout} {proc.stderr}")
