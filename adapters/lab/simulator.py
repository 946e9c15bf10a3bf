"""A seeded, closed-loop simulation of a multi-site network (the world, not the decisions).

It draws demand (Poisson or negative binomial, per-site scale, weekly seasonality, shocks,
or a replayed trace), serves it from true on-hand (lost sales when empty), replenishes each
site from a supplier, and executes the transfers it is given, taking each lane's lead time
and rejecting a configurable share. It emits exactly the events a real network would publish
to Kafka, so stockshift decides from the same signals in simulation as in production;
decisions are never made here.
"""

from __future__ import annotations

import heapq
import math
import sys
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from adapters.history import check_quantities, epoch_ms, read_sales_file, read_site_map
from operators.history import fitted_demand_index
from operators.lanes import NegotiationOutcome
from state.config import ConfigError, Network, Policy, network_from_dict
from state.records import DeadLetter, Proposal, RawMessage, StepOutput
from state.units import DAY_MS, HOUR_MS

# Share of a day's demand in each hour: stores open 08-21, busiest late afternoon.
_OPEN = np.array([0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 5, 6, 7, 6, 6, 7, 8, 9, 9, 8, 5, 3, 0, 0], float)
HOURLY_PROFILE = _OPEN / _OPEN.sum()
REPLENISHMENT_RULES = ("one_for_one", "base_stock", "s_S")


@dataclass(frozen=True)
class Shock:
    """Demand multiplied by `factor` for `days` from `day` at `sites` (all when empty)."""

    day: int
    days: int
    factor: float
    sites: tuple[str, ...] = ()
    sku_share: float = 1.0


@dataclass(frozen=True)
class Scenario:
    name: str = "demo"
    n_sites: int = 8
    n_skus: int = 50
    days: int = 14
    seed: int = 7
    # demand
    distribution: str = "poisson"  # or "negbin"
    dispersion: float = 2.0  # negbin: variance = dispersion * mean
    mean_daily_demand: float = 3.0
    sku_popularity_sigma: float = 0.8
    site_scale_sigma: float = 0.6
    weekly: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    shocks: tuple[Shock, ...] = ()
    trace: str | None = None
    # The trace's first day becomes the scenario's first day (False: its dates as they are).
    align_trace: bool = True
    # The trace's first days given to stockshift as sales history (`sale_history` events,
    # what `stockshift warmup` publishes) before the world starts on the day after them.
    history_days: int = 0
    # Rows a trace holds that the world cannot place (a day past the scenario's end):
    # "error" refuses the trace with a count; "warn" drops them and says how many.
    trace_unplaced: str = "error"
    # A CSV (store, site) renaming the trace's store ids to site ids (relative to the file).
    trace_site_map: str | None = None
    # A trace's sites get the `demand_index` a retailer knows from its stores' volume: each
    # site's units over the history days, or (without them) over the trace's first this many
    # days, relative to the mean site. 0: every site 1.
    trace_demand_index_days: int = 7
    # replenishment
    replenishment: str = "base_stock"
    supplier_lead_days: int = 5
    review_days: int = 1
    forecast_error_sigma: float = 0.45
    base_stock_z: float = 1.0
    reorder_share: float = 0.6  # (s,S): s = reorder_share * S
    # network and execution
    nearest_lanes: int = 0  # 0: lanes between all pairs; k: each site to its k nearest
    lane_capacity_per_day: int = 0  # 0: unlimited; else units that may depart per lane and day
    # 0: unlimited; else each site stores this many days of its expected sales (all SKUs)
    storage_capacity_days: float = 0.0
    reject_share: float = 0.05
    # The world's transfers take this multiple of their lane's configured lead time (a
    # network file that promises faster lanes than the carriers run).
    lane_lead_factor: float = 1.0
    # Supplier deliveries arrive this many hours after the ETA they were announced with.
    supplier_delay_hours: int = 0
    # Sales reach stockshift this many hours after they happen (a POS feed that uploads
    # late), behind the counts and receipts of those hours; their times stay their own.
    pos_lag_hours: int = 0
    # Days the world runs before hour 0 with its replenishment and no transfers, so every
    # policy starts from the same steady state: stock on hand and orders in flight. 0 opens
    # each store with all of its target on hand and nothing on order (a cold start).
    warmup_days: int = 0
    # Publish the replenishment forecast behind each target as `forecast` events at hour 0
    # (mean a day and its error), as a planning system would hand it to stockshift.
    publish_forecasts: bool = False
    # The published forecasts are this multiple of the ones behind the targets (an error
    # upstream: wrong units, a stale model), to test how stockshift copes with a bad feed.
    published_forecast_factor: float = 1.0
    # Whether the published forecasts state their error (`error_cv`); many planning systems
    # hand over the figure alone, and an exact forecast (sigma 0) can state none.
    publish_forecast_error: bool = True
    # What the forecasts behind the targets are drawn around (times the lognormal error),
    # for a trace: "run", the mean daily sales of the run itself (a forecast that knew the
    # coming weeks' mean; sales then cannot stray from it by the run's end), or "history",
    # the mean daily sales of the `history_days` before it (as a planning system's forecast
    # would be made: from the past, so it also misses by the demand's own change).
    forecast_basis: str = "run"
    # How a lane's fixed cost is charged: "per_transfer" (each SKU's transfer pays it) or
    # "per_trip" (one departure a day on the lane pays it, whatever it carries).
    cost_model: str = "per_transfer"
    start_ms: int = 1_767_571_200_000  # 2026-01-05T00:00:00Z, a Monday

    @property
    def hours(self) -> int:
        return self.days * 24


def load_scenario(path: str | Path, **overrides: Any) -> Scenario:
    """Read a scenario TOML (flat keys as in `Scenario`, plus [[shocks]] tables)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    known = {f.name for f in fields(Scenario)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{path}: unknown scenario field(s) {sorted(unknown)}")
    raw["shocks"] = tuple(_shock(path, i, s) for i, s in enumerate(raw.get("shocks", [])))
    if "weekly" in raw:
        raw["weekly"] = tuple(float(v) for v in raw["weekly"])
        if len(raw["weekly"]) != 7:
            raise ConfigError(f"{path}: weekly needs 7 multipliers (Monday first)")
    for name in ("trace", "trace_site_map"):
        if name in raw:
            raw[name] = str(path.parent / raw[name])
    scenario = replace(Scenario(), **{**raw, **overrides})
    if scenario.replenishment not in REPLENISHMENT_RULES:
        raise ConfigError(f"{path}: replenishment must be one of {REPLENISHMENT_RULES}")
    if scenario.cost_model not in ("per_transfer", "per_trip"):
        raise ConfigError(f"{path}: cost_model must be per_transfer or per_trip")
    if scenario.trace_unplaced not in ("error", "warn"):
        raise ConfigError(f"{path}: trace_unplaced must be error or warn")
    if scenario.forecast_basis not in ("run", "history"):
        raise ConfigError(f"{path}: forecast_basis must be run or history")
    if scenario.forecast_basis == "history" and (
        scenario.trace is None or scenario.history_days <= 0
    ):
        raise ConfigError(f'{path}: forecast_basis = "history" needs a trace and history_days > 0')
    if scenario.distribution not in ("poisson", "negbin"):
        raise ConfigError(f"{path}: distribution must be poisson or negbin")
    _check_ranges(path, scenario)
    return scenario


def _shock(path: Path, index: int, table: dict[str, Any]) -> Shock:
    """One [[shocks]] table; an unknown or missing field is a configuration error (a key
    written below a [[shocks]] table belongs to it in TOML: a common slip)."""
    known = {f.name for f in fields(Shock)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{path}: shocks[{index}]: unknown field(s) {sorted(unknown)}")
    try:
        return Shock(**{**table, "sites": tuple(table.get("sites", ()))})
    except TypeError as exc:
        raise ConfigError(f"{path}: shocks[{index}]: {exc}") from None


# Fields that must be positive, and fields for which 0 means "none" or "unlimited": a
# negative value in either is a typo that would otherwise pass for "unlimited".
_POSITIVE = ("n_sites", "n_skus", "days", "mean_daily_demand", "dispersion", "lane_lead_factor")
_NOT_NEGATIVE = (
    "supplier_lead_days", "review_days", "nearest_lanes", "lane_capacity_per_day",
    "storage_capacity_days", "forecast_error_sigma", "site_scale_sigma",
    "sku_popularity_sigma", "base_stock_z", "warmup_days", "published_forecast_factor",
    "trace_demand_index_days", "supplier_delay_hours", "pos_lag_hours",
)  # fmt: skip


def _check_ranges(path: Path, scenario: Scenario) -> None:
    for name in _POSITIVE:
        if not getattr(scenario, name) > 0:
            raise ConfigError(f"{path}: {name} must be > 0, got {getattr(scenario, name)!r}")
    for name in _NOT_NEGATIVE:
        if getattr(scenario, name) < 0:
            raise ConfigError(f"{path}: {name} must be >= 0, got {getattr(scenario, name)!r}")
    for name in ("reject_share", "reorder_share"):
        if not 0 <= getattr(scenario, name) <= 1:
            raise ConfigError(f"{path}: {name} must be within 0-1, got {getattr(scenario, name)!r}")


def site_ids(scenario: Scenario) -> list[str]:
    """The network's sites: a trace's own store ids (the network is sized to the trace), or
    S01, S02, ... for generated demand."""
    if scenario.trace is not None:
        return trace_keys(scenario.trace, scenario.trace_site_map)[1]
    return [f"S{i + 1:02d}" for i in range(scenario.n_sites)]


def network_dict(scenario: Scenario) -> dict[str, Any]:
    """Sites scattered on a map; lanes slower and dearer with distance."""
    rng = np.random.default_rng(scenario.seed + 1)
    ids = site_ids(scenario)
    coords = rng.uniform(0, 100, size=(len(ids), 2))
    distance = np.hypot(*(coords[:, None, :] - coords[None, :, :]).transpose(2, 0, 1))
    pairs: set[tuple[int, int]] = set()
    for i in range(len(ids)):
        order = [j for j in np.argsort(distance[i]) if j != i]
        chosen = order[: scenario.nearest_lanes] if scenario.nearest_lanes else order
        pairs.update((min(i, int(j)), max(i, int(j))) for j in chosen)
    lanes = [
        {
            "from": ids[i],
            "to": ids[j],
            "lead_hours": round(4 + float(distance[i, j]) / 5, 1),
            "cost_per_unit": round(0.1 + float(distance[i, j]) / 200, 2),
            # The lane's fixed cost: per SKU transferred, or per departure shared by all.
            ("trip_cost" if scenario.cost_model == "per_trip" else "fixed_cost"): round(
                4 + float(distance[i, j]) / 10, 2
            ),
            "bidirectional": True,
            **(
                {"capacity_per_day": scenario.lane_capacity_per_day}
                if scenario.lane_capacity_per_day
                else {}
            ),
        }
        for i, j in sorted(pairs)
    ]
    storage: list[int | None] = [None] * len(ids)
    if scenario.storage_capacity_days > 0 and scenario.trace is not None:
        raise ConfigError("storage_capacity_days needs generated demand, not a trace")
    if scenario.storage_capacity_days > 0:
        per_day = expected_daily_rate(scenario).sum(axis=0)
        storage = [math.ceil(scenario.storage_capacity_days * float(v)) for v in per_day]
    return {
        "sites": [
            {
                "id": s,
                "replenishment_lead_hours": scenario.supplier_lead_days * 24,
                "demand_index": index,
                # Stores know their opening hours: the world's hourly pattern.
                "sales_profile": [round(float(w), 6) for w in HOURLY_PROFILE],
                **({"storage_capacity": units} if units is not None else {}),
            }
            for s, index, units in zip(ids, site_demand_index(scenario), storage, strict=True)
        ],
        "lanes": lanes,
        "sku_defaults": {
            "unit_cost": 12.0,
            "unit_margin": 6.0,
            "pack_size": 1,
            "min_transfer_qty": 2,
        },
    }


def _popularity_and_scale(
    rng: np.random.Generator, scenario: Scenario, n_skus: int, n_sites: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first draws of a scenario's demand: mean daily units per SKU, scale per site."""
    popularity = rng.lognormal(0.0, scenario.sku_popularity_sigma, size=n_skus)
    popularity *= scenario.mean_daily_demand / popularity.mean()
    scale = rng.lognormal(0.0, scenario.site_scale_sigma, size=n_sites)
    return popularity, scale / scale.mean()


def expected_daily_rate(scenario: Scenario) -> np.ndarray:
    """The true daily rate [sku, site] behind `draw_demand` (before shocks and weekdays)."""
    rng = np.random.default_rng(scenario.seed)
    popularity, scale = _popularity_and_scale(rng, scenario, scenario.n_skus, scenario.n_sites)
    return np.outer(popularity, scale)


def site_demand_index(scenario: Scenario) -> list[float]:
    """Each site's sales volume relative to the mean site: what a retailer knows from its
    total sales by store (the same draw as `draw_demand`'s site scale; for a trace, fitted
    from its first days: `_trace_demand_index`)."""
    if scenario.trace is not None:
        return _trace_demand_index(scenario)
    rng = np.random.default_rng(scenario.seed)
    _, scale = _popularity_and_scale(rng, scenario, scenario.n_skus, scenario.n_sites)
    return [round(float(v), 3) for v in scale]


def _trace_demand_index(scenario: Scenario) -> list[float]:
    """Each site's units over the history days (or the first `trace_demand_index_days`),
    relative to the mean site (operators.history.fitted_demand_index)."""
    assert scenario.trace is not None
    sites = site_ids(scenario)
    days = scenario.history_days or scenario.trace_demand_index_days
    if days <= 0:
        return [1.0] * len(sites)
    path = Path(scenario.trace)
    frame = _read_trace(path, scenario.trace_site_map)
    times = epoch_ms(frame, path)
    known = [t for t in times if t is not None]
    if not known:
        return [1.0] * len(sites)
    first = min(known)
    end = first - first % DAY_MS + days * DAY_MS
    units: Counter[str] = Counter()
    for at, site, qty in zip(times, frame["site"], frame["qty"], strict=True):
        if at is not None and at < end:
            units[str(site)] += int(qty)
    fitted = fitted_demand_index(units, sites)
    return [fitted[site] for site in sites]


def make_network(scenario: Scenario) -> Network:
    return network_from_dict(network_dict(scenario))


def demo_policy() -> Policy:
    return Policy(version="demo-1", description="embedded demo policy")


def draw_demand(
    scenario: Scenario, skus: list[str], sites: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Hourly demand [hour, sku, site] and the true daily rate [sku, site] behind it."""
    rng = np.random.default_rng(scenario.seed)
    n_skus, n_sites = len(skus), len(sites)
    popularity, scale = _popularity_and_scale(rng, scenario, n_skus, n_sites)
    daily_rate = np.outer(popularity, scale)
    if scenario.trace is not None:
        return _trace_demand(scenario, skus, sites), daily_rate
    day_factor = np.array([scenario.weekly[(d % 7)] for d in range(scenario.days)], dtype=float)[
        :, None, None
    ] * np.ones((scenario.days, n_skus, n_sites))
    for shock in scenario.shocks:
        sku_mask = rng.random(n_skus) < shock.sku_share
        site_mask = np.array([not shock.sites or s in shock.sites for s in sites])
        days = slice(shock.day, min(shock.day + shock.days, scenario.days))
        day_factor[days] *= np.where(sku_mask[:, None] & site_mask[None, :], shock.factor, 1.0)
    hourly_mean = (
        np.repeat(day_factor, 24, axis=0)
        * daily_rate[None, :, :]
        * np.tile(HOURLY_PROFILE, scenario.days)[:, None, None]
    )
    return _sample(rng, scenario, hourly_mean), daily_rate


def draw_warmup_demand(scenario: Scenario, daily_rate: np.ndarray) -> np.ndarray:
    """Hourly demand [hour, sku, site] for the `warmup_days` before hour 0: the same rates
    and weekly shape, no shocks, drawn from a stream of its own so that the measured
    demand is the same draw with or without a warm-up."""
    days = scenario.warmup_days
    rng = np.random.default_rng(scenario.seed + 5)
    weekday = np.array([scenario.weekly[(d - days) % 7] for d in range(days)], dtype=float)
    hourly_mean = (
        np.repeat(weekday, 24)[:, None, None]
        * daily_rate[None, :, :]
        * np.tile(HOURLY_PROFILE, days)[:, None, None]
    )
    return _sample(rng, scenario, hourly_mean)


def _sample(rng: np.random.Generator, scenario: Scenario, hourly_mean: np.ndarray) -> np.ndarray:
    if scenario.distribution == "negbin" and scenario.dispersion > 1.0:
        # Gamma-Poisson mixture: variance = dispersion * mean.
        shape = hourly_mean / (scenario.dispersion - 1.0)
        lam = rng.gamma(np.maximum(shape, 1e-12), scenario.dispersion - 1.0)
        return np.asarray(rng.poisson(np.where(hourly_mean > 0, lam, 0.0)))
    return np.asarray(rng.poisson(hourly_mean))


def _trace_demand(scenario: Scenario, skus: list[str], sites: list[str]) -> np.ndarray:
    """Replay a CSV or Parquet of (date or ts, sku, site, qty) into the hourly grid. Every
    row lands in the grid or is accounted for: rows the world cannot place (unknown SKU or
    site, a time outside the scenario) fail the run, or with `trace_unplaced = "warn"` are
    dropped with a count (a trace that silently missed its window looked like no demand)."""
    assert scenario.trace is not None
    path = Path(scenario.trace)
    frame = _read_trace(path, scenario.trace_site_map)
    hours = _trace_hours(frame, scenario, path)
    spread = "ts" not in frame.columns
    span = scenario.hours + scenario.history_days * 24  # the history's hours come first
    grid = np.zeros((span, len(skus), len(sites)), dtype=np.int64)
    sku_index = {s: i for i, s in enumerate(skus)}
    site_index = {s: i for i, s in enumerate(sites)}
    rng = np.random.default_rng(scenario.seed + 2)
    unplaced: Counter[str] = Counter()
    rows = zip(hours, frame["sku"].to_list(), frame["site"].to_list(), frame["qty"].to_list(),
               strict=True)  # fmt: skip
    for hour, sku, site, qty in rows:
        k, s = sku_index.get(str(sku)), site_index.get(str(site))
        why = _unplaced(k, s, hour, span)
        if why or k is None or s is None or hour is None:
            unplaced[why] += 1
        elif spread:  # a daily total: spread over the day's trading hours
            for h, n in enumerate(rng.multinomial(int(qty), HOURLY_PROFILE)):
                if n and hour + h < span:
                    grid[hour + h, k, s] += n
        else:
            grid[hour, k, s] += int(qty)
    _report_unplaced(path, unplaced, len(frame), scenario.trace_unplaced)
    return grid


def _read_trace(path: Path, site_map: str | None = None) -> Any:
    frame = read_sales_file(path, read_site_map(Path(site_map)) if site_map else None)
    if "qty" in frame.columns:
        check_quantities(frame, path)
    return frame


def _trace_hours(frame: Any, scenario: Scenario, path: Path) -> list[int | None]:
    """Each row's hour from the scenario's start (its day's first hour for daily totals);
    with `align_trace`, the trace's first day is the scenario's first day."""
    times = epoch_ms(frame, path)
    known = [t for t in times if t is not None]
    start = scenario.start_ms - scenario.history_days * DAY_MS
    if scenario.align_trace and known:
        first = min(known)
        start = first - first % DAY_MS
    return [None if t is None else (t - start) // HOUR_MS for t in times]


def _unplaced(k: int | None, s: int | None, hour: int | None, hours: int) -> str:
    if k is None:
        return "unknown SKU"
    if s is None:
        return "unknown site"
    if hour is None or not 0 <= hour < hours:
        return "outside the scenario's days"
    return ""


def _report_unplaced(path: Path, unplaced: Counter[str], total: int, mode: str) -> None:
    if not unplaced:
        return
    detail = ", ".join(f"{n} rows: {why}" for why, n in sorted(unplaced.items()))
    message = f"{path}: {sum(unplaced.values())} of {total} trace rows cannot be placed ({detail})"
    if mode != "warn":
        raise ConfigError(f'{message}; set trace_unplaced = "warn" to drop them')
    print(f"warning: {message}; dropped", file=sys.stderr)


def trace_keys(path: str | Path, site_map: str | None = None) -> tuple[list[str], list[str]]:
    """SKUs and sites named in a trace (after the site map), sorted, so the world can be
    sized to it."""
    frame = _read_trace(Path(path), site_map)
    return sorted(map(str, frame["sku"].unique())), sorted(map(str, frame["site"].unique()))


def _mean_daily(hourly: np.ndarray, days: int) -> np.ndarray:
    """Each SKU-site's mean daily sales over a trace's hours, at least 0.05 a day (a
    SKU-site that sold nothing still gets a small target and forecast)."""
    observed = hourly.sum(axis=0) / max(days, 1)
    return np.asarray(np.maximum(observed, 0.05), dtype=float)


@dataclass
class Kpis:
    demand: int = 0
    served: int = 0
    served_by_transfer: float = 0.0
    units_moved: int = 0
    transfers: int = 0
    transfer_cost: float = 0.0
    trips: int = 0
    proposals: int = 0
    proposals_rejected: int = 0
    proposals_expired: int = 0
    # Proposals their own evidence priced below zero; the policy promises none.
    proposals_negative_net_benefit: int = 0
    proposals_failed: int = 0
    refused_for_storage: int = 0
    stockout_hours: int = 0
    inventory_hours: float = 0.0
    hours: int = 0
    unit_cost: float = 12.0
    daily_fill: list[float] = field(default_factory=list)
    daily_units_moved: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        network_fill = self.served / self.demand if self.demand else 1.0
        by_transfer = self.served_by_transfer / self.demand if self.demand else 0.0
        average_inventory = self.inventory_hours / self.hours if self.hours else 0.0
        days = self.hours / 24 if self.hours else 1.0
        return {
            "demand_units": self.demand,
            "served_units": self.served,
            "network_fill_rate": round(network_fill, 4),
            "local_fill_rate": round(network_fill - by_transfer, 4),
            "share_served_by_transfer": round(
                self.served_by_transfer / self.served if self.served else 0.0, 4
            ),
            "units_moved": self.units_moved,
            "transfers": self.transfers,
            # Departures that paid a lane's trip cost (per_trip cost model; else 0).
            "trips": self.trips,
            "transfer_cost": round(self.transfer_cost, 2),
            "transfer_cost_per_unit": round(
                self.transfer_cost / self.units_moved if self.units_moved else 0.0, 3
            ),
            "transfer_efficiency": round(
                self.served_by_transfer / self.units_moved if self.units_moved else 0.0, 4
            ),
            "stockout_hours": self.stockout_hours,
            "average_inventory_units": round(average_inventory, 1),
            "turns_annualised": round(
                self.served / average_inventory * 365 / days if average_inventory else 0.0, 2
            ),
            "proposals": self.proposals,
            "proposals_rejected": self.proposals_rejected,
            "proposals_expired": self.proposals_expired,
            "proposals_negative_net_benefit": self.proposals_negative_net_benefit,
            "proposals_failed": self.proposals_failed,
            "refused_for_storage": self.refused_for_storage,
        }


@dataclass(frozen=True, slots=True)
class TransferOrder:
    """A transfer the world is asked to carry out: a proposal, or a baseline's move."""

    sku: str
    from_site: str
    to_site: str
    qty: int
    ref: str
    # A proposal's `expires_at`: the world does not start it after then (as the execution
    # layer does not); None for a baseline's move.
    expires_at_ms: int | None = None


Event = tuple[str, dict[str, Any]]


class Simulation:
    """The world for one scenario; call `advance_hour` until `done`, feeding transfers back.

    `emit=False` skips building events (baselines that do not read them run faster);
    `pooling=True` serves a stockout instantly from the site holding most stock.
    """

    def __init__(
        self, scenario: Scenario, network: Network, *, emit: bool = True, pooling: bool = False
    ) -> None:
        self.scenario = scenario
        self.network = network
        self.emit = emit
        self.pooling = pooling
        # Sales held back by `pos_lag_hours`, by the hour they reach stockshift.
        self._lagging_sales: dict[int, list[Event]] = {}
        self.sites = sorted(network.sites)
        if scenario.trace is not None:
            trace_skus, _ = trace_keys(scenario.trace, scenario.trace_site_map)
            self.skus = trace_skus
        else:
            self.skus = [f"SKU-{k + 1:04d}" for k in range(scenario.n_skus)]
        self.demand, self.daily_rate = draw_demand(scenario, self.skus, self.sites)
        history_hours = scenario.history_days * 24 if scenario.trace is not None else 0
        self.history_demand = self.demand[:history_hours]
        self.demand = self.demand[history_hours:]
        n_skus, n_sites = len(self.skus), len(self.sites)
        rng = np.random.default_rng(scenario.seed + 3)
        if scenario.trace is not None:
            self.daily_rate = _mean_daily(self.demand, scenario.days)
        forecast = self._forecast_basis() * rng.lognormal(
            0.0, scenario.forecast_error_sigma, (n_skus, n_sites)
        )
        self.forecast = forecast
        cover_days = scenario.supplier_lead_days + scenario.review_days
        self.base_stock = self._fit_storage(
            np.ceil(
                forecast * cover_days + scenario.base_stock_z * np.sqrt(forecast * cover_days)
            ).astype(int)
        )
        self.reorder_level = np.floor(self.base_stock * scenario.reorder_share).astype(int)
        self.on_hand = self.base_stock.copy()
        self.from_transfer = np.zeros((n_skus, n_sites))
        # Per SKU-site over the run (hour 0 on): units sold, and units sent less units
        # received by transfer; `flows.lab.simulate` compares them with `none`'s.
        self.sold_by_cell = np.zeros((n_skus, n_sites))
        self.net_sent_by_cell = np.zeros((n_skus, n_sites))
        self.supplier_pipeline = np.zeros((n_skus, n_sites), dtype=int)
        self.in_transit = np.zeros((n_skus, n_sites), dtype=int)
        self.sold_today = np.zeros((n_skus, n_sites), dtype=int)
        self.sales_history: list[np.ndarray] = []
        self.arrivals: dict[int, list[tuple[str, int, int, int, str, str | None]]] = {}
        self.pending: list[TransferOrder] = []
        self.hour = 0
        self.kpis = Kpis(unit_cost=network.sku_defaults.unit_cost)
        self._day_demand = 0
        self._day_served = 0
        self._day_moved = 0
        self._site_index = {s: i for i, s in enumerate(self.sites)}
        self._lane_used: dict[tuple[str, int], int] = {}
        self._sku_index = {s: i for i, s in enumerate(self.skus)}
        self._warmup_demand: np.ndarray | None = None
        if scenario.warmup_days and scenario.trace is None:
            self._warm_up(draw_warmup_demand(scenario, self.daily_rate))

    def _warm_up(self, demand: np.ndarray) -> None:
        """Run the world from hour -len(demand) to 0 without transfers (and without events,
        KPIs or pooling), so hour 0 finds the replenishment rule's own steady state: stock
        run down unevenly by the forecast errors behind the targets, and supplier orders in
        flight. Hours stay negative throughout, so order references stay unique."""
        emit, pooling = self.emit, self.pooling
        self.emit = self.pooling = False
        self._warmup_demand = demand
        self.hour = -len(demand)
        while self.hour < 0:
            self.advance_hour()
        self.emit, self.pooling = emit, pooling
        self._warmup_demand = None
        # The last review window's sales only: the first one-for-one order needs them.
        self.sales_history = self.sales_history[-self.scenario.review_days :]
        self.kpis = Kpis(unit_cost=self.network.sku_defaults.unit_cost)
        self._day_demand = self._day_served = self._day_moved = 0

    def _forecast_basis(self) -> np.ndarray:
        """The daily rates the forecasts are drawn around (`Scenario.forecast_basis`)."""
        if self.scenario.forecast_basis == "history":
            return _mean_daily(self.history_demand, self.scenario.history_days)
        return np.asarray(self.daily_rate, dtype=float)

    def _fit_storage(self, base_stock: np.ndarray) -> np.ndarray:
        """Each store's targets (and so its opening stock), scaled down alike to fit its
        storage: a store cannot open holding more than it can hold. One that did would have
        every supplier order cut to the room left until its stock ran down, starving the
        world of the replenishment the hindsight bound assumes (the constrained scenario
        before this: 881 of 12,853 ordered units cut, no-transfer fill 0.8488; after: none
        cut, 0.8689). Rounding each SKU's target down leaves a fitted store less than a unit
        per SKU of room, so a transfer into it mostly fits once stock has left it."""
        for s, site in enumerate(self.sites):
            capacity = self.network.sites[site].storage_capacity
            total = int(base_stock[:, s].sum())
            if capacity is not None and total > capacity:
                base_stock[:, s] = np.floor(base_stock[:, s] * capacity / total).astype(int)
        return base_stock

    @property
    def done(self) -> bool:
        return self.hour >= self.scenario.hours

    def expected_demand(self, start: int, hours: int) -> np.ndarray:
        """Mean demand [hour, sku, site] from hour `start`: the true rates with the weekly
        and hourly shape (what a perfect forecast knows; not a shock, not the draw)."""
        at = np.arange(start, start + hours)
        weekly = np.array(self.scenario.weekly, dtype=float)[(at // 24) % 7]
        shape = weekly * HOURLY_PROFILE[at % 24]
        return np.asarray(shape[:, None, None] * self.daily_rate[None, :, :], dtype=float)

    def due(self, start: int, hours: int) -> np.ndarray:
        """Units due [hour, sku, site] from hour `start`: supplier orders and transfers on
        their way."""
        due = np.zeros((hours, len(self.skus), len(self.sites)))
        for hour, items in self.arrivals.items():
            if start <= hour < start + hours:
                for _kind, k, s, qty, _ref, _from in items:
                    due[hour - start, k, s] += qty
        return due

    def ts(self, hour: int, minute: int = 0) -> int:
        return self.scenario.start_ms + hour * HOUR_MS + minute * 60_000

    def published_ms(self, kind: str, body: dict[str, Any]) -> int | None:
        """When an event's message reached Kafka, where that is later than its own time:
        a sale held back by `pos_lag_hours` (the world publishes everything else at once)."""
        if kind != "pos" or not self.scenario.pos_lag_hours:
            return None
        return int(body["ts"]) + self.scenario.pos_lag_hours * HOUR_MS

    def accept(self, proposals: list[Proposal]) -> None:
        """Proposals from the flow, carried out at the start of the next hour."""
        self.order(
            [
                TransferOrder(p.sku, p.from_site, p.to_site, p.qty, p.proposal_id, p.expires_at_ms)
                for p in proposals
            ]
        )
        self.kpis.proposals += len(proposals)
        self.kpis.proposals_negative_net_benefit += sum(
            p.evidence.net_benefit < 0 for p in proposals
        )

    def order(self, orders: list[TransferOrder]) -> None:
        self.pending.extend(orders)

    def history_events(self) -> list[Event]:
        """The trace's history days as `sale_history` events, hour by hour before hour 0."""
        hours = len(self.history_demand)
        events: list[Event] = []
        for h, k, s in zip(*np.nonzero(self.history_demand), strict=True):
            ts = self.ts(int(h) - hours, 30)
            body = {"event_id": f"hist-{h}-{k}-{s}", "ts": ts, "sku": self.skus[k],
                    "site": self.sites[s], "type": "sale_history",
                    "qty": int(self.history_demand[h, k, s])}  # fmt: skip
            events.append(("pos", body))
        return sorted(events, key=lambda e: int(e[1]["ts"]))

    def initial_events(self) -> list[Event]:
        """Opening counts for every SKU-site, as a store system would publish them, and the
        supplier orders still on their way (after a warm-up)."""
        events = self._opening_counts() + self._orders_in_flight()
        return events + self._forecasts() if self.scenario.publish_forecasts else events

    def _forecasts(self) -> list[Event]:
        """The forecast each target was set from, with its error as a coefficient of
        variation (a lognormal error of sigma s has cv sqrt(exp(s^2) - 1))."""
        cv = math.sqrt(math.expm1(self.scenario.forecast_error_sigma**2))
        factor = self.scenario.published_forecast_factor
        events: list[Event] = []
        for k, sku in enumerate(self.skus):
            for s, site in enumerate(self.sites):
                body = {"event_id": f"fc-{sku}-{site}", "ts": self.ts(0), "sku": sku,
                        "site": site, "mean_per_day": round(float(self.forecast[k, s] * factor), 4),
                        "forecast_version": "sim-0"}  # fmt: skip
                if cv > 0 and self.scenario.publish_forecast_error:
                    body["error_cv"] = round(cv, 4)
                events.append(("forecasts", body))
        return events

    def scheduled_arrivals(self) -> np.ndarray:
        """Supplier units [hour, sku, site] already ordered at hour 0 and due within the
        horizon (after a warm-up; zeros after a cold start)."""
        due = np.zeros((self.scenario.hours, len(self.skus), len(self.sites)), dtype=np.int64)
        for hour, items in self.arrivals.items():
            for kind, k, s, qty, _, _ in items:
                if kind == "supplier" and self.hour <= hour < self.scenario.hours:
                    due[hour, k, s] += qty
        return due

    def _orders_in_flight(self) -> list[Event]:
        delay = self.scenario.supplier_delay_hours  # announced with the ETA they will miss
        return [
            self._order_announced(ref, k, s, qty, self.ts(self.hour), hour - delay)
            for hour in sorted(self.arrivals)
            for kind, k, s, qty, ref, _ in self.arrivals[hour]
            if kind == "supplier"
        ]

    def _opening_counts(self) -> list[Event]:
        return [
            (
                "inventory",
                {
                    "event_id": f"open-{sku}-{site}",
                    "ts": self.ts(0),
                    "sku": sku,
                    "site": site,
                    "type": "snapshot",
                    "on_hand": int(self.on_hand[k, s]),
                },
            )
            for k, sku in enumerate(self.skus)
            for s, site in enumerate(self.sites)
        ]

    def advance_hour(self) -> list[Event]:
        """Simulate one hour; returns the events it published, in time order (with
        `pos_lag_hours`, the sales of an earlier hour last)."""
        h = self.hour
        events: list[Event] = []
        self._arrive(h, events)
        self._execute(h, events)
        self._sell(h, events)
        if h % 24 == 23:
            self._end_of_day(h, events)
        self.hour += 1
        return self._lag_sales(h, events) if self.scenario.pos_lag_hours else events

    def _lag_sales(self, h: int, events: list[Event]) -> list[Event]:
        """The hour's events without its sales, then the sales `pos_lag_hours` old (the
        sales of the run's last hours never arrive)."""
        sales = [e for e in events if e[0] == "pos"]
        self._lagging_sales.setdefault(h + self.scenario.pos_lag_hours, []).extend(sales)
        return [e for e in events if e[0] != "pos"] + self._lagging_sales.pop(h, [])

    def _arrive(self, h: int, events: list[Event]) -> None:
        for kind, k, s, qty, ref, from_site in self.arrivals.pop(h, []):
            self.on_hand[k, s] += qty
            if kind == "supplier":
                self.supplier_pipeline[k, s] -= qty
            else:
                self.in_transit[k, s] -= qty
                self.from_transfer[k, s] += qty
            if not self.emit:
                continue
            body: dict[str, Any] = {
                "ts": self.ts(h),
                "sku": self.skus[k],
                "site": self.sites[s],
                "qty": qty,
            }
            if kind == "supplier":
                body.update(event_id=f"recv-{ref}", type="inbound_received", shipment_id=ref)
            else:
                body.update(
                    event_id=f"xfer-recv-{ref}",
                    type="transfer_received",
                    from_site=from_site,
                    proposal_id=ref,
                )
            events.append(("shipments", body))

    def _ship(
        self, k: int, src: int, dst: int, qty: int, lead_hours: float, h: int, ref: str
    ) -> None:
        share = self.from_transfer[k, src] / self.on_hand[k, src] if self.on_hand[k, src] else 0.0
        self.from_transfer[k, src] -= share * qty
        self.on_hand[k, src] -= qty
        self.net_sent_by_cell[k, src] += qty
        self.net_sent_by_cell[k, dst] -= qty
        if lead_hours <= 0:
            self.on_hand[k, dst] += qty
            self.from_transfer[k, dst] += qty
        else:
            self.in_transit[k, dst] += qty
            self.arrivals.setdefault(h + max(1, math.ceil(lead_hours)), []).append(
                ("transfer", k, dst, qty, ref, self.sites[src])
            )
        self.kpis.units_moved += qty
        self._day_moved += qty

    def _execute(self, h: int, events: list[Event]) -> None:
        for order in self.pending:
            if order.expires_at_ms is not None and order.expires_at_ms <= self.ts(h - 1):
                # Expired before the hour it was published in began: the execution layer
                # never starts it and reports nothing (stockshift releases the reservation at
                # its expiry by itself). The world carries out an hour's proposals at the
                # next hour's start; one that expires in between had minutes to spare.
                self.kpis.proposals_expired += 1
                continue
            k = self._sku_index[order.sku]
            src, dst = self._site_index[order.from_site], self._site_index[order.to_site]
            body: dict[str, Any] = {
                "ts": self.ts(h, 1),
                "sku": order.sku,
                "site": order.to_site,
                "from_site": order.from_site,
                "proposal_id": order.ref,
            }
            draw = int(order.ref[:8], 16) / 0xFFFFFFFF if _is_hex(order.ref[:8]) else 1.0
            qty = min(order.qty, int(self.on_hand[k, src]), self._lane_room(order, h))
            refused = draw >= self.scenario.reject_share and self._storage_full(dst, qty)
            if refused:
                self.kpis.refused_for_storage += 1
            if draw < self.scenario.reject_share or refused:
                self.kpis.proposals_rejected += 1
                body.update(
                    event_id=f"xfer-rej-{order.ref}", type="transfer_rejected", qty=order.qty
                )
            elif qty <= 0:
                self.kpis.proposals_failed += 1
                body.update(
                    event_id=f"xfer-fail-{order.ref}", type="transfer_failed", qty=order.qty
                )
            else:
                lane = self.network.lanes[(order.from_site, order.to_site)]
                used = self._lane_used.get((lane.lane_id, h // 24), 0)
                if used == 0 and lane.trip_cost:  # the day's first departure on the lane
                    self.kpis.trips += 1
                    self.kpis.transfer_cost += lane.trip_cost
                self._lane_used[(lane.lane_id, h // 24)] = used + qty
                lead = lane.lead_hours * self.scenario.lane_lead_factor
                self._ship(k, src, dst, qty, lead, h, order.ref)
                self.kpis.transfers += 1
                self.kpis.transfer_cost += lane.fixed_cost + lane.cost_per_unit * qty
                body.update(event_id=f"xfer-disp-{order.ref}", type="transfer_dispatched", qty=qty)
            if self.emit:
                events.append(("shipments", body))
        self.pending = []

    def _held(self, s: int) -> int:
        """Units at a site or on their way to it, across SKUs: what storage must take."""
        return (
            int(self.on_hand[:, s].sum())
            + int(self.supplier_pipeline[:, s].sum())
            + int(self.in_transit[:, s].sum())
        )

    def _within_storage(self, order: np.ndarray) -> np.ndarray:
        """A site orders no more than it can store: each SKU's order scaled down alike."""
        for s, site in enumerate(self.sites):
            capacity = self.network.sites[site].storage_capacity
            wanted = int(order[:, s].sum())
            if capacity is None or wanted == 0:
                continue
            room = max(capacity - self._held(s), 0)
            if wanted > room:
                order[:, s] = np.floor(order[:, s] * (room / wanted)).astype(int)
        return order

    def _storage_full(self, dst: int, qty: int) -> bool:
        """The world enforces storage too: a receiving site without room refuses a transfer
        that would leave it holding more than its capacity once everything on its way is in."""
        capacity = self.network.sites[self.sites[dst]].storage_capacity
        if capacity is None:
            return False
        return self._held(dst) + qty > capacity

    def _lane_room(self, order: TransferOrder, h: int) -> int:
        """The world enforces lane capacity too: a full truck takes no more."""
        lane = self.network.lanes[(order.from_site, order.to_site)]
        if lane.capacity_per_day is None:
            return order.qty
        return max(lane.capacity_per_day - self._lane_used.get((lane.lane_id, h // 24), 0), 0)

    def _sell(self, h: int, events: list[Event]) -> None:
        if h < 0:
            assert self._warmup_demand is not None
            demand = self._warmup_demand[h + len(self._warmup_demand)]
        else:
            demand = self.demand[h]
        served = np.minimum(demand, self.on_hand)
        with np.errstate(invalid="ignore", divide="ignore"):
            transfer_share = np.where(self.on_hand > 0, self.from_transfer / self.on_hand, 0.0)
        by_transfer = served * transfer_share
        self.from_transfer -= by_transfer
        self.on_hand -= served
        pooled = self._pool(h, demand - served) if self.pooling else 0
        total_served = int(served.sum()) + pooled
        self.sold_today += served
        if h >= 0:
            self.sold_by_cell += served
        self.kpis.demand += int(demand.sum())
        self.kpis.served += total_served
        self.kpis.served_by_transfer += float(by_transfer.sum()) + pooled
        self.kpis.stockout_hours += int((self.on_hand <= 0).sum())
        self.kpis.inventory_hours += float(self.on_hand.sum() + self.in_transit.sum())
        self.kpis.hours += 1
        self._day_demand += int(demand.sum())
        self._day_served += total_served
        if not self.emit:
            return
        for k, s in zip(*np.nonzero(served), strict=True):
            events.append(
                (
                    "pos",
                    {
                        "event_id": f"sale-{h}-{k}-{s}",
                        "ts": self.ts(h, 30),
                        "sku": self.skus[k],
                        "site": self.sites[s],
                        "qty": int(served[k, s]),
                    },
                )
            )

    def _pool(self, h: int, unmet: np.ndarray) -> int:
        """Complete pooling: unmet demand served at once from the sites holding most stock."""
        pooled = 0
        for k, s in zip(*np.nonzero(unmet), strict=True):
            need = int(unmet[k, s])
            while need > 0:
                donor = int(np.argmax(self.on_hand[k]))
                available = int(self.on_hand[k, donor])
                if available <= 0:
                    break
                qty = min(need, available)
                self.on_hand[k, donor] -= qty
                self.sold_today[k, donor] += qty
                lane = self.network.lanes.get((self.sites[donor], self.sites[s]))
                if lane is not None:
                    self.kpis.transfer_cost += lane.fixed_cost + lane.cost_per_unit * qty
                self.kpis.units_moved += qty
                self.kpis.transfers += 1
                self._day_moved += qty
                pooled += qty
                need -= qty
        return pooled

    def _end_of_day(self, h: int, events: list[Event]) -> None:
        self.kpis.daily_fill.append(
            self._day_served / self._day_demand if self._day_demand else 1.0
        )
        self.kpis.daily_units_moved.append(self._day_moved)
        self._day_demand = self._day_served = self._day_moved = 0
        self.sales_history.append(self.sold_today.copy())
        day = h // 24
        if day % self.scenario.review_days == self.scenario.review_days - 1:
            self._replenish(h, events)
        self.sold_today[:] = 0
        if not self.emit:
            return
        for k, sku in enumerate(self.skus):
            for s, site in enumerate(self.sites):
                events.append(
                    (
                        "inventory",
                        {
                            "event_id": f"count-{h}-{k}-{s}",
                            "ts": self.ts(h, 59),
                            "sku": sku,
                            "site": site,
                            "type": "snapshot",
                            "on_hand": int(self.on_hand[k, s]),
                        },
                    )
                )

    def supplier_order(self) -> np.ndarray:
        """Units each SKU-site orders at this review, by the scenario's replenishment rule."""
        rule = self.scenario.replenishment
        if rule == "one_for_one":
            # Replenish what sold since the last review, whatever transfers did.
            since = self.scenario.review_days
            return np.asarray(sum(self.sales_history[-since:]), dtype=int)
        position = self.on_hand + self.supplier_pipeline + self.in_transit
        order = np.maximum(self.base_stock - position, 0)
        if rule == "s_S":
            order = np.where(position <= self.reorder_level, order, 0)
        return np.asarray(order, dtype=int)

    def _replenish(self, h: int, events: list[Event]) -> None:
        order = self._within_storage(self.supplier_order())
        lead = self.scenario.supplier_lead_days * 24
        for k, s in zip(*np.nonzero(order), strict=True):
            qty = int(order[k, s])
            ref = f"po-{h}-{k}-{s}"
            self.supplier_pipeline[k, s] += qty
            late = h + lead + self.scenario.supplier_delay_hours
            self.arrivals.setdefault(late, []).append(("supplier", k, s, qty, ref, None))
            if self.emit:
                # A minute before the day's closing counts: the flow's merged source replays
                # same-time events by topic (inventory before shipments), so equal times would
                # put the counts first there and the notices first here.
                events.append(self._order_announced(ref, k, s, qty, self.ts(h, 58), h + lead))

    def _order_announced(self, ref: str, k: int, s: int, qty: int, ts: int, due: int) -> Event:
        """The supplier's advance notice of an order due at hour `due`."""
        body = {"event_id": f"po-exp-{ref}", "ts": ts, "sku": self.skus[k],
                "site": self.sites[s], "type": "inbound_expected", "qty": qty,
                "eta": self.ts(due), "shipment_id": ref}  # fmt: skip
        return ("shipments", body)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
        return True
    except ValueError:
        return False


def run_without_transfers(scenario: Scenario, network: Network) -> Kpis:
    """The `none` baseline: the same world and demand, no transfers."""
    sim = Simulation(scenario, network, emit=False)
    while not sim.done:
        sim.advance_hour()
    return sim.kpis


class SimulatorFeed:
    """Drives a flow from a Simulation in lockstep, closing the loop through its outputs.

    `pull` is a PullSource callable: it sends the next simulated hour only once the flow has
    accounted for every event already sent (a StepOutput or a dead letter each) and every
    proposal those events caused has come out of negotiation, then feeds the granted ones
    back into the world as executed transfers. Wire `on_step_outputs`, `on_dead_letters` and
    `on_negotiated` to the flow's sinks of the same names.
    """

    def __init__(
        self,
        sim: Simulation,
        topic_prefix: str,
        on_day: Callable[[int, Kpis], None] | None = None,
    ) -> None:
        self.sim = sim
        self.topic_prefix = topic_prefix
        self.sent = 0
        self.accounted = 0
        self.negotiating = 0
        self.proposals: list[Proposal] = []
        self._unfed: list[Proposal] = []
        self._opened = False
        self._offset = 0
        self._on_day = on_day

    def on_step_outputs(self, items: list[tuple[str, StepOutput]]) -> None:
        for _, output in items:
            self.accounted += 1
            self.negotiating += len(output.proposals)

    def on_negotiated(self, items: list[NegotiationOutcome]) -> None:
        for outcome in items:
            if not outcome.later:  # one answer per proposal; a trip's release comes later
                self.negotiating -= 1
            if outcome.proposal is not None:
                self._unfed.append(outcome.proposal)
                self.proposals.append(outcome.proposal)

    def on_dead_letters(self, items: list[DeadLetter]) -> None:
        self.accounted += len(items)

    def _raw(self, events: list[Event]) -> list[RawMessage]:
        batch = []
        for kind, body in events:
            batch.append(
                RawMessage(
                    topic=self.topic_prefix + kind,
                    partition=0,
                    offset=self._offset,
                    key=body["sku"].encode(),
                    value=orjson.dumps(body),
                    received_at_ms=int(body["ts"]),
                )
            )
            self._offset += 1
        self.sent += len(batch)
        return batch

    def pull(self) -> list[RawMessage] | None:
        if self.accounted < self.sent or self.negotiating:
            return []
        if not self._opened:
            self._opened = True
            return self._raw(self.sim.initial_events())
        if self.sim.done:
            return None
        self.sim.accept(self._unfed)
        self._unfed = []
        events = self.sim.advance_hour()
        if self._on_day is not None and self.sim.hour % 24 == 0:
            self._on_day(self.sim.hour // 24, self.sim.kpis)
        return self._raw(events)


# ---- the continuous-review check against the Erlang loss closed form -------------------


def continuous_review_fill(
    n_sites: int,
    rate: float,
    lead: float,
    base_stock: int,
    *,
    pooling: bool,
    demands: int,
    seed: int = 0,
) -> float:
    """Unit fill of N identical sites, Poisson demand, one-for-one replenishment, lost sales.

    Each unit sold is reordered at once and arrives `lead` later; with `pooling`, a demand
    that finds its site empty takes a unit from any site that has one, instantly.
    """
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / (n_sites * rate), size=demands)
    where = rng.integers(0, n_sites, size=demands)
    on_hand = [base_stock] * n_sites
    total = sum(on_hand)
    due: list[tuple[float, int]] = []
    now = 0.0
    served = counted = 0
    warmup = demands // 50
    for i in range(demands):
        now += gaps[i]
        while due and due[0][0] <= now:
            _, site = heapq.heappop(due)
            on_hand[site] += 1
            total += 1
        site = int(where[i])
        if on_hand[site] == 0 and pooling and total > 0:
            site = max(range(n_sites), key=on_hand.__getitem__)
        if i >= warmup:
            counted += 1
        if on_hand[site] > 0:
            on_hand[site] -= 1
            total -= 1
            heapq.heappush(due, (now + lead, site))
            if i >= warmup:
                served += 1
    return served / counted
