"""`stockshift demo --live`: the whole loop on real parts ends with the WMS's stock equal to
stockshift's positions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def test_live_demo_closes_the_loop_and_the_books_agree(tmp_path: Path, postgres_dsn: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "demo",
            "--live",
            "--live-skus",
            "6",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "STOCKSHIFT_TEST_POSTGRES_DSN": postgres_dsn},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 SKUs, 6 proposals, 6 orders, 6 received" in result.stdout
    assert "WMS stock vs stockshift positions: equal" in result.stdout
