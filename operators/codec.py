"""Serialise output records to the JSON documented in configs/schemas/.

Timestamps leave as RFC 3339 UTC strings; the message key of every output is the SKU, so
a consumer sees one SKU's records in order.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from state.records import DeadLetter, DecisionRecord, Event, EventType, Finding, Proposal


def rfc3339(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


# A dead letter keeps at most this much of the original payload (and 1 KiB of its key):
# escaped as JSON, 16 KiB of control characters grow to 96 KiB, well under the broker's
# 1 MB message limit, so an oversized input can never make its own dead letter undeliverable.
DLQ_PAYLOAD_MAX_BYTES = 16 * 1024
DLQ_KEY_MAX_BYTES = 1024


def _payload_text(payload: bytes | None) -> tuple[str | None, str]:
    """The original payload as text when it is UTF-8, else base64, and which one it is."""
    if payload is None:
        return None, "none"
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


def _kept(data: bytes | None, limit: int) -> bytes | None:
    """The first `limit` bytes, cut back to a whole UTF-8 character where the text is UTF-8."""
    if data is None or len(data) <= limit:
        return data
    head = data[:limit]
    for cut in range(4):
        try:
            (head[: limit - cut] if cut else head).decode("utf-8")
            return head[: limit - cut] if cut else head
        except UnicodeDecodeError:
            continue
    return head


def proposal_dict(proposal: Proposal) -> dict[str, Any]:
    body = dataclasses.asdict(dataclasses.replace(proposal, record=None))
    body.pop("record")
    body["created_at"] = rfc3339(body.pop("created_at_ms"))
    body["expires_at"] = rfc3339(body.pop("expires_at_ms"))
    body["status"] = proposal.status.value
    body.pop("trigger_received_ms", None)
    return body


def decision_dict(decision: DecisionRecord) -> dict[str, Any]:
    body = dataclasses.asdict(decision)
    body["ts"] = rfc3339(body.pop("ts_ms"))
    body["outcome"] = decision.outcome.value
    return body


def dead_letter_dict(letter: DeadLetter) -> dict[str, Any]:
    """The DLQ record; an oversized payload is cut to its first 16 KiB, and its size and
    SHA-256 say what the whole was (the original stays in its topic at `offset`)."""
    original = letter.payload
    payload, encoding = _payload_text(_kept(original, DLQ_PAYLOAD_MAX_BYTES))
    key, key_encoding = _payload_text(_kept(letter.key, DLQ_KEY_MAX_BYTES))
    return {
        "source_topic": letter.source_topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "key": key,
        "key_encoding": key_encoding,
        "payload": payload,
        "payload_encoding": encoding,
        "payload_bytes": len(original) if original is not None else 0,
        "payload_sha256": hashlib.sha256(original).hexdigest() if original is not None else None,
        "payload_truncated": original is not None and len(original) > DLQ_PAYLOAD_MAX_BYTES,
        "error": letter.error,
        "reason": letter.reason,
        "received_at": rfc3339(letter.received_at_ms),
    }


def encode_proposal(proposal: Proposal) -> tuple[bytes, bytes]:
    return proposal.sku.encode(), orjson.dumps(proposal_dict(proposal))


def encode_decision(decision: DecisionRecord) -> tuple[bytes, bytes]:
    return decision.sku.encode(), orjson.dumps(decision_dict(decision))


def encode_dead_letter(letter: DeadLetter) -> tuple[bytes | None, bytes]:
    return letter.key, orjson.dumps(dead_letter_dict(letter))


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
    if e.type in (EventType.SALE, EventType.RETURN):
        return "pos", {**body, "type": e.type.value, "qty": e.qty}
    body.update(type=e.type.value, qty=e.qty)
    for name in ("from_site", "proposal_id", "shipment_id"):
        if getattr(e, name) is not None:
            body[name] = getattr(e, name)
    if e.eta_ms is not None:
        body["eta"] = e.eta_ms
    return "shipments", body
