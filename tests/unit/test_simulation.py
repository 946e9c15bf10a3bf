"""The simulator, the baselines and the hindsight bound agree with each other."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.lab.simulator import Scenario, Simulation, load_scenario, make_network
from flows.lab.simulate import (
    PolicyRun,
    _fill_change_at_senders,
    run_all,
    run_none,
    run_stockshift,
    run_tie,
)
from flows.lab.simulate import _lane_specs as lane_specs
from operators.history import MIN_DEMAND_INDEX, HistoryRow, fitted_demand_index, units_by_site
from operators.reference.baselines import tie_moves
from operators.reference.hindsight import LaneSpec, hindsight_bound, network_hindsight_bound
from state.config import ConfigError, Network, Policy

SCENARIOS = Path(__file__).resolve().parents[2] / "configs" / "scenarios"
SMALL = Scenario(name="tiny", n_sites=4, n_skus=8, days=7, seed=5, replenishment="one_for_one")
POLICY = Policy(version="test-1")


@pytest.mark.parametrize("warmup_days", [0, 9])
def test_bound_without_lanes_equals_the_simulated_none_run(warmup_days: int) -> None:
    """The LP models the simulator's world exactly: with no lanes it can only match `none`,
    also from a warmed-up world whose supplier orders in flight the LP is given."""
    scenario = replace(SMALL, warmup_days=warmup_days)
    network = make_network(scenario)
    none = run_none(scenario, network).kpis
    sim = Simulation(scenario, network, emit=False)
    scheduled = sim.scheduled_arrivals()
    assert (scheduled.sum() > 0) == (warmup_days > 0)
    lead = scenario.supplier_lead_days * 24
    served = sum(
        hindsight_bound(
            sim.demand[:, k, :], sim.on_hand[k], [], 24, lead, scheduled[:, k, :]
        ).served
        for k in range(len(sim.skus))
    )
    sold = none["network_fill_rate"] * none["demand_units"]
    assert served == pytest.approx(sold, abs=0.5)
    together = network_hindsight_bound(
        sim.demand, sim.on_hand, [], 24, lead, [None] * len(sim.sites), scheduled
    )
    assert together.served == pytest.approx(sold, abs=0.5)


def test_a_warm_up_starts_the_world_in_its_own_steady_state() -> None:
    """After a warm-up each SKU-site's position is back at its target (one-for-one orders
    what sold), part of it on order; the measured demand is the same draw as a cold start;
    the opening events announce every order in flight."""
    cold = Simulation(SMALL, make_network(SMALL))
    warm_scenario = replace(SMALL, warmup_days=9)
    warm = Simulation(warm_scenario, make_network(warm_scenario))
    assert warm.hour == 0 and warm.kpis.demand == 0
    np.testing.assert_array_equal(warm.demand, cold.demand)
    np.testing.assert_array_equal(warm.on_hand + warm.supplier_pipeline, warm.base_stock)
    assert warm.supplier_pipeline.sum() > 0
    assert (warm.on_hand < warm.base_stock).sum() > 0.5 * warm.on_hand.size
    announced = [body for _, body in warm.initial_events() if body["type"] == "inbound_expected"]
    assert sum(body["qty"] for body in announced) == warm.supplier_pipeline.sum()
    assert len({body["shipment_id"] for body in announced}) == len(announced)
    assert all(body["eta"] > warm.ts(0) for body in announced)
    assert not [body for _, body in cold.initial_events() if body["type"] != "snapshot"]


@pytest.mark.parametrize("limits", [False, True], ids=["unlimited", "lane-caps-and-storage"])
def test_a_warmed_up_world_keeps_every_policy_under_the_bound(limits: bool) -> None:
    scenario = replace(TIGHT if limits else SMALL, warmup_days=9)
    runs = run_all(scenario, POLICY, ("none", "tie", "stockshift", "hindsight"))
    bound = runs["hindsight"].kpis["network_fill_rate"]
    for name in ("none", "tie", "stockshift"):
        assert runs[name].kpis["network_fill_rate"] <= bound + 1e-9, name
    assert bound > runs["none"].kpis["network_fill_rate"]


# Intermittent demand: 0.4 units a day on average, over-dispersed, stores of unequal size.
SLOW = Scenario(name="slow", n_sites=6, n_skus=40, days=21, seed=3, mean_daily_demand=0.4,
                distribution="negbin", dispersion=3.0, forecast_error_sigma=0.3)  # fmt: skip


@pytest.mark.parametrize("replenishment", ["one_for_one", "base_stock"])
def test_tie_raises_fill_on_intermittent_demand(replenishment: str) -> None:
    """Sites weighed by their replenishment targets, not by a week of sales: weighed by the
    last seven days' sales, TIE stripped the sites that sold nothing that week (here 0.7021
    and 0.6217 against `none`'s 0.7437)."""
    scenario = replace(SLOW, replenishment=replenishment)
    network = make_network(scenario)
    none, tie = run_none(scenario, network).kpis, run_tie(scenario, network).kpis
    assert tie["units_moved"] > 0
    assert tie["network_fill_rate"] > none["network_fill_rate"]


def test_no_policy_beats_the_bound_and_transfers_help() -> None:
    runs = run_all(SMALL, POLICY, ("none", "tie", "stockshift", "hindsight"))
    bound = runs["hindsight"].kpis["network_fill_rate"]
    for name in ("none", "tie", "stockshift"):
        assert runs[name].kpis["network_fill_rate"] <= bound + 1e-9, name
    assert bound > runs["none"].kpis["network_fill_rate"]
    assert runs["stockshift"].kpis["gap_capture"] is not None


def test_every_table_says_what_each_policy_earns_against_doing_nothing() -> None:
    """net_benefit: the margin on the units sold beyond `none`, less transfer cost; and at
    the policy's own value of a lost sale (its penalty added) for stockshift's columns."""
    generous = Policy(version="generous", lost_sale_penalty=20.0)
    runs = run_all(SMALL, {"generous": generous}, ("none", "tie", "stockshift"))
    margin = make_network(SMALL).sku_defaults.unit_margin
    none = runs["none"].kpis
    assert none["net_benefit"] == 0.0 and none["net_benefit_at_policy_value"] is None
    for name in ("tie", "stockshift"):
        kpis = runs[name].kpis
        gained = kpis["served_units"] - none["served_units"]
        assert kpis["net_benefit"] == round(margin * gained - kpis["transfer_cost"], 2)
    mine = runs["stockshift"].kpis
    gained = mine["served_units"] - none["served_units"]
    assert mine["net_benefit_at_policy_value"] == round(
        (margin + 20.0) * gained - mine["transfer_cost"], 2
    )


def test_several_stockshift_policies_run_side_by_side_on_the_same_demand() -> None:
    thrifty = Policy(version="thrifty", sender_keep_hours=48.0)
    generous = Policy(version="generous", lost_sale_penalty=20.0, sender_keep_hours=12.0)
    runs = run_all(SMALL, {"thrifty": thrifty, "generous": generous}, ("none", "stockshift"))
    assert list(runs) == ["none", "stockshift/thrifty", "stockshift/generous"]
    assert runs["stockshift/generous"].name == "stockshift/generous"
    demand = {run.kpis["demand_units"] for run in runs.values()}
    assert len(demand) == 1  # the same demand path for every column
    assert (
        runs["stockshift/generous"].kpis["units_moved"]
        > runs["stockshift/thrifty"].kpis["units_moved"]
    )


def test_the_kpis_count_proposals_priced_below_zero() -> None:
    """The shipped floor (`min_net_benefit` 0) lets none through; a policy that allows a
    negative net benefit shows up in the count, so the KPI can catch a regression."""
    network = make_network(SMALL)
    floor = run_stockshift(SMALL, network, POLICY).kpis
    assert floor["proposals"] > 0 and floor["proposals_negative_net_benefit"] == 0
    loose = run_stockshift(SMALL, network, Policy(version="loose", min_net_benefit=-50.0)).kpis
    assert loose["proposals_negative_net_benefit"] > 0


def test_stockshift_simulation_is_deterministic() -> None:
    network = make_network(SMALL)
    first = run_stockshift(SMALL, network, POLICY).kpis
    assert first == run_stockshift(SMALL, network, POLICY).kpis
    assert first["units_moved"] > 0


def test_units_are_conserved_in_the_world() -> None:
    """Stock changes only by sales and supplier orders; transfers only move it."""
    scenario = replace(SMALL, replenishment="base_stock")
    network = make_network(scenario)
    sim = Simulation(scenario, network)
    start = int(sim.on_hand.sum())
    ordered = 0
    while not sim.done:
        events = sim.advance_hour()
        ordered += sum(b["qty"] for kind, b in events if b.get("type") == "inbound_expected")
        # Move a unit between the first two sites every hour to exercise transfers.
        if sim.on_hand[0, 0] > 0:
            from adapters.lab.simulator import TransferOrder

            sim.order(
                [TransferOrder(sim.skus[0], sim.sites[0], sim.sites[1], 1, f"{sim.hour:08x}")]
            )
    held = int(sim.on_hand.sum() + sim.in_transit.sum() + sim.supplier_pipeline.sum())
    assert held == start + ordered - sim.kpis.served


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 60), min_size=3, max_size=6).flatmap(
        lambda pos: st.tuples(
            st.just(pos),
            st.lists(st.floats(0.1, 10), min_size=len(pos), max_size=len(pos)),
        )
    )
)
@example(([1, 2, 0], [0.125, 1.0, 2.0]))
def test_tie_moves_never_ship_more_than_on_hand_and_reduce_imbalance(data) -> None:
    positions, rates = data
    position = np.array(positions, dtype=np.int64)
    rate = np.array(rates)
    n = len(position)
    lanes = {(i, j): 1.0 + abs(i - j) for i in range(n) for j in range(n) if i != j}
    moves = tie_moves(position, position.copy(), rate, lanes, 1)
    after = position.copy()
    for move in moves:
        assert move.qty >= 1
        after[move.from_index] -= move.qty
        after[move.to_index] += move.qty
    assert after.min() >= 0 and after.sum() == position.sum()
    # Every site moves towards its share of the network's stock (per unit of weight, here a
    # rate: days of supply) and never past it.
    # (Not: the spread of days of supply shrinks. A site too slow to hold one whole unit of
    # excess cannot send, and moving stock between the others can widen the spread around
    # it: positions 1, 2, 0 at rates 0.125, 1, 2.)
    target = position.sum() / rate.sum() * rate
    before_gap, after_gap = position - target, after - target
    assert np.all(np.abs(after_gap) <= np.abs(before_gap) + 1e-9)
    assert np.all(before_gap * after_gap >= -1e-9)


def test_ready_scenarios_load() -> None:
    names = {load_scenario(p).name for p in SCENARIOS.glob("*.toml")}
    assert {"small-symmetric", "regional", "shock-promo", "constrained"} <= names


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('replenishment = "magic"', "replenishment"),
        ("sites = 3", "unknown scenario field"),
        # A negative limit is a typo, not "unlimited" (0 is).
        ("storage_capacity_days = -7.5", "storage_capacity_days must be >= 0"),
        ("reject_share = 5", "reject_share must be within 0-1"),
        ("lane_lead_factor = 0", "lane_lead_factor must be > 0"),
        ("supplier_delay_hours = -2", "supplier_delay_hours must be >= 0"),
        # A key written below a [[shocks]] table belongs to the shock, not the scenario.
        (
            "[[shocks]]\nday = 3\ndays = 2\nfactor = 2\nsupplier_delay_hours = 48",
            r"shocks\[0\]: unknown field\(s\) \['supplier_delay_hours'\]",
        ),
        ("[[shocks]]\nday = 3\nfactor = 2", r"shocks\[0\]: .*days"),
    ],
)
def test_bad_scenarios_fail_clearly(tmp_path: Path, line: str, message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f'name = "x"\n{line}\n')
    with pytest.raises(ConfigError, match=message):
        load_scenario(bad)


def test_shock_multiplies_demand_where_and_when_it_says() -> None:
    shocked = load_scenario(SCENARIOS / "shock-promo.toml")
    calm = replace(shocked, shocks=())
    network = make_network(shocked)
    a, b = Simulation(shocked, network, emit=False), Simulation(calm, network, emit=False)
    during = slice(
        shocked.shocks[0].day * 24, (shocked.shocks[0].day + shocked.shocks[0].days) * 24
    )
    s02 = a.sites.index("S02")
    # A third of the SKUs triple: about 1.67x the demand at S02 while the shock lasts.
    assert a.demand[during, :, s02].sum() > 1.4 * b.demand[during, :, s02].sum()
    s01 = a.sites.index("S01")
    assert a.demand[during, :, s01].sum() < 1.2 * b.demand[during, :, s01].sum()


def test_trace_replay_puts_every_unit_in_the_grid(tmp_path: Path) -> None:
    """The network is sized from the trace's own store ids, and its first day is the
    scenario's first day (a 2016 sales file replays into any scenario)."""
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "date,sku,site,qty\n2016-04-25,SKU-A,CA_1,10\n2016-04-26,SKU-A,TX_1,4\n"
        "2016-04-26,SKU-B,CA_1,7\n"
    )
    scenario = replace(SMALL, trace=str(trace), days=3)
    sim = Simulation(scenario, make_network(scenario), emit=False)
    assert sim.skus == ["SKU-A", "SKU-B"] and sim.sites == ["CA_1", "TX_1"]
    assert int(sim.demand.sum()) == 21
    assert int(sim.demand[:24, 0, 0].sum()) == 10
    assert math.isclose(float(sim.demand[24:48].sum()), 11)


def test_a_site_map_renames_the_traces_store_ids(tmp_path: Path) -> None:
    """Real store ids (CA_1, TX_1) become the network's sites through a store,site CSV; a
    store the map lacks keeps its id; a store mapped twice is refused."""
    trace = tmp_path / "trace.csv"
    trace.write_text("date,sku,site,qty\n2016-04-25,SKU-A,CA_1,10\n2016-04-26,SKU-A,TX_1,4\n")
    stores = tmp_path / "stores.csv"
    stores.write_text("store,site\nCA_1,STORE-WEST\nTX_1,STORE-SOUTH\n")
    scenario = replace(SMALL, trace=str(trace), days=3, trace_site_map=str(stores))
    sim = Simulation(scenario, make_network(scenario), emit=False)
    assert sim.sites == ["STORE-SOUTH", "STORE-WEST"] and int(sim.demand.sum()) == 14
    stores.write_text("store,site\nCA_1,STORE-WEST\nCA_1,STORE-EAST\n")
    with pytest.raises(ConfigError, match="mapped more than once: CA_1"):
        Simulation(scenario, make_network(scenario), emit=False)


def test_a_trace_row_the_world_cannot_place_fails_unless_told_to_drop_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace that silently missed its window looked like no demand and a fill of 1.0."""
    trace = tmp_path / "trace.csv"
    trace.write_text("date,sku,site,qty\n2026-01-05,SKU-A,S01,10\n2030-01-01,SKU-A,S02,99\n")
    scenario = replace(SMALL, trace=str(trace), days=3)
    with pytest.raises(ConfigError, match=r"1 of 2 trace rows cannot be placed.*outside"):
        Simulation(scenario, make_network(scenario), emit=False)
    dropping = replace(scenario, trace_unplaced="warn")
    sim = Simulation(dropping, make_network(dropping), emit=False)
    assert int(sim.demand.sum()) == 10
    assert "1 of 2 trace rows cannot be placed" in capsys.readouterr().err


@pytest.mark.parametrize("qty", ["nan", "-3", "1.5", "many"])
def test_a_trace_quantity_that_is_not_a_whole_count_fails_naming_the_row(
    tmp_path: Path, qty: str
) -> None:
    """Before: a ValueError from deep inside the replay (`nan`, `-3`) or a fraction cut."""
    trace = tmp_path / "trace.csv"
    trace.write_text(f"date,sku,site,qty\n2016-04-25,SKU-A,CA_1,3\n2016-04-26,SKU-A,TX_1,{qty}\n")
    scenario = replace(SMALL, trace=str(trace), days=3)
    with pytest.raises(ConfigError, match=r"row 2: qty .* is not a whole number of units"):
        Simulation(scenario, make_network(scenario), emit=False)


def test_the_world_enforces_lane_capacity_per_day() -> None:
    from adapters.lab.simulator import TransferOrder

    scenario = replace(SMALL, lane_capacity_per_day=5, reject_share=0.0)
    sim = Simulation(scenario, make_network(scenario), emit=False)
    sku, a, b = sim.skus[0], sim.sites[0], sim.sites[1]
    sim.on_hand[0, 0] = 100
    sim.order([TransferOrder(sku, a, b, 4, f"{n:08x}") for n in range(3)])
    sim.advance_hour()
    assert sim.kpis.units_moved == 5  # 4, then the 1 unit of room left, then nothing
    assert sim.kpis.proposals_failed == 1


def test_the_world_does_not_start_a_proposal_that_expired_before_its_hour() -> None:
    """As the execution layer does not: a proposal whose `expires_at` passed before the hour
    it was published in began is never carried out; one that expires within that hour is
    (the world carries out an hour's proposals at the next hour's start)."""
    from adapters.lab.simulator import TransferOrder

    scenario = replace(SMALL, reject_share=0.0)
    sim = Simulation(scenario, make_network(scenario), emit=False)
    sku, a, b = sim.skus[0], sim.sites[0], sim.sites[1]
    for _ in range(5):
        sim.advance_hour()
    sim.on_hand[0, 0] = 100
    expired = TransferOrder(sku, a, b, 4, "00000001", expires_at_ms=sim.ts(4))
    in_time = TransferOrder(sku, a, b, 3, "00000002", expires_at_ms=sim.ts(4, 30))
    sim.order([expired, in_time])  # published in hour 4, carried out as hour 5 starts
    sim.advance_hour()
    assert (sim.kpis.proposals_expired, sim.kpis.transfers, sim.kpis.units_moved) == (1, 1, 3)


TIGHT = replace(SMALL, name="tight", lane_capacity_per_day=3, storage_capacity_days=4.0)


def _lane_specs(network: Network, sites: list[str], caps: bool) -> list[LaneSpec]:
    """The simulator's own lane specs, with or without the lanes' daily caps."""
    lanes = lane_specs(network, {s: i for i, s in enumerate(sites)})
    return lanes if caps else [replace(lane, capacity_per_day=None) for lane in lanes]


def test_the_network_bound_without_limits_is_the_per_sku_bound() -> None:
    network = make_network(SMALL)
    sim = Simulation(SMALL, network, emit=False)
    lanes = _lane_specs(network, sim.sites, caps=False)
    lead = SMALL.supplier_lead_days * 24
    per_sku = sum(
        hindsight_bound(sim.demand[:, k, :], sim.on_hand[k], lanes, 24, lead).served
        for k in range(len(sim.skus))
    )
    together = network_hindsight_bound(
        sim.demand, sim.on_hand, lanes, 24, lead, [None] * len(sim.sites)
    )
    assert together.served == pytest.approx(per_sku, abs=1e-4)


def test_shared_limits_tighten_the_bound_and_no_policy_beats_it() -> None:
    """With lane caps and storage the SKUs compete; the bound that models them is no looser
    than the one that does not, and the world's policies (which obey them) stay under it."""
    network = make_network(TIGHT)
    sim = Simulation(TIGHT, network, emit=False)
    lead = TIGHT.supplier_lead_days * 24
    storage = [network.sites[s].storage_capacity for s in sim.sites]
    assert all(storage)
    loose = sum(
        hindsight_bound(
            sim.demand[:, k, :], sim.on_hand[k], _lane_specs(network, sim.sites, False), 24, lead
        ).served
        for k in range(len(sim.skus))
    )
    tight = network_hindsight_bound(
        sim.demand, sim.on_hand, _lane_specs(network, sim.sites, True), 24, lead, storage
    )
    smaller = network_hindsight_bound(
        sim.demand,
        sim.on_hand,
        _lane_specs(network, sim.sites, True),
        24,
        lead,
        [int(c * 0.9) if c else None for c in storage],
    )
    assert smaller.served < tight.served <= loose + 1e-6
    runs = run_all(TIGHT, POLICY, ("none", "tie", "stockshift", "hindsight"))
    bound = runs["hindsight"].kpis["network_fill_rate"]
    assert bound == round(tight.served / tight.demand, 4)
    for name in ("none", "tie", "stockshift"):
        assert runs[name].kpis["network_fill_rate"] <= bound + 1e-9, name


def test_a_traces_first_days_can_be_stockshifts_history(tmp_path: Path) -> None:
    """With history_days, the world starts after them and stockshift gets them as the
    sale_history events `stockshift warmup` would publish, before hour 0."""
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "date,sku,site,qty\n2016-04-25,SKU-A,CA_1,5\n2016-04-26,SKU-A,TX_1,7\n"
        "2016-04-27,SKU-A,CA_1,3\n"
    )
    scenario = replace(SMALL, trace=str(trace), days=1, history_days=2)
    sim = Simulation(scenario, make_network(scenario), emit=False)
    assert int(sim.demand.sum()) == 3 and len(sim.demand) == 24
    history = sim.history_events()
    assert sum(body["qty"] for _, body in history) == 12
    assert all(body["type"] == "sale_history" and body["ts"] < scenario.start_ms
               for _, body in history)  # fmt: skip
    run = run_stockshift(scenario, make_network(scenario), POLICY)
    assert run.kpis["demand_units"] == 3


def test_forecasts_can_be_drawn_around_the_history_days_instead_of_the_run(
    tmp_path: Path,
) -> None:
    """`forecast_basis = "history"`: each SKU-site's forecast (error 0) is its mean daily
    sales over the history days, as a forecast made from the past would be, not the run's
    own mean; a scenario without history days is refused."""
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "date,sku,site,qty\n2016-04-25,SKU-A,CA_1,4\n2016-04-26,SKU-A,CA_1,2\n"
        "2016-04-26,SKU-A,TX_1,1\n2016-04-27,SKU-A,CA_1,9\n2016-04-27,SKU-A,TX_1,5\n"
    )
    base = replace(SMALL, trace=str(trace), days=1, history_days=2, forecast_error_sigma=0.0)
    network = make_network(base)
    from_run = Simulation(base, network, emit=False).forecast
    from_history = Simulation(replace(base, forecast_basis="history"), network).forecast
    assert from_run.tolist() == [[9.0, 5.0]]
    assert from_history.tolist() == [[3.0, 0.5]]
    without_history = tmp_path / "no_history.toml"
    without_history.write_text('forecast_basis = "history"\n')
    with pytest.raises(ConfigError, match="forecast_basis"):
        load_scenario(without_history)


def test_a_world_that_publishes_its_forecasts_hands_one_per_sku_site_to_the_planner() -> None:
    """The forecast each target was set from reaches stockshift as contract events, and the
    same world is judged differently with it (the planner's prior changed)."""
    scenario = replace(SMALL, publish_forecasts=True)
    network = make_network(scenario)
    sim = Simulation(scenario, network)
    forecasts = [body for kind, body in sim.initial_events() if kind == "forecasts"]
    assert len(forecasts) == len(sim.skus) * len(sim.sites)
    assert {(b["sku"], b["site"]) for b in forecasts} == {
        (k, s) for k in sim.skus for s in sim.sites
    }
    sigma = scenario.forecast_error_sigma
    assert all(b["error_cv"] == round(math.sqrt(math.expm1(sigma**2)), 4) for b in forecasts)
    quiet = Simulation(replace(scenario, publish_forecast_error=False), network)
    bare = [body for kind, body in quiet.initial_events() if kind == "forecasts"]
    assert [{**b, "error_cv": 0} for b in bare] == [{**b, "error_cv": 0} for b in forecasts]
    assert not any("error_cv" in b for b in bare)
    recorded: list = []
    told = run_stockshift(scenario, network, POLICY, record=recorded).kpis
    blind = run_stockshift(SMALL, network, POLICY).kpis
    assert sum(kind == "forecasts" for kind, _ in recorded) == len(forecasts)
    assert told["demand_units"] == blind["demand_units"]  # the same demand
    assert told != blind


def test_the_fill_senders_gave_up_counts_only_the_sales_lost_where_stock_left() -> None:
    """`fill_change_at_senders`: units sold against `none`'s at the SKU-sites that sent more
    than they received, over all demand; the receivers' gain and other sites are left out."""
    none = PolicyRun("none", {"demand_units": 20}, [], [], [], 0.0,
                     np.array([[5.0, 3.0, 2.0]]), np.zeros((1, 3)))  # fmt: skip
    moved = PolicyRun("stockshift", {}, [], [], [], 0.0,
                      np.array([[4.0, 6.0, 1.0]]), np.array([[2.0, -2.0, 0.0]]))  # fmt: skip
    _fill_change_at_senders({"none": none, "stockshift": moved})
    assert moved.kpis["fill_change_at_senders"] == -0.05
    assert none.kpis["fill_change_at_senders"] == 0.0


def test_a_runs_sales_and_transfers_by_sku_site_add_up_to_its_kpis() -> None:
    scenario = replace(SMALL, n_skus=30)
    runs = run_all(scenario, POLICY, ("none", "stockshift"))
    for run in runs.values():
        assert run.sold_by_cell is not None and run.net_sent_by_cell is not None
        assert run.sold_by_cell.sum() == run.kpis["served_units"]
        assert run.net_sent_by_cell.sum() == 0
    moved = runs["stockshift"]
    assert moved.net_sent_by_cell is not None and moved.kpis["units_moved"] > 0
    assert np.abs(moved.net_sent_by_cell).sum() <= 2 * moved.kpis["units_moved"]
    assert -1 <= moved.kpis["fill_change_at_senders"] <= 1


def test_per_trip_costs_charge_a_lanes_fixed_cost_once_a_day_whatever_it_carries() -> None:
    scenario = replace(SMALL, cost_model="per_trip", n_skus=30)
    network = make_network(scenario)
    lanes = list(network.lanes.values())
    assert all(lane.fixed_cost == 0 and lane.trip_cost > 0 for lane in lanes)
    recorded: list = []
    kpis = run_stockshift(scenario, network, POLICY, record=recorded).kpis
    shipped = [b for k, b in recorded if k == "shipments" and b["type"] == "transfer_dispatched"]
    days = {(b["from_site"], b["site"], (int(b["ts"]) - scenario.start_ms) // 86_400_000)
            for b in shipped}  # fmt: skip
    assert kpis["transfers"] == len(shipped) > kpis["trips"] == len(days) > 0
    expected = sum(network.lanes[(src, dst)].trip_cost for src, dst, _ in days) + sum(
        network.lanes[(b["from_site"], b["site"])].cost_per_unit * b["qty"] for b in shipped
    )
    assert kpis["transfer_cost"] == pytest.approx(expected, abs=0.01)


def test_a_scenario_names_a_known_cost_model(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('cost_model = "per_parcel"\n')
    with pytest.raises(ConfigError, match="cost_model"):
        load_scenario(path)


def test_a_world_can_publish_forecasts_off_by_a_factor() -> None:
    """A bad feed for robustness runs: the targets keep the true forecast."""
    told = Simulation(replace(SMALL, publish_forecasts=True), make_network(SMALL))
    scaled = replace(SMALL, publish_forecasts=True, published_forecast_factor=3.0)
    off = Simulation(scaled, make_network(SMALL))
    means = {b["event_id"]: b["mean_per_day"] for k, b in told.initial_events() if k == "forecasts"}
    for kind, body in off.initial_events():
        if kind == "forecasts":
            assert body["mean_per_day"] == pytest.approx(
                3 * means[body["event_id"]], rel=1e-3, abs=1e-3
            )
    assert (off.base_stock == told.base_stock).all()


def test_a_traces_sites_get_their_volume_over_its_first_days_as_demand_index(
    tmp_path: Path,
) -> None:
    """What a retailer knows of its stores' scale: units over the trace's first days (here
    one) relative to the mean site; later days do not count; 0 days leaves every site 1."""
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "date,sku,site,qty\n2016-04-25,SKU-A,CA_1,9\n2016-04-25,SKU-B,CA_1,6\n"
        "2016-04-25,SKU-A,TX_1,5\n2016-04-26,SKU-A,TX_1,50\n"
    )
    scenario = replace(SMALL, trace=str(trace), days=3, trace_demand_index_days=1)
    network = make_network(scenario)
    assert network.sites["CA_1"].demand_index == 1.5  # 15 units against a mean of 10
    assert network.sites["TX_1"].demand_index == 0.5
    flat = make_network(replace(scenario, trace_demand_index_days=0))
    assert {s.demand_index for s in flat.sites.values()} == {1.0}


def test_a_fitted_demand_index_is_relative_to_the_mean_site_and_never_zero() -> None:
    fitted = fitted_demand_index({"A": 30.0, "B": 10.0}, ["A", "B", "C"])
    assert fitted == {"A": 2.25, "B": 0.75, "C": MIN_DEMAND_INDEX}
    assert fitted_demand_index({}, ["A", "B"]) == {"A": 1.0, "B": 1.0}


def test_a_historys_units_by_site_add_up_each_sites_rows() -> None:
    rows = [HistoryRow("S", "A", 0, 3, True), HistoryRow("T", "A", 0, 2, True)]
    rows.append(HistoryRow("S", "B", 0, 5, False))
    assert units_by_site(rows) == {"A": 5.0, "B": 5.0}


def test_a_lagging_pos_feed_publishes_each_hours_sales_later_behind_that_hours_counts() -> None:
    """With `pos_lag_hours = 3` the sales of hour h come last in hour h + 3, with their own
    times; every other event comes when it happens; the world itself does not change."""
    lag = 3
    network = make_network(SMALL)
    in_time, lagging = (
        Simulation(SMALL, network),
        Simulation(replace(SMALL, pos_lag_hours=lag), network),
    )
    published: list[list[tuple[str, dict]]] = []
    expected: list[list[tuple[str, dict]]] = []
    for _ in range(48):
        expected.append(in_time.advance_hour())
        published.append(lagging.advance_hour())
    for h in range(48):
        others = [e for e in expected[h] if e[0] != "pos"]
        sales = [e for e in expected[h - lag] if e[0] == "pos"] if h >= lag else []
        assert published[h] == others + sales
    # The day's counts (23:59) go out before the evening's sales (20:30) they include.
    counted = [e for e in published[23] if e[1].get("type") == "snapshot"]
    late = [e for e in published[23] if e[0] == "pos"]
    assert counted and late and all(e[1]["ts"] < counted[0][1]["ts"] for e in late)
    assert np.array_equal(in_time.on_hand, lagging.on_hand)
    # Their messages carry the hour they reached Kafka; the in-time world's none.
    kind, body = late[0]
    assert lagging.published_ms(kind, body) == body["ts"] + lag * 3_600_000
    assert in_time.published_ms(kind, body) is None
    assert lagging.published_ms(*counted[0]) is None
