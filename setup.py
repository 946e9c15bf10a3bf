"""Build hook: with STOCKSHIFT_COMPILE=1 the decision core is compiled with mypyc.

Everything else about the package is in pyproject.toml. The modules compiled are listed
there (`[tool.stockshift] compiled_modules`): the engine, planner and negotiation with the
per-SKU state they read, already mypy-strict, so mypyc compiles them unchanged. A plain
install builds the pure-Python package; the compiled build needs mypy and a C compiler at
build time and no build isolation (`make compiled` in a checkout, the Dockerfile's build
stage for the image). Both decide identically (tests/integration/test_compiled_core.py).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def compiled_modules() -> list[str]:
    with open(HERE / "pyproject.toml", "rb") as handle:
        return list(tomllib.load(handle)["tool"]["stockshift"]["compiled_modules"])


def ext_modules() -> list[object]:
    if os.environ.get("STOCKSHIFT_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(compiled_modules(), opt_level="3"))


setup(ext_modules=ext_modules())
