"""The compiled core (mypyc, as `make compiled` and the image build it) decides exactly as
the pure one: the same proposals, decision records, positions and findings on a simulated
network's events, and recovery snapshots that either one wrote load in the other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.lab.compiled import CHECKOUT, build_copy, can_compile, env_for

pytestmark = pytest.mark.e2e
CHILD = Path(__file__).resolve().parents[1] / "support" / "replay_child.py"
# Enough for proposals, suppressions, dispatches and deliveries (checked below).
SKUS, EVENTS = 60, 12_000

why_not = can_compile()


@pytest.fixture(scope="module")
def compiled_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if why_not:
        pytest.skip(f"cannot build the compiled core here: {why_not}")
    return build_copy(tmp_path_factory.mktemp("compiled"))


def replay(root: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CHILD), str(SKUS), str(EVENTS), *args],
        env=env_for(root), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def test_the_copy_holds_every_listed_module_compiled(compiled_root: Path) -> None:
    import tomllib

    listed = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["stockshift"]
    for module in listed["compiled_modules"]:
        stem = compiled_root / module.removesuffix(".py")
        assert list(stem.parent.glob(stem.name + ".*.so")), f"{module} was not compiled"


def test_compiled_and_pure_cores_decide_identically(compiled_root: Path) -> None:
    pure, compiled = replay(CHECKOUT), replay(compiled_root)
    assert (pure["compiled"], compiled["compiled"]) == (False, True)
    assert pure["counts"]["proposals"] > 0 and pure["counts"]["decisions"] > 0
    assert compiled["counts"] == pure["counts"]
    assert compiled["digests"] == pure["digests"]


def test_snapshots_move_between_compiled_and_pure_cores(
    compiled_root: Path, tmp_path: Path
) -> None:
    straight = replay(CHECKOUT)
    for writer, reader in ((compiled_root, CHECKOUT), (CHECKOUT, compiled_root)):
        snapshot = tmp_path / f"{writer.name}.pickle"
        replay(writer, "--dump", str(snapshot))
        resumed = replay(reader, "--load", str(snapshot))
        assert resumed["digests"] == straight["digests"], f"written by {writer}, read by {reader}"


_ROUNDING_CHILD = """
import random, struct, sys
from operators import rounding
assert rounding.__file__.endswith(".so"), rounding.__file__
bits = lambda x: struct.pack("<d", x)
rng = random.Random(7)
for _ in range(200_000):
    digits = rng.randint(0, 6)
    pick = rng.random()
    if pick < 0.4:
        x = rng.uniform(-1e4, 1e4)
    elif pick < 0.7:
        x = (rng.randint(-10**6, 10**6) + 0.5) / 10**digits
    else:
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
    if bits(rounding.rounded(x, digits)) != bits(round(x, digits)):
        sys.exit(f"rounded({x!r}, {digits}) != round")
"""


def test_compiled_rounding_is_round_bit_for_bit(compiled_root: Path) -> None:
    """Compiled, `rounded` must still equal `round` (a module constant mypyc left unset once
    failed only here, never in the pure tests)."""
    done = subprocess.run(
        [sys.executable, "-c", _ROUNDING_CHILD], env=env_for(compiled_root), cwd=compiled_root,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


_PICKLE_CHILD = """
import pickle, sys
from adapters.lab.compiled import core_is_compiled
from state.records import Candidate, Event, EventType, SitePosition, SourceRef, StepOutput
from state.sku import Inbound
from operators.drift import CusumParams
event = Event("e", EventType.SALE, 1, "S", "A", 2, source=SourceRef("pos", 0, 7))
position = SitePosition("S", "A", 3, 1, 0, 0, 4, 0.25, 1)
built = [
    event, position, Candidate("B", 2, 6.0, 4.5, 1.5, 0.2, 3.1), Inbound(5, 9, -1),
    StepOutput("e", event_ts_ms=1, positions=(position,)), CusumParams(9.0, confirm=4.0),
]
assert core_is_compiled() == (sys.argv[1] == "compiled"), core_is_compiled()
if len(sys.argv) > 2:
    assert [repr(r) for r in pickle.loads(bytes.fromhex(sys.argv[2]))] == [repr(r) for r in built]
print(pickle.dumps(built).hex())
"""


def test_records_with_their_own_init_pickle_alike_in_both_cores(compiled_root: Path) -> None:
    """Compiled, mypyc's default `__new__` of a class with its own `__init__` calls it, and
    unpickling (and `state.sku.restored`) calls `__new__` alone: those classes have a
    `__new__` of their own (`_OwnInit`). A compiled frozen dataclass (the drift detector's
    settings) unpickles through its `__reduce__`."""

    def child(root: Path, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", _PICKLE_CHILD, *args], env=env_for(root), cwd=root,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip()

    compiled, pure = child(compiled_root, "compiled"), child(CHECKOUT, "pure")
    assert compiled == pure
    assert child(compiled_root, "compiled", pure) == compiled
    assert child(CHECKOUT, "pure", compiled) == pure
