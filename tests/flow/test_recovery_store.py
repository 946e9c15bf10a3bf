"""The recovery store does not grow with every SKU ever held: evicted SKUs' rows are pruned,
and a resume after pruning loads exactly what it loaded before."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic
from bytewax.testing import TestingSink, TestingSource, run_main

from adapters.recovery import prune_tombstones, recovery_config, sweep_in_child

EVICTED = [f"gone-{i}" for i in range(300)]
HELD = [f"held-{i}" for i in range(5)]


class CountToTwo(StatefulLogic[str, tuple[str, int], int]):
    """Counts a key's items and leaves memory at the second, as an evicted SKU does."""

    def __init__(self, resume: int | None) -> None:
        self.seen = resume or 0

    def on_item(self, value: str) -> tuple[list[tuple[str, int]], bool]:
        self.seen += 1
        return [(value, self.seen)], self.seen >= 2

    def snapshot(self) -> int:
        return self.seen


def run(store: Path, items: list[str], backup_s: float = 0) -> list[tuple[str, int]]:
    out: list[tuple[str, tuple[str, int]]] = []
    flow = Dataflow("prune")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(items, batch_size=50)), str)
    op.output("out", op.stateful("count", keyed, CountToTwo), TestingSink(out))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery_config(store, backup_s))
    return sorted(value for _key, value in out)


def rows(store: Path) -> tuple[int, int]:
    """(rows holding state, rows of evicted keys) in the store."""
    (part,) = store.glob("part-*.sqlite3")
    with closing(sqlite3.connect(part)) as db:
        live, gone = db.execute(
            "SELECT SUM(ser_change IS NOT NULL), SUM(ser_change IS NULL) FROM snaps"
        ).fetchone()
    return live, gone


# Every evicted key twice (it leaves), every held key once (it stays), then filler so the
# store commits epochs past the evictions.
FIRST = [*EVICTED, *EVICTED, *HELD, *(["filler"] * 200)]
# What comes after a restart: each key once more.
THEN = [*FIRST, *EVICTED, *HELD]


def test_evicted_keys_rows_are_pruned_and_a_resume_loads_the_same(tmp_path: Path) -> None:
    store, untouched, batched = tmp_path / "store", tmp_path / "untouched", tmp_path / "batched"
    run(store, FIRST)
    shutil.copytree(store, untouched)
    shutil.copytree(store, batched)
    assert rows(store)[1] == len(EVICTED) + 1  # the filler key left too, at its 2nd item

    pruned = sweep_in_child(store)  # as `stockshift run` sweeps: in a process of its own

    assert pruned == len(EVICTED) + 1
    assert rows(store) == (rows(untouched)[0], 0)
    assert sweep_in_child(store) == 0
    assert prune_tombstones(batched, batch=7) == pruned  # several write transactions
    assert rows(batched) == rows(store)
    # Restarted on the pruned store and on the untouched copy: the same outputs, and each
    # as the state says (an evicted key starts again at 1, a held one goes on to 2).
    after_pruning, without_pruning = run(store, THEN), run(untouched, THEN)
    assert after_pruning == without_pruning
    assert after_pruning == sorted([(k, 1) for k in EVICTED] + [(k, 2) for k in HELD])


def test_rows_newer_than_the_committed_epoch_stay(tmp_path: Path) -> None:
    """With a backup interval Bytewax commits an hour behind: nothing after it is touched."""
    store = tmp_path / "store"
    run(store, FIRST, backup_s=3600)
    before = rows(store)
    assert before[1] > 0

    assert sweep_in_child(store) == 0
    assert rows(store) == before


def test_a_sweep_that_fails_is_logged_and_prunes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store the sweep cannot read (here not a database at all): the child fails, the flow's
    side logs why and counts nothing; the next sweep tries again."""
    (tmp_path / "part-0.sqlite3").write_bytes(b"not a database, " * 64)
    with caplog.at_level(logging.WARNING, logger="stockshift.recovery"):
        assert sweep_in_child(tmp_path) == 0
    (failed,) = [r for r in caplog.records if r.getMessage() == "recovery store sweep failed"]
    assert "not a database" in failed.__dict__["error"]
