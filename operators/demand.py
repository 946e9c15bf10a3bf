"""Event-time demand estimation: tumbling windows feeding exponentially smoothed moments.

Sales only show demand that met stock. A window in which the site ran out tells us little
about demand, so a stocked-out window never pulls the estimate down (censored demand).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from state.sku import Demand, SiteForecast, SiteState
from state.units import HOUR_MS

# After this many empty windows the estimate has decayed to nothing anyway.
_MAX_GAP_WINDOWS: Final = 2000


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


# Below this many empty windows the step-by-step update is as cheap as the closed form.
_CLOSED_FORM_FROM: Final = 64
# The closed form sums a series in (1 - weight); it is used only where that converges fast.
_SERIES_TERMS: Final = 64


def _learn_zeros(demand: Demand, count: int, alpha: float) -> None:
    """`count` empty windows in a row: the same updates as `_learn(0)` (a quiet SKU-site can
    skip hundreds of windows between two events, so a long run is summed in closed form)."""
    rate, var, weight = demand.rate, demand.var, demand.weight
    keep = 1 - alpha
    if rate == 0.0:
        # Nothing sold yet (a site known only from a count): the mean stays 0, so each step
        # only scales the variance and moves the weight towards 1.
        decay = keep**count
        demand.var, demand.weight = var * decay, 1.0 - (1.0 - weight) * decay
        demand.windows_seen += count
        return
    remaining = count
    # Step by step while the run is short or the weight is under 1/2 (a young estimate:
    # at most about one half-life of windows), then the rest in closed form.
    while remaining > 0 and (remaining < _CLOSED_FORM_FROM or weight < 0.5):
        mean = rate / weight if weight > 0 else 0.0
        var = keep * (var + alpha * mean * mean)
        rate *= keep
        weight = keep * weight + alpha
        remaining -= 1
    if remaining:
        rate, var, weight = _zeros_closed_form(rate, var, weight, keep, remaining)
    demand.rate, demand.var, demand.weight = rate, var, weight
    demand.windows_seen += count


def _zeros_closed_form(
    rate: float, var: float, weight: float, keep: float, count: int
) -> tuple[float, float, float]:
    """The loop in `_learn_zeros`, summed.

    With u = keep^t and c = 1 - weight: rate_t = rate * u, weight_t = 1 - c*u, and
    var_n = keep^n * (var + (1 - keep) * rate^2 * sum_t u / (1 - c*u)^2); the sum expands as
    sum_j (j+1) c^j (1 - keep^(n(j+1))) / (1 - keep^(j+1)), which converges for c <= 1/2.
    """
    c = 1.0 - weight
    decay = keep**count
    total = 0.0
    c_power = 1.0
    for j in range(_SERIES_TERMS):
        power = keep ** (j + 1)
        total += (j + 1) * c_power * (1.0 - decay ** (j + 1)) / (1.0 - power)
        c_power *= c
        if c_power < 1e-18:
            break
    new_var = decay * (var + (1.0 - keep) * rate * rate * total)
    return rate * decay, new_var, 1.0 - c * decay


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


def count_sale(demand: Demand, ts_ms: int, qty: int, window_ms: int, alpha: float) -> None:
    """A sale counted as demand, in the window of its own time.

    In order, that is the open window. A sale older than the open window (a POS feed that
    lags, a topic fetched behind another) arrives after its own window closed short, and
    counted in the open one it would pull the estimate down twice, once there and once by
    the hours it leaves empty: it is added to the moving average with the weight its window
    has now, as if it had been counted in time (exact for the average while no window since
    was left out as sold out; the variance keeps the window as it closed). A sale older than
    anything the estimate has learned counts in the open window.
    """
    if ts_ms < demand.window_start_ms:
        windows_after = (demand.window_start_ms - ts_ms + ts_ms % window_ms) // window_ms - 1
        if windows_after < demand.windows_seen:
            demand.rate += alpha * (1.0 - alpha) ** windows_after * qty
            return
    demand.window_qty += qty


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


# A forecast source's record at a SKU-site fades over four weeks: long enough to judge a
# slow mover (a unit every few days), short enough to forgive a source that improved.
FORECAST_ERROR_HALFLIFE_HOURS: Final = 672.0
# A site's miss discredits its forecast when it is this many standard deviations of what
# the stated error and chance allow (squared: 3 sd).
FORECAST_MISS_Z_SQ: Final = 9.0


def track_forecast(forecast: SiteForecast, ts_ms: int, in_stock: bool, sold: int) -> None:
    """Score the site's forecast up to `ts_ms`: the units it expected since the last score
    and the units sold, counted only while the site had stock (a sold-out or silent site's
    sales say nothing about demand). An event older than the score adds no hours."""
    if forecast.scored_to_ms < 0:
        forecast.scored_to_ms = ts_ms
    hours = max(ts_ms - forecast.scored_to_ms, 0) / HOUR_MS
    if hours > 0:
        fade = 0.5 ** (hours / FORECAST_ERROR_HALFLIFE_HOURS)
        forecast.expected_units *= fade
        forecast.sold_units *= fade
        forecast.scored_to_ms = ts_ms
    if in_stock:
        forecast.expected_units += forecast.per_hour * hours
        forecast.sold_units += sold


# A forecast whose source states no error: its error is learned from the sales across the
# SKU's sites (`unstated_error_sq`), starting from the policy's `forecast_error_cv` as if that
# had been seen over this many squared expected units (ten sites expecting 1.6 units each).
UNSTATED_ERROR_PRIOR: Final = 25.0
# ...and never learned below this (squared: 30 %). In the simulator the estimate runs low
# (on M5 items whose forecasts were 31 % off, a median of 12 %): its sales are pinned to the
# rate the forecasts were drawn around, and sell-outs, left out of the score, are where
# forecasts ran low (docs/benchmarks.md, "Why the learned error runs low"). With a floor of
# 5 % or 20 % such a world lost 19-28 % of its net benefit; at 30 %, 6-12 %, while a world
# of exact forecasts still loses half as much as before (docs/benchmarks.md).
MIN_LEARNED_ERROR_SQ: Final = 0.09


def forecast_bias(sites: Iterable[SiteState], assumed_cv: float) -> float:
    """How far the SKU's forecasts run from its sales, as one factor for all its sites: units
    sold over units expected across the sites, shrunk toward 1 by a gamma prior worth 1 / c^2
    units (c the error the forecasts state, or `assumed_cv` where they state none). A source
    that forecasts a SKU twice too high is seen across ten sites ten times sooner than at
    one."""
    sold = expected = prior = 0.0
    count = 0
    for site in sites:
        forecast = site.forecast
        if forecast is not None:
            cv = forecast.error_cv if forecast.error_cv > 0 else assumed_cv
            sold += forecast.sold_units
            expected += forecast.expected_units
            prior += 1.0 / (cv * cv)
            count += 1
    if count == 0:
        return 1.0
    prior /= count
    return (sold + prior) / (expected + prior)


def unstated_error_sq(sites: Iterable[SiteState], bias: float, assumed_cv: float) -> float:
    """The squared relative error of the SKU's forecasts that state none, learned from how
    far they missed across its sites.

    A site expected to sell e units (after the SKU's `bias`) sells them give or take chance
    (variance e, Poisson) and the forecast's own error (variance c^2 e^2), so
    sum((sold - e)^2 - e) / sum(e^2) estimates c^2 (method of moments), shrunk toward
    `assumed_cv`^2 with `UNSTATED_ERROR_PRIOR`. Assuming 50 % where the forecasts were
    exact, the planner read a few days of a slow mover's sales as news and moved stock the
    senders then missed (M5, exact targets, one-for-one: docs/benchmarks.md)."""
    miss = weight = 0.0
    for site in sites:
        forecast = site.forecast
        if forecast is None or forecast.error_cv > 0:
            continue
        expected = forecast.expected_units * bias
        if expected >= 1.0:  # below a unit expected, any miss is chance
            miss += (forecast.sold_units - expected) ** 2 - expected
            weight += expected * expected
    assumed = assumed_cv * assumed_cv
    if weight <= 0:
        return assumed
    learned = max(miss / weight, MIN_LEARNED_ERROR_SQ)
    return (UNSTATED_ERROR_PRIOR * assumed + weight * learned) / (UNSTATED_ERROR_PRIOR + weight)


def forecast_error_sq(
    forecast: SiteForecast, bias: float, dispersion: float, stated: float
) -> float:
    """The squared relative error to weigh a site's forecast (corrected by the SKU's `bias`)
    with: `stated` (the error its source states, squared, or the one learned where it states
    none), unless the site's own record misses by more than `FORECAST_MISS_Z_SQ` allows
    (chance, `dispersion` x expected with `dispersion` the site's variance-to-mean ratio of
    demand, plus the stated error); then the miss itself less chance ((sold - expected)^2 -
    dispersion x expected, over expected^2)."""
    expected = forecast.expected_units * bias
    if expected < 1.0:  # less than a unit expected: any miss is chance
        return stated
    chance = max(dispersion, 1.0) * expected
    miss = (forecast.sold_units - expected) ** 2
    if miss <= FORECAST_MISS_Z_SQ * (chance + stated * expected * expected):
        return stated
    return max(stated, (miss - chance) / (expected * expected))
