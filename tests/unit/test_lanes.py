"""Negotiation: lane capacity (partial grants, deferral, drops, cut-off) and receiving
sites' storage capacity."""

from __future__ import annotations

import copy
import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import metrics
from operators.engine import DecisionContext, step
from operators.lanes import (
    ReceivingItem,
    ReceivingState,
    departure_day,
    in_negotiation_order,
    negotiate,
    negotiate_all,
    negotiate_batch,
)
from state.config import ConfigError, network_from_dict
from state.records import EventType, Outcome, Proposal, SiteOccupancy
from tests.support.helpers import (
    HOUR,
    T0,
    event,
    policy,
    run_flow,
    two_store_network,
    warm_history,
)


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
    proposal = a_proposal(qty=20)
    _, outcome = negotiate(None, proposal, network(30))
    assert outcome.proposal is not None and outcome.proposal.qty == 20
    # The engine's own record, logged now that the proposal is granted, unchanged.
    assert outcome.decision is proposal.record is not None


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
    counted_before = _counted_negotiation_decisions()
    out = run_flow(events, network(25), policy())
    granted = out.proposals.items
    assert sum(p.qty for p in granted) <= 2 * 25  # today and the next departure
    lane_records = [
        d for d in out.decisions.items if d.reason in ("lane_capacity", "granted in part")
    ]
    assert lane_records, [d.reason for d in out.decisions.items]
    # Negotiation's records count in stockshift_decisions_total like the engine's.
    assert _counted_negotiation_decisions() - counted_before == len(lane_records)


def test_the_audit_log_holds_one_record_per_published_proposal_with_its_granted_units() -> None:
    """A proposal is logged after negotiation: one record per proposal the flow published,
    with the units it was granted, and none for a proposal negotiation dropped."""
    events = []
    skus = ("SKU-1", "SKU-2", "SKU-3", "SKU-4", "SKU-5", "SKU-6")
    for sku in skus:
        events += warm_history(sku=sku)
    events += [event(f"count-{sku}", EventType.SNAPSHOT, 30.2, "B", 20, sku=sku) for sku in skus]
    out = run_flow(events, network(25), policy())
    published = {p.proposal_id: p for p in out.proposals.items}
    made = {d.proposal_id for d in out.decisions.items if d.proposal_id is not None}
    logged = [d for d in out.decisions.items if d.outcome is Outcome.PROPOSED]
    dropped = [d for d in out.decisions.items if d.reason == "lane_capacity"]
    assert dropped and len(made) == len(published) + len(dropped)
    assert sorted(d.proposal_id for d in logged) == sorted(published)
    for record in logged:
        assert record.evidence is not None
        assert record.evidence.value == published[record.proposal_id].evidence.value


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


def _request(sku: str, qty: int, net_benefit: float, hour: float = 10.0) -> Proposal:
    base = a_proposal(sku, qty, hour)
    return replace(base, evidence=replace(base.evidence, net_benefit=net_benefit))


def test_at_one_moment_the_most_valuable_units_get_the_lane() -> None:
    """Three SKUs ask for a 30-unit lane at the same moment: the best net benefit per unit
    is granted first, whatever order the requests arrived in."""
    cheap, dear, middling = (
        _request("SKU-1", 20, 10.0),  # 0.5 a unit
        _request("SKU-2", 20, 80.0),  # 4.0 a unit
        _request("SKU-3", 20, 30.0),  # 1.5 a unit
    )
    states: dict[str, ReceivingState] = {}
    outcomes = negotiate_all(states, [cheap, dear, middling], network(30))
    granted = {o.proposal.sku: o.proposal for o in outcomes if o.proposal is not None}
    assert granted["SKU-2"].qty == 20 and "next departure" not in granted["SKU-2"].reason
    assert granted["SKU-3"].qty == 10  # what was left today
    assert "next departure" in granted["SKU-1"].reason


def test_a_later_moment_does_not_overtake_an_earlier_one() -> None:
    early_cheap = _request("SKU-1", 20, 10.0, hour=9.0)
    late_dear = _request("SKU-2", 20, 80.0, hour=10.0)
    ordered = in_negotiation_order([late_dear, early_cheap])
    assert [item.sku for item in ordered] == ["SKU-1", "SKU-2"]


@given(st.randoms(use_true_random=False), st.integers(0, 2**16))
def test_negotiation_order_does_not_depend_on_how_skus_were_interleaved(
    rnd: random.Random, seed: int
) -> None:
    """The dataflow hands a batch on key by key, the simulator in event order: any
    interleaving that keeps each SKU's own order gives the same sequence."""
    gen = random.Random(seed)
    per_sku: dict[str, list[ReceivingItem]] = {}
    for sku in ("SKU-1", "SKU-2", "SKU-3", "SKU-4"):
        hour = 10.0
        for _ in range(gen.randint(1, 4)):
            hour += gen.choice((0.0, 0.0, 1.0))  # often several reports at one moment
            clock = T0 + int(hour * HOUR)
            if gen.random() < 0.5:
                item: ReceivingItem = SiteOccupancy(sku, "B", gen.randint(0, 40), clock)
            else:
                item = _request(sku, gen.randint(1, 20), gen.uniform(-5.0, 50.0), hour)
            per_sku.setdefault(sku, []).append(item)
    in_sku_order = [item for items in per_sku.values() for item in items]
    queues = {sku: list(items) for sku, items in per_sku.items()}
    interleaved: list[ReceivingItem] = []
    while queues:
        sku = rnd.choice(sorted(queues))
        interleaved.append(queues[sku].pop(0))
        if not queues[sku]:
            del queues[sku]
    assert in_negotiation_order(interleaved) == in_negotiation_order(in_sku_order)
    # Each SKU's own items keep their order.
    ordered = in_negotiation_order(interleaved)
    for sku, items in per_sku.items():
        assert [item for item in ordered if item.sku == sku] == items


# ---- trips: a lane's trip cost shared by the SKUs it carries that day -------------------


def trip_network(trip_cost: float):
    return two_store_network(trip_cost=trip_cost)


def worth(proposal: Proposal, net_benefit: float) -> Proposal:
    return replace(proposal, evidence=replace(proposal.evidence, net_benefit=net_benefit))


def test_proposals_wait_until_their_trip_pays_then_all_go_in_arrival_order() -> None:
    net = trip_network(40.0)
    first = worth(a_proposal("SKU-1", 10, hour=9.0), 15.0)
    second = worth(a_proposal("SKU-2", 10, hour=9.5), 15.0)
    third = worth(a_proposal("SKU-3", 10, hour=10.0), 15.0)
    state, out = negotiate_batch(None, [first], net)
    (waiting,) = out
    assert waiting.proposal is None and waiting.decision is not None and not waiting.later
    assert waiting.decision.outcome is Outcome.WAITING_FOR_TRIP
    assert "15.00 of the 40.00 it needs" in waiting.decision.detail
    state, out = negotiate_batch(state, [second], net)
    assert [o.proposal for o in out] == [None]
    state, out = negotiate_batch(state, [third], net)  # 45 >= 40: the trip opens
    assert [o.proposal.sku for o in out if o.proposal] == ["SKU-1", "SKU-2", "SKU-3"]
    assert [o.later for o in out] == [True, True, False]
    # The trip is open for the day: the next one rides at once.
    state, out = negotiate_batch(state, [worth(a_proposal("SKU-4", 5, hour=11.0), 0.5)], net)
    assert out[0].proposal is not None and not out[0].later


def test_a_trip_that_does_not_fill_drops_its_proposals_with_the_reason() -> None:
    net = trip_network(40.0)
    lonely = worth(a_proposal("SKU-1", 10, hour=9.0), 15.0)
    state, _ = negotiate_batch(None, [lonely], net)
    # The next item for the site comes after the proposal expired.
    late = SiteOccupancy("SKU-9", "B", 3, lonely.expires_at_ms + 1)
    state, out = negotiate_batch(state, [late], net)
    dropped = [o for o in out if o.decision is not None]
    assert len(dropped) == 1 and dropped[0].later and dropped[0].proposal is None
    decision = dropped[0].decision
    assert (decision.outcome, decision.reason) == (Outcome.SUPPRESSED, "trip_not_filled")
    assert all(not trip.waiting for days in state.trips.values() for trip in days.values())


def test_lanes_without_a_trip_cost_negotiate_as_before() -> None:
    proposal = a_proposal("SKU-1", 10)
    _, out = negotiate_batch(None, [proposal], trip_network(0.0))
    assert [o.proposal for o in out] == [proposal]


def test_a_trip_cost_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="trip_cost"):
        trip_network(-1.0)


def test_a_minimum_trip_value_keeps_the_trip_until_its_load_is_worth_more() -> None:
    net = two_store_network(trip_cost=40.0, min_trip_value=20.0)
    state, out = negotiate_batch(None, [worth(a_proposal("SKU-1", 10, hour=9.0), 45.0)], net)
    assert out[0].proposal is None and "45.00 of the 60.00" in out[0].decision.detail
    state, out = negotiate_batch(state, [worth(a_proposal("SKU-2", 10, hour=9.5), 15.0)], net)
    assert [o.proposal.sku for o in out if o.proposal] == ["SKU-1", "SKU-2"]


def _lane_broken(net, pair: tuple[str, str]):
    """The network with one lane's cut-off of a type its loader refuses (built past the
    loader), so negotiating on that lane raises, as a defect would."""
    lanes = dict(net.lanes)
    lanes[pair] = replace(lanes[pair], cutoff_hour=1j)
    return replace(net, lanes=lanes)


def test_with_a_failure_handler_a_failing_item_is_answered_and_the_batch_goes_on() -> None:
    net = network(30)
    first = a_proposal("SKU-1", 20)
    pair = (first.from_site, first.to_site)
    second = replace(a_proposal("SKU-2", 20), from_site="A", to_site="C")
    assert pair != ("A", "C")
    broken = _lane_broken(net, pair)
    with pytest.raises(TypeError):  # no handler (simulator, tests): the defect surfaces
        negotiate_batch(None, [first, second], broken)
    told: list[tuple[str, str]] = []
    _, outcomes = negotiate_batch(
        None,
        [first, second],
        broken,
        lambda item, failure: told.append((item.sku, type(failure).__name__)),
    )
    assert told == [("SKU-1", "TypeError")]
    failed, granted = outcomes
    assert failed.proposal is None and failed.decision is not None
    assert (failed.decision.outcome, failed.decision.reason) == (
        Outcome.SUPPRESSED,
        "negotiation_failed",
    )
    assert failed.decision.detail.startswith(f"proposal {first.proposal_id} (20 units)")
    assert "negotiation raised TypeError" in failed.decision.detail
    assert granted.proposal is not None and granted.proposal.sku == "SKU-2"
    assert granted.proposal.qty == 20


def test_a_proposal_failing_as_its_trip_opens_does_not_cost_the_others_their_answers() -> None:
    net = two_store_network(trip_cost=40.0, capacity_per_day=100)
    # SKU-2's pack size of 0 (past the loader) makes booking it on the lane raise.
    broken_params = replace(net.sku_defaults, pack_size=0)
    net = replace(net, sku_overrides={**net.sku_overrides, "SKU-2": broken_params})
    waiting = [worth(a_proposal(f"SKU-{n}", 10, hour=8.0 + n), 15.0) for n in (1, 2)]
    opener = worth(a_proposal("SKU-3", 10, hour=11.0), 15.0)  # 45 >= 40: the trip opens
    state, _ = negotiate_batch(None, waiting, net)
    with pytest.raises(ZeroDivisionError):  # no handler: the defect surfaces
        negotiate_batch(copy.deepcopy(state), [opener], net)
    told: list[tuple[str, str]] = []
    _, outcomes = negotiate_batch(
        state, [opener], net, lambda item, failure: told.append((item.sku, type(failure).__name__))
    )
    assert told == [("SKU-2", "ZeroDivisionError")]
    assert [(o.proposal.sku if o.proposal else None, o.later) for o in outcomes] == [
        ("SKU-1", True),
        (None, True),
        ("SKU-3", False),
    ]
    assert outcomes[1].decision is not None and outcomes[1].decision.reason == "negotiation_failed"
    assert outcomes[1].decision.proposal_id == waiting[1].proposal_id


def test_when_ordering_a_batch_fails_it_is_negotiated_in_arrival_order() -> None:
    net = network(30)
    # A benefit of the wrong type (past the engine) makes ranking the batch raise.
    first = worth(a_proposal("SKU-2", 10), "ten")  # type: ignore[arg-type]
    second = a_proposal("SKU-1", 10)
    with pytest.raises(TypeError):
        negotiate_batch(None, [first, second], net)
    told: list[tuple[object, str]] = []
    _, outcomes = negotiate_batch(
        None,
        [first, second],
        net,
        lambda item, failure: told.append((item, type(failure).__name__)),
    )
    assert told == [(None, "TypeError")]
    assert [o.proposal.sku for o in outcomes if o.proposal] == ["SKU-2", "SKU-1"]
