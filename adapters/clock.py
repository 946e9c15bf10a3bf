"""The wall clock, in one place. Decisions use event time only; the wall clock is for when a
message arrived, housekeeping (idle eviction) and latency metrics."""

from __future__ import annotations

import time

from bytewax.inputs import DynamicSource, StatelessSourcePartition


def now_ms() -> int:
    """Epoch milliseconds."""
    return time.time_ns() // 1_000_000


def now_s() -> float:
    """Epoch seconds."""
    return time.time()


class _TickPartition(StatelessSourcePartition[bool]):
    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._next_s = now_s() + every_s

    def next_batch(self) -> list[bool]:
        if now_s() < self._next_s:
            return []
        self._next_s = now_s() + self._every_s
        return [True]

    def next_awake(self) -> None:
        """Bytewax's own pace, as the Kafka sources keep: 1 ms after an empty batch."""
        return None


class Ticks(DynamicSource[bool]):
    """An item every `every_s` seconds on each worker, for housekeeping that must run while
    no events arrive (the idle sweep, in `stockshift run`); it never ends, so only a flow on
    an endless input carries it.

    Woken at Bytewax's pace in between (a call a millisecond), not at the next tick: Bytewax
    moves an input to its next epoch only when it wakes it, and every input waits for the
    slowest to finish an epoch before it reads on. A clock sleeping until its next hourly
    tick stalled the flow after its first epoch (tests/flow/test_ticks.py); one woken twice
    an epoch would hold the Kafka input back up to half an epoch at each epoch's end."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TickPartition:
        return _TickPartition(self._every_s)
