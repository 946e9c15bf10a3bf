"""The simulator reproduces the Erlang loss closed form (published values)."""

from __future__ import annotations

import pytest

from adapters.lab.simulator import continuous_review_fill
from operators.reference.erlang import erlang_b, fill_with_complete_pooling, fill_without_transfers

# (N, λL, S, fill without transfers, fill with complete pooling) from the issue / literature.
CASES = [
    (2, 2.0, 3, 0.7895, 0.8828),
    (2, 1.0, 2, 0.8000, 0.9048),
    (5, 2.0, 3, 0.7895, 0.9635),
    (10, 5.0, 7, 0.8795, 0.9986),
]


def test_erlang_b_recursion_known_values() -> None:
    assert erlang_b(0, 3.0) == 1.0
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)


@pytest.mark.parametrize(("n", "load", "s", "none", "pooled"), CASES)
def test_closed_form_matches_published_values(
    n: int, load: float, s: int, none: float, pooled: float
) -> None:
    assert fill_without_transfers(s, load, 1.0) == pytest.approx(none, abs=5e-5)
    assert fill_with_complete_pooling(n, s, load, 1.0) == pytest.approx(pooled, abs=5e-5)


@pytest.mark.parametrize(("n", "load", "s", "none", "pooled"), CASES)
def test_simulator_reproduces_closed_form(
    n: int, load: float, s: int, none: float, pooled: float
) -> None:
    # 200k demands: the estimate's standard error is about 0.001, well inside ±0.005.
    rate, lead = load / 2.0, 2.0
    simulated_none = continuous_review_fill(
        n, rate, lead, s, pooling=False, demands=200_000, seed=1
    )
    simulated_pooled = continuous_review_fill(
        n, rate, lead, s, pooling=True, demands=200_000, seed=2
    )
    assert simulated_none == pytest.approx(none, abs=0.005)
    assert simulated_pooled == pytest.approx(pooled, abs=0.005)
