"""Checks that the default policy accepts every real model (research, not a test).

    /path/to/venv/bin/python crates/amber-scan/tools/check_coverage.py target/release/amber

Fits the same estimators, composites and plain data as collect_policy.py,
writes each as pickles (protocols 0 to 5), an uncompressed joblib file and
an amber file into a temporary directory, runs `amber scan --json` on all of
them and prints every file that is not `safe`, with its findings.
"""

import json
import pathlib
import pickle
import subprocess
import sys
import tempfile
import warnings

import joblib

import amber

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from collect_policy import composites, fit, plain_data  # noqa: E402


def main() -> None:
    warnings.simplefilter("ignore")
    from sklearn.utils import all_estimators

    exe = sys.argv[1]
    objs = [(f"plain{i}", o) for i, o in enumerate(plain_data())]
    objs += [(f"composite{i}", o) for i, o in enumerate(composites())]
    for name, cls in all_estimators():
        model = fit(cls)
        if model is not None:
            objs.append((name, model))
    with tempfile.TemporaryDirectory() as d:
        files = []
        for name, obj in objs:
            for proto in range(6):
                try:
                    data = pickle.dumps(obj, protocol=proto)
                except Exception:
                    continue
                p = pathlib.Path(d, f"{name}_p{proto}.pkl")
                p.write_bytes(data)
                files.append(p)
            for kind, write in (("joblib", lambda o, p: joblib.dump(o, p)), ("amber", lambda o, p: amber.dump(o, p))):
                p = pathlib.Path(d, f"{name}.{kind}")
                try:
                    write(obj, p)
                    files.append(p)
                except Exception as e:
                    print("cannot write", p.name, e)
        out = subprocess.run([exe, "scan", "--json", *map(str, files)], capture_output=True, text=True)
        bad = 0
        for line in out.stdout.splitlines():
            r = json.loads(line)
            if r.get("verdict") != "safe":
                bad += 1
                print(pathlib.Path(r["file"]).name, r.get("verdict"), r.get("error"),
                      [(f["code"], f.get("global"), f["message"][:120]) for f in r.get("findings", [])])
        print(f"{len(objs)} objects, {len(files)} files, {bad} not safe, exit {out.returncode}")


if __name__ == "__main__":
    main()
