"""Serialise output records to the JSON documented in configs/schemas/.

Timestamps leave as RFC 3339 UTC strings; the message key of every output is the SKU, so
a consumer sees one SKU's records in order.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from state.records import DeadLetter, DecisionRecord, Event, EventType, Finding, Proposal


def rfc3339(ts_ms: int) -> str:
    """`2026-01-05T00:00:00.123+00:00`: the second's text is cached, since every live
    position and record carries a time and consecutive ones share their second (building
    it through datetime each time was 1.4 us, most of a live position's encoding), and the
    millisecond's is looked up (formatting it was half of what was left: 0.50 against
    0.25 us a time, cache hits)."""
    second, ms = divmod(ts_ms, 1000)
    return _second_text(second) + _MILLISECOND_TEXT[ms]


_MILLISECOND_TEXT: Final = tuple(f".{ms:03d}+00:00" for ms in range(1000))


@functools.lru_cache(maxsize=4096)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).isoformat(timespec="seconds")[:-6]


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    """A record as produced: key, value and headers."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


# A dead letter keeps the original bytes up to this size: the input topic took the message,
# so it fits the DLQ too unless it came close to the broker's 1 MB default; beyond it the
# first part is kept, with the whole one's size and SHA-256 in the headers.
DLQ_PAYLOAD_MAX_BYTES = 900 * 1024
DLQ_HEADER = "stockshift."


def dead_letter_message(letter: DeadLetter) -> KafkaMessage:
    """The DLQ record: the original key and bytes, as the producer sent them (so the message
    can be fixed and replayed as it is), and why it was refused in the headers."""
    original = letter.payload
    kept = original[:DLQ_PAYLOAD_MAX_BYTES] if original is not None else None
    fields = {
        "reason": letter.reason,
        "error": letter.error[:2000],
        "source.topic": letter.source_topic,
        "source.partition": _text(letter.partition),
        "source.offset": _text(letter.offset),
        "source.timestamp": _text(letter.timestamp_ms),
        "received_at": rfc3339(letter.received_at_ms),
        "payload.bytes": str(len(original)) if original is not None else "",
        "payload.sha256": hashlib.sha256(original).hexdigest() if original is not None else "",
        "payload.truncated": "true"
        if kept is not None and len(kept) < len(original or b"")
        else "false",
    }
    headers = tuple((DLQ_HEADER + name, value.encode()) for name, value in fields.items())
    return KafkaMessage(letter.key, kept, headers)


def _cut(original: bytes | None, kept: bytes | None) -> bool:
    return original is not None and kept is not None and len(kept) < len(original)


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def dead_letter_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """A DLQ record's stockshift headers by name (without the prefix)."""
    return {
        name[len(DLQ_HEADER) :]: (value or b"").decode("utf-8", "replace")
        for name, value in headers
        if name.startswith(DLQ_HEADER)
    }


# Records reach orjson through `record_fields` (orjson's OPT_PASSTHROUGH_DATACLASS), not its
# own dataclass support: compiled (mypyc native classes: no `__dict__` or `__slots__`, floats
# kept unboxed), a record with a float field crashed the process inside orjson (a segfault
# in the flow's decision sink).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def record_fields(value: Any) -> dict[str, Any]:
    """orjson's `default` for a record: its fields by name, in order (nested records come
    back here)."""
    names = _FIELD_NAMES.get(type(value))
    if names is None:
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            raise TypeError(f"not JSON: {type(value).__name__}")
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    return {name: getattr(value, name) for name in names}


def dumps(value: Any) -> bytes:
    """JSON of plain values and records (see `record_fields`)."""
    return orjson.dumps(value, default=record_fields, option=orjson.OPT_PASSTHROUGH_DATACLASS)


def proposal_dict(proposal: Proposal) -> dict[str, Any]:
    body = _plain(dataclasses.replace(proposal, record=None))
    body.pop("record")
    body["created_at"] = rfc3339(body.pop("created_at_ms"))
    body["expires_at"] = rfc3339(body.pop("expires_at_ms"))
    body["status"] = proposal.status.value
    body.pop("trigger_received_ms", None)
    if body["traceparent"] is None:
        del body["traceparent"]
    return body


def _plain(record: Proposal | DecisionRecord) -> dict[str, Any]:
    """A record as JSON-ready values, nested records included: orjson asks `record_fields`
    for each record's fields, where `dataclasses.asdict` deep-copies every value in Python
    (190 us for a decision record with its alternatives, more than deciding it took)."""
    body: dict[str, Any] = orjson.loads(dumps(record))
    return body


# A decision record's fields as its JSON has them: `ts_ms` leaves as `ts`, written last.
_DECISION_FIELDS = tuple(f.name for f in dataclasses.fields(DecisionRecord) if f.name != "ts_ms")


def decision_json(decision: DecisionRecord) -> bytes:
    """A decision record's JSON: its fields in order, nested records (the receiver, each
    alternative, the evidence) as objects, the time as `ts`, last. One pass: orjson writes
    the nested records as `record_fields` gives them, where the record once went through a
    dump, a load and a dump (bench stream, before records were compiled: 18.5 against 13.3
    us for a 1,357-byte record; the same bytes for all 13,697)."""
    body = {name: getattr(decision, name) for name in _DECISION_FIELDS}
    if decision.traceparent is None:
        del body["traceparent"]
    body["ts"] = rfc3339(decision.ts_ms)
    return dumps(body)


def encode_proposal(proposal: Proposal) -> KafkaMessage:
    """Keyed by SKU; the trace context, when the trigger had one, as a header too."""
    return KafkaMessage(
        proposal.sku.encode(), orjson.dumps(proposal_dict(proposal)), _trace(proposal.traceparent)
    )


def encode_decision(decision: DecisionRecord) -> KafkaMessage:
    return KafkaMessage(
        decision.sku.encode(), decision_json(decision), _trace(decision.traceparent)
    )


def _trace(traceparent: str | None) -> tuple[tuple[str, bytes], ...]:
    return (("traceparent", traceparent.encode()),) if traceparent else ()


def finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "kind": finding.kind,
        "sku": finding.sku,
        "site": finding.site,
        "ts": rfc3339(finding.ts_ms),
        "score": finding.score,
        "detector": finding.detector,
        "evidence": dict(finding.evidence),
        "event_ids": list(finding.event_ids),
    }


def encode_finding(finding: Finding) -> tuple[bytes, bytes]:
    return finding.sku.encode(), orjson.dumps(finding_dict(finding))


def event_message(e: Event) -> tuple[str, dict[str, Any]]:
    """The input message a producer publishes for an event: its topic kind and JSON body
    (the inverse of operators.parse; the simulator, benchmarks and the reliability runner
    publish through it)."""
    body: dict[str, Any] = {"event_id": e.event_id, "ts": e.ts_ms, "sku": e.sku, "site": e.site}
    if e.type is EventType.SNAPSHOT:
        return "inventory", {**body, "type": "snapshot", "on_hand": e.qty}
    if e.type is EventType.ADJUSTMENT:
        return "inventory", {**body, "type": "adjustment", "delta": e.qty}
    if e.type in (EventType.SALE, EventType.RETURN, EventType.SALE_HISTORY):
        return "pos", {**body, "type": e.type.value, "qty": e.qty}
    if e.type is EventType.FORECAST:
        return "forecasts", _forecast_body(body, e)
    body.update(type=e.type.value, qty=e.qty)
    for name in ("from_site", "proposal_id", "shipment_id"):
        if getattr(e, name) is not None:
            body[name] = getattr(e, name)
    if e.eta_ms is not None:
        body["eta"] = e.eta_ms
    return "shipments", body


def _forecast_body(body: dict[str, Any], e: Event) -> dict[str, Any]:
    figures = e.forecast
    assert figures is not None  # a forecast event always carries its figures
    body = {**body, "type": "forecast", "mean_per_day": figures.mean_per_day}
    if figures.error_cv is not None:
        body["error_cv"] = figures.error_cv
    if figures.version is not None:
        body["forecast_version"] = figures.version
    return body
