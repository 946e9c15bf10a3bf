"""The trip-cost bound: the most any plan knowing all demand could earn when a lane's
departures cost a trip a day (the simulator's `per_trip` cost model), bracketed.

The exact problem, hourly with a yes/no trip per lane and day shared by every SKU, has
tens of millions of variables on a 300-item, 10-store month; it is not solved. Two
figures bracket its best value (margin x units sold - unit and trip costs):

- `upper`: a relaxation in two periods a day (see `_period`), solved as an LP (trips may be
  fractional; HiGHS's interior point) or, for small worlds, as a MILP with whole trips (its
  dual bound when the time limit stops it). A transfer arrives in the earliest period its
  lead allows, stock must only be non-negative at each period's end, and a SKU moves on a
  lane in a period only if that lane's calendar day has its trip. Every hourly plan maps
  onto a plan of the relaxation at least as good, so no plan beats it; without transfers
  it is exact (deliveries land and reviews end on a period's edge).
- `lower`: a plan the world could carry out (in continuous units, as the hindsight LP):
  the hourly LP of each SKU, allowed to move stock only on the lane-days the relaxation
  opened, trips shared by slope scaling, each lane-day it used charged its trip.

The best plan lies between the two; their distance says how tight the bracket is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_matrix, csr_matrix, hstack, identity, kron, vstack

from operators.reference.hindsight import LaneSpec, _flow_balance, _Rows


@dataclass(frozen=True, slots=True)
class TripBoundResult:
    """Values are margin x units sold - transfer costs (unit and trip), before `none`'s
    sales are subtracted."""

    upper: float
    lower: float
    lower_served: float
    lower_units_moved: float
    lower_cost: float
    lower_trips: int
    upper_trips: float
    mip_gap: float | None
    demand: int


@dataclass(frozen=True, slots=True)
class _World:
    """What every part of the bound reads: demand and scheduled [hour, sku, site], on_hand
    [sku, site], the lanes, one-for-one replenishment's review and lead, the unit margin."""

    demand: NDArray[np.int64]
    on_hand: NDArray[np.int64]
    scheduled: NDArray[np.int64]
    lanes: list[LaneSpec]
    review_hours: int
    supplier_lead_hours: int
    margin: float


def _period(hour: int) -> int:
    """The relaxation's periods: two a day, hours 0-22 and hour 23, the hour supplier
    deliveries land and review windows end, so both fall on a period's edge exactly."""
    return 2 * (hour // 24) + (1 if hour % 24 == 23 else 0)


def _first_hour(period: int) -> int:
    return 24 * (period // 2) + (23 if period % 2 else 0)


def _by_period(per_hour: NDArray[np.int64]) -> NDArray[np.int64]:
    """[hour, ...] summed into `_period`'s periods."""
    hours = per_hour.shape[0]
    out = np.zeros((_period(hours - 1) + 1, *per_hour.shape[1:]), dtype=per_hour.dtype)
    np.add.at(out, np.array([_period(h) for h in range(hours)]), per_hour)
    return out


@dataclass(frozen=True, slots=True)
class _Layout:
    """The relaxation's sizes and one SKU's variables: sold and end stock per (period,
    site), moved per (period, lane), ordered per (review, site)."""

    periods: int
    sites: int
    lanes: int
    reviews: int

    @property
    def per_sku(self) -> int:
        return 2 * self.periods * self.sites + self.periods * self.lanes + self.reviews * self.sites

    def sold(self, p: int, i: int) -> int:
        return p * self.sites + i

    def stock(self, p: int, i: int) -> int:
        return self.periods * self.sites + p * self.sites + i

    def moved(self, p: int, e: int) -> int:
        return 2 * self.periods * self.sites + p * self.lanes + e

    def order(self, r: int, i: int) -> int:
        return 2 * self.periods * self.sites + self.periods * self.lanes + r * self.sites + i


def trip_bound(
    demand: NDArray[np.int64],
    on_hand: NDArray[np.int64],
    scheduled: NDArray[np.int64],
    lanes: list[LaneSpec],
    trip_costs: list[float],
    review_hours: int,
    supplier_lead_hours: int,
    margin: float,
    time_limit_s: float = 600.0,
    integral_trips: bool = False,
    rounds: int = 6,
) -> TripBoundResult:
    """demand and scheduled are [hour, sku, site], on_hand [sku, site]; one-for-one
    replenishment, lanes without daily capacity, sites without storage limits.

    The upper figure is the relaxation's LP (trips may be fractional), or with
    `integral_trips` its MILP's dual bound after `time_limit_s` (tighter; only small worlds
    solve in minutes)."""
    if any(lane.capacity_per_day for lane in lanes):
        raise ValueError("the trip-cost bound models lanes without a daily capacity")
    hours = int(demand.shape[0])
    if hours % 24 or review_hours % 24:
        raise ValueError("the trip-cost bound needs whole days and a review in whole days")
    world = _World(demand, on_hand, scheduled, lanes, review_hours, supplier_lead_hours, margin)
    trips = np.asarray(trip_costs, dtype=float)
    open_days, upper, upper_trips, gap = _relaxation(
        world, trips, time_limit_s, relax=not integral_trips
    )
    plan = _best_hourly_plan(world, trips, open_days, rounds)
    return TripBoundResult(
        upper=upper,
        lower=plan.value(margin, trips),
        lower_served=plan.served,
        lower_units_moved=plan.moved,
        lower_cost=plan.unit_cost + plan.trip_cost(trips),
        lower_trips=int((plan.units > 1e-6).sum()),
        upper_trips=upper_trips,
        mip_gap=gap,
        demand=int(demand.sum()),
    )


def _arrival_period(departure_period: int, lead_hours: int) -> int:
    """The earliest period a transfer leaving in `departure_period` can arrive in."""
    return _period(_first_hour(departure_period) + max(1, lead_hours))


def _sku_block(
    layout: _Layout, lanes: list[LaneSpec], review_hours: int, supplier_lead_hours: int
) -> tuple[csr_matrix, csr_matrix]:
    """One SKU's rows of the relaxation: stock balance per (period, site) (equalities) and
    one-for-one orders at most what sold in their review window (inequalities)."""
    eq = _Rows()
    periods, sites = layout.periods, layout.sites
    for p in range(periods):
        for i in range(sites):
            row = eq.row()
            eq.put(row, layout.stock(p, i), 1.0)
            if p > 0:
                eq.put(row, layout.stock(p - 1, i), -1.0)
            eq.put(row, layout.sold(p, i), 1.0)
    for e, lane in enumerate(lanes):
        for p in range(periods):
            eq.put(p * sites + lane.from_index, layout.moved(p, e), 1.0)
            arrive = _arrival_period(p, lane.lead_hours)
            if arrive < periods:
                eq.put(arrive * sites + lane.to_index, layout.moved(p, e), -1.0)
    ub = _Rows()
    for r in range(layout.reviews):
        placed = (r + 1) * review_hours - 1  # the hour whose end places the order
        arrive = _period(placed + supplier_lead_hours)
        for i in range(sites):
            if arrive < periods:
                eq.put(arrive * sites + i, layout.order(r, i), -1.0)
            row = ub.row()
            ub.put(row, layout.order(r, i), 1.0)
            for p in range(_period(r * review_hours), _period(placed) + 1):
                ub.put(row, layout.sold(p, i), -1.0)
    return eq.matrix(layout.per_sku), ub.matrix(layout.per_sku)


def _relaxation(
    world: _World, trip_costs: NDArray[np.float64], time_limit_s: float, relax: bool
) -> tuple[NDArray[np.bool_], float, float, float | None]:
    """Solve the relaxation (`relax`: its LP); return the lane-days it opens [day, lane],
    its bound on the best value, the trips it pays for and HiGHS's gap (None for the LP)."""
    demand, on_hand, scheduled, lanes = world.demand, world.on_hand, world.scheduled, world.lanes
    review_hours, supplier_lead_hours = world.review_hours, world.supplier_lead_hours
    margin = world.margin
    hours, skus, sites = (int(n) for n in demand.shape)
    periods, days, n_lanes = _period(hours - 1) + 1, hours // 24, len(lanes)
    layout = _Layout(periods, sites, n_lanes, hours // review_hours)
    per = layout.per_sku
    eq_block, ub_block = _sku_block(layout, lanes, review_hours, supplier_lead_hours)
    n_x, n_y = skus * per, days * n_lanes
    demand_p = _by_period(demand)  # [period, sku, site]
    eye = identity(skus, format="csr")
    a_eq = hstack([kron(eye, eq_block), csr_matrix((skus * eq_block.shape[0], n_y))])
    rhs = _by_period(scheduled).transpose(1, 0, 2).astype(float)  # [sku, period, site]
    rhs[:, 0, :] += on_hand
    a_orders = hstack([kron(eye, ub_block), csr_matrix((skus * ub_block.shape[0], n_y))])
    cost = np.zeros(n_x + n_y)
    upper_bounds = np.full(n_x + n_y, np.inf)
    x_cols = np.array(
        [layout.moved(p, e) for p in range(periods) for e in range(n_lanes)], dtype=np.int64
    )
    lane_cost = np.array([lane.cost_per_unit for lane in lanes])
    for k in range(skus):
        cost[k * per : k * per + periods * sites] = -margin
        cost[k * per + x_cols] = np.tile(lane_cost, periods)
        upper_bounds[k * per : k * per + periods * sites] = demand_p[:, k, :].reshape(-1)
    cost[n_x:] = np.tile(trip_costs, days)
    upper_bounds[n_x:] = 1.0
    links = _trip_links(layout, lanes, demand_p, skus, x_cols, n_x)
    if relax:
        # By interior point: 9 / 36 / 118 s for 10 / 20 / 40 items x 10 stores x 28 days
        # here; neither it nor the simplex finished 300 items in 20 minutes.
        result = linprog(
            cost,
            A_ub=vstack([a_orders, links]).tocsr(),
            b_ub=np.zeros(a_orders.shape[0] + links.shape[0]),
            A_eq=a_eq.tocsr(),
            b_eq=rhs.reshape(-1),
            bounds=np.column_stack([np.zeros(n_x + n_y), upper_bounds]),
            method="highs-ipm",
            options={"time_limit": time_limit_s},
        )
        if result.status != 0:
            raise RuntimeError(f"trip-cost LP failed: {result.message}")
        best = -float(result.fun)
    else:
        integrality = np.zeros(n_x + n_y)
        integrality[n_x:] = 1
        result = milp(
            cost,
            integrality=integrality,
            bounds=Bounds(np.zeros(n_x + n_y), upper_bounds),
            constraints=[
                LinearConstraint(a_eq, rhs.reshape(-1), rhs.reshape(-1)),
                LinearConstraint(vstack([a_orders, links]), -np.inf, 0.0),
            ],
            options={"time_limit": time_limit_s, "mip_rel_gap": 1e-3, "disp": False},
        )
        if result.x is None:
            raise RuntimeError(f"trip-cost MILP found no plan: {result.message}")
        dual = getattr(result, "mip_dual_bound", None)
        best = -float(dual) if dual is not None and np.isfinite(dual) else -float(result.fun)
    trips = result.x[n_x:].reshape(days, n_lanes)
    gap = None if relax else getattr(result, "mip_gap", None)
    return trips > (1e-6 if relax else 0.5), best, float(trips.sum()), gap


def _trip_links(
    layout: _Layout,
    lanes: list[LaneSpec],
    demand_p: NDArray[np.int64],
    skus: int,
    x_cols: NDArray[np.int64],
    n_x: int,
) -> csr_matrix:
    """x <= big_m * y: a SKU moves on a lane in a period only if that lane's calendar day
    has its trip. big_m is what of the SKU could still be sold anywhere once it arrives (an
    optimal plan with positive unit costs moves nothing that is never sold)."""
    periods, n_lanes = layout.periods, layout.lanes
    arrive = np.array(
        [[min(_arrival_period(p, lane.lead_hours), periods) for lane in lanes]
         for p in range(periods)],
        dtype=np.int64,
    ).reshape(-1)  # fmt: skip
    later = demand_p.sum(axis=2)[::-1].cumsum(axis=0)[::-1]  # [period, sku]: from it on
    later = np.vstack([later, np.zeros((1, skus))])
    big_m = later[arrive].T  # [sku, period * lane]
    day_of = np.repeat(np.arange(periods) // 2, n_lanes) * n_lanes + np.tile(
        np.arange(n_lanes), periods
    )
    n_links = skus * periods * n_lanes
    rows = np.arange(n_links)
    x = (np.arange(skus)[:, None] * layout.per_sku + x_cols[None, :]).reshape(-1)
    y = n_x + np.tile(day_of, skus)
    n_y = (periods // 2) * n_lanes
    return coo_matrix(
        (
            np.concatenate([np.ones(n_links), -big_m.reshape(-1)]),
            (np.concatenate([rows, rows]), np.concatenate([x, y])),
        ),
        shape=(n_links, n_x + n_y),
    ).tocsr()


@dataclass(frozen=True, slots=True)
class _HourlyPlan:
    served: float
    moved: float
    unit_cost: float
    units: NDArray[np.float64]  # [day, lane] units departing

    def value(self, margin: float, trip_costs: NDArray[np.float64]) -> float:
        return margin * self.served - self.unit_cost - self.trip_cost(trip_costs)

    def trip_cost(self, trip_costs: NDArray[np.float64]) -> float:
        return float(((self.units > 1e-6) * trip_costs[None, :]).sum())


def _best_hourly_plan(
    world: _World, trip_costs: NDArray[np.float64], open_days: NDArray[np.bool_], rounds: int
) -> _HourlyPlan:
    """Slope scaling, the classic heuristic for fixed charges on network flows: each round
    prices a lane-day's units at their unit cost plus its trip cost spread over the units
    the last round sent on it, so SKUs gather on trips that many of them use; the best
    plan (by its true costs) over the rounds is kept. Only the relaxation's open lane-days
    may carry stock."""
    margin = world.margin
    unit = np.array([lane.cost_per_unit for lane in world.lanes])
    price = np.broadcast_to(unit, open_days.shape).copy()
    best: _HourlyPlan | None = None
    for _ in range(rounds):
        plan = _hourly_plan(world, open_days, price)
        if best is None or plan.value(margin, trip_costs) > best.value(margin, trip_costs):
            best = plan
        carried = plan.units > 1e-6
        price = np.where(carried, unit + trip_costs / np.maximum(plan.units, 1e-6), price)
    assert best is not None
    return best


def _hourly_plan(
    world: _World, open_days: NDArray[np.bool_], price: NDArray[np.float64]
) -> _HourlyPlan:
    """Each SKU's best hourly plan (margin x sold - priced units) moving stock only on open
    lane-days; `price` [day, lane] per unit moved, its true unit cost kept apart."""
    demand, on_hand, scheduled, lanes = world.demand, world.on_hand, world.scheduled, world.lanes
    review_hours, supplier_lead_hours = world.review_hours, world.supplier_lead_hours
    margin = world.margin
    hours, skus, sites = (int(n) for n in demand.shape)
    n_lanes = len(lanes)
    n_s = hours * sites
    n_vars = 2 * n_s + hours * n_lanes
    rows, cols, vals = _flow_balance(hours, sites, lanes, review_hours, supplier_lead_hours)
    a_eq = coo_matrix((vals, (rows, cols)), shape=(n_s, n_vars)).tocsr()
    lane_cost = np.tile(np.array([lane.cost_per_unit for lane in lanes]), hours)
    cost = np.zeros(n_vars)
    cost[:n_s] = -margin
    cost[2 * n_s :] = np.repeat(price, 24, axis=0).reshape(-1)
    allowed = np.repeat(open_days, 24, axis=0).reshape(-1)  # [hour * lane]
    units = np.zeros(open_days.shape)
    served = moved = unit_cost = 0.0
    for k in range(skus):
        bounds = np.zeros((n_vars, 2))
        bounds[:, 1] = np.inf
        bounds[:n_s, 1] = demand[:, k, :].reshape(-1)
        bounds[2 * n_s :, 1] = np.where(allowed, np.inf, 0.0)
        rhs = scheduled[:, k, :].reshape(-1).astype(float)
        rhs[:sites] += on_hand[k]
        result = linprog(cost, A_eq=a_eq, b_eq=rhs, bounds=bounds, method="highs")
        if result.status != 0:
            raise RuntimeError(f"trip-cost hourly LP failed: {result.message}")
        x = result.x[2 * n_s :]
        served += float(result.x[:n_s].sum())
        moved += float(x.sum())
        unit_cost += float(x @ lane_cost)
        units += x.reshape(hours // 24, 24, n_lanes).sum(axis=1)
    return _HourlyPlan(served, moved, unit_cost, units)
