"""The house rules `make lint` states, checked by every test run (so CI holds them too):
ruff's lint rules and formatting everywhere, mypy (strict on operators/ and state/; run on a
copy whose records are frozen, tests/support/typecheck.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command",
    [("ruff", "check", "."), ("ruff", "format", "--check", "."), ("tests.support.typecheck",)],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_the_code_passes_the_linters(command: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
