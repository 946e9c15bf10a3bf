"""In-memory sources and sinks: the demo's closed loop and the flow tests' plumbing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

T = TypeVar("T")


class _ListPartition(StatelessSinkPartition[T], Generic[T]):
    def __init__(self, items: list[T], on_write: Callable[[list[T]], None] | None) -> None:
        self._items = items
        self._on_write = on_write

    def write_batch(self, items: list[T]) -> None:
        self._items.extend(items)
        if self._on_write is not None:
            self._on_write(items)


class ListSink(DynamicSink[T], Generic[T]):
    """Collects records in a list (single worker), optionally telling a callback."""

    def __init__(self, on_write: Callable[[list[T]], None] | None = None) -> None:
        self.items: list[T] = []
        self._on_write = on_write

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ListPartition[T]:
        return _ListPartition(self.items, self._on_write)


class _PullPartition(StatelessSourcePartition[T], Generic[T]):
    def __init__(self, pull: Callable[[], list[T] | None]) -> None:
        self._pull = pull

    def next_batch(self) -> list[T]:
        batch = self._pull()
        if batch is None:
            raise StopIteration
        return batch


class PullSource(DynamicSource[T], Generic[T]):
    """Asks a callable for the next batch: a list (maybe empty, to wait) or None at the end.

    The demo's simulator answers with an empty list until the flow has accounted for every
    event it sent, which keeps the simulated clock and the flow in lockstep.
    """

    def __init__(self, pull: Callable[[], list[T] | None]) -> None:
        self._pull = pull

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PullPartition[T]:
        if worker_count != 1:
            raise ValueError("PullSource drives a single-worker flow")
        return _PullPartition(self._pull)
