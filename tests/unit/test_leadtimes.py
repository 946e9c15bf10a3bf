"""Lanes' lead times learned from received transfers: what the engine reports, how the board
folds it, and the network the planner then plans with."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from operators.engine import DecisionContext, step
from operators.leadtimes import LeadTimeBoard
from operators.planner import Agent, agent_at, receiver_need, stock_checkpoints
from operators.replay import Replay
from state.config import ConfigError, LeadTimeLearning, lead_times_from_dict
from state.records import Event, EventType, LeadTime, SupplierDelay
from state.sku import Inbound, SkuState
from tests.support.helpers import HOUR, T0, event, policy, two_store_network


def transfer(n: int, from_site: str, to_site: str, sent_h: float, took_h: float) -> list[Event]:
    common = {"from_site": from_site, "proposal_id": f"p{n}"}
    return [
        event(f"d{n}", EventType.TRANSFER_DISPATCHED, sent_h, to_site, 1, **common),
        event(f"r{n}", EventType.TRANSFER_RECEIVED, sent_h + took_h, to_site, 1, **common),
    ]


def test_a_receipt_reports_what_its_transfer_took_and_one_without_its_dispatch_nothing() -> None:
    ctx = DecisionContext.build(two_store_network(), policy())
    state, _ = step(None, event("count-A", EventType.SNAPSHOT, 0, "A", 50), ctx)
    dispatched, received = transfer(1, "A", "B", 2.0, 9.5)
    state, out = step(state, dispatched, ctx)
    assert out.lead_times == ()
    state, out = step(state, received, ctx)
    assert out.lead_times == (LeadTime("A", "B", 9.5),)
    _, out = step(state, transfer(2, "A", "B", 20.0, 5.0)[1], ctx)  # its dispatch unseen
    assert out.lead_times == ()


def seen(hours: list[float], lane: tuple[str, str] = ("A", "B")) -> list[LeadTime]:
    return [LeadTime(*lane, h) for h in hours]


def test_a_lane_is_planned_with_its_learned_lead_once_enough_arrived_and_it_is_longer() -> None:
    network = two_store_network()  # A->B and B->A 6 h, A->C 30 h
    board = LeadTimeBoard(network)
    board.learn(seen([14.0] * 19))
    assert board.network is network and board.lead(("A", "B")).learned_hours is None
    (lead,) = board.learn(seen([14.0]))
    assert lead.learned_hours == 14.0 and lead.planned_hours == 14.0 and lead.samples == 20
    assert board.network.lanes[("A", "B")].lead_hours == 14.0
    assert board.network.lanes[("B", "A")].lead_hours == 6.0  # the other direction: its own
    # The lane indexes follow: into B the slow lane is still the only one, into A unchanged.
    assert [lane.lead_hours for lane in board.network.lanes_into("B")] == [14.0]
    assert network.lanes[("A", "B")].lead_hours == 6.0  # the configured network untouched


def test_within_the_tolerance_or_faster_a_lane_keeps_its_configured_lead() -> None:
    board = LeadTimeBoard(two_store_network())
    board.learn(seen([7.9] * 30))  # 6 h + at most 2 h: scan times, not a slower lane
    assert board.lead(("A", "B")).planned_hours == 6.0
    board.learn(seen([2.0] * 100, ("B", "A")))  # faster than promised: the promise stands
    assert board.lead(("B", "A")).planned_hours == 6.0
    board.learn(seen([9.0] * 5, ("C", "B")))  # no such lane: nothing to plan
    assert ("C", "B") not in board.network.lanes


def test_the_learned_lead_is_the_quantile_of_the_recent_window() -> None:
    network = two_store_network()
    board = LeadTimeBoard(network)
    board.learn(seen([10.0 + i for i in range(20)]))  # 10..29 h
    planned = board.lead(("A", "B")).planned_hours
    assert 26.0 <= planned <= 29.0  # the 0.9 quantile, rounded up to a tenth
    board.learn(seen([8.5] * network.lead_times.window))  # the lane recovered
    assert board.lead(("A", "B")).planned_hours == 8.5


def test_the_planner_reads_the_board_the_replay_loop_folds_after_each_batch() -> None:
    ctx = DecisionContext.build(two_store_network(), policy())
    replay = Replay.of(ctx)
    replay.batch([event("count-A", EventType.SNAPSHOT, 0, "A", 500)])
    for n in range(20):
        replay.batch(transfer(n, "A", "B", 1.0 + n, 12.0))
    assert ctx.lead_times is not None
    assert ctx.planning_network().lanes[("A", "B")].lead_hours == 12.0
    assert ctx.network.lanes[("A", "B")].lead_hours == 6.0


def test_the_lead_times_table_is_validated_and_can_turn_learning_off() -> None:
    assert lead_times_from_dict({}) == LeadTimeLearning()
    assert lead_times_from_dict({"quantile": 0.95, "min_samples": 5, "window": 5}).window == 5
    bad = [
        {"quantile": 1.0},
        {"quantile": 0.2},
        {"min_samples": 0},
        {"min_samples": 30, "window": 20},
        {"window": 20_000},
        {"tolerance_hours": -1},
        {"enabled": "yes"},
        {"quantlie": 0.9},
    ]
    for table in bad:
        with pytest.raises(ConfigError, match=r"network\.lead_times"):
            lead_times_from_dict(table)
    network = two_store_network()
    assert DecisionContext.build(network, policy()).lead_times is not None  # on by default
    quiet = replace(network, lead_times=LeadTimeLearning(enabled=False), _into={}, _from={})
    assert DecisionContext.build(quiet, policy()).lead_times is None


# Supplier deliveries: how late they come against their ETAs, per receiving site.


def delivery(n: int, site: str, announced_h: float, eta_h: float, late_h: float) -> list[Event]:
    eta_ms = T0 + int(eta_h * HOUR)
    return [
        event(f"x{n}", EventType.INBOUND_EXPECTED, announced_h, site, 10, eta_ms=eta_ms,
              shipment_id=f"S{n}"),
        event(f"i{n}", EventType.INBOUND_RECEIVED, eta_h + late_h, site, 10, shipment_id=f"S{n}"),
    ]  # fmt: skip


def test_a_supplier_receipt_reports_how_late_it_came_and_an_unannounced_one_nothing() -> None:
    ctx = DecisionContext.build(two_store_network(), policy())
    expected, received = delivery(1, "B", 0.0, 10.0, 7.5)
    state, out = step(None, expected, ctx)
    assert out.supplier_delays == ()
    state, out = step(state, received, ctx)
    assert out.supplier_delays == (SupplierDelay("B", 7.5),)
    early = delivery(2, "B", 20.0, 40.0, -3.0)
    state, _ = step(state, early[0], ctx)
    _, out = step(state, early[1], ctx)
    assert out.supplier_delays == (SupplierDelay("B", -3.0),)
    _, out = step(state, delivery(3, "B", 0, 50.0, 1.0)[1], ctx)  # never announced
    assert out.supplier_delays == ()


def test_a_site_whose_deliveries_come_late_has_them_counted_on_later() -> None:
    network = two_store_network()
    board = LeadTimeBoard(network)
    board.learn_delays([SupplierDelay("B", 1.5)] * 40 + [SupplierDelay("A", 30.0)] * 19)
    assert board.delay("B").planned_hours == 0.0  # within the tolerance: on time
    assert board.delay("A").learned_hours is None and board.network is network
    (delay,) = board.learn_delays([SupplierDelay("A", 30.0)])
    assert delay.learned_hours == 30.0 and delay.planned_hours == 30.0
    assert board.network.sites["A"].supplier_delay_hours == 30.0
    assert board.network.lanes == network.lanes
    board.learn_delays([SupplierDelay("Z", 99.0)])  # no such site
    assert "Z" not in board.network.sites


def test_the_planner_counts_a_late_suppliers_delivery_after_its_eta() -> None:
    """B sells a unit an hour, has 2 on hand and 60 due from its supplier in 3 hours: on
    time it needs nothing over lead 6 h + a day's cover; 30 hours late, it is short."""
    now = T0
    state = SkuState("SKU-1")
    site = state.site("B")
    site.on_hand = 2
    site.expect("S1", Inbound(60, now + 3 * HOUR))
    board = LeadTimeBoard(two_store_network())
    board.learn_delays([SupplierDelay("B", 30.0)] * 20)
    p = policy()
    assert agent_at(state, "B", board.network, p, None, None).supplier_delay_ms == 30 * HOUR
    assert agent_at(state, "B", board.configured, p, None, None).supplier_delay_ms == 0
    on_time = Agent("B", site, mean=1.0, sd=1.0, learned=True)
    late = replace(on_time, supplier_delay_ms=30 * HOUR)
    assert stock_checkpoints(site, now, 24.0) == ((3.0, 2), (24.0, 62))
    assert stock_checkpoints(site, now, 24.0, delay_ms=late.supplier_delay_ms) == ((24.0, 2),)
    assert receiver_need(on_time, 6.0, p, now).qty == 0
    assert receiver_need(late, 6.0, p, now).qty > 0


def test_a_planner_reads_the_forecast_and_the_supplier_delay_a_decision_used() -> None:
    from operators.explain import _site
    from operators.planner import site_view

    agent = Agent("B", SkuState("SKU-1").site("B"), mean=1.0, sd=1.0, learned=True)
    plain = site_view(agent, 5, 3.0, 4.0)
    assert plain.forecast_per_hour is None and plain.supplier_delay_hours == 0.0
    used = replace(agent, supplier_delay_ms=30 * HOUR, forecast_per_hour=0.51234)
    view = site_view(used, 5, 3.0, 4.0)
    assert view.forecast_per_hour == 0.5123 and view.supplier_delay_hours == 30.0
    text = _site(orjson.loads(orjson.dumps(view)))
    assert "forecast 0.51/h as corrected by sales" in text
    assert "supplier deliveries counted 30.0 h late" in text
    assert "forecast" not in _site(orjson.loads(orjson.dumps(plain)))
