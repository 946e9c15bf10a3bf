"""Intermittent demand priced as counts: the loss function against a direct sum."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.planner import count_shortfall, counts_demand, expected_shortfall, shortfall
from state.config import ConfigError, Policy, policy_from_dict


def _direct(mean: float, var: float, stock: int) -> float:
    """E[(D - stock)+] by summing the probability function term by term (log space)."""
    total = 0.0
    for k in range(stock + 1, stock + 2_000):
        if var > mean * (1 + 1e-9):
            p = mean / var
            r = mean * p / (1 - p)
            log_pmf = (
                math.lgamma(k + r) - math.lgamma(k + 1) - math.lgamma(r)
                + r * math.log(p) + k * math.log(1 - p)
            )  # fmt: skip
        else:
            log_pmf = k * math.log(mean) - mean - math.lgamma(k + 1)
        total += (k - stock) * math.exp(log_pmf)
    return total


@given(
    st.floats(0.05, 25.0),
    st.floats(1.0, 4.0),
    st.integers(0, 60),
)
def test_the_count_loss_is_the_poisson_or_negative_binomial_one(
    mean: float, dispersion: float, stock: int
) -> None:
    var = mean * dispersion
    got = count_shortfall(mean, math.sqrt(var), stock)
    assert got == pytest.approx(_direct(mean, var, stock), abs=1e-6)


def test_at_low_means_the_normal_loss_misprices_the_last_units() -> None:
    """Two units of stock against half a unit of overdispersed demand: the normal loss puts
    almost nothing in the tail the count loss knows is there."""
    count = count_shortfall(0.5, math.sqrt(1.5), 2)
    normal = expected_shortfall(0.5, math.sqrt(1.5), 2)
    assert count > 2 * normal


def test_the_policy_chooses_the_loss_and_rejects_others() -> None:
    assert not counts_demand(Policy(version="v"))
    counted = policy_from_dict({"version": "v", "demand_distribution": "count"})
    assert counts_demand(counted)
    sd = math.sqrt(1.5)
    assert shortfall(True, 0.5, sd, 2) == count_shortfall(0.5, sd, 2)
    assert shortfall(False, 0.5, sd, 2) == expected_shortfall(0.5, sd, 2)
    with pytest.raises(ConfigError, match="demand_distribution"):
        policy_from_dict({"version": "v", "demand_distribution": "gamma"})
