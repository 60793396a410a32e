"""Helpers shared by the test modules: running a fresh Python process and
finding amber's temporary files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: The temporary files amber writes beside a target are named `.NAME.XXXXXX.amber-tmp`.
TEMP_SUFFIX = ".amber-tmp"


def temp_files(directory: Path | str) -> list[str]:
    """amber temporary files left in ``directory`` (there should be none)."""
    return sorted(n for n in os.listdir(directory) if n.endswith(TEMP_SUFFIX))


def run_python(code: str, cwd: Path | str | None = None, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter of this venv and returns the result.

    The child gets this process's environment, so it imports the same amber.
    With ``check``, a non-zero exit fails the test with the child's stderr.
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"child exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
