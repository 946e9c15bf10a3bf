"""mypy as the house runs it: on a copy of the packages whose records are frozen dataclasses.

Records (state/records.py) are plain slotted dataclasses at run time, for speed and so
mypyc compiles them to native classes (a frozen dataclass or `Final` fields cannot be: the
first costs 4x to build, the second is not writable even by `__init__` once compiled).
They must still never be changed once built. mypy checks that on this copy, where each
`@dataclass(slots=True, unsafe_hash=True)` of records.py reads `frozen=True`: any
assignment to a record's field anywhere in the code is an error, as before, and everything
else is checked as on the real tree (the copy differs by nothing else).

    python -m tests.support.typecheck   # `make lint` and tests/unit/test_code_health.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("state", "operators", "flows", "adapters")
PLAIN = "@dataclass(slots=True, unsafe_hash=True)"
FROZEN = "@dataclass(frozen=True, slots=True)"


def frozen_copy(dest: Path) -> int:
    """The packages and pyproject.toml copied to `dest`, records frozen; how many records."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.so")
        )
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    records = dest / "state" / "records.py"
    text = records.read_text()
    records.write_text(text.replace(PLAIN, FROZEN))
    return text.count(PLAIN)


def run_mypy(*extra: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="stockshift-typecheck-") as folder:
        if frozen_copy(Path(folder)) == 0:
            raise SystemExit(f"typecheck: no record in state/records.py reads {PLAIN}")
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--no-incremental", *extra],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )


if __name__ == "__main__":
    done = run_mypy(*sys.argv[1:])
    sys.stdout.write(done.stdout.replace(tempfile.gettempdir(), "<copy>"))
    sys.stderr.write(done.stderr)
    raise SystemExit(done.returncode)
