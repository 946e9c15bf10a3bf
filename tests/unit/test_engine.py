from __future__ import annotations

import itertools
import math
from copy import deepcopy
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.lab.simulator import Scenario, make_network
from flows.lab.simulate import run_stockshift
from operators.demand import mean_per_hour, observed_hours
from operators.engine import DecisionContext, decision_time, step
from operators.parse import parse_object
from operators.planner import (
    Agents,
    DemandPrior,
    ReceiverOutlook,
    _needs_nothing,
    agent_at,
    agent_for,
    demand_prior,
    estimate_risk,
    expected_shortfall,
    plan_for_receiver,
    priced_receiver,
    receiver_need,
    stock_checkpoints,
)
from operators.position import TRANSFER_INBOUND_PREFIX
from state.records import Event, EventType, ForecastFigures, Outcome, Proposal
from state.sku import Inbound, SiteForecast, SiteState, SkuState
from tests.support.helpers import (
    HOUR,
    T0,
    event,
    policy,
    run_engine,
    two_store_network,
    warm_history,
)

CTX = DecisionContext.build(two_store_network(), policy())


def run(events, ctx=CTX, state=None):
    return run_engine(events, ctx, state)


def trigger():
    """A count at B reveals far less stock than the books said (shrink)."""
    return event("count-B", EventType.SNAPSHOT, 30.2, "B", 20)


def test_short_receiver_gets_a_proposal_from_the_site_with_surplus() -> None:
    state, proposals, decisions = run([*warm_history(), trigger()])
    assert len(proposals) == 1
    p = proposals[0]
    assert (p.from_site, p.to_site) == ("A", "B")
    assert p.trigger_event_ids == ("count-B",)
    assert p.evidence.net_benefit >= CTX.policy.min_net_benefit
    assert p.evidence.expected_units_saved > 0
    assert p.expires_at_ms - p.created_at_ms == int(CTX.policy.proposal_ttl_hours * HOUR)
    # The reservation holds the quantity at both ends.
    assert state.sites["A"].reserved_out == p.qty == state.sites["B"].reserved_in
    assert any(d.outcome is Outcome.PROPOSED and d.proposal_id == p.proposal_id for d in decisions)
    # The slower, dearer lane into C lost or was never a candidate; A->B is the only lane into B.
    assert p.evidence.lead_hours == 6


def test_replay_gives_identical_proposals_and_ids() -> None:
    _, first, _ = run([*warm_history(), trigger()])
    _, second, _ = run([*warm_history(), trigger()])
    assert first == second and first


def test_reservation_stops_a_second_proposal_until_released() -> None:
    state, (first,), _ = run([*warm_history(), trigger()])
    state, more, decisions = run([event("s2", EventType.SALE, 30.4, "B", 3)], state=state)
    assert more == []
    assert any(d.reason == "reservation_outstanding" for d in decisions)
    assert state.sites["B"].reserved_in == first.qty
    # After expiry the reservation is released and logged.
    later = 30.2 + CTX.policy.proposal_ttl_hours + 0.1
    state, _, decisions = run([event("s3", EventType.SALE, later, "A", 1)], state=state)
    released = [d for d in decisions if d.outcome is Outcome.RESERVATION_RELEASED]
    assert [d.reason for d in released] == ["expired"]
    assert state.sites["A"].reserved_out == 0 and state.sites["B"].reserved_in == 0


def executed(p: Proposal, dispatched_h: float, received_h: float) -> tuple[Event, Event]:
    """What an execution service reports for a proposal it carried out."""
    common = {"from_site": p.from_site, "proposal_id": p.proposal_id}
    return (
        event(
            "d-" + p.proposal_id,
            EventType.TRANSFER_DISPATCHED,
            dispatched_h,
            p.to_site,
            p.qty,
            **common,
        ),
        event(
            "r-" + p.proposal_id,
            EventType.TRANSFER_RECEIVED,
            received_h,
            p.to_site,
            p.qty,
            **common,
        ),
    )


def test_dispatch_moves_stock_in_transit_and_receipt_lands_it() -> None:
    state, (p,), _ = run([*warm_history(), trigger()])
    a_before = state.sites["A"].on_hand
    dispatched, received = executed(p, 31, 37)
    state, _, decisions = run([dispatched], state=state)
    assert state.sites["A"].on_hand == a_before - p.qty
    assert state.sites["A"].reserved_out == 0 and state.sites["B"].reserved_in == 0
    assert state.sites["B"].inbound_qty == p.qty
    released = [d.reason for d in decisions if d.outcome is Outcome.RESERVATION_RELEASED]
    assert released == ["dispatched"]
    b_before = state.sites["B"].on_hand
    state, _, _ = run([received], state=state)
    assert state.sites["B"].on_hand == b_before + p.qty and state.sites["B"].inbound_qty == 0
    assert p.proposal_id not in state.reservations


def test_a_dispatch_reported_after_its_receipt_moves_nothing() -> None:
    state, (p,), _ = run([*warm_history(), trigger()])
    a_before, b_before = state.sites["A"].on_hand, state.sites["B"].on_hand
    dispatched, received = executed(p, 31, 37)
    state, _, _ = run([received], state=state)
    assert state.sites["A"].on_hand == a_before - p.qty
    assert state.sites["B"].on_hand == b_before + p.qty
    state, _, decisions = run([dispatched], state=state)
    assert state.sites["A"].on_hand == a_before - p.qty  # not taken a second time
    assert state.sites["B"].inbound_qty == 0  # and nothing left "in transit"
    assert not [d for d in decisions if d.outcome is Outcome.RESERVATION_RELEASED]


def test_no_ping_pong_a_site_that_just_received_does_not_send_back() -> None:
    state, (p,), _ = run([*warm_history(), trigger()])
    # After the transfer lands, counts show B full and A empty: A is short, B (its only
    # lane) has surplus, but B just received from A and is cooling down.
    later = [
        *executed(p, 31, 37),
        event("found-B", EventType.SNAPSHOT, 37.5, "B", 300),
        event("shrink-A", EventType.SNAPSHOT, 38, "A", 0),
    ]
    later.append(event("sale-A", EventType.SALE, 38.5, "A", 1))
    state, proposals, decisions = run(later, state=state)
    assert proposals == []
    assert [(d.site, d.reason) for d in decisions if d.outcome is Outcome.SUPPRESSED] == [
        ("A", "cooldown")
    ]
    # Once the cooldown has passed, B may send.
    after = 37 + CTX.policy.cooldown_hours + 1
    _, proposals, _ = run([event("sale-A2", EventType.SALE, after, "A", 1)], state=state)
    assert [(x.from_site, x.to_site) for x in proposals] == [("B", "A")]


def test_duplicate_event_ids_are_ignored() -> None:
    state, _, _ = run(warm_history())
    on_hand = state.sites["B"].on_hand
    state, out = step(state, event("sale-B-3-SKU-1", EventType.SALE, 30, "B", 5), CTX)
    assert out.duplicate and state.sites["B"].on_hand == on_hand


def sales_from(hour: float, events: list[Event]) -> tuple[list[Event], list[Event]]:
    """The events without the sales from `hour` on, and those sales (to send late)."""
    late = [e for e in events if e.type is EventType.SALE and e.ts_ms >= T0 + hour * HOUR]
    return [e for e in events if e not in late], late


def test_sales_that_arrive_after_a_later_count_teach_demand_as_in_time() -> None:
    """B's last ten hours of sales come after its count (a POS feed lagging the counts):
    its demand reads one an hour, as with the sales in time, not the 0.64 it read when late
    sales counted in the open window while their own had closed empty."""
    in_time, lagging = sales_from(20, warm_history(30))
    state, _, _ = run([*in_time, trigger(), *lagging])
    window_minutes = CTX.policy.demand_window_minutes
    assert mean_per_hour(state.sites["B"].demand, window_minutes) == pytest.approx(1.0)
    assert mean_per_hour(state.sites["A"].demand, window_minutes) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("arrived_after_hours", "clock_ahead_hours", "decided_after_hours"),
    [
        (None, 0, 0),  # no message time (the simulator's events): event time
        (3, 0, 3),  # a feed three hours behind: when it arrived
        (24, 0, 24),  # a day behind, the most a lagging feed is taken to be
        (24.01, 0, 0),  # later: a backfill or a wrong clock keeps event time
        (-1, 0, 0),  # a message time before the event's (its clock ahead): event time
        (3, 5, 5),  # the SKU's clock already past the arrival: the clock
    ],
)
def test_decision_time_is_the_arrival_of_a_message_up_to_a_day_late(
    arrived_after_hours: float | None, clock_ahead_hours: float, decided_after_hours: float
) -> None:
    sale = event("s", EventType.SALE, 10, "B", 1)
    if arrived_after_hours is not None:
        sale = replace(sale, ingested_ms=sale.ts_ms + int(arrived_after_hours * HOUR))
    now = sale.ts_ms + int(clock_ahead_hours * HOUR)
    assert decision_time(sale, now) == sale.ts_ms + int(decided_after_hours * HOUR)


def test_a_proposal_from_a_late_message_lives_from_its_arrival() -> None:
    """B's count reaches Kafka five hours after its time (a feed that lags): its proposal
    and the reservation run from the arrival, so a sale from the hour the proposal would
    have expired in by event time leaves the reservation held; one past the arrival's expiry
    releases it. The same count a week late (a backfill) keeps the count's own time."""
    count = trigger()
    late = replace(count, ingested_ms=count.ts_ms + 5 * HOUR)
    state, proposals, _ = run([*warm_history(), late])
    (p,) = proposals
    assert p.created_at_ms == late.ingested_ms and p.record is not None
    assert p.record.ts_ms == p.created_at_ms
    life_hours = (p.expires_at_ms - p.created_at_ms) / HOUR
    by_event_time = event("sale-A-x", EventType.SALE, 30.2 + life_hours + 0.5, "A", 1)
    state, _, _ = run([by_event_time], state=state)
    assert p.proposal_id in state.reservations
    past_expiry = event("sale-A-y", EventType.SALE, 30.2 + life_hours + 5.5, "A", 1)
    state, _, decisions = run([past_expiry], state=state)
    assert p.proposal_id not in state.reservations
    assert [d.reason for d in decisions if d.proposal_id == p.proposal_id] == ["expired"]
    backfill = replace(count, ingested_ms=count.ts_ms + 7 * 24 * HOUR)
    _, (old,), _ = run([*warm_history(), backfill])
    assert old.created_at_ms == count.ts_ms


def test_a_count_then_the_sales_it_already_holds_decide_as_in_time() -> None:
    """B counts 32 at 30.2, then its last ten hours of sales arrive: in time B needs
    nothing, and late it needs nothing either (taken off the count, they left 22 and B
    asked for 8 units)."""
    history = warm_history(30)
    in_time, lagging = sales_from(20, history)
    count = event("count-B", EventType.SNAPSHOT, 30.2, "B", 32)
    expected, none, _ = run([*history, count])
    state, proposals, _ = run([*in_time, count, *lagging])
    assert none == [] and proposals == []
    assert state.sites["B"].on_hand == expected.sites["B"].on_hand == 32


movements_in_a_count = st.lists(
    st.tuples(
        st.sampled_from(
            [EventType.SALE, EventType.RETURN, EventType.ADJUSTMENT, EventType.INBOUND_RECEIVED]
        ),
        st.floats(0.0, 30.1),
        st.integers(-30, 30).filter(lambda v: v != 0),
    ),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(movements=movements_in_a_count, counted=st.integers(0, 200))
def test_a_movement_older_than_the_sites_count_leaves_its_stock_to_the_count(
    movements: list[tuple[EventType, float, int]], counted: int
) -> None:
    """A count at 30.2 says what B holds; sales, returns, adjustments and receipts from
    before it that come after it (a lagging feed) are in it already."""
    state, _, _ = run([*warm_history(), event("count-B", EventType.SNAPSHOT, 30.2, "B", counted)])
    late = [
        event(f"late-{i}", kind, hour, "B", qty if kind is EventType.ADJUSTMENT else abs(qty))
        for i, (kind, hour, qty) in enumerate(movements)
    ]
    state, _, _ = run(late, state=state)
    assert state.sites["B"].on_hand == counted
    # The same movement a moment after the count moves the stock.
    state, _, _ = run([event("after", EventType.RETURN, 30.3, "B", 5)], state=state)
    assert state.sites["B"].on_hand == counted + 5


CHECKED = DecisionContext.build(two_store_network(), policy(signal_checks=True))


def test_a_count_older_than_the_latest_changes_nothing_and_finds_nothing() -> None:
    counts = [
        event("count-B", EventType.SNAPSHOT, 30.2, "B", 40),
        event("stale-count-B", EventType.SNAPSHOT, 20.2, "B", 3),
    ]
    state, _, _ = run([*warm_history(), *counts], ctx=CHECKED)
    assert (state.sites["B"].on_hand, state.sites["B"].counted_ms) == (40, T0 + int(30.2 * HOUR))
    _, out = step(state, event("stale-2", EventType.SNAPSHOT, 25.0, "B", 200), CHECKED)
    assert out.findings == ()
    # The same count a moment after the latest is news: far above the books.
    _, out = step(state, event("count-2", EventType.SNAPSHOT, 30.3, "B", 200), CHECKED)
    assert [f.kind for f in out.findings] == ["phantom_stock"]


def test_a_late_sale_from_before_a_count_that_found_the_shelf_empty_finds_nothing() -> None:
    """B counted empty at 30.2; its sale at 29.9 arrives after: no `negative_implied_stock`
    (it sold from the shelf it found then), and it still counts as demand."""
    counted = event("count-B", EventType.SNAPSHOT, 30.2, "B", 0)
    state, _, _ = run([*warm_history(), counted], ctx=CHECKED)
    rate_before = state.sites["B"].demand.rate
    late, out = step(deepcopy(state), event("late-sale", EventType.SALE, 29.9, "B", 2), CHECKED)
    assert [f.kind for f in out.findings] == []
    assert late.sites["B"].on_hand == 0
    assert late.sites["B"].demand.rate > rate_before
    # The same sale a moment after the count takes more than the books hold.
    _, out = step(state, event("sale-after", EventType.SALE, 30.3, "B", 2), CHECKED)
    assert [f.kind for f in out.findings] == ["negative_implied_stock"]


def test_warm_up_suppresses_and_is_logged_once() -> None:
    # Ten hours of history is less than the 24 h warm-up: B is short but may not act yet.
    events = [
        *warm_history(10),
        event("count-B", EventType.SNAPSHOT, 10.2, "B", 2),
        event("late-sale", EventType.SALE, 10.4, "B", 1),
    ]
    _, proposals, decisions = run(events)
    assert proposals == []
    assert [(d.site, d.reason) for d in decisions] == [("B", "warming_up")]


def test_expected_shortfall_matches_numeric_integration() -> None:
    mean, sd, stock = 20.0, 5.0, 18.0
    steps = 20_000
    lo, hi = mean - 10 * sd, mean + 10 * sd
    dx = (hi - lo) / steps
    total = 0.0
    for i in range(steps):
        x = lo + (i + 0.5) * dx
        pdf = math.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
        total += max(x - stock, 0.0) * pdf * dx
    assert abs(expected_shortfall(mean, sd, stock) - total) < 1e-4
    assert expected_shortfall(10, 0, 4) == 6


# ---- invariants over random event sequences -------------------------------------------

site = st.sampled_from(["A", "B", "C"])
kinds = st.sampled_from(
    [
        EventType.SALE,
        EventType.SALE,
        EventType.SALE,
        EventType.SNAPSHOT,
        EventType.RETURN,
        EventType.ADJUSTMENT,
    ]
)


@st.composite
def sequences(draw):
    events = warm_history(26)
    hour = 26.0
    for i in range(draw(st.integers(1, 60))):
        hour += draw(st.floats(0.0, 3.0))
        kind = draw(kinds)
        s = draw(site)
        if kind is EventType.SNAPSHOT:
            qty = draw(st.integers(0, 400))
        elif kind is EventType.ADJUSTMENT:
            qty = draw(st.integers(-50, 50).filter(lambda v: v != 0))
        else:
            qty = draw(st.integers(1, 40))
        events.append(event(f"r{i}", kind, hour, s, qty))
    return events


@settings(max_examples=60, deadline=None)
@given(sequences(), st.data())
def test_invariants_hold_for_any_sequence(events, data) -> None:
    state: SkuState | None = None
    proposals: list[Proposal] = []
    for e in events:
        state, out = step(state, e, CTX)
        for p in out.proposals:
            proposals.append(p)
            # Never promise more than the sender physically holds.
            sender = state.sites[p.from_site]
            assert sender.reserved_out <= sender.on_hand
            assert p.evidence.net_benefit >= CTX.policy.min_net_benefit
            assert p.qty >= CTX.network.sku_defaults.min_transfer_qty
            # The sender keeps physical stock for its next `sender_keep_hours` (`target`).
            view = p.evidence.sender
            assert view.on_hand - view.reserved_out - p.qty >= view.target - 0.01
        assert state is not None
        for s in state.sites.values():
            assert s.reserved_in >= 0 and s.reserved_out >= 0 and s.on_hand >= 0
        pending = [r for r in state.reservations.values() if not r.dispatched]
        assert sum(s.reserved_out for s in state.sites.values()) == sum(r.qty for r in pending)
        assert sum(s.reserved_in for s in state.sites.values()) == sum(r.qty for r in pending)
    assert len({p.proposal_id for p in proposals}) == len(proposals)


def _units(state: SkuState) -> int:
    """On the shelves plus in transit between sites."""
    shelves = sum(s.on_hand for s in state.sites.values())
    moving = sum(
        inbound.qty
        for s in state.sites.values()
        for key, inbound in (s.inbound or {}).items()
        if key.startswith(TRANSFER_INBOUND_PREFIX)
    )
    return shelves + moving


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_units_are_conserved_through_transfers_and_duplicates(data) -> None:
    """Units change only by sales, returns and adjustments, whatever execution answers, in
    whatever order, and whatever is replayed: an event id seen before, even with other
    content, changes nothing; a dispatch reported after its receipt moves nothing."""
    state: SkuState | None = None
    for e in warm_history(30, b_stock=45):
        state, _ = step(state, e, CTX)
    assert state is not None
    expected = _units(state)
    hour, seen, open_proposals, in_transit, received_early = 30.0, [], [], [], []
    for i in range(data.draw(st.integers(5, 50))):
        hour += data.draw(st.floats(0.05, 2.0))
        choice = data.draw(st.sampled_from(["sale", "return", "adjust", "exec", "replay"]))
        where = data.draw(st.sampled_from(["A", "B"]))
        if choice == "replay" and seen:
            old = data.draw(st.sampled_from(seen))
            e = event(old, EventType.SALE, hour, where, data.draw(st.integers(1, 9)))
            delta = 0  # a duplicate id: ignored
        elif choice == "exec" and received_early and data.draw(st.booleans()):
            p = received_early.pop(data.draw(st.integers(0, len(received_early) - 1)))
            e = Event(
                f"x{i}", EventType.TRANSFER_DISPATCHED, T0 + int(hour * HOUR), p.sku, p.to_site,
                p.qty, from_site=p.from_site, proposal_id=p.proposal_id,
            )  # fmt: skip
            delta = 0
        elif choice == "exec" and (open_proposals or in_transit):
            p = data.draw(st.sampled_from(open_proposals + in_transit))
            dispatched = p in in_transit
            answer = data.draw(
                st.sampled_from(
                    ["transfer_received", "transfer_failed"]
                    if dispatched
                    else ["transfer_dispatched", "transfer_rejected", "transfer_received"]
                )
            )
            kind = EventType(answer)
            e = Event(
                f"x{i}", kind, T0 + int(hour * HOUR), p.sku, p.to_site, p.qty,
                from_site=p.from_site, proposal_id=p.proposal_id,
            )  # fmt: skip
            sender_stock = state.sites[p.from_site].on_hand
            (open_proposals if not dispatched else in_transit).remove(p)
            if answer == "transfer_dispatched":
                in_transit.append(p)
            if answer == "transfer_received" and not dispatched:
                received_early.append(p)
            # Units leave the sender only as far as it holds them (sales may have lowered it).
            delta = 0
            if not dispatched and answer in ("transfer_dispatched", "transfer_received"):
                delta = min(p.qty, sender_stock) - p.qty
        else:
            qty = data.draw(st.integers(1, 6))
            on_hand = state.sites[where].on_hand
            if choice == "sale":
                qty = min(qty, on_hand)
                if qty == 0:
                    continue
                e, delta = event(f"r{i}", EventType.SALE, hour, where, qty), -qty
            elif choice == "return":
                e, delta = event(f"r{i}", EventType.RETURN, hour, where, qty), qty
            else:
                qty = -min(qty, on_hand) if data.draw(st.booleans()) else qty
                if qty == 0:
                    continue
                e, delta = event(f"r{i}", EventType.ADJUSTMENT, hour, where, qty), qty
        state, out = step(state, e, CTX)
        seen.append(e.event_id)
        open_proposals += list(out.proposals)
        expected += delta
        assert _units(state) == expected, (e, delta)
        for s in state.sites.values():
            assert s.reserved_in >= 0 and s.reserved_out >= 0 and s.on_hand >= 0


# ---- demand prior and the priced sender loss ----------------------------------------------


def _sites_selling(hours: int, sellers: tuple[str, ...], stock: dict[str, int]) -> SkuState:
    state = SkuState("SKU-1")
    events = [event(f"snap-{s}", EventType.SNAPSHOT, 0, s, q) for s, q in stock.items()]
    for h in range(hours):
        events += [event(f"sale-{s}-{h}", EventType.SALE, h + 0.5, s, 1) for s in sellers]
    for e in events:
        state, _ = step(state, e, CTX)
    return state


def test_a_site_that_has_not_sold_yet_borrows_the_skus_demand() -> None:
    # A sold one an hour for 30 hours; B had nothing to sell, so it never showed demand.
    state = _sites_selling(30, ("A",), {"A": 300, "B": 0})
    prior = demand_prior(state, CTX.policy, CTX.network)
    assert prior is not None and 0.9 < prior.per_hour <= 1.0
    alone = agent_for("B", state.sites["B"], CTX.policy)
    informed = agent_for("B", state.sites["B"], CTX.policy, prior)
    assert alone.mean == 0.0 and not alone.learned
    assert informed.learned and informed.mean == pytest.approx(prior.per_hour)
    # ...and so B, empty, is a receiver the planner fills from A.
    plan = plan_for_receiver(state, "B", CTX.network, CTX.policy, T0 + 31 * HOUR)
    assert plan is not None and plan.chosen is not None and plan.chosen.from_site == "A"


def test_the_prior_scales_with_each_sites_demand_index() -> None:
    # A (index 2) sold one an hour: a site of index 1 is expected to sell half of that.
    state = _sites_selling(30, ("A",), {"A": 300, "B": 0})
    network = CTX.network
    sites = {
        "A": replace(network.sites["A"], demand_index=2.0),
        "B": replace(network.sites["B"], demand_index=0.5),
        "C": network.sites["C"],
    }
    indexed = replace(network, sites=sites)
    prior = demand_prior(state, CTX.policy, indexed)
    assert prior is not None and 0.45 < prior.per_hour <= 0.5
    informed = agent_for("B", state.sites["B"], CTX.policy, prior, 0.5)
    assert informed.mean == pytest.approx(prior.per_hour * 0.5)


def _selling_at_rates(hours: int, per_hour: dict[str, int]) -> SkuState:
    """Each site stocked for the whole run and selling its own number of units an hour (a
    site that sells none is counted every hour, so its empty hours are seen)."""
    state = SkuState("SKU-1")
    events = [event(f"snap-{s}", EventType.SNAPSHOT, 0, s, 10_000) for s in per_hour]
    for h in range(hours):
        events += [
            event(f"sale-{s}-{h}", EventType.SALE, h + 0.5, s, q)
            if q
            else event(f"count-{s}-{h}", EventType.SNAPSHOT, h + 0.5, s, 10_000)
            for s, q in per_hour.items()
        ]
    for e in events:
        state, _ = step(state, e, CTX)
    return state


def test_the_prior_counts_for_less_where_the_skus_sites_differ_beyond_chance() -> None:
    by_spread = policy(demand_prior_by_spread=True)
    # Alike: all three sell 2 an hour, so the spread is no more than chance and the prior
    # keeps its full weight.
    alike = demand_prior(_selling_at_rates(40, {"A": 2, "B": 2, "C": 2}), by_spread, CTX.network)
    assert alike is not None and alike.spread == 0.0
    assert alike.hours(1.0, by_spread.demand_prior_hours) == by_spread.demand_prior_hours
    # Concentrated: A sells 6 an hour, B and C none (stocked all along). A's estimate keeps
    # close to its own rate instead of being pulled toward the SKU's 2 an hour.
    state = _selling_at_rates(40, {"A": 6, "B": 0, "C": 0})
    apart = demand_prior(state, by_spread, CTX.network)
    fixed = demand_prior(state, CTX.policy, CTX.network)
    assert apart is not None and fixed is not None and fixed.spread == 0.0
    assert apart.per_hour == pytest.approx(fixed.per_hour)
    assert apart.hours(1.0, by_spread.demand_prior_hours) < 1.0
    pulled = agent_for("A", state.sites["A"], CTX.policy, fixed).mean
    own = agent_for("A", state.sites["A"], by_spread, apart).mean
    assert pulled < 4.0 and own > 5.8


def test_a_receiver_observed_briefly_is_priced_at_no_more_than_the_full_prior() -> None:
    """A sold 6 an hour for 40 hours where B and C sold none: with the spread's discount its
    estimate keeps near its own rate. As a receiver observed for less than
    `receiver_full_prior_hours` it is priced at the rate the prior at full weight gives;
    the need and the estimate itself are untouched (`priced_receiver` leaves the agent)."""
    p = policy(demand_prior_by_spread=True, receiver_full_prior_hours=72.0)
    state = _selling_at_rates(40, {"A": 6, "B": 0, "C": 0})
    prior = demand_prior(state, p, CTX.network)
    assert prior is not None and prior.spread > 0
    own = agent_for("A", state.sites["A"], p, prior)
    priced = priced_receiver(own, p, CTX.network, prior)
    full = agent_for("A", state.sites["A"], p, DemandPrior(prior.per_hour))
    assert priced.mean == pytest.approx(full.mean) and priced.mean < 4.0 < 5.8 < own.mean
    assert (priced.sd, priced.se, priced.learned) == (own.sd, own.se, own.learned)
    off = replace(p, receiver_full_prior_hours=0.0)
    assert priced_receiver(own, off, CTX.network, prior) is own
    seen_hours = observed_hours(state.sites["A"].demand, p.demand_window_minutes)
    at_seen = replace(p, receiver_full_prior_hours=seen_hours)  # observed that long: as it is
    assert 30 < seen_hours < 72 and priced_receiver(own, at_seen, CTX.network, prior) is own
    longer = _selling_at_rates(80, {"A": 6, "B": 0, "C": 0})
    later = agent_for("A", longer.sites["A"], p, demand_prior(longer, p, CTX.network))
    assert priced_receiver(later, p, CTX.network, demand_prior(longer, p, CTX.network)) is later
    # A forecast of 0 units leaves the site to the prior (as none would): priced the same.
    # One of a positive rate stands in for the prior: the site is priced as it is.
    for per_day, capped in ((0.0, True), (144.0, False)):
        figures = ForecastFigures(per_day, None, None)
        told, _ = step(
            state, event(f"f{per_day}", EventType.FORECAST, 40.1, "A", 0, forecast=figures), CTX
        )
        agent = agent_for("A", told.sites["A"], p, prior)
        found = priced_receiver(agent, p, CTX.network, prior)
        assert (found.mean == pytest.approx(full.mean)) if capped else found is agent


def test_a_proposal_to_a_young_receiver_is_priced_at_the_capped_rate_and_says_so() -> None:
    """B sold 4 an hour for 40 hours where A sold 1 and C none, then lost 230 units: it is
    short, and A sends. With the cap B's saving is priced at the rate the cross-site prior
    at full weight gives (fewer units saved than at its own estimate), and the proposal's
    reason names both rates; without it, the reason has no such sentence."""
    stock = {"A": 1000, "B": 400, "C": 1000}
    events = [event(f"snap-{s}", EventType.SNAPSHOT, 0, s, q) for s, q in stock.items()]
    for h in range(40):
        events.append(event(f"sale-A-{h}", EventType.SALE, h + 0.5, "A", 1))
        events.append(event(f"sale-B-{h}", EventType.SALE, h + 0.5, "B", 4))
        events.append(event(f"count-C-{h}", EventType.SNAPSHOT, h + 0.5, "C", 1000))
    events.append(event("damage-B", EventType.ADJUSTMENT, 40.2, "B", -230))
    saved = {}
    for hours in (72.0, 0.0):
        ctx = DecisionContext.build(
            two_store_network(),
            policy(demand_prior_by_spread=True, receiver_full_prior_hours=hours),
        )
        _, (proposal,), _ = run(events, ctx)
        assert (proposal.from_site, proposal.to_site) == ("A", "B")
        saved[hours] = proposal.evidence.expected_units_saved
        priced = "the saving is priced at" in proposal.reason
        assert priced == (hours > 0), proposal.reason
    assert saved[72.0] < saved[0.0]


@settings(max_examples=100, deadline=None)
@given(
    rates=st.lists(st.integers(0, 8), min_size=3, max_size=3),
    hours=st.integers(25, 100),
    cap_hours=st.floats(0.0, 200.0),
)
def test_a_priced_receiver_never_sells_faster_than_its_estimate(
    rates: list[int], hours: int, cap_hours: float
) -> None:
    p = policy(demand_prior_by_spread=True, receiver_full_prior_hours=cap_hours)
    state = _selling_at_rates(hours, dict(zip("ABC", rates, strict=True)))
    prior = demand_prior(state, p, CTX.network)
    for site in "ABC":
        agent = agent_for(site, state.sites[site], p, prior)
        assert priced_receiver(agent, p, CTX.network, prior).mean <= agent.mean


@given(
    per_hour=st.floats(0.0, 50.0),
    spread=st.floats(0.0, 1e4),
    wider=st.floats(0.0, 1e4),
    index=st.floats(0.05, 20.0),
    most=st.floats(0.0, 500.0),
)
@example(per_hour=1.0, spread=5e-324, wider=0.0, index=0.5, most=0.0)  # index x spread is 0
def test_a_wider_spread_never_makes_the_prior_count_for_more(
    per_hour: float, spread: float, wider: float, index: float, most: float
) -> None:
    narrow, broad = DemandPrior(per_hour, spread), DemandPrior(per_hour, spread + wider)
    assert 0.0 <= broad.hours(index, most) <= narrow.hours(index, most) <= most


@settings(max_examples=150, deadline=None)
@given(
    stock=st.lists(st.integers(20, 90), min_size=3, max_size=3),
    sales=st.lists(st.integers(0, 4), min_size=3, max_size=3),
    inbound=st.integers(0, 30),
    hours=st.integers(20, 60),
    spread=st.booleans(),
    forecasts=st.lists(
        st.one_of(
            st.none(),
            # What the parser admits: 0 or at least a millionth of a unit a day.
            st.tuples(st.just(0.0) | st.floats(1e-6, 60.0), st.sampled_from([0.0, 0.3])),
        ),
        min_size=3,
        max_size=3,
    ),
)
def test_a_receiver_said_to_need_nothing_has_no_need_by_the_full_judgement(
    stock: list[int],
    sales: list[int],
    inbound: int,
    hours: int,
    spread: bool,
    forecasts: list[tuple[float, float] | None],
) -> None:
    # The shortcut may only ever skip a receiver that the full judgement finds without need;
    # a site with a forecast (units a day, its stated error or none) included.
    p = policy(demand_prior_by_spread=spread)
    state = SkuState("SKU-1")
    sites = ("A", "B", "C")
    events = [
        event(f"snap-{s}", EventType.SNAPSHOT, 0, s, q) for s, q in zip(sites, stock, strict=True)
    ]
    events += [
        event(f"fc-{s}", EventType.FORECAST, 0.2, s, 0, forecast=ForecastFigures(f[0], f[1]))
        for s, f in zip(sites, forecasts, strict=True)
        if f is not None
    ]
    if inbound:
        due = T0 + hours * HOUR
        events.append(
            event(
                "po-B", EventType.INBOUND_EXPECTED, 1, "B", inbound, eta_ms=due, shipment_id="po-1"
            )
        )
    for h in range(hours):
        events += [
            event(f"sale-{s}-{h}", EventType.SALE, h + 0.5, s, q)
            for s, q in zip(sites, sales, strict=True)
            if q and h % (q + 1) == 0
        ]
    ctx = DecisionContext.build(two_store_network(), p)
    for e in events:
        state, _ = step(state, e, ctx)
    now = state.clock_ms
    prior = demand_prior(state, p, ctx.network)
    skipped = 0
    for site, on_hand in itertools.product(sites, range(0, 200, 3)):
        state.sites[site].on_hand = on_hand  # every stock level against the same history
        if _needs_nothing(state, site, ctx.network, p, prior, now, Agents()):
            skipped += 1
            # The full judgement, as `plan_for_receiver` makes it past the shortcut.
            agent = agent_at(state, site, ctx.network, p, prior, None)
            lanes = ctx.network.lanes_into(site)
            lead = lanes[0].lead_hours if lanes else 0.0
            assert receiver_need(agent, lead, p, now).qty <= 0
    assert skipped > 0


def test_no_prior_before_any_site_is_warmed_up_and_none_when_turned_off() -> None:
    state = _sites_selling(5, ("A", "B"), {"A": 50, "B": 50})
    assert demand_prior(state, CTX.policy, CTX.network) is None
    warm = _sites_selling(30, ("A",), {"A": 300, "B": 0})
    off = policy(demand_prior_hours=0.0)
    plan = plan_for_receiver(warm, "B", CTX.network, off, T0 + 31 * HOUR)
    assert plan is None or plan.chosen is None


def test_a_sender_short_itself_gives_nothing_one_with_surplus_gives() -> None:
    # Both sell one an hour; B is empty. A with 40 units (under 2 days of its own demand
    # over a 96 h replenishment horizon) is worth more keeping them than B is receiving;
    # A with 300 is not.
    now = T0 + 31 * HOUR
    poor = _sites_selling(30, ("A", "B"), {"A": 70, "B": 30})
    rich = _sites_selling(30, ("A", "B"), {"A": 330, "B": 30})
    assert poor.sites["A"].on_hand == 40 and poor.sites["B"].on_hand == 0
    assert not poor.reservations
    plan_poor = plan_for_receiver(poor, "B", CTX.network, CTX.policy, now)
    assert plan_poor is not None and plan_poor.chosen is None
    # The rich sender was asked on the way (B ran low), and its loss was priced in.
    (made,) = rich.reservations.values()
    assert (made.from_site, made.to_site) == ("A", "B")


def test_checkpoints_count_inbound_stock_only_from_its_eta() -> None:
    site = SiteState(on_hand=3, reserved_out=1)
    site.inbound = {
        "late": Inbound(qty=50, eta_ms=T0 + 72 * HOUR),
        "soon": Inbound(qty=5, eta_ms=T0 + 10 * HOUR),
        "overdue": Inbound(qty=4, eta_ms=T0 - HOUR),
        "beyond": Inbound(qty=99, eta_ms=T0 + 500 * HOUR),
    }
    assert stock_checkpoints(site, T0, 96) == ((10.0, 6), (72.0, 11), (96, 61))


def test_a_delivery_due_in_three_days_does_not_hide_an_empty_shelf() -> None:
    # B sells one an hour and has 2 left; 80 units are due in 72 h. Its position (82) is
    # far above any reorder point, yet it will lose sales for three days: it is short.
    state = _sites_selling(30, ("A", "B"), {"A": 330, "B": 32})
    state.reservations.clear()
    for s in state.sites.values():
        s.reserved_in = s.reserved_out = 0
    now = T0 + 31 * HOUR
    state.sites["B"].inbound = {"po": Inbound(qty=80, eta_ms=now + 72 * HOUR)}
    receiver = agent_for("B", state.sites["B"], CTX.policy)
    need = receiver_need(receiver, 6, CTX.policy, now)
    assert state.sites["B"].position == 82 and need.qty > 0
    saved = ReceiverOutlook(receiver, stock_checkpoints(state.sites["B"], now, 6 + 24), 6).saved(10)
    assert 5 < saved <= 10


def _perishable(shelf_life_hours: float) -> DecisionContext:
    network = CTX.network
    params = replace(network.sku_defaults, shelf_life_hours=shelf_life_hours)
    return DecisionContext.build(replace(network, sku_overrides={"SKU-1": params}), policy())


def test_shelf_life_caps_a_transfer_at_what_sells_before_expiry() -> None:
    # A holds 270 and sells one an hour: its oldest units are ~270 h old. B is short.
    _, plain, _ = run([*warm_history(), trigger()])
    _, capped, _ = run([*warm_history(), trigger()], ctx=_perishable(300))
    _, none, decisions = run([*warm_history(), trigger()], ctx=_perishable(200))
    assert plain and plain[0].qty > 10
    # 300 h of life - 270 h old - 6 h on the lane = 24 h to sell; B sells its own 14 first.
    assert capped and 2 <= capped[0].qty <= 10
    assert not none
    assert any(d.reason == "shelf_life" for d in decisions)


def test_no_cover_means_nothing_saved_not_a_crash() -> None:
    state = _sites_selling(30, ("A", "B"), {"A": 330, "B": 30})
    receiver = agent_for("B", state.sites["B"], CTX.policy)
    points = stock_checkpoints(state.sites["B"], T0 + 31 * HOUR, 6)  # lead 6 + cover 0
    assert ReceiverOutlook(receiver, points, 6).saved(4) == 0.0
    zero_cover = policy(cover_hours=0.0, review_hours=0.0)
    plan = plan_for_receiver(state, "B", CTX.network, zero_cover, T0 + 31 * HOUR)
    assert plan is None  # with no review period nothing can be short


def test_screening_senders_by_a_bound_changes_no_plan_outcome() -> None:
    """The engine screens senders whose best possible net benefit is below the threshold;
    on a simulated network's own events, every plan has the same sender, quantity and
    suppress reason as when every sender is priced in full. Where no lane can pay
    (`_no_lane_can_pay`, receivers with deliveries on the way included) screening stops at
    the first sender it would price: those plans weigh fewer senders."""
    scenario = Scenario(n_sites=6, n_skus=30, days=8, mean_daily_demand=1.0)
    network = make_network(scenario)
    base = policy()
    recorded: list = []
    run_stockshift(scenario, network, base, record=recorded)
    ctx = DecisionContext.build(network, base)
    states: dict[str, SkuState] = {}
    compared = screened = cut_short = 0
    for kind, body in recorded:
        e = parse_object(kind, body, frozenset(network.sites))
        states[e.sku], _ = step(states.get(e.sku), e, ctx)
        state = states[e.sku]
        quick = plan_for_receiver(state, e.site, network, base, state.clock_ms, screen=True)
        full = plan_for_receiver(state, e.site, network, base, state.clock_ms)
        if quick is None or full is None:
            assert quick is full
            continue
        compared += 1
        screened += quick.screened
        cut_short += len(quick.others) < len(full.others)
        assert not full.screened
        assert quick.suppress_reason == full.suppress_reason
        assert (quick.chosen is None) == (full.chosen is None)
        if quick.chosen is not None and full.chosen is not None:
            assert (quick.chosen.from_site, quick.chosen.qty) == (
                full.chosen.from_site,
                full.chosen.qty,
            )
    assert compared > 100 and screened > 10 and cut_short > 10


def test_estimation_risk_prices_a_move_with_the_receivers_rate_lower_and_the_senders_higher() -> (
    None
):
    """estimate_risk_z: the same plan at 0; fewer units saved, more lost at the sender and a
    lower net benefit as it grows; a site with more evidence has a smaller standard error."""
    state = _sites_selling(30, ("A",), {"A": 300, "B": 0})
    now = T0 + 31 * HOUR
    plans = [
        plan_for_receiver(state, "B", CTX.network, policy(estimate_risk_z=z), now)
        for z in (0.0, 1.0, 2.0)
    ]
    base = plan_for_receiver(state, "B", CTX.network, CTX.policy, now)
    assert base is not None and plans[0] == base
    chosen = [p.chosen for p in plans if p is not None and p.chosen is not None]
    assert len(chosen) == 3
    saved = [c.expected_units_saved / c.qty for c in chosen]
    nets = [c.net_benefit for c in chosen]
    assert saved[0] >= saved[1] >= saved[2] and nets[0] > nets[1] > nets[2]
    young = agent_for("A", _sites_selling(30, ("A",), {"A": 300}).sites["A"], CTX.policy)
    older = agent_for("A", _sites_selling(90, ("A",), {"A": 300}).sites["A"], CTX.policy)
    assert older.se < young.se


def test_thin_evidence_moves_only_sites_without_a_trusted_forecast_resting_on_few_units() -> None:
    """A day and a quarter of one unit an hour (30 units, plus none from a prior here) is
    thin below 40 units and not below 20; a forecast its sales do not discredit takes a
    site out of it; off at 0."""
    site = _sites_selling(30, ("A",), {"A": 300}).sites["A"]
    agent = agent_for("A", site, CTX.policy)
    units = agent.mean * (agent.sd / agent.se) ** 2
    assert 20 < units < 40
    thin = policy(thin_evidence_units=40.0, thin_evidence_z=2.0, estimate_risk_z=0.5)
    assert estimate_risk(agent, thin) == 2.0
    assert estimate_risk(agent, replace(thin, thin_evidence_units=20.0)) == 0.5
    assert estimate_risk(agent, replace(thin, thin_evidence_units=0.0)) == 0.5
    forecast = replace(site, forecast=SiteForecast(per_hour=1.0, error_cv=0.5))
    assert estimate_risk(agent_for("A", forecast, thin), thin) == 0.5
    # ... unless its sales discredit it (it expected 400 units where 100 sold).
    missed = SiteForecast(per_hour=1.0, error_cv=0.2, expected_units=400.0, sold_units=100.0)
    discredited = agent_for("A", replace(site, forecast=missed), thin)
    assert not discredited.forecast_trusted and estimate_risk(discredited, thin) == 2.0
    # In a plan: the thin receiver is priced lower, so the same move nets less.
    state = _sites_selling(30, ("A",), {"A": 300, "B": 0})
    now = T0 + 31 * HOUR
    plain = plan_for_receiver(state, "B", CTX.network, CTX.policy, now)
    careful = plan_for_receiver(state, "B", CTX.network, policy(thin_evidence_units=1e6), now)
    assert plain is not None and careful is not None
    assert plain.chosen is not None and careful.chosen is not None
    assert careful.chosen.net_benefit < plain.chosen.net_benefit


def test_a_site_that_gains_stock_rejudges_its_neighbours_only_as_its_receivers() -> None:
    """A count that raises A's stock judges B again only as a receiver of A's stock: a count
    that gives A a little to spare, not enough to pay for a transfer, leaves B as it was
    (B's next event of its own judges it against all its senders and logs why none pays);
    one that gives A enough proposes the transfer at once."""
    history = [e for e in warm_history() if not (e.site == "A" and e.type is EventType.SNAPSHOT)]
    history.insert(0, event("snap-A-SKU-1", EventType.SNAPSHOT, 0, "A", 60))
    state, proposals, decisions = run([*history, trigger()])
    assert proposals == [] and decisions[-1].reason == "no_sender_with_surplus"
    little = event("count-A-1", EventType.SNAPSHOT, 30.4, "A", 40)
    state, proposals, decisions = run([little], state=state)
    assert proposals == [] and [d for d in decisions if d.site == "B"] == []
    state, _, decisions = run([event("sale-B", EventType.SALE, 30.5, "B", 1)], state=state)
    assert [(d.site, d.reason) for d in decisions] == [("B", "no_net_benefit")]
    state, proposals, _ = run([event("count-A-2", EventType.SNAPSHOT, 30.6, "A", 300)], state=state)
    assert [(p.from_site, p.to_site, p.trigger_event_ids) for p in proposals] == [
        ("A", "B", ("count-A-2",))
    ]
