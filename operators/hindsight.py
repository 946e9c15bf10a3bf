"""The hindsight bound: with all demand known in advance, the best transfers by LP (HiGHS).

Per SKU (lanes have no shared capacity and sites no storage limit in the bound, which only
loosens it: on the constrained scenario, one LP over all SKUs with the lane caps gave the
same fill, so there it is storage that the bound leaves out), hourly periods,
the simulator's order of events (arrivals, dispatch, sales) and its one-for-one replenishment
(each review orders what sold since the last one; it arrives after the supplier lead time).
Objective: most units sold, then least variable transfer cost. Fixed trip costs, rejections
and the one-hour decision delay are left out, so no online policy can beat the bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

# Weight of a unit sold against a unit of transfer cost: makes the objective lexicographic.
_SALE_WEIGHT = 1e4


@dataclass(frozen=True, slots=True)
class LaneSpec:
    from_index: int
    to_index: int
    lead_hours: int
    cost_per_unit: float


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
) -> BoundResult:
    """Solve one SKU: demand is [hour, site]; on_hand the opening stock per site."""
    hours, sites = int(demand.shape[0]), int(demand.shape[1])
    n_lanes = len(lanes)
    n_s = hours * sites
    n_vars = 2 * n_s + hours * n_lanes

    def s_var(t: int, i: int) -> int:
        return t * sites + i

    def inv_var(t: int, i: int) -> int:
        return n_s + t * sites + i

    def x_var(t: int, e: int) -> int:
        return 2 * n_s + t * n_lanes + e

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []

    def put(row: int, col: int, value: float) -> None:
        rows.append(row)
        cols.append(col)
        vals.append(value)

    rhs = np.zeros(n_s)
    rhs[:sites] = on_hand
    for t in range(hours):
        for i in range(sites):
            row = t * sites + i
            put(row, inv_var(t, i), 1.0)
            if t > 0:
                put(row, inv_var(t - 1, i), -1.0)
            put(row, s_var(t, i), 1.0)
            # Supplier arrival now: what sold in the review window that ended `lead` ago.
            review_end = t - supplier_lead_hours  # hour whose end placed the order
            if review_end >= 0 and (review_end + 1) % review_hours == 0:
                for past in range(review_end + 1 - review_hours, review_end + 1):
                    put(row, s_var(past, i), -1.0)
    for e, lane in enumerate(lanes):
        for t in range(hours):
            put(t * sites + lane.from_index, x_var(t, e), 1.0)
            arrive = t + max(1, lane.lead_hours)
            if arrive < hours:
                put(arrive * sites + lane.to_index, x_var(t, e), -1.0)
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
