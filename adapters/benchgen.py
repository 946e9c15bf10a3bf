"""Benchmark I/O: a realistic generated event stream, a fast producer, the raw-consume ceiling."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

HOUR_MS = 3_600_000
START_MS = 1_767_225_600_000

Message = tuple[str, bytes, bytes, int]  # topic kind, key, value, timestamp


def generate(n_events: int, n_skus: int, sites: list[str], seed: int = 5) -> list[Message]:
    """Sales (about 85%), counts (10%) and supplier shipments (5%), in event-time order."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(3, size=n_events, p=[0.85, 0.10, 0.05])
    skus = rng.integers(0, n_skus, size=n_events)
    where = rng.integers(0, len(sites), size=n_events)
    qty = rng.integers(1, 4, size=n_events)
    counts = rng.integers(20, 200, size=n_events)
    step = max(1, (30 * 24 * HOUR_MS) // n_events)
    out: list[Message] = []
    for i in range(n_events):
        ts = START_MS + i * step
        sku = f"SKU-{int(skus[i]):06d}"
        body: dict[str, object] = {
            "event_id": f"e{i}",
            "ts": ts,
            "sku": sku,
            "site": sites[int(where[i])],
        }
        if kinds[i] == 0:
            kind = "pos"
            body["qty"] = int(qty[i])
        elif kinds[i] == 1:
            kind = "inventory"
            body.update(type="snapshot", on_hand=int(counts[i]))
        else:
            kind = "shipments"
            body.update(type="inbound_received", qty=int(counts[i] // 4) + 1)
        out.append((kind, sku.encode(), orjson.dumps(body), ts))
    return out


def produce(brokers: str, prefix: str, messages: Iterable[Message]) -> int:
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 500000})  # fmt: skip
    count = 0
    for kind, key, value, ts in messages:
        while True:
            try:
                producer.produce(prefix + kind, value, key, timestamp=ts)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    if producer.flush(120):
        raise ConnectionError("benchmark events not all acknowledged")
    return count


def consume_all(brokers: str, topics: list[str], expected: int, timeout_s: float = 300) -> float:
    """Ceiling A: the fastest plain loop: consume and parse every message. Returns seconds."""
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "stockshift-bench",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
            "enable.partition.eof": False,
        }
    )
    parts = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
    consumer.assign(parts)
    seen = 0
    started = time.perf_counter()
    deadline = started + timeout_s
    while seen < expected and time.perf_counter() < deadline:
        for msg in consumer.consume(1000, 0.1):
            error = msg.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                continue
            if error is None:
                orjson.loads(msg.value() or b"{}")
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    if seen < expected:
        raise TimeoutError(f"ceiling A consumed {seen} of {expected}")
    return elapsed
