"""The trip-cost bound brackets the best plan: no simulated policy earns more than its upper
figure, its lower figure is a plan the world could carry out, and with nothing to move both
are exactly what `none` sells."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from adapters.lab.simulator import Scenario, Simulation, make_network
from flows.lab.simulate import _lane_specs as lane_specs
from flows.lab.simulate import run_all, run_none
from operators.reference.tripbound import TripBoundResult, trip_bound
from state.config import Network, Policy

SMALL = Scenario(
    name="tiny-trips", n_sites=4, n_skus=8, days=7, seed=5, replenishment="one_for_one",
    cost_model="per_trip",
)  # fmt: skip


def _bound(
    scenario: Scenario,
    network: Network,
    trip_scale: float = 1.0,
    lanes: bool = True,
    integral_trips: bool = False,
) -> TripBoundResult:
    sim = Simulation(scenario, network, emit=False)
    index = {s: i for i, s in enumerate(sim.sites)}
    specs = lane_specs(network, index) if lanes else []
    trips = [lane.trip_cost * trip_scale for lane in network.lanes.values()] if lanes else []
    return trip_bound(
        sim.demand, sim.on_hand, sim.scheduled_arrivals(), specs, trips,
        scenario.review_days * 24, scenario.supplier_lead_days * 24,
        network.sku_defaults.unit_margin, integral_trips=integral_trips, rounds=3,
    )  # fmt: skip


@pytest.mark.parametrize("warmup_days", [0, 9])
def test_with_nothing_to_move_both_figures_are_what_none_sells(warmup_days: int) -> None:
    """Periods split at the hour deliveries land and reviews end: the relaxation is exact for
    the world without transfers, cold or warmed up."""
    scenario = replace(SMALL, warmup_days=warmup_days)
    network = make_network(scenario)
    none = run_none(scenario, network).kpis
    margin = network.sku_defaults.unit_margin
    result = _bound(scenario, network, lanes=False)
    assert result.upper == pytest.approx(margin * none["served_units"], abs=1e-3)
    assert result.lower == pytest.approx(margin * none["served_units"], abs=1e-3)


@pytest.mark.parametrize("warmup_days", [0, 9])
def test_no_policy_earns_more_than_the_upper_figure(warmup_days: int) -> None:
    scenario = replace(SMALL, warmup_days=warmup_days)
    network = make_network(scenario)
    runs = run_all(scenario, Policy(version="t"), ("none", "stockshift", "trip-bound"))
    bound = runs["trip-bound"].kpis
    assert bound["net_benefit"] <= bound["net_benefit_bound"] + 1e-6
    for name in ("none", "stockshift"):
        assert runs[name].kpis["net_benefit"] <= bound["net_benefit_bound"] + 1e-6, name
    assert bound["net_benefit_bound"] > 0
    result = _bound(scenario, network)
    assert result.lower <= result.upper + 1e-6
    assert result.lower_trips > 0 and result.lower_cost > 0
    # Whole trips: the MILP's bound is between the feasible plan and the LP's.
    exact = _bound(scenario, network, integral_trips=True)
    assert exact.upper <= result.upper + 1e-6
    assert exact.upper >= result.lower - 1e-6


def test_without_trip_costs_the_lower_figure_is_the_hourly_optimum_and_under_the_upper() -> None:
    """At zero trip cost the hourly plan is the exact hourly LP (unit costs only); the daily
    relaxation may only be above it, and dearer trips can only lower both figures."""
    network = make_network(SMALL)
    free = _bound(SMALL, network, trip_scale=0.0)
    dear = _bound(SMALL, network, trip_scale=1.0)
    assert free.lower <= free.upper + 1e-6
    assert dear.upper <= free.upper + 1e-6
    assert dear.lower <= free.lower + 1e-6
    assert np.isfinite(free.upper) and free.lower_units_moved > 0
