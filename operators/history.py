"""Past sales as `sale_history` events: what `stockshift warmup` publishes so that a new
deployment starts with each SKU-site's demand estimate instead of learning it for days.

Rows are daily totals (a `date`) or timed sales (a `ts`). A daily total is spread over the
day's hours by the site's sales profile when the network has one, else evenly, in whole
units (largest remainders), so the hourly estimate sees a day's shape, not one spike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
        "event_id": f"history-{site}-{ts_ms}-{sku}",
        "ts": ts_ms,
        "sku": sku,
        "site": site,
        "type": "sale_history",
        "qty": qty,
    }
