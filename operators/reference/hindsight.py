"""The hindsight bound: with all demand known in advance, the best transfers by LP (HiGHS).

Hourly periods, the simulator's order of events (arrivals, dispatch, sales) and its
one-for-one replenishment (each review orders what sold since the last one; it arrives after
the supplier lead time). Objective: most units sold, then least variable transfer cost.
Fixed trip costs, rejections and the one-hour decision delay are left out, so no online
policy can beat the bound.

`hindsight_bound` solves one SKU. Where lanes have a daily capacity or sites a storage
capacity, the SKUs share them, and `network_hindsight_bound` solves all SKUs in one LP with
both limits as the world enforces them: at each day's end a site holds (on hand, ordered,
in transit to it) no more than its capacity, and a supplier order may be cut below one for
one (the world cuts it to the room left).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog
from scipy.sparse import coo_matrix, csr_matrix

# Weight of a unit sold against a unit of transfer cost: makes the objective lexicographic.
_SALE_WEIGHT = 1e4


@dataclass(frozen=True, slots=True)
class LaneSpec:
    from_index: int
    to_index: int
    lead_hours: int
    cost_per_unit: float
    capacity_per_day: int | None = None  # units that may depart a day (network bound only)


@dataclass(frozen=True, slots=True)
class BoundResult:
    served: float
    demand: int
    units_moved: float
    variable_cost: float


def hindsight_bound(
    demand: NDArray[np.int64],
    on_hand: NDArray[np.int64],
    lanes: list[LaneSpec],
    review_hours: int,
    supplier_lead_hours: int,
    scheduled: NDArray[np.int64] | None = None,
) -> BoundResult:
    """Solve one SKU: demand is [hour, site]; on_hand the opening stock per site; scheduled
    [hour, site] the supplier units already on order at the start (a warmed-up world)."""
    hours, sites = int(demand.shape[0]), int(demand.shape[1])
    n_lanes = len(lanes)
    n_s = hours * sites
    n_vars = 2 * n_s + hours * n_lanes
    rows, cols, vals = _flow_balance(hours, sites, lanes, review_hours, supplier_lead_hours)
    rhs = np.zeros(n_s) if scheduled is None else scheduled.reshape(-1).astype(float)
    rhs[:sites] += on_hand
    a_eq = coo_matrix((vals, (rows, cols)), shape=(n_s, n_vars)).tocsr()
    cost = np.zeros(n_vars)
    cost[:n_s] = -_SALE_WEIGHT
    for e, lane in enumerate(lanes):
        cost[2 * n_s + e :: n_lanes] = lane.cost_per_unit
    bounds = np.zeros((n_vars, 2))
    bounds[:, 1] = np.inf
    bounds[:n_s, 1] = demand.reshape(-1)
    result = linprog(cost, A_eq=a_eq, b_eq=rhs, bounds=bounds, method="highs")
    if result.status != 0:
        raise RuntimeError(f"hindsight LP failed: {result.message}")
    sold = result.x[:n_s]
    moved = result.x[2 * n_s :]
    lane_cost = np.tile([lane.cost_per_unit for lane in lanes], hours) if n_lanes else np.zeros(0)
    return BoundResult(
        served=float(sold.sum()),
        demand=int(demand.sum()),
        units_moved=float(moved.sum()),
        variable_cost=float(moved @ lane_cost),
    )


def _flow_balance(
    hours: int, sites: int, lanes: list[LaneSpec], review_hours: int, supplier_lead_hours: int
) -> tuple[list[int], list[int], list[float]]:
    """The single-SKU LP's equality rows, one per (hour, site): stock carried in and out,
    units sold, supplier arrivals (what sold in the review window that ended `lead` ago)
    and transfers out and in. Variables: sold [hour, site], stock [hour, site], moved
    [hour, lane]."""
    n_s, n_lanes = hours * sites, len(lanes)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []

    def put(row: int, col: int, value: float) -> None:
        rows.append(row)
        cols.append(col)
        vals.append(value)

    for t in range(hours):
        for i in range(sites):
            row = t * sites + i
            put(row, n_s + row, 1.0)
            if t > 0:
                put(row, n_s + row - sites, -1.0)
            put(row, row, 1.0)
            review_end = t - supplier_lead_hours  # hour whose end placed the order
            if review_end >= 0 and (review_end + 1) % review_hours == 0:
                for past in range(review_end + 1 - review_hours, review_end + 1):
                    put(row, past * sites + i, -1.0)
    for e, lane in enumerate(lanes):
        for t in range(hours):
            put(t * sites + lane.from_index, 2 * n_s + t * n_lanes + e, 1.0)
            arrive = t + max(1, lane.lead_hours)
            if arrive < hours:
                put(arrive * sites + lane.to_index, 2 * n_s + t * n_lanes + e, -1.0)
    return rows, cols, vals


def network_hindsight_bound(
    demand: NDArray[np.int64],
    on_hand: NDArray[np.int64],
    lanes: list[LaneSpec],
    review_hours: int,
    supplier_lead_hours: int,
    storage: list[int | None],
    scheduled: NDArray[np.int64] | None = None,
) -> BoundResult:
    """Solve every SKU at once: demand is [hour, sku, site], on_hand [sku, site], storage
    each site's capacity (None: unlimited), scheduled [hour, sku, site] the supplier units
    on order at the start. Needs a starting stock within storage (the simulator fits its
    stores' targets to it), as the world does."""
    hours, skus, sites = (int(n) for n in demand.shape)
    if scheduled is None:
        scheduled = np.zeros_like(demand)
    # Units ordered before the start and not yet in at each hour's end, per site.
    arriving = scheduled.sum(axis=1)
    still_due = arriving.sum(axis=0) - arriving.cumsum(axis=0)
    n_lanes = len(lanes)
    reviews = hours // review_hours
    n_s = hours * sites
    per_sku = 2 * n_s + hours * n_lanes + reviews * sites
    n_vars = skus * per_sku

    def s_var(k: int, t: int, i: int) -> int:
        return k * per_sku + t * sites + i

    def inv_var(k: int, t: int, i: int) -> int:
        return k * per_sku + n_s + t * sites + i

    def x_var(k: int, t: int, e: int) -> int:
        return k * per_sku + 2 * n_s + t * n_lanes + e

    def order_var(k: int, r: int, i: int) -> int:
        return k * per_sku + 2 * n_s + hours * n_lanes + r * sites + i

    eq = _Rows()
    for k in range(skus):
        for t in range(hours):
            for i in range(sites):
                row = eq.row()
                eq.put(row, inv_var(k, t, i), 1.0)
                if t > 0:
                    eq.put(row, inv_var(k, t - 1, i), -1.0)
                eq.put(row, s_var(k, t, i), 1.0)
                review_end = t - supplier_lead_hours
                if review_end >= 0 and (review_end + 1) % review_hours == 0:
                    eq.put(row, order_var(k, (review_end + 1) // review_hours - 1, i), -1.0)
                eq.rhs.append(float(scheduled[t, k, i]) + (float(on_hand[k, i]) if t == 0 else 0.0))
        for e, lane in enumerate(lanes):
            for t in range(hours):
                eq.put(k * n_s + t * sites + lane.from_index, x_var(k, t, e), 1.0)
                arrive = t + max(1, lane.lead_hours)
                if arrive < hours:
                    eq.put(k * n_s + arrive * sites + lane.to_index, x_var(k, t, e), -1.0)
    ub = _Rows()
    for k in range(skus):  # an order is at most what sold in its review window
        for r in range(reviews):
            for i in range(sites):
                row = ub.row()
                ub.put(row, order_var(k, r, i), 1.0)
                for t in range(r * review_hours, (r + 1) * review_hours):
                    ub.put(row, s_var(k, t, i), -1.0)
                ub.rhs.append(0.0)
    for e, lane in enumerate(lanes):
        if lane.capacity_per_day is None:
            continue
        for day in range(hours // 24):
            row = ub.row()
            for k in range(skus):
                for t in range(day * 24, day * 24 + 24):
                    ub.put(row, x_var(k, t, e), 1.0)
            ub.rhs.append(float(lane.capacity_per_day))
    for i, capacity in enumerate(storage):
        if capacity is None:
            continue
        for day in range(hours // 24):
            end = day * 24 + 23
            row = ub.row()
            for k in range(skus):
                ub.put(row, inv_var(k, end, i), 1.0)
                for r in range(reviews):  # ordered at a review's end, not yet arrived
                    placed = (r + 1) * review_hours - 1
                    if placed <= end < placed + supplier_lead_hours:
                        ub.put(row, order_var(k, r, i), 1.0)
                for e, lane in enumerate(lanes):
                    if lane.to_index == i:
                        for t in range(max(0, end - max(1, lane.lead_hours) + 1), end + 1):
                            ub.put(row, x_var(k, t, e), 1.0)
            ub.rhs.append(float(capacity) - float(still_due[end, i]))
    cost = np.zeros(n_vars)
    bounds = np.zeros((n_vars, 2))
    bounds[:, 1] = np.inf
    lane_cost = np.array([lane.cost_per_unit for lane in lanes])
    for k in range(skus):
        cost[k * per_sku : k * per_sku + n_s] = -_SALE_WEIGHT
        cost[k * per_sku + 2 * n_s : k * per_sku + 2 * n_s + hours * n_lanes] = np.tile(
            lane_cost, hours
        )
        bounds[k * per_sku : k * per_sku + n_s, 1] = demand[:, k, :].reshape(-1)
    result = linprog(
        cost,
        A_ub=ub.matrix(n_vars),
        b_ub=np.array(ub.rhs),
        A_eq=eq.matrix(n_vars),
        b_eq=np.array(eq.rhs),
        bounds=bounds,
        method="highs",
    )
    if result.status != 0:
        raise RuntimeError(f"hindsight LP failed: {result.message}")
    x = result.x
    sold = moved = variable = 0.0
    for k in range(skus):
        sold += float(x[k * per_sku : k * per_sku + n_s].sum())
        transfers = x[k * per_sku + 2 * n_s : k * per_sku + 2 * n_s + hours * n_lanes]
        moved += float(transfers.sum())
        variable += float(transfers @ np.tile(lane_cost, hours)) if n_lanes else 0.0
    return BoundResult(
        served=sold, demand=int(demand.sum()), units_moved=moved, variable_cost=variable
    )


class _Rows:
    """A sparse constraint matrix built row by row."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.rhs: list[float] = []
        self._next = 0

    def row(self) -> int:
        self._next += 1
        return self._next - 1

    def put(self, row: int, col: int, value: float) -> None:
        self.rows.append(row)
        self.cols.append(col)
        self.vals.append(value)

    def matrix(self, n_vars: int) -> csr_matrix:
        return coo_matrix((self.vals, (self.rows, self.cols)), shape=(self._next, n_vars)).tocsr()
