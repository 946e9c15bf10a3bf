"""Event-time demand estimation: tumbling windows feeding exponentially smoothed moments.

Sales only show demand that met stock. A window in which the site ran out tells us little
about demand, so a stocked-out window never pulls the estimate down (censored demand).
"""

from __future__ import annotations

import math

from state.sku import Demand

# After this many empty windows the estimate has decayed to nothing anyway.
_MAX_GAP_WINDOWS = 2000


def smoothing_alpha(halflife_hours: float, window_minutes: int) -> float:
    halflife_windows = max(halflife_hours * 60.0 / window_minutes, 1e-9)
    return float(1.0 - 0.5 ** (1.0 / halflife_windows))


def _learn(demand: Demand, qty: float, alpha: float) -> None:
    mean = demand.rate / demand.weight if demand.weight > 0 else qty
    deviation = qty - mean
    demand.rate = (1 - alpha) * demand.rate + alpha * qty
    demand.var = (1 - alpha) * (demand.var + alpha * deviation * deviation)
    demand.weight = (1 - alpha) * demand.weight + alpha
    demand.windows_seen += 1


def _learn_zeros(demand: Demand, count: int, alpha: float) -> None:
    """`count` empty windows in a row: the same updates as `_learn(0)`, in local variables
    (a quiet SKU-site can skip hundreds of windows between two events)."""
    rate, var, weight = demand.rate, demand.var, demand.weight
    keep = 1 - alpha
    for _ in range(count):
        mean = rate / weight if weight > 0 else 0.0
        var = keep * (var + alpha * mean * mean)
        rate *= keep
        weight = keep * weight + alpha
    demand.rate, demand.var, demand.weight = rate, var, weight
    demand.windows_seen += count


def _close_window(demand: Demand, alpha: float, censored: bool) -> None:
    qty = demand.window_qty
    if censored and demand.weight > 0 and qty < demand.rate / demand.weight:
        return
    _learn(demand, float(qty), alpha)


def advance(
    demand: Demand, ts_ms: int, window_ms: int, alpha: float, stocked_out: bool, out_now: bool
) -> bool:
    """Close every window that ends at or before `ts_ms`; returns True if any closed.

    `stocked_out` says the site ran out during the current window; `out_now` that it is
    out now, which censors the empty windows between the current one and `ts_ms`.
    """
    start = ts_ms - ts_ms % window_ms
    if demand.window_start_ms < 0:
        demand.window_start_ms = start
        return False
    if start <= demand.window_start_ms:
        return False
    _close_window(demand, alpha, stocked_out)
    gap = min((start - demand.window_start_ms) // window_ms - 1, _MAX_GAP_WINDOWS)
    if not out_now and gap > 0:
        _learn_zeros(demand, gap, alpha)
    demand.window_start_ms = start
    demand.window_qty = 0
    return True


def mean_per_hour(demand: Demand, window_minutes: int) -> float:
    if demand.weight <= 0:
        return 0.0
    return demand.rate / demand.weight * 60.0 / window_minutes


def sd_per_hour(demand: Demand, window_minutes: int) -> float:
    """Standard deviation of hourly demand, never below Poisson's (variance >= mean)."""
    if demand.weight <= 0:
        return 0.0
    var = demand.var / demand.weight * 60.0 / window_minutes
    return math.sqrt(max(var, mean_per_hour(demand, window_minutes)))


def observed_hours(demand: Demand, window_minutes: int) -> float:
    return demand.windows_seen * window_minutes / 60.0
