"""Parse and validate input messages against the event contract (configs/schemas/).

Errors are data: a message that breaks the contract becomes a `DeadLetter` with a reason
code (a metrics label) and a sentence for the human reading the DLQ. Nothing here raises
on bad input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

import orjson

from state.config import MAX_FORECAST_CV, MIN_FORECAST_CV
from state.kinds import (
    ADJUSTMENT,
    FORECAST,
    INBOUND_EXPECTED,
    INBOUND_RECEIVED,
    RETURN,
    SALE,
    SALE_HISTORY,
    SNAPSHOT,
    TRANSFER_APPROVED,
    TRANSFER_DISPATCHED,
    TRANSFER_FAILED,
    TRANSFER_RECEIVED,
    TRANSFER_REJECTED,
)
from state.records import DeadLetter, Event, EventType, ForecastFigures, RawMessage, SourceRef

MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_QTY: Final = 1_000_000_000
MAX_ID_LEN: Final = 128
MAX_SKU_LEN: Final = 64
# Event time must fall inside [2000-01-01, 2200-01-01): anything else is a broken clock.
MIN_TS_MS: Final = 946_684_800_000
MAX_TS_MS: Final = 7_258_118_400_000

POS, INVENTORY, SHIPMENTS, FORECASTS = "pos", "inventory", "shipments", "forecasts"
TYPES_BY_TOPIC: Final[Mapping[str, frozenset[EventType]]] = {
    POS: frozenset({SALE, RETURN, SALE_HISTORY}),
    INVENTORY: frozenset({SNAPSHOT, ADJUSTMENT}),
    SHIPMENTS: frozenset(
        {
            INBOUND_EXPECTED,
            INBOUND_RECEIVED,
            TRANSFER_APPROVED,
            TRANSFER_DISPATCHED,
            TRANSFER_RECEIVED,
            TRANSFER_REJECTED,
            TRANSFER_FAILED,
        }
    ),
    FORECASTS: frozenset({FORECAST}),
}
_DEFAULT_TYPE: Final = {POS: SALE, FORECASTS: FORECAST}
# A forecast's mean units a day and its relative error stay within these. The planner weighs a
# forecast as 1 / (error^2 x rate) hours of sales: a rate or an error too small to mean
# anything (a mean of 1e-313 a day) made that weight infinite and the site's rate NaN, and
# the engine failed on the SKU's next event. A mean is 0 (no prior) or at least a unit in
# 2,700 years; an error at least 0.1 %.
MAX_FORECAST_PER_DAY: Final = 1_000_000.0
MIN_FORECAST_PER_DAY: Final = 1e-6
# The error's range is the policy's `forecast_error_cv` range too (state/config.py).
_TYPE_BY_NAME: Final = {t.value: t for t in EventType}


DEFAULT_MAX_FUTURE_MS: Final = 3_600_000
# A `content-type` header, when a message has one, must name JSON.
JSON_TYPES: Final = frozenset({"application/json", "text/json"})


class Invalid(Exception):
    """Raised inside this module only; always turned into a DeadLetter before leaving it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _string(obj: Mapping[str, Any], name: str, max_len: int, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise Invalid("missing_field", f"field `{name}` is required")
        return None
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"field `{name}` must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= max_len:
        raise Invalid("out_of_range", f"field `{name}` must be 1-{max_len} characters")
    return value


def _integer(obj: Mapping[str, Any], name: str, minimum: int, maximum: int = MAX_QTY) -> int:
    value = obj.get(name)
    if value is None:
        raise Invalid("missing_field", f"field `{name}` is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("wrong_type", f"field `{name}` must be an integer, got {value!r:.40}")
    if not minimum <= value <= maximum:
        raise Invalid("out_of_range", f"field `{name}` must be in [{minimum}, {maximum}]")
    return value


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise Invalid("duplicate_key", f"field `{key:.40}` appears more than once")
        obj[key] = value
    return obj


def _check_unique_keys(value: bytes, obj: Mapping[str, Any]) -> None:
    """Duplicate keys are refused: parsers disagree on which one wins (orjson keeps the
    last), so `"qty":1,"qty":1000000000` could mean either. The fast test: with no escape
    in the payload every quote mark opens or closes a string, so the payload holds exactly
    as many strings (keys included) as the decoded object only when no key was repeated at
    any depth (a repeat adds a key the object lacks). Otherwise the payload is parsed again
    key by key. (Counting once beat looking up each key's spelling: 0.5 against 1.1 us a bench
    message, compiled.)"""
    if b"\\" not in value and value.count(b'"') == 2 * _strings(obj):
        return
    try:
        json.loads(value, object_pairs_hook=_reject_duplicate_keys)
    except ValueError:
        pass  # orjson accepted it; the stdlib's stricter reading is no reason to refuse


def _strings(value: Mapping[str, Any] | list[Any]) -> int:
    """How many strings a decoded JSON object or array holds, its objects' keys included."""
    items = value.values() if isinstance(value, dict) else value
    count = len(value) if isinstance(value, dict) else 0
    for item in items:
        if isinstance(item, str):
            count += 1
        elif isinstance(item, dict | list):
            count += _strings(item)
    return count


def _plausible(
    qty: int, site: str, ceilings: Mapping[str, int] | None, event_type: EventType
) -> None:
    ceiling = ceilings.get(site) if ceilings is not None else None
    if ceiling is not None and abs(qty) > ceiling:
        raise Invalid(
            "implausible_quantity",
            f"{event_type.value} of {qty} units is more than site {site!r} can hold ({ceiling})",
        )


def parse_timestamp(value: Any, name: str = "ts") -> int:
    """RFC 3339 with an explicit offset, or integer epoch milliseconds -> epoch ms."""
    if isinstance(value, bool):
        raise Invalid("wrong_type", f"field `{name}` must be RFC 3339 or epoch milliseconds")
    if isinstance(value, int):
        ts_ms = value
    elif isinstance(value, str):
        if len(value) > 40:
            raise Invalid("wrong_type", f"field `{name}` is not an RFC 3339 timestamp")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Invalid(
                "wrong_type", f"field `{name}` is not an RFC 3339 timestamp: {value!r}"
            ) from None
        if parsed.tzinfo is None:
            raise Invalid("wrong_type", f"field `{name}` needs a UTC offset (e.g. Z or +02:00)")
        ts_ms = int(parsed.timestamp() * 1000)
    elif value is None:
        raise Invalid("missing_field", f"field `{name}` is required")
    else:
        raise Invalid("wrong_type", f"field `{name}` must be RFC 3339 or epoch milliseconds")
    if not MIN_TS_MS <= ts_ms < MAX_TS_MS:
        raise Invalid("out_of_range", f"field `{name}` is outside 2000-01-01..2200-01-01")
    return ts_ms


@dataclass(slots=True, init=False)
class _Movement:
    """The fields only some event types carry. Its own __init__: compiled, a dataclass's
    generated one runs as interpreted Python (a frozen one setting each field through
    `object.__setattr__`)."""

    eta_ms: int | None
    shipment_id: str | None
    from_site: str | None
    proposal_id: str | None

    def __init__(
        self,
        eta_ms: int | None = None,
        shipment_id: str | None = None,
        from_site: str | None = None,
        proposal_id: str | None = None,
    ) -> None:
        self.eta_ms = eta_ms
        self.shipment_id = shipment_id
        self.from_site = from_site
        self.proposal_id = proposal_id


_NO_MOVEMENT: Final = _Movement()
_TRANSFER_TYPES: Final = frozenset(t for t in EventType if t.value.startswith("transfer_"))
_NEEDS_PROPOSAL_ID: Final = frozenset({TRANSFER_APPROVED, TRANSFER_REJECTED, TRANSFER_FAILED})


def _event(
    topic_kind: str,
    obj: Mapping[str, Any],
    sites: frozenset[str],
    source: SourceRef | None,
    ingested_ms: int | None = None,
    received_ms: int | None = None,
    ceilings: Mapping[str, int] | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> Event:
    event_id = _string(obj, "event_id", MAX_ID_LEN)
    sku = _string(obj, "sku", MAX_SKU_LEN)
    assert event_id is not None and sku is not None
    site = _site(obj, "site", sites)
    ts_ms = parse_timestamp(obj.get("ts"))
    if received_ms is not None and ts_ms > received_ms + max_future_ms:
        raise Invalid(
            "future_timestamp",
            f"event time is {(ts_ms - received_ms) / 3_600_000:.1f} h after the message "
            f"reached stockshift (at most {max_future_ms / 60_000:g} min ahead accepted)",
        )
    event_type = _event_type(topic_kind, obj)
    if event_type is FORECAST:
        figures = _forecast(obj)
        return Event(
            event_id,
            event_type,
            ts_ms,
            sku,
            site,
            0,
            source=source,
            ingested_ms=ingested_ms,
            received_ms=received_ms,
            forecast=figures,
        )
    qty = _quantity(event_type, obj)
    moved = _movement(event_type, obj, site, sites)
    if event_type is not SALE:
        _plausible(qty, site, ceilings, event_type)
        if moved.from_site is not None:
            _plausible(qty, moved.from_site, ceilings, event_type)
    # Positional, in Event's field order: records are interpreted dataclasses, and thirteen
    # keywords cost a dict per event (0.7-0.8 against 0.3 us, `python -m timeit`).
    return Event(
        event_id, event_type, ts_ms, sku, site, qty, moved.eta_ms, moved.shipment_id,
        moved.from_site, moved.proposal_id, source, ingested_ms, received_ms,
    )  # fmt: skip


def _site(obj: Mapping[str, Any], name: str, sites: frozenset[str]) -> str:
    """A site id from the network. One string object per site id, whatever message it came
    in: state keys every SKU's sites by it, and a copy per SKU-site was ~55 bytes each."""
    site = _string(obj, name, MAX_SKU_LEN)
    assert site is not None
    if site not in sites:
        raise Invalid("unknown_site", f"{name} {site!r} is not in the network config")
    return sys.intern(site)


def _event_type(topic_kind: str, obj: Mapping[str, Any]) -> EventType:
    raw_type = obj.get("type", None)
    if raw_type is None:
        default = _DEFAULT_TYPE.get(topic_kind)
        if default is None:
            raise Invalid("missing_field", "field `type` is required")
        return default
    found = _TYPE_BY_NAME.get(raw_type) if isinstance(raw_type, str) else None
    if found is None or found not in TYPES_BY_TOPIC[topic_kind]:
        allowed = sorted(t.value for t in TYPES_BY_TOPIC[topic_kind])
        raise Invalid("unknown_type", f"type {raw_type!r:.40} not allowed here; use {allowed}")
    return found


def _quantity(event_type: EventType, obj: Mapping[str, Any]) -> int:
    """The event's one quantity: on-hand counted, a signed adjustment, or units moved."""
    if event_type is SNAPSHOT:
        return _integer(obj, "on_hand", 0)
    if event_type is ADJUSTMENT:
        delta = _integer(obj, "delta", -MAX_QTY)
        if delta == 0:
            raise Invalid("out_of_range", "field `delta` must not be 0")
        return delta
    return _integer(obj, "qty", 1)


def _number(obj: Mapping[str, Any], name: str, low: float, high: float) -> float:
    value = obj.get(name)
    if value is None:
        raise Invalid("missing_field", f"field `{name}` is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("wrong_type", f"field `{name}` must be a number, got {value!r:.40}")
    if not low <= value <= high:  # also refuses NaN
        raise Invalid("out_of_range", f"field `{name}` must be in [{low:g}, {high:g}]")
    return float(value)


def _forecast(obj: Mapping[str, Any]) -> ForecastFigures:
    """A forecast's figures: a mean a day, and optionally its relative error and version."""
    mean = _number(obj, "mean_per_day", 0.0, MAX_FORECAST_PER_DAY)
    if 0 < mean < MIN_FORECAST_PER_DAY:
        raise Invalid(
            "out_of_range", f"field `mean_per_day` must be 0 or at least {MIN_FORECAST_PER_DAY:g}"
        )
    error_cv = None
    if obj.get("error_cv") is not None:
        error_cv = _number(obj, "error_cv", MIN_FORECAST_CV, MAX_FORECAST_CV)
    version = _string(obj, "forecast_version", MAX_ID_LEN, required=False)
    return ForecastFigures(mean, error_cv, version)


def _movement(
    event_type: EventType, obj: Mapping[str, Any], site: str, sites: frozenset[str]
) -> _Movement:
    if event_type is INBOUND_EXPECTED:
        eta_ms = parse_timestamp(obj.get("eta"), "eta")
        return _Movement(eta_ms=eta_ms, shipment_id=_string(obj, "shipment_id", MAX_ID_LEN))
    if event_type is INBOUND_RECEIVED:
        return _Movement(shipment_id=_string(obj, "shipment_id", MAX_ID_LEN, required=False))
    if event_type not in _TRANSFER_TYPES:
        return _NO_MOVEMENT
    from_site = _site(obj, "from_site", sites)
    if from_site == site:
        raise Invalid("out_of_range", "from_site and site must differ")
    needs_id = event_type in _NEEDS_PROPOSAL_ID
    proposal_id = _string(obj, "proposal_id", MAX_ID_LEN, required=needs_id)
    return _Movement(from_site=from_site, proposal_id=proposal_id)


def parse_message(
    raw: RawMessage,
    topic_kinds: Mapping[str, str],
    sites: frozenset[str],
    ceilings: Mapping[str, int] | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> Event | DeadLetter:
    """Turn one consumed message into an Event, or a DeadLetter saying why it cannot be one.

    `ceilings`: the most units of one SKU each site can hold (`Network.unit_ceilings`);
    `max_future_ms`: how far event time may run ahead of the message's arrival."""
    try:
        topic_kind = topic_kinds.get(raw.topic)
        if topic_kind is None:
            raise Invalid("unknown_topic", f"topic {raw.topic!r} is not an input topic")
        obj = _decoded_object(raw)
        source = None
        if raw.partition is not None and raw.offset is not None:
            source = SourceRef(raw.topic, raw.partition, raw.offset)
        ingested = _ingested(raw)
        # A receive time before 2000 is no wall clock (tests, replays that leave it unset).
        received = raw.received_at_ms if raw.received_at_ms >= MIN_TS_MS else None
        event = _event(
            topic_kind, obj, sites, source, ingested or None, received, ceilings, max_future_ms
        )
        return replace(event, traceparent=raw.traceparent) if raw.traceparent else event
    except Invalid as bad:
        return DeadLetter(
            source_topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            key=raw.key,
            payload=raw.value,
            error=str(bad),
            reason=bad.reason,
            received_at_ms=raw.received_at_ms,
            timestamp_ms=raw.timestamp_ms,
        )


def _ingested(raw: RawMessage) -> int:
    """When the message entered Kafka, as near as the log tells: its timestamp (the broker's
    append time, or the producer's), or when it reached us if it has none; and the input's
    stream time when it came, if later. A producer that stamps messages with their event's
    time hides a late message's arrival in the first; the second still shows it."""
    stamped = raw.timestamp_ms if raw.timestamp_ms is not None else raw.received_at_ms
    streamed = raw.stream_time_ms
    return stamped if streamed is None or streamed <= stamped else streamed


def parse_object(
    topic_kind: str, obj: Mapping[str, Any], sites: frozenset[str], ingested_ms: int | None = None
) -> Event:
    """Validate an already-decoded event (the simulator's path); raises `Invalid`."""
    return _event(topic_kind, obj, sites, None, ingested_ms)


def _decoded_object(raw: RawMessage) -> Mapping[str, Any]:
    """The message's object: decoded from Avro by the adapter, or parsed here from JSON."""
    if raw.value is None:
        raise Invalid("empty_payload", "message has no value (tombstone?)")
    if len(raw.value) > MAX_PAYLOAD_BYTES:
        raise Invalid("too_large", f"payload is {len(raw.value)} bytes; max {MAX_PAYLOAD_BYTES}")
    if raw.decoded is not None:
        return raw.decoded
    if raw.content_type is not None and raw.content_type not in JSON_TYPES:
        raise Invalid(
            "unsupported_content_type",
            f"content-type {raw.content_type!r:.60} is not JSON (events are UTF-8 JSON)",
        )
    try:
        obj = orjson.loads(raw.value)
    except orjson.JSONDecodeError as exc:
        raise Invalid("not_json", f"payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Invalid("not_object", "payload must be a JSON object")
    _check_unique_keys(raw.value, obj)
    return obj


def topic_kinds_for(prefix: str) -> dict[str, str]:
    """Input topic names under a prefix, mapped to the contract they follow."""
    return {f"{prefix}{kind}": kind for kind in TYPES_BY_TOPIC}
