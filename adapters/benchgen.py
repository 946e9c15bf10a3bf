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
    """Opening counts for every SKU-site (as a store system publishes them when it starts
    streaming), then sales (about 85%), counts (10%) and supplier shipments (5%) in
    event-time order. Counts report the stock the stream implies, give or take a unit (a
    count of random stock would turn most events into data-quality findings)."""
    rng = np.random.default_rng(seed)
    n_sites = len(sites)
    stock = rng.integers(20, 200, size=(n_skus, n_sites))
    out: list[Message] = []
    for k in range(min(n_skus, n_events // max(n_sites, 1))):
        sku = f"SKU-{k:06d}"
        for s, site in enumerate(sites):
            body: dict[str, object] = {"event_id": f"open-{k}-{s}", "ts": START_MS, "sku": sku,
                                       "site": site, "type": "snapshot",
                                       "on_hand": int(stock[k, s])}  # fmt: skip
            out.append(("inventory", sku.encode(), orjson.dumps(body), START_MS))
    rest = n_events - len(out)
    kinds = rng.choice(3, size=rest, p=[0.85, 0.10, 0.05])
    skus = rng.integers(0, n_skus, size=rest)
    where = rng.integers(0, n_sites, size=rest)
    qty = rng.integers(1, 4, size=rest)
    noise = rng.integers(-1, 2, size=rest)
    restock = rng.integers(20, 200, size=rest)
    step = max(1, (30 * 24 * HOUR_MS) // max(rest, 1))
    for i in range(rest):
        ts = START_MS + (i + 1) * step
        k, s = int(skus[i]), int(where[i])
        sku = f"SKU-{k:06d}"
        body = {"event_id": f"e{i}", "ts": ts, "sku": sku, "site": sites[s]}
        if kinds[i] == 0:
            kind = "pos"
            sold = min(int(qty[i]), int(stock[k, s]))
            if sold <= 0:
                continue  # an empty shelf sells nothing
            stock[k, s] -= sold
            body["qty"] = sold
        elif kinds[i] == 1:
            kind = "inventory"
            body.update(type="snapshot", on_hand=max(int(stock[k, s] + noise[i]), 0))
        else:
            kind = "shipments"
            received = int(restock[i] // 4) + 1
            stock[k, s] += received
            body.update(type="inbound_received", qty=received)
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
