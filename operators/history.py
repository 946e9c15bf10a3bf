"""Past sales as `sale_history` events: what `stockshift warmup` publishes so that a new
deployment starts with each SKU-site's demand estimate instead of learning it for days.

Rows are daily totals (a `date`) or timed sales (a `ts`). A daily total is spread over the
day's hours by the site's sales profile when the network has one, else evenly, in whole
units (largest remainders), so the hourly estimate sees a day's shape, not one spike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from operators.parse import MAX_ID_LEN
from state.config import Network
from state.units import DAY_MS, HOUR_MS


@dataclass(frozen=True, slots=True)
class HistoryRow:
    sku: str
    site: str
    start_ms: int  # the sale's time, or its day's first millisecond for a daily total
    qty: int
    daily: bool


def hourly_split(qty: int, weights: Sequence[float]) -> list[int]:
    """`qty` whole units over the hours in proportion to `weights` (largest remainders)."""
    total = sum(weights)
    if total <= 0:
        weights, total = [1.0] * len(weights), float(len(weights))
    shares = [qty * w / total for w in weights]
    units = [int(s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda h: units[h] - shares[h])
    for h in by_remainder[: qty - sum(units)]:
        units[h] += 1
    return units


def _weights(network: Network, site: str) -> list[float]:
    profile = network.sites[site].sales_profile
    if profile is None:
        return [1.0] * 24
    return [profile[h + 1] - profile[h] for h in range(24)]


def history_events(rows: Iterable[HistoryRow], network: Network) -> list[dict[str, object]]:
    """The `sale_history` events for the rows, in time order, with stable ids (a second
    warm-up from the same file is ignored as duplicates)."""
    sales: list[tuple[int, str, str, int]] = []  # (ts, sku, site, units)
    for row in rows:
        if row.daily:
            day = row.start_ms - row.start_ms % DAY_MS
            hours = hourly_split(row.qty, _weights(network, row.site))
            mid = day + HOUR_MS // 2
            sales += [(mid + h * HOUR_MS, row.sku, row.site, n) for h, n in enumerate(hours) if n]
        elif row.qty > 0:
            sales.append((row.start_ms, row.sku, row.site, row.qty))
    return [_event(sku, site, ts, qty) for ts, sku, site, qty in sorted(sales)]


def _event(sku: str, site: str, ts_ms: int, qty: int) -> dict[str, object]:
    return {
        "event_id": id_within_limit(f"history-{site}-{ts_ms}-{sku}"),
        "ts": ts_ms,
        "sku": sku,
        "site": site,
        "type": "sale_history",
        "qty": qty,
    }


def id_within_limit(natural: str) -> str:
    """An event id made of its parts when that fits the contract's limit; else its start
    and a digest of the whole, so it still fits, stays stable (a second warm-up from the
    same file is still a duplicate) and differs for different parts. A SKU and a site of
    the contract's 64 characters each would otherwise make an id the flow refuses."""
    if len(natural) <= MAX_ID_LEN:
        return natural
    digest = hashlib.blake2b(natural.encode(), digest_size=16).hexdigest()
    return f"{natural[: MAX_ID_LEN - len(digest) - 1]}~{digest}"


# A site that sold nothing in the history still gets a small index: the network config
# refuses 0 (each site's demand is divided by it to compare sites), and a store with no
# sales in a week is more likely new or closed for a while than one that never sells.
MIN_DEMAND_INDEX = 0.05


def units_by_site(rows: Iterable[HistoryRow]) -> dict[str, float]:
    """Units sold per site in a history (what `fitted_demand_index` weighs)."""
    units: dict[str, float] = {}
    for row in rows:
        units[row.site] = units.get(row.site, 0.0) + row.qty
    return units


def fitted_demand_index(
    units_by_site: Mapping[str, float], sites: Sequence[str]
) -> dict[str, float]:
    """Each site's `demand_index` from its units sold, relative to the mean site.

    The planner's prior for a site that has sold little is the SKU's rate across sites times
    the site's index; with every index 1 a large store and a small one get the same prior,
    and a slow mover's few sales cannot correct it. A store's share of a chain's sales moves
    over months, so a fit from recent history (`stockshift warmup --history` prints it) is
    what the network config should carry. Sites without sales in the history get
    `MIN_DEMAND_INDEX`; no sales at all leaves every site at 1."""
    mean = sum(units_by_site.get(site, 0.0) for site in sites) / len(sites) if sites else 0.0
    if mean <= 0:
        return {site: 1.0 for site in sites}
    return {
        site: round(max(units_by_site.get(site, 0.0) / mean, MIN_DEMAND_INDEX), 3) for site in sites
    }
