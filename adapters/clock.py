"""The wall clock, in one place. Decisions use event time only; the wall clock is for when a
message arrived, housekeeping (idle eviction) and latency metrics."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from bytewax.inputs import DynamicSource, StatelessSourcePartition


def now_ms() -> int:
    """Epoch milliseconds."""
    return time.time_ns() // 1_000_000


def now_s() -> float:
    """Epoch seconds."""
    return time.time()


class _TickPartition(StatelessSourcePartition[bool]):
    def __init__(self, every_s: float, wake_s: float) -> None:
        self._every_s = every_s
        self._wake_s = wake_s
        self._next_s = now_s() + every_s

    def next_batch(self) -> list[bool]:
        if now_s() < self._next_s:
            return []
        self._next_s = now_s() + self._every_s
        return [True]

    def next_awake(self) -> datetime:
        return datetime.fromtimestamp(min(self._next_s, now_s() + self._wake_s), UTC)


class Ticks(DynamicSource[bool]):
    """An item every `every_s` seconds on each worker, for housekeeping that must run while
    no events arrive (the idle sweep, in `stockshift run`); it never ends, so only a flow on
    an endless input carries it.

    Woken every `wake_s` (at most the epoch interval) in between: Bytewax moves an input to
    its next epoch only when it wakes it, and an input still in an old epoch holds every
    other input back (an hourly tick once stalled the flow after its first epoch)."""

    def __init__(self, every_s: float, wake_s: float) -> None:
        self._every_s = every_s
        self._wake_s = wake_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TickPartition:
        return _TickPartition(self._every_s, self._wake_s)
