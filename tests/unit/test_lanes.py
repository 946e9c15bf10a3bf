"""Negotiation: lane capacity (partial grants, deferral, drops, cut-off) and receiving
sites' storage capacity."""

from __future__ import annotations

from dataclasses import replace

import pytest
from bytewax.testing import TestingSource, run_main

from adapters import metrics
from adapters.memory import ListSink
from adapters.settings import Settings
from flows.pipeline import Sinks, build
from operators.engine import DecisionContext, step
from operators.lanes import departure_day, negotiate
from state.config import ConfigError, network_from_dict
from state.records import EventType, Outcome, Proposal
from tests.helpers import HOUR, T0, event, policy, raw_of, two_store_network, warm_history


def network(capacity: int = 30, cutoff: float | None = None):
    return two_store_network(
        capacity_per_day=capacity, **({"cutoff_hour": cutoff} if cutoff is not None else {})
    )


def a_proposal(sku: str = "SKU-1", qty: int = 20, hour: float = 10.0) -> Proposal:
    ctx = DecisionContext.build(two_store_network(), policy())
    state = None
    proposals = []
    for e in [
        *warm_history(sku=sku),
        event(f"count-{sku}", EventType.SNAPSHOT, 30.2, "B", 20, sku=sku),
    ]:
        state, out = step(state, e, ctx)
        proposals += out.proposals
    (p,) = proposals
    return replace(p, qty=qty, created_at_ms=T0 + int(hour * HOUR))


def test_within_capacity_passes_untouched() -> None:
    _, outcome = negotiate(None, a_proposal(qty=20), network(30))
    assert outcome.proposal is not None and outcome.proposal.qty == 20 and outcome.decision is None


def test_second_request_gets_what_is_left_then_waits_then_is_dropped() -> None:
    net = network(30)
    state, first = negotiate(None, a_proposal("SKU-1", 20), net)
    assert first.proposal is not None and first.proposal.qty == 20
    state, second = negotiate(state, a_proposal("SKU-2", 20), net)
    assert second.proposal is not None and second.proposal.qty == 10
    assert second.decision is not None and "room for 10 of 20" in second.decision.detail
    state, third = negotiate(state, a_proposal("SKU-3", 20), net)
    assert third.proposal is not None and "next departure" in third.proposal.reason
    state, fourth = negotiate(state, a_proposal("SKU-4", 20), net)
    assert fourth.proposal is not None and fourth.proposal.qty == 10  # the rest of tomorrow
    state, fifth = negotiate(state, a_proposal("SKU-5", 20), net)
    assert fifth.proposal is None
    assert fifth.decision is not None
    assert (fifth.decision.outcome, fifth.decision.reason) == (Outcome.SUPPRESSED, "lane_capacity")
    # Units granted never exceed capacity per departure day.
    assert all(units <= 30 for days in state.granted.values() for units in days.values())


def test_cutoff_moves_late_departures_to_the_next_day() -> None:
    lane = network(30, cutoff=16).lanes[("A", "B")]
    assert departure_day(lane, T0 + 15 * HOUR) == T0
    assert departure_day(lane, T0 + 17 * HOUR) == T0 + 24 * HOUR


def test_bad_lane_capacity_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="capacity_per_day"):
        network_from_dict(
            {
                "sites": [{"id": "A"}, {"id": "B"}],
                "lanes": [{"from": "A", "to": "B", "lead_hours": 1, "capacity_per_day": 0}],
            }
        )


def test_the_flow_negotiates_competing_skus_on_a_shared_lane() -> None:
    events = []
    for sku in ("SKU-1", "SKU-2", "SKU-3"):
        events += warm_history(sku=sku)
    events += [
        event(f"count-{sku}", EventType.SNAPSHOT, 30.2, "B", 20, sku=sku)
        for sku in ("SKU-1", "SKU-2", "SKU-3")
    ]
    out = Sinks(ListSink(), ListSink(), ListSink(), ListSink())
    counted_before = _counted_negotiation_decisions()
    run_main(
        build(
            Settings(),
            source=TestingSource([raw_of(e, i) for i, e in enumerate(events)]),
            sinks=out,
            network=network(25),
            policy=policy(),
        )
    )
    granted = out.proposals.items
    assert sum(p.qty for p in granted) <= 2 * 25  # today and the next departure
    lane_records = [
        d for d in out.decisions.items if d.reason in ("lane_capacity", "granted in part")
    ]
    assert lane_records, [d.reason for d in out.decisions.items]
    # Negotiation's records count in stockshift_decisions_total like the engine's.
    assert _counted_negotiation_decisions() - counted_before == len(lane_records)


def _counted_negotiation_decisions() -> float:
    total = 0.0
    for metric in metrics.DECISIONS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["reason"] in (
                "lane_capacity",
                "granted in part",
            ):
                total += sample.value
    return total
