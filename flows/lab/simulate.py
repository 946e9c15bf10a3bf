"""`stockshift simulate`: every policy on the same simulated demand, side by side.

Wiring only: the world is adapters.lab.simulator, the decisions are operators (engine.step for
stockshift, baselines for tie, hindsight for the bound).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adapters.lab import reports
from adapters.lab.simulator import Scenario, Simulation, TransferOrder, make_network, trace_keys
from operators.engine import DecisionContext
from operators.parse import parse_object
from operators.reference.baselines import Move, tie_moves
from operators.reference.hindsight import LaneSpec, hindsight_bound, network_hindsight_bound
from operators.reference.lookahead import first_stage_moves
from operators.reference.tripbound import trip_bound
from operators.replay import Replay
from state.config import Network, Policy

POLICIES = ("none", "tie", "pooling", "stockshift", "hindsight")
# Not run unless asked for: a reference, and slow (minutes on the small scenarios).
OPTIONAL_POLICIES = ("lookahead", "lookahead-margin", "trip-bound")
Progress = Callable[[str, int, int], None]


@dataclass
class PolicyRun:
    name: str
    kpis: dict[str, Any]
    daily_fill: list[float]
    daily_units_moved: list[int]
    days_of_supply: list[float]
    seconds: float
    # Per SKU-site units sold and units sent net of those received (simulated runs only).
    sold_by_cell: np.ndarray | None = None
    net_sent_by_cell: np.ndarray | None = None


def _days_of_supply(sim: Simulation) -> list[float]:
    rate = np.maximum(sim.daily_rate, 1e-6)
    return [float(v) for v in (sim.on_hand / rate).reshape(-1)]


def _finish(name: str, sim: Simulation, started: float) -> PolicyRun:
    kpis = sim.kpis
    return PolicyRun(
        name,
        kpis.summary(),
        kpis.daily_fill,
        kpis.daily_units_moved,
        _days_of_supply(sim),
        time.perf_counter() - started,
        # Pooling serves a site's unmet demand from another's shelf without a transfer.
        None if sim.pooling else sim.sold_by_cell,
        None if sim.pooling else sim.net_sent_by_cell,
    )


def _loop(
    sim: Simulation, name: str, progress: Progress | None, each_hour: Callable[[], object]
) -> None:
    while not sim.done:
        each_hour()
        if progress is not None and sim.hour % 24 == 0:
            progress(name, sim.hour // 24, sim.scenario.days)


def _lane_specs(network: Network, index: Mapping[str, int]) -> list[LaneSpec]:
    """The network's lanes for the simulator's LPs: sites by index, whole hours."""
    return [
        LaneSpec(
            index[a], index[b], math.ceil(lane.lead_hours), lane.cost_per_unit,
            lane.capacity_per_day,
        )
        for (a, b), lane in network.lanes.items()
    ]  # fmt: skip


def _carry_out(sim: Simulation, name: str, moves: Iterable[tuple[int, list[Move]]]) -> None:
    """A baseline's moves (per SKU index) as transfer orders the world carries out next
    hour; a reference made of hex-free text is never drawn for rejection."""
    orders = [
        TransferOrder(
            sim.skus[k],
            sim.sites[move.from_index],
            sim.sites[move.to_index],
            move.qty,
            f"{name}{sim.hour:05d}{k:05d}{move.from_index:03d}{move.to_index:03d}",
        )
        for k, sku_moves in moves
        for move in sku_moves
    ]
    sim.order(orders)
    sim.kpis.proposals += len(orders)


def run_none(scenario: Scenario, network: Network, progress: Progress | None = None) -> PolicyRun:
    started = time.perf_counter()
    sim = Simulation(scenario, network, emit=False)
    _loop(sim, "none", progress, sim.advance_hour)
    return _finish("none", sim, started)


def run_pooling(
    scenario: Scenario, network: Network, progress: Progress | None = None
) -> PolicyRun:
    started = time.perf_counter()
    sim = Simulation(scenario, network, emit=False, pooling=True)
    _loop(sim, "pooling", progress, sim.advance_hour)
    return _finish("pooling", sim, started)


def run_tie(scenario: Scenario, network: Network, progress: Progress | None = None) -> PolicyRun:
    """TIE at every daily review: each SKU's stock on hand and in transit to a site brought
    to the same share of every site's replenishment target.

    A target is what replenishment plans the site to hold (its forecast over the supplier
    lead and review time, and safety stock): the retailer's own measure of a site's need,
    which a TIE it ran would weigh sites by. The textbook weight, the last seven days'
    sales, strips every site that sold nothing that week: on intermittent demand (300 M5
    items) it lowered fill from `none`'s 0.9050 to 0.8599 under one-for-one replenishment and
    to 0.7074 under base stock. Orders from the supplier are left out of the stock compared:
    under one-for-one every site's position (stock and orders) is its target, and TIE on
    positions finds nothing to move."""
    started = time.perf_counter()
    sim = Simulation(scenario, network, emit=False)
    index = {s: i for i, s in enumerate(sim.sites)}
    lane_cost = {(index[a], index[b]): lane.cost_per_unit for (a, b), lane in network.lanes.items()}
    min_qty = network.sku_defaults.min_transfer_qty
    weight = sim.base_stock.astype(float)

    def hour() -> None:
        sim.advance_hour()
        if sim.hour % 24:
            return
        stock = sim.on_hand + sim.in_transit
        _carry_out(
            sim,
            "tie",
            (
                (k, tie_moves(stock[k], sim.on_hand[k], weight[k], lane_cost, min_qty))
                for k in range(len(sim.skus))
            ),
        )

    _loop(sim, "tie", progress, hour)
    return _finish("tie", sim, started)


@dataclass(frozen=True)
class Lookahead:
    """The lookahead reference's settings. It weighs a sale as the service-first policy does
    (margin plus its lost_sale_penalty). In trials on small-symmetric, 20 paths, hourly
    re-plans and 72 hours reached fill 0.9757 against 0.9739 with these, at about 6x the
    run time."""

    lost_sale_penalty: float = 20.0
    paths: int = 10
    every_hours: int = 2
    horizon_hours: int = 48
    bucket_hours: int = 6
    terminal_value: float = 5.0


LOOKAHEAD = Lookahead()
# The same reference weighing a lost sale at the margin only, as the default policy and the
# money rows do: what knowing the true rates earns (`lookahead` buys fill at a loss).
LOOKAHEAD_MARGIN = Lookahead(lost_sale_penalty=0.0)


def run_lookahead(
    scenario: Scenario,
    network: Network,
    progress: Progress | None = None,
    settings: Lookahead = LOOKAHEAD,
    name: str = "lookahead",
) -> PolicyRun:
    """An online reference that knows the true demand rates (operators.reference.lookahead):
    how far a policy gets that plans well but does not see the realised demand."""
    started = time.perf_counter()
    sim = Simulation(scenario, network, emit=False)
    index = {s: i for i, s in enumerate(sim.sites)}
    bucket, horizon = settings.bucket_hours, settings.horizon_hours
    buckets = horizon // bucket
    lanes = _lane_specs(network, index)
    value = network.sku_defaults.unit_margin + settings.lost_sale_penalty
    rng = np.random.default_rng(scenario.seed + 11)
    n_sites = len(sim.sites)

    def by_bucket(hourly: np.ndarray) -> np.ndarray:
        return np.asarray(hourly.reshape(buckets, bucket, *hourly.shape[1:]).sum(axis=1))

    def hour() -> None:
        sim.advance_hour()
        if sim.hour % settings.every_hours:
            return
        mean = by_bucket(sim.expected_demand(sim.hour, horizon))
        due = by_bucket(sim.due(sim.hour, horizon))

        def moves(k: int) -> list[Move]:
            paths = rng.poisson(mean[None, :, k, :], size=(settings.paths, buckets, n_sites))
            return first_stage_moves(
                sim.on_hand[k], due[:, k, :], paths.astype(float), lanes, bucket, value,
                settings.terminal_value, network.sku_defaults.min_transfer_qty,
            )  # fmt: skip

        _carry_out(sim, "look", ((k, moves(k)) for k in range(len(sim.skus))))

    _loop(sim, name, progress, hour)
    return _finish(name, sim, started)


def run_stockshift(
    scenario: Scenario,
    network: Network,
    policy: Policy,
    progress: Progress | None = None,
    name: str = "stockshift",
    decide_with: Network | None = None,
    record: list[tuple[str, dict[str, Any]]] | None = None,
) -> PolicyRun:
    """The same engine.step the Kafka flow runs, called directly on the world's events.

    `decide_with`: the network stockshift is told about, when it differs from the world's
    (a test hides the sites' storage capacity from it, while the world enforces it).
    `record` collects every event the world published, in order: a stream that, replayed
    through the flow with the same policy, meets the same proposals with the same execution
    answers (`stockshift bench` times the flow on it)."""
    started = time.perf_counter()
    sim = Simulation(scenario, network)
    told = decide_with or network
    replay = Replay.of(DecisionContext.build(told, policy))
    sites = frozenset(network.sites)

    def decide(events: list[tuple[str, dict[str, Any]]]) -> None:
        """One simulated hour: every event through the engine, then the hour's requests
        through negotiation as one batch (as the flow gets them from the simulator feed)."""
        if record is not None:
            record.extend(events)
        parsed = (
            parse_object(kind, body, sites, sim.published_ms(kind, body)) for kind, body in events
        )
        sim.accept(replay.batch(parsed).granted)

    decide(sim.history_events())  # what `stockshift warmup` would publish (none by default)
    decide(sim.initial_events())
    _loop(sim, name, progress, lambda: decide(sim.advance_hour()))
    return _finish(name, sim, started)


def run_hindsight(
    scenario: Scenario, network: Network, progress: Progress | None = None
) -> PolicyRun:
    """The LP bound; exact for one-for-one replenishment, so only reported for it."""
    started = time.perf_counter()
    if scenario.replenishment != "one_for_one":
        raise ValueError("the hindsight bound models one_for_one replenishment only")
    sim = Simulation(scenario, network, emit=False)
    index = {s: i for i, s in enumerate(sim.sites)}
    lanes = _lane_specs(network, index)
    storage = [network.sites[site].storage_capacity for site in sim.sites]
    review, lead = scenario.review_days * 24, scenario.supplier_lead_days * 24
    scheduled = sim.scheduled_arrivals()
    if any(lane.capacity_per_day for lane in lanes) or any(storage):
        # SKUs share the lanes' trucks and the sites' back rooms: one LP for all of them.
        if progress is not None:
            progress("hindsight", 0, 1)
        result = network_hindsight_bound(
            sim.demand, sim.on_hand, lanes, review, lead, storage, scheduled
        )
        if progress is not None:
            progress("hindsight", 1, 1)
        return _bound_run(
            result.served, result.demand, result.units_moved, result.variable_cost, started
        )
    served = moved = cost = 0.0
    demand = 0
    for k in range(len(sim.skus)):
        result = hindsight_bound(
            sim.demand[:, k, :], sim.on_hand[k], lanes, review, lead, scheduled[:, k, :]
        )
        served += result.served
        demand += result.demand
        moved += result.units_moved
        cost += result.variable_cost
        if progress is not None and (k + 1) % max(1, len(sim.skus) // 10) == 0:
            progress("hindsight", k + 1, len(sim.skus))
    return _bound_run(served, demand, moved, cost, started)


def trip_bound_applies(scenario: Scenario, network: Network) -> bool:
    """The trip-cost bound models trips charged per lane and day, one-for-one replenishment,
    and neither lane nor storage limits."""
    return (
        scenario.cost_model == "per_trip"
        and scenario.replenishment == "one_for_one"
        and not any(lane.capacity_per_day for lane in network.lanes.values())
        and not any(site.storage_capacity for site in network.sites.values())
    )


def run_trip_bound(
    scenario: Scenario, network: Network, progress: Progress | None = None
) -> PolicyRun:
    """The trip-cost bound (`operators.reference.tripbound`): its column shows the plan the
    world could carry out (fill, units, trips, cost), and `net_benefit_bound` the most any
    plan could earn."""
    started = time.perf_counter()
    if not trip_bound_applies(scenario, network):
        raise ValueError(
            "the trip-cost bound models per_trip costs, one_for_one replenishment and no "
            "lane or storage limits"
        )
    sim = Simulation(scenario, network, emit=False)
    index = {s: i for i, s in enumerate(sim.sites)}
    if progress is not None:
        progress("trip-bound", 0, 1)
    result = trip_bound(
        sim.demand, sim.on_hand, sim.scheduled_arrivals(), _lane_specs(network, index),
        [lane.trip_cost for lane in network.lanes.values()], scenario.review_days * 24,
        scenario.supplier_lead_days * 24, network.sku_defaults.unit_margin,
    )  # fmt: skip
    if progress is not None:
        progress("trip-bound", 1, 1)
    run = _bound_run(
        result.lower_served, result.demand, result.lower_units_moved, result.lower_cost, started,
        name="trip-bound",
    )  # fmt: skip
    run.kpis["trips"] = result.lower_trips
    # margin x units sold - costs at best; `run_all` takes `none`'s sales off.
    run.kpis["net_benefit_bound"] = result.upper
    return run


def _bound_run(
    served: float, demand: int, moved: float, cost: float, started: float, name: str = "hindsight"
) -> PolicyRun:
    """The LP gives fill, units moved and variable cost; trips, stock levels and where sales
    were served from are not part of its answer."""
    summary: dict[str, Any] = {row: None for row in KPI_ROWS}
    summary.update(
        demand_units=demand,
        served_units=round(served, 1),
        network_fill_rate=round(served / demand, 4) if demand else 1.0,
        units_moved=round(moved),
        transfer_cost=round(cost, 2),
        transfer_cost_per_unit=round(cost / moved, 3) if moved else 0.0,
    )
    return PolicyRun(name, summary, [], [], [], time.perf_counter() - started)


def gap_capture(policy_fill: float, none_fill: float, bound_fill: float) -> float | None:
    """(policy − none) ÷ (bound − none): the share of the achievable gain a policy captured."""
    if bound_fill - none_fill <= 1e-9:
        return None
    return (policy_fill - none_fill) / (bound_fill - none_fill)


def stockshift_columns(policies: Mapping[str, Policy] | Policy) -> dict[str, Policy]:
    """Column name per stockshift policy: `stockshift` alone, `stockshift/<label>` when
    several are compared side by side."""
    if isinstance(policies, Policy):
        return {"stockshift": policies}
    if len(policies) == 1:
        return {"stockshift": next(iter(policies.values()))}
    return {f"stockshift/{label}": policy for label, policy in policies.items()}


def run_all(
    scenario: Scenario,
    policy: Mapping[str, Policy] | Policy,
    policies: tuple[str, ...] = POLICIES,
    progress: Progress | None = None,
) -> dict[str, PolicyRun]:
    """Every named policy on the same demand; `policy` is the stockshift policy, or several
    by label (each becomes its own column)."""
    network = make_network(scenario)
    runs: dict[str, PolicyRun] = {}
    for name in policies:
        if name == "none":
            runs[name] = run_none(scenario, network, progress)
        elif name == "tie":
            runs[name] = run_tie(scenario, network, progress)
        elif name == "pooling":
            runs[name] = run_pooling(scenario, network, progress)
        elif name == "stockshift":
            for column, chosen in stockshift_columns(policy).items():
                runs[column] = run_stockshift(scenario, network, chosen, progress, column)
        elif name == "hindsight":
            if scenario.replenishment == "one_for_one":
                runs[name] = run_hindsight(scenario, network, progress)
        elif name == "lookahead":
            runs[name] = run_lookahead(scenario, network, progress)
        elif name == "lookahead-margin":
            runs[name] = run_lookahead(scenario, network, progress, LOOKAHEAD_MARGIN, name)
        elif name == "trip-bound":
            if trip_bound_applies(scenario, network):
                runs[name] = run_trip_bound(scenario, network, progress)
        else:
            raise ValueError(f"unknown policy {name!r}; choose from {POLICIES + OPTIONAL_POLICIES}")
    if "none" in runs:
        _money(runs, network.sku_defaults.unit_margin, stockshift_columns(policy))
        _fill_change_at_senders(runs)
    if "none" in runs and "trip-bound" in runs:
        _net_capture(runs, network.sku_defaults.unit_margin)
    if "none" in runs and "hindsight" in runs:
        none_fill = runs["none"].kpis["network_fill_rate"]
        bound = runs["hindsight"].kpis["network_fill_rate"]
        for run in runs.values():
            capture = gap_capture(run.kpis["network_fill_rate"], none_fill, bound)
            run.kpis["gap_capture"] = None if capture is None else round(capture, 3)
    return runs


def _money(runs: dict[str, PolicyRun], margin: float, stockshift: Mapping[str, Policy]) -> None:
    """What each policy earns against doing nothing: the margin on the extra units sold,
    less what its transfers cost; and the same at the policy's own value of a lost sale
    (margin plus its lost-sale penalty), for stockshift's columns. (The hindsight bound pays
    unit costs only, so its net benefit is an upper bound.)"""
    base = runs["none"].kpis["served_units"]
    for name, run in runs.items():
        gained = run.kpis["served_units"] - base
        cost = run.kpis["transfer_cost"]
        run.kpis["net_benefit"] = round(margin * gained - cost, 2)
        chosen = stockshift.get(name)
        value = margin + chosen.lost_sale_penalty if chosen is not None else None
        run.kpis["net_benefit_at_policy_value"] = (
            round(value * gained - cost, 2) if value is not None else None
        )


def _fill_change_at_senders(runs: dict[str, PolicyRun]) -> None:
    """What a policy's senders gave up: the units the SKU-sites that sent more than they
    received sold against `none`'s at the same SKU-sites, as a share of all demand (so it
    adds to network fill like the receivers' gain does). Local fill (network fill less the
    share served by transferred units) falls whenever transferred units are sold, also
    where they only stand in for a receiver's own supplier order (base-stock replenishment
    orders less after a transfer in); this row counts only the sales senders lost."""
    base = runs["none"].sold_by_cell
    demand = runs["none"].kpis["demand_units"]
    for run in runs.values():
        sold, sent = run.sold_by_cell, run.net_sent_by_cell
        if base is None or sold is None or sent is None or not demand:
            continue
        change = float((sold - base)[sent > 0].sum()) / demand
        run.kpis["fill_change_at_senders"] = round(change, 4)


def _net_capture(runs: dict[str, PolicyRun], margin: float) -> None:
    """Each policy's net benefit as a share of the most any plan could earn with the same
    trip and unit costs (the trip-cost bound's upper figure, `none`'s sales taken off)."""
    bound = runs["trip-bound"].kpis
    bound["net_benefit_bound"] = round(
        bound["net_benefit_bound"] - margin * runs["none"].kpis["served_units"], 2
    )
    for name, run in runs.items():
        # The hindsight LP pays no trips: its net benefit is not one a trip-paying plan has.
        if name != "hindsight" and bound["net_benefit_bound"] > 1e-9:
            run.kpis["net_capture"] = round(run.kpis["net_benefit"] / bound["net_benefit_bound"], 3)


KPI_ROWS = (
    "network_fill_rate",
    "gap_capture",
    "net_benefit",
    "net_benefit_bound",
    "net_capture",
    "net_benefit_at_policy_value",
    "local_fill_rate",
    "fill_change_at_senders",
    "share_served_by_transfer",
    "units_moved",
    "transfers",
    "trips",
    "transfer_cost",
    "transfer_cost_per_unit",
    "transfer_efficiency",
    "stockout_hours",
    "average_inventory_units",
    "turns_annualised",
    "proposals",
    "proposals_rejected",
    "proposals_expired",
    "proposals_negative_net_benefit",
    "refused_for_storage",
)


def print_progress(name: str, done: int, total: int) -> None:
    """A progress line per policy: redrawn in a terminal, printed once when piped (CI)."""
    if sys.stderr.isatty():
        print(
            f"\r  {name:<24} {done:>5}/{total}", end="" if done < total else "\n", file=sys.stderr
        )
    elif done == total:
        print(f"  {name:<24} done", file=sys.stderr)


def _size(scenario: Scenario) -> str:
    """Sites x SKUs as the world has them (a trace brings its own)."""
    if scenario.trace is not None:
        skus, sites = trace_keys(scenario.trace, scenario.trace_site_map)
        return f"{len(sites)} sites x {len(skus)} SKUs (trace {Path(scenario.trace).name})"
    return f"{scenario.n_sites} sites x {scenario.n_skus} SKUs"


def simulate(
    scenario: Scenario,
    policy: Mapping[str, Policy] | Policy,
    out_dir: Path,
    policies: tuple[str, ...] = POLICIES,
    quiet: bool = False,
) -> dict[str, PolicyRun]:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = run_all(scenario, policy, policies, None if quiet else print_progress)
    columns = {name: run.kpis for name, run in runs.items()}
    table = reports.comparison_table(columns, KPI_ROWS)
    print(
        f"scenario {scenario.name}: {_size(scenario)}, "
        f"{scenario.days} days, replenishment {scenario.replenishment}, seed {scenario.seed}"
    )
    print(table)
    reports.write_json(
        out_dir / "kpis.json",
        {
            "scenario": scenario.name,
            "policy_versions": {
                column: chosen.version for column, chosen in stockshift_columns(policy).items()
            },
            "kpis": columns,
            "seconds": {name: round(run.seconds, 2) for name, run in runs.items()},
        },
    )
    reports.write_markdown_table(
        out_dir / "kpis.md", columns, KPI_ROWS, f"Scenario `{scenario.name}`"
    )
    daily = {name: run.daily_fill for name, run in runs.items() if run.daily_fill}
    reports.fill_chart(
        out_dir / "fill_rate.png", daily, f"{scenario.name}: daily network fill rate"
    )
    reports.series_chart(
        out_dir / "units_moved.png",
        {name: run.daily_units_moved for name, run in runs.items() if run.daily_units_moved},
        "units moved per day",
        f"{scenario.name}: transfers",
    )
    reports.distribution_chart(
        out_dir / "stock_distribution.png",
        {name: run.days_of_supply for name, run in runs.items() if run.days_of_supply},
        f"{scenario.name}: days of supply per SKU-site at the end",
    )
    return runs
