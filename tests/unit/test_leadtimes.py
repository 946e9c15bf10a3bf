"""Lanes' lead times learned from received transfers: what the engine reports, how the board
folds it, and the network the planner then plans with."""

from __future__ import annotations

from dataclasses import replace

import pytest

from operators.engine import DecisionContext, step
from operators.leadtimes import LeadTimeBoard
from operators.replay import Replay
from state.config import ConfigError, LeadTimeLearning, lead_times_from_dict
from state.records import Event, EventType, LeadTime
from tests.support.helpers import event, policy, two_store_network


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
