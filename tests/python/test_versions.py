"""Version capture on dump and the version check on load (F-15, F-18).

Other library versions are simulated by changing what dump records (a module's
``__version__`` at dump time, or the captured versions), never by installing
other versions.
"""

from __future__ import annotations

import json
import platform
import sys
import warnings

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression

import amber
from amber import _versions

from _testutil import run_python


@pytest.fixture(scope="module")
def model() -> LogisticRegression:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


def test_distribution_names_are_recorded(model) -> None:
    env = amber.info(amber.dumps(model))["environment"]
    assert env["packages"] == {"numpy": np.__version__, "sklearn": sklearn.__version__}
    assert env["distributions"] == {
        "numpy": {"name": "numpy", "version": np.__version__},
        "sklearn": {"name": "scikit-learn", "version": sklearn.__version__},
    }


def test_own_package_with_a_version_is_recorded(tmp_path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("__version__ = '2.5.0'\nclass Thing:\n    pass\n")
    code = f"""
        import sys, json, amber
        sys.path.insert(0, {str(tmp_path)!r})
        import mypkg
        amber.dump(mypkg.Thing(), {str(tmp_path / 'm.amber')!r})
        print(json.dumps(amber.info({str(tmp_path / 'm.amber')!r})["environment"]))
    """
    env = json.loads(run_python(code).stdout)
    assert env["packages"] == {"mypkg": "2.5.0"}
    assert "mypkg" not in env["distributions"]  # not installed as a distribution


def test_matching_versions_load_silently(model) -> None:
    data = amber.dumps(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        amber.loads(data)
        amber.loads(data, strict_versions=True)


def test_one_warning_lists_every_mismatch(model, monkeypatch, tmp_path) -> None:
    path = tmp_path / "m.amber"
    with monkeypatch.context() as m:
        m.setattr(sklearn, "__version__", "0.24.2")
        m.setattr(np, "__version__", "1.26.4")
        amber.dump(model, path)
    saved = amber.info(path)["environment"]["packages"]
    assert saved == {"numpy": "1.26.4", "sklearn": "0.24.2"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = amber.load(path)
    mismatch = [w for w in caught if issubclass(w.category, amber.VersionMismatchWarning)]
    assert len(mismatch) == 1, [str(w.message) for w in caught]
    warning = mismatch[0].message
    assert isinstance(warning, UserWarning)
    assert [(m.package, m.saved, m.running) for m in warning.mismatches] == [
        ("numpy", "1.26.4", np.__version__),
        ("sklearn", "0.24.2", sklearn.__version__),
    ]
    text = str(warning)
    assert "scikit-learn (sklearn): 0.24.2 saved" in text and sklearn.__version__ in text
    assert str(path) in text
    assert mismatch[0].filename == __file__  # points at the caller of load
    assert loaded.predict(np.zeros((1, 3))).shape == (1,)
    store = amber.Store(tmp_path / "store")
    with monkeypatch.context() as m:
        m.setattr(sklearn, "__version__", "0.24.2")
        store.save(model, "m")
    with pytest.warns(amber.VersionMismatchWarning) as caught:
        store.load("m")
    assert [w.filename for w in caught] == [__file__]
    with pytest.raises(amber.VersionMismatchError):
        store.load("m", strict_versions=True)


def test_strict_versions_raises_before_unpickling(model, monkeypatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(sklearn, "__version__", "0.24.2")
        data = amber.dumps(model)
    unpickled = []
    monkeypatch.setattr(amber._api, "_unpickle", lambda *a: unpickled.append(a))
    with pytest.raises(amber.VersionMismatchError) as caught:
        amber.loads(data, strict_versions=True)
    assert isinstance(caught.value, amber.AmberError)
    assert caught.value.code == "version.mismatch"
    assert [(m.package, m.saved, m.running) for m in caught.value.mismatches] == [
        ("sklearn", "0.24.2", sklearn.__version__)
    ]
    assert unpickled == []
    # The warning is also emitted before anything is unpickled.
    with pytest.warns(amber.VersionMismatchWarning):
        amber.loads(data)
    assert len(unpickled) == 1


def test_package_not_installed_any_more(tmp_path) -> None:
    pkg = tmp_path / "src" / "gonepkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '3.1.0'\nclass Model:\n    pass\n")
    path = tmp_path / "m.amber"
    run_python(f"""
        import sys, amber
        sys.path.insert(0, {str(tmp_path / 'src')!r})
        import gonepkg
        amber.dump({{"model": gonepkg.Model()}}, {str(path)!r})
    """)
    with pytest.raises(amber.VersionMismatchError) as caught:
        amber.load(path, strict_versions=True)
    assert [(m.package, m.saved, m.running) for m in caught.value.mismatches] == [
        ("gonepkg", "3.1.0", "not installed")
    ]
    assert "gonepkg: 3.1.0 saved, not installed" in str(caught.value)
    with pytest.warns(amber.VersionMismatchWarning, match="not installed"):
        with pytest.raises(amber.UnsafeModelError):
            amber.load(path)  # the policy refuses the class before any import
    with pytest.warns(amber.VersionMismatchWarning, match="not installed"):
        with pytest.raises(ModuleNotFoundError):
            amber.load(path, trusted=["gonepkg.Model"])


def test_python_minor_version_counts_patch_does_not(monkeypatch) -> None:
    running = platform.python_version()
    major, minor = sys.version_info[:2]
    with monkeypatch.context() as m:
        m.setattr(platform, "python_version", lambda: f"{major}.{minor}.999")
        same_minor = amber.dumps([1])
        m.setattr(platform, "python_version", lambda: f"{major}.{minor - 1}.0")
        other_minor = amber.dumps([1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert amber.loads(same_minor) == [1]
    with pytest.raises(amber.VersionMismatchError) as caught:
        amber.loads(other_minor, strict_versions=True)
    assert [(m.package, m.saved, m.running) for m in caught.value.mismatches] == [
        ("python", f"{major}.{minor - 1}.0", running)
    ]


def test_versions_of_packages_not_imported_come_from_metadata(tmp_path, monkeypatch) -> None:
    """A recorded package that the loading process has not imported is compared
    through its distribution's metadata, and is not imported by the check."""
    import threadpoolctl

    path = tmp_path / "m.amber"
    recorded = ({"threadpoolctl": "0.0.1"}, {"threadpoolctl": {"name": "threadpoolctl", "version": "0.0.1"}})
    with monkeypatch.context() as m:
        m.setattr(_versions, "capture", lambda modules: recorded)
        amber.dump({"a": 1}, path)
    code = f"""
        import sys, amber
        try:
            amber.load({str(path)!r}, strict_versions=True)
        except amber.VersionMismatchError as e:
            print([tuple(m[:3]) for m in e.mismatches])
        print("threadpoolctl" in sys.modules)
    """
    lines = run_python(code).stdout.splitlines()
    assert lines == [str([("threadpoolctl", "0.0.1", threadpoolctl.__version__)]), "False"]


def test_files_without_distributions_still_load() -> None:
    legacy = amber.info(
        __import__("pathlib").Path(__file__).parents[1] / "vectors" / "valid" / "legacy-no-content-hash.amber"
    )
    assert "distributions" not in legacy["environment"] and "content_hash" not in legacy
    manifest = {"environment": {"packages": {"numpy": "0.1"}}}
    found = _versions.mismatches(manifest)
    assert [(m.package, m.saved, m.running) for m in found] == [("numpy", "0.1", np.__version__)]
    assert _versions.mismatches({}) == [] and _versions.mismatches({"environment": "junk"}) == []


def test_hostile_package_names_are_not_looked_up(tmp_path) -> None:
    """A dotted name in a crafted manifest must not make the check import its parent."""
    parent = tmp_path / "evilparent"
    parent.mkdir()
    (parent / "__init__.py").write_text("import sys\nsys.stdout.write('IMPORTED\\n')\n")
    manifest = {"environment": {"packages": {"evilparent.child": "1.0", "../x": "1.0", "": "1", "evilparent": "2.0"}}}
    code = f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from amber import _versions
        print([tuple(m[:3]) for m in _versions.mismatches({manifest!r})])
    """
    out = run_python(code).stdout
    assert "IMPORTED" not in out
    # The plain name is found on the path (not imported): its version is unknown, so it is skipped.
    assert out.strip() == "[]"
