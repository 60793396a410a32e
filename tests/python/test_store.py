"""amber.Store and `amber store`/`amber diff`: layout, versions, aliases,
errors, and real processes for concurrency (8 writers x 20 saves) and for
kill -9 in the middle of saves (50 runs), each followed by the full
consistency check."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import amber

AMBER = shutil.which("amber")
FILE_NAME = re.compile(r"churn_v(\d+\.\d+\.\d+)_(\d{8}T\d{6}Z)\.amber")


@pytest.fixture(scope="module")
def model() -> LogisticRegression:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


def assert_consistent(store: amber.Store) -> dict:
    """The full check: Rust's (files intact, aliases valid) plus loading every version."""
    report = store.check()
    assert report["problems"] == [], report["problems"]
    for name in store.list():
        versions = store.versions(name)
        assert len({v.version for v in versions}) == len(versions)
        for ref in versions:
            assert not os.path.basename(ref.path).startswith(".")
            amber.load(ref.path)
        for alias, entry in store.aliases(name).items():
            assert entry["version"] in {v.version for v in versions}, alias
    return report


def test_save_load_and_layout(tmp_path, model) -> None:
    store = amber.Store(tmp_path / "store")
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    first = store.save(model, "churn", metadata={"auc": 0.91}, alias="production")
    assert isinstance(first, amber.ModelRef) and first.version == "1.0.0"
    assert before <= first.created <= dt.datetime.now(dt.timezone.utc)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.version = "2.0.0"  # type: ignore[misc]
    second = store.save(model, "churn", compress="zstd")
    assert second.version == "1.0.1"
    store.save(model, "churn", version="1.2.0")
    # Plain amber files with readable names, read-only, in ROOT/<name>/.
    files = sorted(p.name for p in (tmp_path / "store" / "churn").iterdir())
    assert [f for f in files if not f.startswith(".")][-1] == "store.json"
    matches = [FILE_NAME.fullmatch(f) for f in files if f.endswith(".amber")]
    assert [m.group(1) for m in matches if m] == ["1.0.0", "1.0.1", "1.2.0"]
    assert not os.access(first.path, os.W_OK) or os.geteuid() == 0
    assert os.stat(first.path).st_mode & 0o222 == 0
    assert amber.info(first.path)["metadata"] == {"auc": 0.91}
    assert amber.info(second.path)["entries"][0]["codec"] == "zstd"
    loaded = store.load("churn")
    assert isinstance(loaded, LogisticRegression)
    assert store.ref("churn").version == "1.2.0"
    np.testing.assert_array_equal(store.load("churn", alias="production").coef_, model.coef_)
    assert store.load("churn", "1.0.1", mmap_mode="r").n_features_in_ == 4
    assert store.list() == ["churn"]
    assert [v.version for v in store.versions("churn")] == ["1.0.0", "1.0.1", "1.2.0"]
    info = store.info("churn", "1.0.0")
    assert info["store"]["aliases"] == ["production"] and info["store"]["version"] == "1.0.0"
    assert info["environment"]["distributions"]["sklearn"]["name"] == "scikit-learn"
    assert_consistent(store)


def test_aliases_rollback_and_delete(tmp_path) -> None:
    store = amber.Store(tmp_path)
    for i in range(3):
        store.save({"i": i}, "m")
    store.set_alias("m", "prod", "1.0.0")
    store.set_alias("m", "prod", "1.0.2")
    assert store.load("m", alias="prod") == {"i": 2}
    assert store.rollback("m", "prod").version == "1.0.0"
    assert store.load("m", alias="prod") == {"i": 0}
    with pytest.raises(amber.NoHistoryError, match="no previous target"):
        store.rollback("m", "prod")
    history = store.aliases("m")["prod"]["history"]
    assert [(e["action"], e.get("from"), e["version"]) for e in history] == [
        ("set", None, "1.0.0"),
        ("set", "1.0.0", "1.0.2"),
        ("rollback", "1.0.2", "1.0.0"),
    ]
    with pytest.raises(amber.AliasInUseError, match="`prod`"):
        store.delete("m", "1.0.0")
    store.delete("m", "1.0.1")
    assert [v.version for v in store.versions("m")] == ["1.0.0", "1.0.2"]
    store.delete("m", "1.0.0", force=True)
    assert "prod" not in store.aliases("m")
    assert_consistent(store)


@pytest.mark.parametrize(
    ("call", "error", "base", "message"),
    [
        (lambda s: s.save(1, "../etc"), amber.InvalidNameError, ValueError, "invalid model name"),
        (lambda s: s.save(1, "a/b"), amber.InvalidNameError, ValueError, "path separators"),
        (lambda s: s.save(1, ""), amber.InvalidNameError, ValueError, "empty"),
        (lambda s: s.save(1, "m", version="1.0"), amber.InvalidVersionError, ValueError, "semantic version"),
        (lambda s: s.save(1, "m", version="1.0.0+b1"), amber.InvalidVersionError, ValueError, "build metadata"),
        (lambda s: s.save(1, "m", version="1.0.0"), amber.VersionExistsError, FileExistsError, "already has version 1.0.0"),
        (lambda s: s.save(1, "m", alias="no/slash"), amber.InvalidNameError, ValueError, "invalid alias name"),
        (lambda s: s.load("nope"), amber.UnknownModelError, LookupError, "no model `nope`"),
        (lambda s: s.load("m", "3.0.0"), amber.UnknownVersionError, LookupError, "it has: 1.0.0"),
        (lambda s: s.load("m", alias="prod"), amber.UnknownAliasError, LookupError, "no alias `prod`"),
        (lambda s: s.set_alias("m", "prod", "9.9.9"), amber.UnknownVersionError, LookupError, "9.9.9"),
        (lambda s: s.rollback("m", "prod"), amber.UnknownAliasError, LookupError, "prod"),
        (lambda s: s.delete("m", "2.0.0"), amber.UnknownVersionError, LookupError, "2.0.0"),
        (lambda s: s.versions("ghost"), amber.UnknownModelError, LookupError, "ghost"),
    ],
)
def test_misuse_gives_typed_errors(tmp_path, call, error, base, message) -> None:
    store = amber.Store(tmp_path)
    store.save({"a": 1}, "m")
    with pytest.raises(error, match=re.escape(message)) as caught:
        call(store)
    assert isinstance(caught.value, amber.StoreError) and isinstance(caught.value, base)
    assert isinstance(caught.value, amber.AmberError) and caught.value.code.startswith("store.")
    # A refused save leaves nothing behind, not even a hidden file.
    assert [n for n in os.listdir(tmp_path / "m") if n.startswith(".") and n != ".lock"] == []
    assert [v.version for v in store.versions("m")] == ["1.0.0"]


def test_failed_dump_leaves_no_pending_file(tmp_path) -> None:
    store = amber.Store(tmp_path)
    with pytest.raises(TypeError, match=r"metadata\['x'\]"):
        store.save({"a": 1}, "m", metadata={"x": object()})
    assert [n for n in os.listdir(tmp_path / "m") if n != ".lock"] == []
    with pytest.raises(amber.UnknownModelError):
        store.versions("m")
    assert store.list() == []


def test_corrupt_registry_is_reported(tmp_path) -> None:
    store = amber.Store(tmp_path)
    store.save(1, "m", alias="prod")
    (tmp_path / "m" / "store.json").chmod(0o644)
    (tmp_path / "m" / "store.json").write_text("{ broken")
    with pytest.raises(amber.StoreCorruptError, match="store.json"):
        store.load("m", alias="prod")
    assert [p["code"] for p in store.check()["problems"]] == ["check.registry"]


WRITER = """
import sys
import numpy as np
from sklearn.linear_model import LogisticRegression
import amber

root, worker, saves = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(worker)
X = rng.normal(size=(60, 4))
model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
store = amber.Store(root)
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
for i in range(saves):
    ref = store.save(model, "churn", metadata={"worker": worker, "i": i}, alias="latest" if i % 5 == 0 else None)
    print(ref.version, worker, i, flush=True)
"""


def test_concurrent_writers_in_processes(tmp_path) -> None:
    writers, saves = 8, 20
    root = tmp_path / "store"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [
        subprocess.Popen([sys.executable, str(script), str(root), str(w), str(saves)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
        for w in range(writers)
    ]
    for p in procs:  # start them together, once every one has imported sklearn
        assert p.stdout.readline() == "ready\n"
    store = amber.Store(root)
    seen_errors: list[BaseException] = []
    stop = threading.Event()

    def read_while_writing() -> None:
        # Readers take no lock: whatever they list must be complete and loadable.
        while not stop.is_set():
            try:
                for ref in store.versions("churn")[-3:]:
                    amber.load(ref.path)
            except amber.UnknownModelError:
                pass
            except BaseException as error:  # noqa: BLE001
                seen_errors.append(error)
                return

    reader = threading.Thread(target=read_while_writing)
    reader.start()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    stop.set()
    reader.join()
    assert [p.returncode for p in procs] == [0] * writers
    assert seen_errors == []
    saved = [line.split() for out in outputs for line in out.splitlines()]
    assert len(saved) == writers * saves
    versions = [v.version for v in store.versions("churn")]
    assert len(versions) == writers * saves
    assert sorted(v for v, _, _ in saved) == sorted(versions)  # distinct, nothing lost
    assert versions[0] == "1.0.0" and versions[-1] == f"1.0.{writers * saves - 1}"
    # Each version holds what its writer saved.
    by_version = {v: (int(w), int(i)) for v, w, i in saved}
    for ref in store.versions("churn")[::17]:
        assert amber.info(ref.path)["metadata"] == dict(zip(("worker", "i"), by_version[ref.version]))
    report = assert_consistent(store)
    assert report["leftovers"] == []
    assert len(store.aliases("churn")["latest"]["history"]) == writers * (saves // 5)


SAVER = """
import sys
import numpy as np
import amber

store = amber.Store(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
i = 0
while True:
    if i == 1:  # one save done (and warm): from now on the parent may kill at any moment
        sys.stdout.write("ready\\n"); sys.stdout.flush()
    size = int(rng.integers(1_000, 400_000))
    store.save({"w": np.full(size, i, dtype=np.float64), "i": i}, "churn", alias="prod" if i % 2 else None,
               compress="lz4" if i % 3 == 0 else None)
    if i % 4 == 3:
        store.set_alias("churn", "staging", store.ref("churn").version)
    if i % 7 == 6:
        try:
            store.rollback("churn", "prod")
        except amber.NoHistoryError:
            pass
    i += 1
"""


def test_kill_9_during_saves_leaves_a_consistent_store(tmp_path) -> None:
    runs = 50
    root = tmp_path / "store"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    store = amber.Store(root)
    rng = random.Random(1234)
    loaded: set[str] = set()
    total_leftovers = 0
    for run in range(runs):
        proc = subprocess.Popen([sys.executable, str(script), str(root), str(run)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "ready\n"
        # Saves take 10-40 ms here: the kill lands anywhere in prepare, dump, fsync, commit or alias writes.
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        report = store.check()
        assert report["problems"] == [], (run, report["problems"])
        total_leftovers = len(report["leftovers"])
        for ref in store.versions("churn") if "churn" in store.list() else []:
            if ref.version not in loaded:
                value = amber.load(ref.path)
                assert value["w"].shape[0] >= 1_000 and (value["w"] == value["i"]).all()
                loaded.add(ref.version)
        for alias, entry in (store.aliases("churn") if "churn" in store.list() else {}).items():
            assert entry["version"] in loaded, alias
            json.dumps(entry)
    assert len(loaded) >= runs  # every run completed its first save before the kill
    # Leftovers of killed saves are hidden temporary files, never listed as versions.
    hidden = [n for n in os.listdir(root / "churn") if n.startswith(".") and n != ".lock"]
    assert len(hidden) == total_leftovers
    assert len(store.prune(older_than=3600)) == 0  # all recent: kept, they could be saves in progress
    assert len(store.prune(older_than=0)) == total_leftovers
    report = assert_consistent(store)
    assert report["leftovers"] == [] and len(store.versions("churn")) == len(loaded)


@pytest.mark.skipif(AMBER is None, reason="the amber CLI is not on PATH")
def test_cli_store_commands(tmp_path) -> None:
    store = amber.Store(tmp_path)
    for i in range(3):
        store.save({"i": i}, "churn", alias="production" if i < 2 else None)
    store.save({"x": 1}, "fraud")

    def cli(*args: str, code: int = 0) -> str:
        done = subprocess.run([AMBER, "store", *args], capture_output=True, text=True)
        assert done.returncode == code, done.stderr
        return done.stdout

    listing = json.loads(cli("ls", str(tmp_path), "--json"))
    assert [(m["name"], m["versions"], m["newest"]["version"]) for m in listing["models"]] == [
        ("churn", 3, "1.0.2"), ("fraud", 1, "1.0.0")]
    assert listing["models"][0]["aliases"] == {"production": "1.0.1"}
    assert "production=1.0.1" in cli("ls", str(tmp_path))
    shown = json.loads(cli("show", str(tmp_path), "churn", "--json"))
    assert [v["version"] for v in shown["versions"]] == ["1.0.0", "1.0.1", "1.0.2"]
    assert shown["versions"][1]["aliases"] == ["production"]
    assert "rollback goes to 1.0.0" in cli("show", str(tmp_path), "churn")
    moved = json.loads(cli("alias", str(tmp_path), "churn", "production", "1.0.2", "--json"))
    assert moved["version"]["version"] == "1.0.2"
    assert store.load("churn", alias="production") == {"i": 2}
    assert "rolled back from 1.0.2 to 1.0.1" in cli("rollback", str(tmp_path), "churn", "production")
    assert store.ref("churn", alias="production").version == "1.0.1"
    err = json.loads(cli("alias", str(tmp_path), "churn", "production", "7.0.0", "--json", code=2))
    assert err["code"] == "store.unknown_version"
    cli("rollback", str(tmp_path), "churn", "nope", code=2)
    cli("show", str(tmp_path), "../x", code=2)
    assert json.loads(cli("check", str(tmp_path), "--json"))["ok"] is True
    leftover = tmp_path / "churn" / ".pending-1-x.amber"
    leftover.write_bytes(b"partial")
    assert json.loads(cli("prune", str(tmp_path), "--json"))["removed"] == []
    assert json.loads(cli("prune", str(tmp_path), "--older-than-minutes", "0", "--json"))["removed"] == [str(leftover)]
    damaged = Path(store.ref("churn", "1.0.0").path)
    damaged.chmod(0o644)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    report = json.loads(cli("check", str(tmp_path), "--json", code=1))["report"]
    assert {p["code"] for p in report["problems"]} == {"check.damaged", "check.writable"}


@pytest.mark.skipif(AMBER is None, reason="the amber CLI is not on PATH")
def test_cli_diff(tmp_path, model) -> None:
    a = amber.dump(model, tmp_path / "a.amber", metadata={"auc": 0.9})
    same = amber.dump(model, tmp_path / "same.amber", metadata={"auc": 0.95}, compress="zstd")
    other = LogisticRegression(C=0.1).fit(np.eye(4), [0, 1, 0, 1])
    b = amber.dump(other, tmp_path / "b.amber")
    big1 = amber.dump({"w": np.arange(50_000.0), "v": np.ones(20_000)}, tmp_path / "big1.amber")
    w = np.arange(50_000.0)
    w[7] = -1
    big2 = amber.dump({"w": w, "v": np.ones((100, 200)), "extra": np.zeros(30_000)}, tmp_path / "big2.amber")

    def diff(x: str, y: str, code: int) -> dict:
        done = subprocess.run([AMBER, "diff", "--json", x, y], capture_output=True, text=True)
        assert done.returncode == code, done.stderr
        return json.loads(done.stdout)

    assert diff(a, a, 0)["identical_content"] is True
    r = diff(a, same, 0)  # same model, other metadata and storage
    assert r["metadata"] == [{"key": "auc", "a": 0.9, "b": 0.95}]
    assert r["pickle_changed"] is False
    r = diff(a, b, 1)
    assert r["pickle_changed"] is True and r["content_hash"]["a"] != r["content_hash"]["b"]
    r = diff(big1, big2, 1)
    assert r["entries"]["added"] == ["arrays/000002.npy"]
    changed = {c["name"]: c for c in r["entries"]["changed"]}
    assert changed["arrays/000000.npy"]["data_changed"] is True and changed["arrays/000000.npy"]["changes"] == []
    assert {c["key"] for c in changed["arrays/000001.npy"]["changes"]} == {"shape"}
    text = subprocess.run([AMBER, "diff", big1, big2], capture_output=True, text=True).stdout
    assert "added        arrays/000002.npy" in text and "data changed" in text
    missing = subprocess.run([AMBER, "diff", a, str(tmp_path / "missing.amber")], capture_output=True, text=True)
    assert missing.returncode == 2 and "missing.amber" in missing.stderr


def test_python_diff_matches_the_cli(tmp_path) -> None:
    a = amber.dump({"w": np.arange(40_000), "k": 1}, tmp_path / "a.amber", metadata={"run": 1, "tag": "x"})
    b = amber.dump({"w": np.arange(40_000), "k": 2}, tmp_path / "b.amber", metadata={"run": 2}, compress="lz4")
    report = amber.diff(a, b)
    assert report["identical_content"] is False and report["pickle_changed"] is True
    assert report["entries"]["changed"] == [
        {"name": "arrays/000000.npy", "data_changed": False, "changes": [{"key": "codec", "a": "none", "b": "lz4"}]}
    ]
    assert report["metadata"] == [{"key": "run", "a": 1, "b": 2}, {"key": "tag", "a": "x", "b": None}]
    assert amber.diff(a, a)["identical_content"] is True
    with pytest.raises(FileNotFoundError):
        amber.diff(a, tmp_path / "missing.amber")
    if AMBER:
        done = subprocess.run([AMBER, "diff", "--json", a, b], capture_output=True, text=True)
        assert done.returncode == 1
        cli = json.loads(done.stdout)
        assert (cli.pop("a"), cli.pop("b")) == (a, b)
        assert cli == report
