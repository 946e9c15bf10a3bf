"""A SKU's state as recovery stores it: each record as the tuple of its field values.

Bytewax asks every SKU an epoch touched for its snapshot at the epoch's end, on the worker
thread, and events wait meanwhile: that pause was the p99 of trigger-to-proposal latency.
Pickling the records themselves calls Python once per record and writes every field's name
every time (10-19 µs and 900-2,500 bytes a SKU); the same state as nested tuples of plain
values pickles in C (3.0 µs, 279 bytes for a one-site SKU). Field names are written once, in
the schema below, and a snapshot carries the schema's fingerprint, so a snapshot written
before a field was added, renamed or dropped still loads (`state.sku.restored`). Snapshots
written as pickled records (before December 2026) load as they always did.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import fields
from operator import attrgetter
from typing import Any, Final

from operators.drift import DEFAULT_PARAMS, DETECTOR_STATE, PoissonCusum
from state.sku import (
    Demand,
    Inbound,
    Reservation,
    Signals,
    SiteForecast,
    SiteState,
    SkuState,
    StateVersionError,
    restored,
)

_RECORDS: Final = (SkuState, SiteState, Demand, Inbound, Signals, SiteForecast, Reservation)
Schema = tuple[tuple[str, tuple[str, ...]], ...]


def current_schema() -> Schema:
    """Each record's field names, in the order its values are written; the drift detector's
    state last (its settings, `params`, only where they are not the defaults)."""
    records = tuple(
        (cls.__name__, tuple(f.name for f in fields(cls) if not f.metadata.get("transient")))
        for cls in _RECORDS
    )
    return (*records, ("PoissonCusum", (*DETECTOR_STATE, "params")))


def fingerprint(schema: Schema) -> bytes:
    return hashlib.blake2b(repr(schema).encode(), digest_size=8).digest()


# The schemas whose snapshots hold the drift detector's state as its own dict (until
# December 2026).
_WITH_DETECTOR_DICT: Final[tuple[Schema, ...]] = (
    (
        ("SkuState", ("sku", "sites", "reservations", "recent_seen", "clock_ms",
                      "received_early", "shadow")),
        ("SiteState", ("on_hand", "reserved_in", "reserved_out", "inbound", "demand",
                       "stocked_out_in_window", "last_transfer_in_ms", "last_event_ms",
                       "last_logged", "integrity_until_ms", "integrity_reason",
                       "disputed_qty", "disputed_until_ms", "unexplained_qty", "signals",
                       "forecast")),
        ("Demand", ("window_start_ms", "window_qty", "rate", "var", "weight",
                    "windows_seen")),
        ("Inbound", ("qty", "eta_ms")),
        ("Signals", ("sale_mean", "sale_dev", "sales_seen", "day_start_ms", "day_qty",
                     "day_short", "drift", "drift_until_ms", "quiet_since_ms", "silent",
                     "rise_found_today")),
        ("SiteForecast", ("per_hour", "error_cv")),
        ("Reservation", ("from_site", "to_site", "qty", "expires_at_ms", "lead_hours",
                         "dispatched", "approved")),
    ),
    (
        ("SkuState", ("sku", "sites", "reservations", "recent_seen", "clock_ms",
                      "received_early", "shadow")),
        ("SiteState", ("on_hand", "reserved_in", "reserved_out", "inbound", "demand",
                       "stocked_out_in_window", "last_transfer_in_ms", "last_event_ms",
                       "last_logged", "integrity_until_ms", "integrity_reason",
                       "disputed_qty", "disputed_until_ms", "unexplained_qty", "signals",
                       "forecast")),
        ("Demand", ("window_start_ms", "window_qty", "rate", "var", "weight",
                    "windows_seen")),
        ("Inbound", ("qty", "eta_ms")),
        ("Signals", ("sale_mean", "sale_dev", "sales_seen", "day_start_ms", "day_qty",
                     "day_short", "drift", "drift_until_ms", "quiet_since_ms", "silent",
                     "rise_found_today")),
        ("SiteForecast", ("per_hour", "error_cv", "expected_units", "sold_units",
                          "scored_to_ms")),
        ("Reservation", ("from_site", "to_site", "qty", "expires_at_ms", "lead_hours",
                         "dispatched", "approved")),
    ),
    (
        ("SkuState", ("sku", "sites", "reservations", "recent_seen", "clock_ms",
                      "received_early", "shadow")),
        ("SiteState", ("on_hand", "reserved_in", "reserved_out", "inbound", "demand",
                       "stocked_out_in_window", "last_transfer_in_ms", "last_event_ms",
                       "last_logged", "integrity_until_ms", "integrity_reason",
                       "disputed_qty", "disputed_until_ms", "unexplained_qty", "signals",
                       "forecast")),
        ("Demand", ("window_start_ms", "window_qty", "rate", "var", "weight",
                    "windows_seen")),
        ("Inbound", ("qty", "eta_ms", "sent_ms")),
        ("Signals", ("sale_mean", "sale_dev", "sales_seen", "day_start_ms", "day_qty",
                     "day_short", "drift", "drift_until_ms", "quiet_since_ms", "silent",
                     "rise_found_today")),
        ("SiteForecast", ("per_hour", "error_cv", "expected_units", "sold_units",
                          "scored_to_ms")),
        ("Reservation", ("from_site", "to_site", "qty", "expires_at_ms", "lead_hours",
                         "dispatched", "approved")),
    ),
)  # fmt: skip
# The drift detector's state by field name (since December 2026).
_DETECTOR_BY_NAME: Final = (
    ("PoissonCusum", ("reference_qty", "reference_days", "pending_qty", "pending_days",
                      "score_up", "score_down", "_drift_detected", "params")),
)  # fmt: skip


def _with_fields(schema: Schema, **added: tuple[str, ...]) -> Schema:
    """`schema` with fields added at the end of the records named."""
    return tuple((name, (*names, *added.get(name, ()))) for name, names in schema)


_LAST_WITH_DICT: Final = _WITH_DETECTOR_DICT[-1]
# Every schema a snapshot may have been written with. When a record's fields change, the
# new schema is added here and the old ones stay (tests/unit/test_snapshot.py says so).
PAST_SCHEMAS: Final[tuple[Schema, ...]] = (
    *_WITH_DETECTOR_DICT,
    (*_LAST_WITH_DICT, *_DETECTOR_BY_NAME),
    # December 2026, twelfth round: SiteState.counted_ms, then Signals' feed lag.
    (*_with_fields(_LAST_WITH_DICT, SiteState=("counted_ms",)), *_DETECTOR_BY_NAME),
    (
        *_with_fields(
            _LAST_WITH_DICT,
            SiteState=("counted_ms",),
            Signals=("feed_lag_ms", "count_shortfall"),
        ),
        *_DETECTOR_BY_NAME,
    ),
)
_SCHEMAS: Final = {fingerprint(s): dict(s) for s in (*PAST_SCHEMAS, current_schema())}
_CURRENT: Final = fingerprint(current_schema())
MAGIC: Final = b"SKS1"  # a pickle starts with b"\x80"

_DETECTOR_VALUES: Final = attrgetter(*DETECTOR_STATE)


def encode(state: SkuState | None) -> bytes:
    """The snapshot recovery stores for a SKU."""
    if state is None:
        return pickle.dumps(None)
    return MAGIC + _CURRENT + pickle.dumps(_sku(state), protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> SkuState | None:
    """A SKU's state from its snapshot, written by this version or an earlier one."""
    if not data.startswith(MAGIC):
        state: SkuState | None = pickle.loads(data)  # records pickled whole, as before
        return state
    schema = _SCHEMAS.get(data[len(MAGIC) : len(MAGIC) + 8])
    if schema is None:
        raise StateVersionError("recovery snapshot written with a schema this version lacks")
    return _Reader(schema).sku(pickle.loads(data[len(MAGIC) + 8 :]))


# The records below as tuples in their schema's field order (`current_schema`; a test
# checks them against it field by field). Written out, not read through `attrgetter` by
# name: compiled, each field is then read from the record's struct, where `attrgetter` looked
# every one up by name, most of a snapshot's time (bench SKUs of 8 sites, compiled: 18 of
# 30 us a SKU building the tuples, 13 pickling them).


def _sku(state: SkuState) -> tuple[Any, ...]:
    shadow = state.shadow
    return (
        state.sku,
        {name: _site(site) for name, site in state.sites.items()},
        {key: _reservation(r) for key, r in state.reservations.items()},
        state.recent_seen,
        state.clock_ms,
        state.received_early,
        _sku(shadow) if shadow is not None else None,
    )


def _site(site: SiteState) -> tuple[Any, ...]:
    inbound, signals, forecast = site.inbound, site.signals, site.forecast
    return (
        site.on_hand,
        site.reserved_in,
        site.reserved_out,
        {k: (v.qty, v.eta_ms, v.sent_ms) for k, v in inbound.items()}
        if inbound is not None
        else None,
        _demand(site.demand),
        site.stocked_out_in_window,
        site.last_transfer_in_ms,
        site.last_event_ms,
        site.last_logged,
        site.integrity_until_ms,
        site.integrity_reason,
        site.disputed_qty,
        site.disputed_until_ms,
        site.unexplained_qty,
        _signals(signals) if signals is not None else None,
        _forecast(forecast) if forecast is not None else None,
        site.counted_ms,
    )


def _demand(d: Demand) -> tuple[Any, ...]:
    return (d.window_start_ms, d.window_qty, d.rate, d.var, d.weight, d.windows_seen)


def _forecast(f: SiteForecast) -> tuple[Any, ...]:
    return (f.per_hour, f.error_cv, f.expected_units, f.sold_units, f.scored_to_ms)


def _reservation(r: Reservation) -> tuple[Any, ...]:
    return (r.from_site, r.to_site, r.qty, r.expires_at_ms, r.lead_hours, r.dispatched, r.approved)


def _signals(signals: Signals) -> tuple[Any, ...]:
    drift = signals.drift
    return (
        signals.sale_mean,
        signals.sale_dev,
        signals.sales_seen,
        signals.day_start_ms,
        signals.day_qty,
        signals.day_short,
        _detector(drift) if drift is not None else None,
        signals.drift_until_ms,
        signals.quiet_since_ms,
        signals.silent,
        signals.rise_found_today,
        signals.feed_lag_ms,
        signals.count_shortfall,
    )


def _detector(drift: PoissonCusum) -> tuple[Any, ...]:
    """The detector's numbers in the schema's order, its settings last (None: the
    defaults). Written by name, as it pickles itself, they were a third of a site's
    snapshot time (0.87 of 2.09 us, compiled)."""
    params = None if drift.params is DEFAULT_PARAMS else drift.params
    return (*_DETECTOR_VALUES(drift), params)


class _Reader:
    """Records from their values under the schema they were written with."""

    def __init__(self, schema: dict[str, tuple[str, ...]]) -> None:
        self._schema = schema

    def _values(self, record: str, values: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(self._schema[record], values, strict=True))

    def sku(self, values: tuple[Any, ...]) -> SkuState:
        named = self._values("SkuState", values)
        named["sites"] = {k: self._site(v) for k, v in named["sites"].items()}
        named["reservations"] = {
            k: restored(Reservation, self._values("Reservation", v))
            for k, v in named["reservations"].items()
        }
        if named.get("shadow") is not None:
            named["shadow"] = self.sku(named["shadow"])
        return restored(SkuState, named)

    def _site(self, values: tuple[Any, ...]) -> SiteState:
        named = self._values("SiteState", values)
        named["demand"] = restored(Demand, self._values("Demand", named["demand"]))
        if named.get("inbound") is not None:
            named["inbound"] = {
                k: restored(Inbound, self._values("Inbound", v))
                for k, v in named["inbound"].items()
            }
        if named.get("signals") is not None:
            named["signals"] = self._signals(named["signals"])
        if named.get("forecast") is not None:
            named["forecast"] = restored(
                SiteForecast, self._values("SiteForecast", named["forecast"])
            )
        return restored(SiteState, named)

    def _signals(self, values: tuple[Any, ...]) -> Signals:
        named = self._values("Signals", values)
        drift = named.get("drift")
        if drift is not None:
            # By name since December 2026 (the schema's last record); before, its own dict.
            state = drift if isinstance(drift, dict) else self._values("PoissonCusum", drift)
            if state.get("params", ...) is None:
                del state["params"]
            detector = PoissonCusum()
            detector.__setstate__(state)
            named["drift"] = detector
        return restored(Signals, named)
