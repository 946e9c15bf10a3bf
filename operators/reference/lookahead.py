"""A reference online policy for the simulator: rolling-horizon stochastic LP (two-stage SAA).

It answers "how far can a policy get that does not see the future?", which the hindsight
bound cannot: the bound knows the realised demand. At each re-plan, per SKU, it samples
demand paths over a short horizon from the demand rates it is given (the simulator gives
the true ones), and chooses the transfers to make now (the first stage, common to every
path) together with later ones per path (the recourse), to maximise expected sales value
less transfer cost. Only the first stage is carried out; the next re-plan starts over.

Periods are buckets of hours. A transfer leaving in a bucket counts at its destination from
the bucket its lead time reaches, rounded up. Known arrivals (supplier orders and transfers
in transit) come in the bucket they are due. Stock left at the horizon is worth
`terminal_value` a unit, so the LP does not strip a site for the last hours' sales.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from operators.reference.baselines import Move
from operators.reference.hindsight import LaneSpec


def first_stage_moves(
    on_hand: NDArray[np.int64],
    arrivals: NDArray[np.float64],
    demand_paths: NDArray[np.float64],
    lanes: list[LaneSpec],
    bucket_hours: int,
    sale_value: float,
    terminal_value: float,
    min_qty: int,
) -> list[Move]:
    """Transfers to make now for one SKU.

    on_hand: [site]; arrivals: [bucket, site] units due; demand_paths: [path, bucket, site].
    Moves under `min_qty` units are left out (the LP is continuous; a move is floored).
    """
    # A lane's lead time in whole buckets, rounded up: stock counts from the bucket it has
    # surely arrived by.
    lead = [math.ceil(max(1, lane.lead_hours) / bucket_hours) for lane in lanes]
    paths, buckets, sites = (int(n) for n in demand_paths.shape)
    n_lanes = len(lanes)
    if n_lanes == 0:
        return []
    per_path = 2 * buckets * sites + buckets * n_lanes
    n_vars = n_lanes + paths * per_path
    # Variable offsets within one path: sold [bucket, site], stock at the bucket's end
    # [bucket, site], recourse transfers [bucket, lane] (none in bucket 0: that is the first
    # stage's).
    w = np.arange(paths)[:, None, None]
    b = np.arange(buckets)[None, :, None]
    i = np.arange(sites)[None, None, :]
    sold = n_lanes + w * per_path + b * sites + i
    stock = sold + buckets * sites
    row = (w * buckets + b) * sites + i
    rows = [row.ravel(), row.ravel(), row[:, 1:, :].ravel()]
    cols = [stock.ravel(), sold.ravel(), stock[:, :-1, :].ravel()]
    vals = [np.ones(row.size), np.ones(row.size), -np.ones(row[:, 1:, :].size)]
    for e, lane in enumerate(lanes):
        # First stage: leaves in bucket 0 on every path.
        out_rows = np.arange(paths) * buckets * sites + lane.from_index
        rows.append(out_rows)
        cols.append(np.full(paths, e))
        vals.append(np.ones(paths))
        if lead[e] < buckets:
            rows.append(out_rows - lane.from_index + lead[e] * sites + lane.to_index)
            cols.append(np.full(paths, e))
            vals.append(-np.ones(paths))
        # Recourse: leaves in bucket t >= 1 of its path.
        pw, pt = np.meshgrid(np.arange(paths), np.arange(1, buckets), indexing="ij")
        recourse = n_lanes + pw * per_path + 2 * buckets * sites + pt * n_lanes + e
        rows.append(((pw * buckets + pt) * sites + lane.from_index).ravel())
        cols.append(recourse.ravel())
        vals.append(np.ones(recourse.size))
        lands = pt + lead[e] < buckets
        rows.append(((pw * buckets + pt + lead[e]) * sites + lane.to_index)[lands])
        cols.append(recourse[lands])
        vals.append(-np.ones(int(lands.sum())))
    a_eq = coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(paths * buckets * sites, n_vars),
    ).tocsr()
    b_eq = np.broadcast_to(arrivals, (paths, buckets, sites)).astype(float).copy()
    b_eq[:, 0, :] += on_hand
    cost = np.zeros(n_vars)
    bounds = np.zeros((n_vars, 2))
    bounds[:, 1] = np.inf
    lane_cost = np.array([lane.cost_per_unit for lane in lanes])
    cost[:n_lanes] = lane_cost
    bounds[:n_lanes, 1] = [on_hand[lane.from_index] for lane in lanes]
    cost[sold.ravel()] = -sale_value / paths
    bounds[sold.ravel(), 1] = demand_paths.ravel()
    cost[stock[:, -1, :].ravel()] = -terminal_value / paths
    for e in range(n_lanes):
        recourse_cols = n_lanes + np.arange(paths)[:, None] * per_path + 2 * buckets * sites
        recourse_cols = recourse_cols + np.arange(buckets)[None, :] * n_lanes + e
        cost[recourse_cols.ravel()] = lane_cost[e] / paths
        bounds[recourse_cols[:, 0], 1] = 0.0  # bucket 0 belongs to the first stage
    result = linprog(cost, A_eq=a_eq, b_eq=b_eq.ravel(), bounds=bounds, method="highs")
    if result.status != 0:
        raise RuntimeError(f"lookahead LP failed: {result.message}")
    moves = []
    for e, lane in enumerate(lanes):
        qty = int(np.floor(result.x[e] + 1e-6))
        if qty >= max(min_qty, 1):
            moves.append(Move(lane.from_index, lane.to_index, qty))
    return moves
