"""amber end to end: train a scikit-learn pipeline, save it with metadata, load it
in a fresh Python process, predict, and look inside the file without Python; then
refuse a hostile pickle, open and convert a joblib file, and keep versions in a store.

Run with `make demo` (which sets everything up first).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import amber

workdir = tempfile.mkdtemp(prefix="amber-demo-")
path = os.path.join(workdir, "churn.amber")

# 1. Train a pipeline: scaling for numeric columns, one-hot for a categorical one, a forest on top.
X, y = make_classification(n_samples=20_000, n_features=12, random_state=0)
plan = np.random.default_rng(0).integers(0, 4, size=(len(X), 1)).astype(float)
X = np.hstack([X, plan])
model = Pipeline(
    [
        ("prep", ColumnTransformer([("num", StandardScaler(), list(range(12))), ("plan", OneHotEncoder(), [12])])),
        ("forest", RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=-1)),
    ]
).fit(X, y)
expected = model.predict_proba(X[:1000])
np.save(os.path.join(workdir, "probe.npy"), X[:1000])
np.save(os.path.join(workdir, "expected.npy"), expected)

# 2. Save it, with metadata anyone can read back without unpickling.
start = time.perf_counter()
amber.dump(model, path, metadata={"dataset": "synthetic churn", "rows": len(X), "accuracy": float(model.score(X, y))})
print(f"saved   {path}  ({os.path.getsize(path) / 1e6:.1f} MB in {time.perf_counter() - start:.3f} s)")

# 3. Load it in a fresh process, the way a serving job would, and predict.
loader = f"""
import time, numpy as np, amber
import sklearn.pipeline, sklearn.ensemble, sklearn.compose  # import time is not load time
start = time.perf_counter()
model = amber.load({path!r})
took = time.perf_counter() - start
probe = np.load({os.path.join(workdir, 'probe.npy')!r})
same = np.array_equal(model.predict_proba(probe), np.load({os.path.join(workdir, 'expected.npy')!r}))
print(f"loaded  {{type(model).__name__}} in a fresh process in {{took:.3f}} s; predictions identical: {{same}}")
raise SystemExit(0 if same else 1)
"""
subprocess.run([sys.executable, "-c", loader], check=True)

# 4. What is inside, without unpickling: the manifest, from Python and from the Rust CLI.
info = amber.info(path)
print("info    ", json.dumps({k: info[k] for k in ("format_version", "created", "metadata")}))
print("        ", json.dumps(info["environment"]["packages"]))
cli = shutil.which("amber", path=os.path.dirname(sys.executable)) or shutil.which("amber")
if cli:
    subprocess.run([cli, "info", path], check=True)
    subprocess.run([cli, "verify", path], check=True)
    subprocess.run([cli, "scan", path], check=True)

# 5. A file from elsewhere that would run code: refused before anything runs, with the reason.
marker = os.path.join(workdir, "pwned")
evil = os.path.join(workdir, "evil.pkl")
with open(evil, "wb") as f:
    f.write(b"\x80\x04cos\nsystem\n(X" + len(f"touch {marker}").to_bytes(4, "little") + f"touch {marker}".encode() + b"tR.")
try:
    amber.load(evil)
except amber.UnsafeModelError as e:
    print("refused ", str(e).splitlines()[1].strip())
assert not os.path.exists(marker), "the payload ran"

# 6. An existing joblib file: loaded through the same policy, then converted to amber.
import joblib  # noqa: E402  (only this step needs it)

old = os.path.join(workdir, "churn.joblib")
joblib.dump(model, old, compress=3)
start = time.perf_counter()
same = np.array_equal(amber.load(old).predict_proba(X[:1000]), expected)
print(f"joblib  loaded {os.path.basename(old)} safely in {time.perf_counter() - start:.3f} s; predictions identical: {same}")
amber.convert(old, os.path.join(workdir, "converted.amber"), check=True, compress=True)
print(f"convert {os.path.basename(old)} -> converted.amber, checked equal")

# 7. A model store: versions side by side, an alias, and a rollback.
store = amber.Store(os.path.join(workdir, "models"))
v1 = store.save(model, "churn", alias="production", metadata={"note": "first"})
v2 = store.save(model, "churn", metadata={"note": "retrained"})
store.set_alias("churn", "production", v2.version)
store.rollback("churn", "production")
print(f"store   churn versions {[r.version for r in store.versions('churn')]}, production -> "
      f"{store.ref('churn', alias='production').version}")
shutil.rmtree(workdir)
print("demo ok")
