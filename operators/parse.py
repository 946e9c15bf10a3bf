"""Parse and validate input messages against the event contract (configs/schemas/).

Errors are data: a message that breaks the contract becomes a `DeadLetter` with a reason
code (a metrics label) and a sentence for the human reading the DLQ. Nothing here raises
on bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import orjson

from state.records import DeadLetter, Event, EventType, RawMessage, SourceRef

MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_QTY: Final = 1_000_000_000
MAX_ID_LEN: Final = 128
MAX_SKU_LEN: Final = 64
# Event time must fall inside [2000-01-01, 2200-01-01): anything else is a broken clock.
MIN_TS_MS: Final = 946_684_800_000
MAX_TS_MS: Final = 7_258_118_400_000

POS, INVENTORY, SHIPMENTS = "pos", "inventory", "shipments"
TYPES_BY_TOPIC: Final[Mapping[str, frozenset[EventType]]] = {
    POS: frozenset({EventType.SALE, EventType.RETURN}),
    INVENTORY: frozenset({EventType.SNAPSHOT, EventType.ADJUSTMENT}),
    SHIPMENTS: frozenset(
        {
            EventType.INBOUND_EXPECTED,
            EventType.INBOUND_RECEIVED,
            EventType.TRANSFER_APPROVED,
            EventType.TRANSFER_DISPATCHED,
            EventType.TRANSFER_RECEIVED,
            EventType.TRANSFER_REJECTED,
            EventType.TRANSFER_FAILED,
        }
    ),
}
_DEFAULT_TYPE: Final = {POS: EventType.SALE}
_TYPE_BY_NAME: Final = {t.value: t for t in EventType}


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


def _event(
    topic_kind: str,
    obj: Mapping[str, Any],
    sites: frozenset[str],
    source: SourceRef | None,
    ingested_ms: int | None = None,
    received_ms: int | None = None,
) -> Event:
    event_id = _string(obj, "event_id", MAX_ID_LEN)
    sku = _string(obj, "sku", MAX_SKU_LEN)
    site = _string(obj, "site", MAX_SKU_LEN)
    assert event_id is not None and sku is not None and site is not None
    ts_ms = parse_timestamp(obj.get("ts"))
    if site not in sites:
        raise Invalid("unknown_site", f"site {site!r} is not in the network config")
    raw_type = obj.get("type", None)
    if raw_type is None:
        default = _DEFAULT_TYPE.get(topic_kind)
        if default is None:
            raise Invalid("missing_field", "field `type` is required")
        event_type = default
    else:
        found = _TYPE_BY_NAME.get(raw_type) if isinstance(raw_type, str) else None
        if found is None or found not in TYPES_BY_TOPIC[topic_kind]:
            allowed = sorted(t.value for t in TYPES_BY_TOPIC[topic_kind])
            raise Invalid("unknown_type", f"type {raw_type!r:.40} not allowed here; use {allowed}")
        event_type = found
    eta_ms = shipment_id = from_site = proposal_id = None
    if event_type is EventType.SNAPSHOT:
        qty = _integer(obj, "on_hand", 0)
    elif event_type is EventType.ADJUSTMENT:
        qty = _integer(obj, "delta", -MAX_QTY)
        if qty == 0:
            raise Invalid("out_of_range", "field `delta` must not be 0")
    else:
        qty = _integer(obj, "qty", 1)
    if event_type is EventType.INBOUND_EXPECTED:
        eta_ms = parse_timestamp(obj.get("eta"), "eta")
        shipment_id = _string(obj, "shipment_id", MAX_ID_LEN)
    elif event_type is EventType.INBOUND_RECEIVED:
        shipment_id = _string(obj, "shipment_id", MAX_ID_LEN, required=False)
    elif event_type.value.startswith("transfer_"):
        from_site = _string(obj, "from_site", MAX_SKU_LEN)
        if from_site not in sites:
            raise Invalid("unknown_site", f"from_site {from_site!r} is not in the network config")
        if from_site == site:
            raise Invalid("out_of_range", "from_site and site must differ")
        needs_id = event_type in (
            EventType.TRANSFER_APPROVED,
            EventType.TRANSFER_REJECTED,
            EventType.TRANSFER_FAILED,
        )
        proposal_id = _string(obj, "proposal_id", MAX_ID_LEN, required=needs_id)
    return Event(
        event_id=event_id,
        type=event_type,
        ts_ms=ts_ms,
        sku=sku,
        site=site,
        qty=qty,
        eta_ms=eta_ms,
        shipment_id=shipment_id,
        from_site=from_site,
        proposal_id=proposal_id,
        source=source,
        ingested_ms=ingested_ms,
        received_ms=received_ms,
    )


def parse_message(
    raw: RawMessage, topic_kinds: Mapping[str, str], sites: frozenset[str]
) -> Event | DeadLetter:
    """Turn one consumed message into an Event, or a DeadLetter saying why it cannot be one."""
    try:
        topic_kind = topic_kinds.get(raw.topic)
        if topic_kind is None:
            raise Invalid("unknown_topic", f"topic {raw.topic!r} is not an input topic")
        if raw.value is None:
            raise Invalid("empty_payload", "message has no value (tombstone?)")
        if len(raw.value) > MAX_PAYLOAD_BYTES:
            raise Invalid(
                "too_large", f"payload is {len(raw.value)} bytes; max {MAX_PAYLOAD_BYTES}"
            )
        try:
            obj = orjson.loads(raw.value)
        except orjson.JSONDecodeError as exc:
            raise Invalid("not_json", f"payload is not UTF-8 JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise Invalid("not_object", "payload must be a JSON object")
        source = None
        if raw.partition is not None and raw.offset is not None:
            source = SourceRef(raw.topic, raw.partition, raw.offset)
        ingested = raw.timestamp_ms if raw.timestamp_ms is not None else raw.received_at_ms
        return _event(topic_kind, obj, sites, source, ingested or None, raw.received_at_ms or None)
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
        )


def parse_object(
    topic_kind: str, obj: Mapping[str, Any], sites: frozenset[str], ingested_ms: int | None = None
) -> Event:
    """Validate an already-decoded event (the simulator's path); raises `Invalid`."""
    return _event(topic_kind, obj, sites, None, ingested_ms)


def topic_kinds_for(prefix: str) -> dict[str, str]:
    """Input topic names under a prefix, mapped to the contract they follow."""
    return {f"{prefix}{kind}": kind for kind in TYPES_BY_TOPIC}
