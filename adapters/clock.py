"""The wall clock, in one place. Decisions use event time only; the wall clock is for when a
message arrived, housekeeping (idle eviction) and latency metrics."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Epoch milliseconds."""
    return time.time_ns() // 1_000_000


def now_s() -> float:
    """Epoch seconds."""
    return time.time()
