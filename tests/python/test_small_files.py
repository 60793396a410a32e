"""Small files are read once: the reader reads the file (or takes a ``bytes``
object) and the analysis and the unpickler read the pickle stream in place."""

from __future__ import annotations

import numpy as np
import pytest

import amber
from amber import _amber


def _model() -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {"w": rng.normal(size=50), "names": ["a", "b"], "big": rng.normal(size=20_000)}


def _check_same(loaded: dict[str, object], original: dict[str, object]) -> None:
    assert loaded["names"] == original["names"]
    np.testing.assert_array_equal(loaded["w"], original["w"])
    np.testing.assert_array_equal(loaded["big"], original["big"])


def test_a_small_file_is_one_bytes_object_the_stream_is_read_in(tmp_path):
    model = _model()
    path = tmp_path / "m.amber"
    amber.dump(model, path)
    data = path.read_bytes()
    reader = _amber.Reader.open(str(path))
    stream, report, filled = reader.checked_pickle([], None, True)
    # The whole file, not a copy of the stream.
    assert stream == data
    start = reader.stream_offset()
    assert start > 0 and stream[start : start + 2] == b"\x80\x05"
    assert report is not None and len(filled) == 1
    _check_same(amber.load(path), model)
    _check_same(amber.load(path, trusted=True), model)


def test_bytes_are_read_in_place_and_other_buffers_copied():
    model = _model()
    data = amber.dumps(model)
    reader = _amber.Reader.from_bytes(data)
    stream, _, _ = reader.checked_pickle(None)
    assert stream is data
    start = reader.stream_offset()
    assert start > 0 and stream[start : start + 2] == b"\x80\x05"
    copied = _amber.Reader.from_bytes(bytearray(data))
    stream, _, _ = copied.checked_pickle(None)
    assert stream is not data and copied.stream_offset() == 0
    assert stream[:2] == b"\x80\x05"
    _check_same(amber.loads(data), model)
    _check_same(amber.loads(bytearray(data)), model)
    _check_same(amber.loads(memoryview(data)), model)


def test_a_compressed_stream_is_decoded_into_its_own_bytes(tmp_path):
    model = _model()
    path = tmp_path / "m.amber"
    amber.dump(model, path, compress="zstd")
    reader = _amber.Reader.open(str(path))
    stream, _, _ = reader.checked_pickle([], None, True)
    assert reader.stream_offset() == 0
    assert stream[:2] == b"\x80\x05" and stream.endswith(b".")
    assert len(stream) < path.stat().st_size * 4
    _check_same(amber.load(path), model)


def test_a_damaged_stream_in_a_file_read_at_once_is_refused(tmp_path):
    path = tmp_path / "m.amber"
    amber.dump(_model(), path)
    data = bytearray(path.read_bytes())
    start = _amber.Reader.from_bytes(bytes(data))
    start.checked_pickle(None)
    at = start.stream_offset() + 10
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(amber.ChecksumError):
        amber.load(path)
    with pytest.raises(amber.ChecksumError):
        amber.load(path, trusted=True)
    with pytest.raises(amber.ChecksumError):
        amber.loads(bytes(data))


def _hist_model():
    from sklearn.ensemble import HistGradientBoostingRegressor

    X = np.random.RandomState(0).rand(300, 4)
    return HistGradientBoostingRegressor(max_iter=3, random_state=0).fit(X, X[:, 0]), X


@pytest.mark.parametrize("stage", [0, 2])
def test_a_predictor_splitting_past_the_estimators_features_is_refused(tmp_path, stage):
    model, _ = _hist_model()
    predictor = model._predictors[stage][0]
    predictor.nodes = predictor.nodes.copy()
    split = int(np.flatnonzero(predictor.nodes["is_leaf"] == 0)[-1])
    predictor.nodes["feature_idx"][split] = model.n_features_in_
    path = tmp_path / "m.amber"
    amber.dump(model, path)
    with pytest.raises(amber.UnsafeModelError) as refused:
        amber.load(path)
    codes = [f.code for f in refused.value.report.findings]
    assert codes == ["hist.feature_out_of_range"], codes
    assert f"splits on feature {model.n_features_in_}" in str(refused.value)


def test_a_leaf_s_feature_is_not_read(tmp_path):
    model, X = _hist_model()
    predictor = model._predictors[1][0]
    predictor.nodes = predictor.nodes.copy()
    leaf = int(np.flatnonzero(predictor.nodes["is_leaf"] == 1)[0])
    predictor.nodes["feature_idx"][leaf] = 1 << 40
    path = tmp_path / "m.amber"
    amber.dump(model, path)
    np.testing.assert_array_equal(amber.load(path).predict(X[:5]), model.predict(X[:5]))
