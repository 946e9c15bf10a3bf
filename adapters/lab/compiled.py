"""The compiled core in a scratch copy of the checkout, for the bench and the tests.

`make compiled` compiles in place, which shadows the pure modules of the checkout itself;
the bench and the tests need both side by side, so they compile a copy (the same setup.py,
the same module list) and run it in its own process with the copy first on the path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
_PACKAGES = ("flows", "operators", "state", "adapters")
_FILES = ("pyproject.toml", "setup.py", "README.md")


def can_compile() -> str:
    """'' when this checkout can build the compiled core here, else why not."""
    if not (CHECKOUT / "setup.py").exists():
        return "not a source checkout (no setup.py)"
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return "mypyc is not installed (the dev extra brings it)"
    if shutil.which(os.environ.get("CC", "gcc")) is None and shutil.which("cc") is None:
        return "no C compiler"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (python3-dev)"
    return ""


def build_copy(dest: Path) -> Path:
    """The checkout's packages copied to `dest` with the core compiled in place."""
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.c")
    for package in _PACKAGES:
        shutil.copytree(CHECKOUT / package, dest / package, ignore=ignore)
    for name in _FILES:
        shutil.copy2(CHECKOUT / name, dest / name)
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=dest,
        env={**os.environ, "STOCKSHIFT_COMPILE": "1"},
        check=True,
        capture_output=True,
        timeout=900,
    )
    return dest


def env_for(root: Path) -> dict[str, str]:
    """A child's environment that imports stockshift from `root` first (a child run with
    `-m` also needs `cwd=root`: its working directory comes first on its path)."""
    return {**os.environ, "PYTHONPATH": str(root)}


def core_is_compiled() -> bool:
    """Whether this process decides with the compiled engine."""
    from operators import engine

    return not str(engine.__file__).endswith(".py")
