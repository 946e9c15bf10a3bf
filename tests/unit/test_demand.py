"""The demand estimate: a long run of empty windows summed in closed form equals the
window-by-window update it replaces, and a sale that arrives late counts as if in time."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.demand import _learn_zeros, advance, count_sale, smoothing_alpha
from state.sku import Demand


def _step_by_step(demand: Demand, count: int, alpha: float) -> tuple[float, float, float]:
    rate, var, weight = demand.rate, demand.var, demand.weight
    keep = 1 - alpha
    for _ in range(count):
        mean = rate / weight if weight > 0 else 0.0
        var = keep * (var + alpha * mean * mean)
        rate *= keep
        weight = keep * weight + alpha
    return rate, var, weight


@settings(max_examples=300, deadline=None)
@given(
    weight=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    mean=st.floats(0.0, 50.0),
    var=st.floats(0.0, 100.0),
    count=st.integers(0, 2000),
    halflife_hours=st.sampled_from([6.0, 24.0, 96.0, 500.0]),
    window_minutes=st.sampled_from([15, 60]),
)
def test_empty_windows_in_closed_form_match_the_step_by_step_update(
    weight: float, mean: float, var: float, count: int, halflife_hours: float, window_minutes: int
) -> None:
    alpha = smoothing_alpha(halflife_hours, window_minutes)
    demand = Demand(rate=mean * weight, var=var, weight=weight, windows_seen=5)
    expected = _step_by_step(demand, count, alpha)
    _learn_zeros(demand, count, alpha)
    got = (demand.rate, demand.var, demand.weight)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert demand.windows_seen == 5 + count


_WINDOW_MS = 3_600_000


@settings(max_examples=200, deadline=None)
@given(
    sales=st.lists(
        st.tuples(st.integers(0, 300 * _WINDOW_MS), st.integers(1, 5)), min_size=2, max_size=60
    ),
    order=st.randoms(use_true_random=False),
    halflife_hours=st.sampled_from([6.0, 24.0, 96.0]),
)
def test_a_late_sale_moves_the_average_as_if_it_had_come_in_time(
    sales: list[tuple[int, int]], order: random.Random, halflife_hours: float
) -> None:
    """Sales applied in any order (after the earliest) leave the moving average, its weight
    and the open window as the same sales in time order do; only the variance may differ."""
    alpha = smoothing_alpha(halflife_hours, 60)
    in_time = sorted(sales)
    shuffled = in_time[1:]
    order.shuffle(shuffled)
    expected, got = Demand(), Demand()
    for demand, stream in ((expected, in_time), (got, [in_time[0], *shuffled])):
        for ts_ms, qty in stream:
            advance(demand, ts_ms, _WINDOW_MS, alpha, stocked_out=False, out_now=False)
            count_sale(demand, ts_ms, qty, _WINDOW_MS, alpha)
    assert got.rate == pytest.approx(expected.rate, rel=1e-9, abs=1e-12)
    # The weight is a sum of powers of (1 - alpha) in another order: equal to rounding.
    assert got.weight == pytest.approx(expected.weight, rel=1e-12)
    assert got.windows_seen == expected.windows_seen
    assert (got.window_start_ms, got.window_qty) == (expected.window_start_ms, expected.window_qty)


def test_a_sale_older_than_the_estimate_counts_in_the_open_window() -> None:
    alpha = smoothing_alpha(24.0, 60)
    demand = Demand()
    advance(demand, 10 * _WINDOW_MS, _WINDOW_MS, alpha, stocked_out=False, out_now=False)
    count_sale(demand, 3 * _WINDOW_MS, 2, _WINDOW_MS, alpha)
    assert (demand.window_qty, demand.rate, demand.windows_seen) == (2, 0.0, 0)
