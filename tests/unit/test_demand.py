"""The demand estimate: a long run of empty windows summed in closed form equals the
window-by-window update it replaces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.demand import _learn_zeros, smoothing_alpha
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
