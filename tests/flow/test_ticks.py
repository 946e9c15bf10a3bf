"""A clock input must not hold the rest of the dataflow back between its ticks."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.testing import run_main

from adapters import clock

RUN_S = 2.0


class _Paced(StatelessSourcePartition[int]):
    """An item every 0.1 s for RUN_S seconds."""

    def __init__(self, started: float) -> None:
        self._started, self._next, self._n = started, started, 0

    def next_batch(self) -> list[int]:
        now = time.monotonic()
        if now - self._started > RUN_S:
            raise StopIteration
        if now < self._next:
            return []
        self._next, self._n = now + 0.1, self._n + 1
        return [self._n]

    def next_awake(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=max(self._next - time.monotonic(), 0))


class _PacedSource(DynamicSource[int]):
    def __init__(self, started: float) -> None:
        self._started = started

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Paced:
        return _Paced(self._started)


class _EndingTicks(clock.Ticks):
    """The production clock, ending a little after the paced source so the run can end."""

    def __init__(self, started: float) -> None:
        super().__init__(3600.0)
        self._started = started

    def build(self, step_id: str, worker_index: int, worker_count: int) -> clock._TickPartition:
        started = self._started

        class Ending(clock._TickPartition):
            def next_batch(self) -> list[bool]:
                if time.monotonic() - started > RUN_S + 0.5:
                    raise StopIteration
                return super().next_batch()

        return Ending(self._every_s)


def test_items_keep_flowing_across_epochs_beside_an_hourly_clock() -> None:
    """Epochs of 0.1 s; the clock ticks hourly but is woken at Bytewax's pace, so its epoch
    keeps up and a stateful step downstream of both keeps processing (it stalled after its
    first epoch when the clock slept until its next tick)."""
    started = time.monotonic()
    seen: list[float] = []
    flow = Dataflow("ticks")
    paced = op.input("paced", flow, _PacedSource(started))
    ticks = op.input("ticks", flow, _EndingTicks(started))
    both = op.merge("both", op.map("as_int", ticks, int), paced)
    counted = op.stateful_map("count", op.key_on("one", both, lambda _: "k"), _count)
    op.inspect("seen", counted, lambda _step, _item: seen.append(time.monotonic() - started))
    # In a thread: a stalled run never ends (the clock ends only once it is woken).
    run = threading.Thread(
        target=run_main, args=(flow,), kwargs={"epoch_interval": timedelta(seconds=0.1)},
        daemon=True,
    )  # fmt: skip
    run.start()
    run.join(timeout=RUN_S + 15)
    assert not run.is_alive(), f"the run stalled; items seen at {seen}"
    # About 20 items, each seen as it came: none waits for the end of the run.
    assert len(seen) >= 10
    assert all(at < RUN_S + 0.3 for at in seen), seen
    assert max(b - a for a, b in itertools.pairwise(seen)) < 0.5, seen


def _count(total: int | None, value: int) -> tuple[int, int]:
    total = (total or 0) + 1
    return total, total
