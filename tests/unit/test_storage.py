"""Receiving sites' storage capacity: negotiation's occupancy accounting, the engine's
occupancy reports, and the simulated world that refuses what does not fit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.lab.simulator import Scenario, Simulation, make_network
from flows.lab.simulate import run_stockshift
from operators.engine import DecisionContext, step
from operators.lanes import ReceivingState, negotiate
from state.config import ConfigError, Network, network_from_dict
from state.records import EventType, Outcome, Proposal, SiteOccupancy
from tests.support.helpers import event, policy, warm_history
from tests.unit.test_lanes import a_proposal


def storage_network(capacity: int | None = 50) -> Network:
    site_b: dict[str, Any] = {"id": "B", "replenishment_lead_hours": 96}
    if capacity is not None:
        site_b["storage_capacity"] = capacity
    return network_from_dict(
        {
            "sites": [{"id": "A", "replenishment_lead_hours": 96}, site_b],
            "lanes": [
                {"from": "A", "to": "B", "lead_hours": 6, "cost_per_unit": 0.2,
                 "fixed_cost": 5, "bidirectional": True},
            ],
            "sku_defaults": {"unit_cost": 10, "unit_margin": 6, "min_transfer_qty": 2},
        }
    )  # fmt: skip


def occupied(units: dict[str, int]) -> ReceivingState:
    state = ReceivingState()
    for sku, n in units.items():
        state, outcome = negotiate(state, SiteOccupancy(sku, "B", n), storage_network())
        assert outcome.proposal is None and outcome.decision is None
    return state


def test_occupancy_updates_replace_each_skus_number() -> None:
    state = occupied({"SKU-1": 10, "SKU-2": 15})
    state, _ = negotiate(state, SiteOccupancy("SKU-1", "B", 4), storage_network())
    assert state.occupied == 19 and state.occupancy == {"SKU-1": 4, "SKU-2": 15}
    state, _ = negotiate(state, SiteOccupancy("SKU-2", "B", 0), storage_network())
    assert state.occupied == 4 and "SKU-2" not in state.occupancy


def test_a_transfer_that_fits_passes_untouched() -> None:
    # The engine's number for SKU-1 already includes this proposal's 20 reserved units.
    state = occupied({"SKU-1": 25, "SKU-2": 20})
    proposal = a_proposal("SKU-1", 20)
    _, outcome = negotiate(state, proposal, storage_network(50))
    assert outcome.proposal is not None and outcome.proposal.qty == 20
    assert outcome.decision is proposal.record is not None


def test_a_transfer_is_cut_to_the_room_left() -> None:
    state = occupied({"SKU-1": 25, "SKU-2": 33})  # 8 over capacity with the 20 reserved
    _, outcome = negotiate(state, a_proposal("SKU-1", 20), storage_network(50))
    assert outcome.proposal is not None and outcome.proposal.qty == 12
    assert outcome.proposal.evidence.value == 12 * 10.0  # the units granted, at unit cost
    assert outcome.decision is not None and "storage for 12 of 20" in outcome.decision.detail


def test_a_transfer_without_room_for_the_minimum_is_dropped_with_the_reason() -> None:
    state = occupied({"SKU-1": 20, "SKU-2": 49})
    _, outcome = negotiate(state, a_proposal("SKU-1", 20), storage_network(50))
    assert outcome.proposal is None and outcome.decision is not None
    assert (outcome.decision.outcome, outcome.decision.reason) == (
        Outcome.SUPPRESSED,
        "storage_capacity",
    )
    assert "storage capacity of 50" in outcome.decision.detail


def test_sites_without_capacity_ignore_occupancy() -> None:
    state = occupied({"SKU-2": 500})
    _, outcome = negotiate(state, a_proposal("SKU-1", 20), storage_network(None))
    assert outcome.proposal is not None and outcome.proposal.qty == 20


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("occupancy"), st.sampled_from(["S1", "S2", "S3"]),
                      st.integers(0, 40)),
            st.tuples(st.just("proposal"), st.sampled_from(["S1", "S2", "S3"]),
                      st.integers(1, 30)),
        ),
        max_size=40,
    ),
    st.integers(10, 80),
)  # fmt: skip
def test_granted_units_never_overfill_the_site(
    items: list[tuple[str, str, int]], capacity: int
) -> None:
    """Whatever the order of reports and requests, a site holding no more than its capacity
    before a grant holds no more after it (counting only the units granted)."""
    network = storage_network(capacity)
    base = a_proposal("S1", 2)
    state = ReceivingState()
    for kind, sku, n in items:
        if kind == "occupancy":
            state, _ = negotiate(state, SiteOccupancy(sku, "B", n), network)
            continue
        # As the engine does: the proposal's units are reserved, and reported, first.
        reported = state.occupancy.get(sku, 0) + n
        state, _ = negotiate(state, SiteOccupancy(sku, "B", reported), network)
        before = state.occupied - n
        proposal: Proposal = replace(base, sku=sku, qty=n)
        state, outcome = negotiate(state, proposal, network)
        if outcome.proposal is None:
            continue
        assert 0 < outcome.proposal.qty <= n
        if before <= capacity:
            assert before + outcome.proposal.qty <= capacity


def test_bad_storage_capacity_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="storage_capacity"):
        network_from_dict({"sites": [{"id": "A", "storage_capacity": 0}, {"id": "B"}], "lanes": []})


def test_the_engine_reports_occupancy_only_for_sites_with_capacity() -> None:
    ctx = DecisionContext.build(storage_network(500), policy())
    state = None
    reports: list[SiteOccupancy] = []
    proposals: list[Proposal] = []
    for e in [*warm_history(), event("count-B", EventType.SNAPSHOT, 30.2, "B", 20)]:
        if e.site not in ("A", "B"):
            continue
        state, out = step(state, e, ctx)
        reports += out.occupancy
        proposals += out.proposals
    assert reports and {r.site for r in reports} == {"B"}
    assert proposals, "the warm history ends with B short and A long"
    assert state is not None
    b = state.sites["B"]
    assert reports[-1].units == b.on_hand + b.inbound_qty + b.reserved_in
    assert b.reserved_in == proposals[-1].qty
    quiet = DecisionContext.build(storage_network(None), policy())
    _, out = step(None, event("x", EventType.SNAPSHOT, 1.0, "B", 5), quiet)
    assert out.occupancy == ()


def test_negotiation_keeps_the_simulated_world_from_refusing_for_storage() -> None:
    """The world refuses a transfer that would overfill its site. With the engine and
    negotiation aware of storage, it has to refuse far fewer than when they are blind."""
    # A few busy SKUs: a transfer is larger than the room a store's rounded-down targets
    # leave it (the world fits each store's targets to its storage).
    scenario = Scenario(
        n_sites=5, n_skus=10, days=8, seed=5, storage_capacity_days=5.0, mean_daily_demand=12.0
    )
    world_network = make_network(scenario)
    blind_network = replace(
        world_network,
        sites={s: replace(site, storage_capacity=None) for s, site in world_network.sites.items()},
        _into={},
        _from={},
    )

    def refusals(decide_with: Network) -> tuple[int, int]:
        kpis = run_stockshift(scenario, world_network, policy(), decide_with=decide_with).kpis
        return kpis["refused_for_storage"], kpis["transfers"]

    aware, aware_transfers = refusals(world_network)
    blind, blind_transfers = refusals(blind_network)
    assert aware_transfers > 0 and blind_transfers > 0
    assert blind >= 5, "the scenario should be tight enough for blind transfers to bounce"
    assert aware * 5 <= blind, (aware, blind)


def test_the_world_never_orders_beyond_storage() -> None:
    scenario = Scenario(n_sites=4, n_skus=20, days=6, seed=2, storage_capacity_days=5)
    network = make_network(scenario)
    sim = Simulation(scenario, network)
    start = [sim._held(s) for s in range(len(sim.sites))]
    while not sim.done:
        sim.advance_hour()
        for s, site in enumerate(sim.sites):
            capacity = network.sites[site].storage_capacity
            assert capacity is not None
            assert sim._held(s) <= max(capacity, start[s])
