"""The spec's test vectors (tests/vectors/), through the public Python API.

Each vector's .expected.json says what `amber.info` (open), `amber.load` (load),
`amber.load(mmap_mode="r")` (load_mmap) and `amber.verify` (verify) must do:
succeed, or raise an AmberError with that `code` (and `entry` where given).
Valid vectors must also load to the recorded canonical value.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import amber

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
sys.path.insert(0, str(VECTORS))
from canon import canon  # noqa: E402

CASES = sorted(p for p in VECTORS.glob("*/*.amber"))
OPERATIONS = {
    "open": amber.info,
    "load": amber.load,
    "load_mmap": lambda p: amber.load(p, mmap_mode="r"),
    "verify": amber.verify,
}


def test_vectors_exist() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_vector(path: Path, operation: str) -> None:
    expected = json.loads(path.with_name(path.name + ".expected.json").read_text())
    # `api`: where the public API differs from the format reader (a pickle opens as a pickle).
    want = expected.get("api", {}).get(operation, expected[operation])
    if want == "ok":
        if operation == "load_mmap" and expected.get("warns"):
            with pytest.warns(UserWarning, match="cannot map compressed arrays"):
                result = OPERATIONS[operation](path)
        else:
            result = OPERATIONS[operation](path)
        if operation.startswith("load") and "value" in expected:
            assert canon(result) == expected["value"]
        return
    with pytest.raises(amber.AmberError) as caught:
        OPERATIONS[operation](path)
    assert caught.value.code == want, str(caught.value)
    if want in ("format.checksum", "format.mismatch") and "entry" in expected:
        assert caught.value.entry == expected["entry"], str(caught.value)
        assert expected["entry"] in str(caught.value)


@pytest.mark.parametrize("path", [p for p in CASES if p.parent.name == "valid"], ids=lambda p: p.name)
def test_valid_vectors_load_from_bytes_and_file_objects(path: Path) -> None:
    expected = json.loads(path.with_name(path.name + ".expected.json").read_text())
    assert canon(amber.loads(path.read_bytes())) == expected["value"]
    with open(path, "rb") as f:
        assert canon(amber.load(f)) == expected["value"]
