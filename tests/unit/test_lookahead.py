"""The lookahead reference: its LP moves stock where the sampled demand is, never more than
the sender holds, and never when moving costs more than the sale is worth."""

from __future__ import annotations

import numpy as np

from adapters.lab.simulator import Scenario, make_network
from flows.lab.simulate import run_all
from operators.reference.hindsight import LaneSpec
from operators.reference.lookahead import first_stage_moves
from state.config import Policy

LANES = [LaneSpec(0, 1, 6, 0.5), LaneSpec(1, 0, 6, 0.5)]  # one 6-hour bucket each way


def _paths(per_bucket: list[float], buckets: int = 4, paths: int = 5) -> np.ndarray:
    return np.broadcast_to(np.array(per_bucket, float), (paths, buckets, 2)).copy()


def test_stock_goes_where_the_demand_is_and_no_more_than_the_sender_has() -> None:
    on_hand = np.array([30, 0])
    moves = first_stage_moves(
        on_hand, np.zeros((4, 2)), _paths([0.0, 8.0]), LANES, 6, 26.0, 0.0, min_qty=2
    )
    assert [(m.from_index, m.to_index) for m in moves] == [(0, 1)]
    # Bucket 1's demand at site 1 can only be met by what leaves now; buckets 2-3 could
    # also be met by a later move, so the first stage sends between 8 and 24.
    assert 8 <= moves[0].qty <= 24
    small = first_stage_moves(
        np.array([5, 0]), np.zeros((4, 2)), _paths([0.0, 8.0]), LANES, 6, 26.0, 0.0, min_qty=2
    )
    assert small and small[0].qty <= 5


def test_no_move_when_it_costs_more_than_the_sale_is_worth() -> None:
    dear = [LaneSpec(0, 1, 6, 30.0), LaneSpec(1, 0, 6, 30.0)]
    assert (
        first_stage_moves(
            np.array([30, 0]), np.zeros((4, 2)), _paths([0.0, 8.0]), dear, 6, 26.0, 0.0, min_qty=2
        )
        == []
    )


def test_stock_due_in_time_is_not_sent_for() -> None:
    due = np.zeros((4, 2))
    due[1, 1] = 40  # arrives at site 1 in bucket 1, as soon as a transfer could
    moves = first_stage_moves(np.array([30, 0]), due, _paths([0.0, 8.0]), LANES, 6, 26.0, 0.0, 2)
    assert moves == []


def test_the_reference_stays_under_the_bound() -> None:
    scenario = Scenario(
        name="tiny", n_sites=3, n_skus=4, days=5, seed=5, replenishment="one_for_one"
    )
    assert make_network(scenario).lanes  # the tiny world has lanes to move on
    runs = run_all(scenario, Policy(version="t"), ("none", "lookahead", "hindsight"))
    look = runs["lookahead"].kpis
    assert look["units_moved"] > 0
    assert look["network_fill_rate"] <= runs["hindsight"].kpis["network_fill_rate"] + 1e-9


def test_weighing_a_sale_at_its_margin_only_moves_no_more_and_is_priced() -> None:
    """`lookahead-margin` is the same reference valuing a lost sale at the margin alone (the
    money rows' value): it moves no more than the reference that values it at margin plus
    the penalty, and it gets its own column with a net benefit."""
    scenario = Scenario(
        name="tiny", n_sites=3, n_skus=4, days=5, seed=5, replenishment="one_for_one"
    )
    runs = run_all(scenario, Policy(version="t"), ("none", "lookahead", "lookahead-margin"))
    margin, service = runs["lookahead-margin"].kpis, runs["lookahead"].kpis
    assert margin["units_moved"] <= service["units_moved"]
    assert isinstance(margin["net_benefit"], float)
