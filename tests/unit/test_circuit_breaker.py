"""The executor's circuit breaker (adapters/wms.py): opens after failures in a row, lets one
trial through per reset period, closes on success, and never holds its lock during a call."""

from __future__ import annotations

import threading
import time

from adapters.wms import CircuitBreaker


def test_opens_after_failures_in_a_row_and_closes_after_a_successful_trial() -> None:
    breaker = CircuitBreaker(failures=3, reset_s=0.05)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    breaker.succeeded()  # a success in between starts the count again
    for _ in range(3):
        assert breaker.allow()
        breaker.failed()
    assert not breaker.allow() and breaker.open_for_s() > 0
    time.sleep(0.06)
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    breaker.failed()  # the trial failed: open for another period, same outage
    assert not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.allow() and breaker.open_for_s() == 0.0


def test_calls_in_flight_are_not_serialised() -> None:
    """Eight calls must be inside at once to pass the barrier (pybreaker held its lock for a
    call's whole duration, so they would have run one at a time and the barrier broken)."""
    breaker = CircuitBreaker(failures=3, reset_s=1)
    barrier = threading.Barrier(8, timeout=10)
    broken: list[bool] = []

    def call() -> None:
        assert breaker.allow()
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            broken.append(True)
        breaker.succeeded()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not broken
