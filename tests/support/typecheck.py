"""mypy as the house runs it: on a copy of the packages whose records are frozen dataclasses.

Records (state/records.py) are plain slotted dataclasses at run time, for speed and so
mypyc compiles them to native classes (a frozen dataclass or `Final` fields cannot be: the
first costs 4x to build, the second is not writable even by `__init__` once compiled).
They must still never be changed once built. mypy checks that on this copy, where each
`@dataclass(slots=True, unsafe_hash=True...)` of records.py reads `frozen=True`: any
assignment to a record's field anywhere in the code is an error, as before, and everything
else is checked as on the real tree (the copy differs by nothing else). The one exception:
a record's own hand-written `__init__` (compiled, for the ones built at every event) sets
its fields, and mypy's "read-only" errors on those lines are left out.

    python -m tests.support.typecheck   # `make lint` and tests/unit/test_code_health.py
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("state", "operators", "flows", "adapters")
PLAIN = "@dataclass(slots=True, unsafe_hash=True"
FROZEN = "@dataclass(frozen=True, slots=True, unsafe_hash=True"
RECORDS = "state/records.py"
_READ_ONLY = re.compile(
    r'^state/records\.py:(\d+): error: Property "\w+" defined in "\w+" is read-only'
)


def frozen_copy(dest: Path) -> int:
    """The packages and pyproject.toml copied to `dest`, records frozen; how many records."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.so")
        )
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    records = dest / RECORDS
    text = records.read_text()
    records.write_text(text.replace(PLAIN, FROZEN))
    return text.count(PLAIN)


def init_lines(source: str) -> set[int]:
    """The lines of the hand-written `__init__` methods in `source`."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def house_errors(mypy_output: str, records_source: str) -> list[str]:
    """mypy's error lines, less the read-only ones inside a record's own `__init__`."""
    inits = init_lines(records_source)
    kept = []
    for line in mypy_output.splitlines():
        if ": error:" not in line:
            continue
        found = _READ_ONLY.match(line)
        if found is None or int(found.group(1)) not in inits:
            kept.append(line)
    return kept


def run_mypy(*extra: str) -> tuple[int, str]:
    """mypy's exit status as the house judges it, and what it printed."""
    with tempfile.TemporaryDirectory(prefix="stockshift-typecheck-") as folder:
        if frozen_copy(Path(folder)) == 0:
            raise SystemExit(f"typecheck: no record in {RECORDS} reads {PLAIN}")
        done = subprocess.run(
            [sys.executable, "-m", "mypy", "--no-incremental", *extra],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        errors = house_errors(done.stdout, (Path(folder) / RECORDS).read_text())
    if done.returncode not in (0, 1) or done.stderr.strip():
        return 2, done.stdout + done.stderr  # mypy itself failed
    if errors:
        return 1, "\n".join(errors) + "\n"
    return 0, "Success: no issues found (records checked as frozen)\n"


if __name__ == "__main__":
    status, printed = run_mypy(*sys.argv[1:])
    sys.stdout.write(printed)
    raise SystemExit(status)
