"""Small builders shared by the tests: events, a two-store network, Kafka read-back."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from state.config import Network, Policy, network_from_dict
from state.records import Event, EventType, RawMessage

HOUR = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def two_store_network(**lane: Any) -> Network:
    return network_from_dict(
        {
            "sites": [
                {"id": "A", "replenishment_lead_hours": 96},
                {"id": "B", "replenishment_lead_hours": 96},
                {"id": "C", "replenishment_lead_hours": 96},
            ],
            "lanes": [
                {
                    "from": "A",
                    "to": "B",
                    "lead_hours": 6,
                    "cost_per_unit": 0.2,
                    "fixed_cost": 5,
                    "bidirectional": True,
                    **lane,
                },
                {"from": "A", "to": "C", "lead_hours": 30, "cost_per_unit": 0.5, "fixed_cost": 20},
            ],
            "sku_defaults": {"unit_cost": 10, "unit_margin": 6, "min_transfer_qty": 2},
        }
    )


def policy(**overrides: Any) -> Policy:
    """The test policy; low-confidence approval and signal checks are off unless a test
    turns them on (their own tests do), so the other rules can be tested alone."""
    return Policy(
        **{"version": "test-1", "confidence_hours": 0.0, "signal_checks": False, **overrides}
    )


# End-to-end runs use the shipped policy (all checks on): 50 hours of history, B ends it
# with 41 on hand, and a damage write-off of 15 (not an outlier: under half the stock)
# takes it well below its reorder point (39).
E2E_HOURS = 50
E2E_B_STOCK = 91


def e2e_trigger(name: str = "damage-B", hour: float = 50.2) -> Event:
    return event(name, EventType.ADJUSTMENT, hour, "B", -15)


def event(
    event_id: str, type_: EventType, hour: float, site: str, qty: int, sku: str = "SKU-1", **kw: Any
) -> Event:
    return Event(event_id, type_, T0 + int(hour * HOUR), sku, site, qty, **kw)


def warm_history(hours: int = 30, sku: str = "SKU-1", b_stock: int = 75) -> list[Event]:
    """A: 300 on hand, B: `b_stock`; both sell one unit an hour for `hours` hours."""
    events = [
        event(f"snap-A-{sku}", EventType.SNAPSHOT, 0, "A", 300, sku),
        event(f"snap-B-{sku}", EventType.SNAPSHOT, 0, "B", b_stock, sku),
    ]
    for h in range(hours):
        for site in ("A", "B"):
            events.append(event(f"sale-{site}-{h}-{sku}", EventType.SALE, h + 0.5, site, 1, sku))
    return events


def body_of(e: Event) -> tuple[str, dict[str, Any]]:
    """The JSON a producer would publish for an event, and its topic kind."""
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


def raw_of(e: Event, offset: int, prefix: str = "stockshift.") -> RawMessage:
    kind, body = body_of(e)
    return RawMessage(prefix + kind, 0, offset, e.sku.encode(), orjson.dumps(body), 0)


def read_topic(
    brokers: str,
    topic: str,
    want: int,
    timeout: float = 15.0,
    keep: Callable[[Any], bool] | None = None,
) -> list[Any]:
    """Read messages from every partition of a topic (assign, no group: Tansu joins slowly)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "stockshift-tests",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        deadline = time.monotonic() + timeout
        parts: list[int] = []
        while not parts and time.monotonic() < deadline:
            meta = consumer.list_topics(topic, timeout=10)
            found_topic = meta.topics.get(topic)
            if found_topic is not None and found_topic.error is None:
                parts = list(found_topic.partitions)
            if not parts:
                time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        found: list[Any] = []
        while len(found) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            if keep is None or keep(msg):
                found.append(msg)
        return found
    finally:
        consumer.close()
