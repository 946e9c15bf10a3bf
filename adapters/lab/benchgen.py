"""Benchmark I/O: the event stream as messages, a fast producer, the raw-consume ceiling."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

Message = tuple[str, bytes, bytes, int]  # topic kind, key, value, timestamp


def encode(events: Iterable[tuple[str, dict[str, Any]]]) -> list[Message]:
    """A simulated world's published events (`flows.lab.simulate.run_stockshift(record=...)`)
    as Kafka messages keyed by SKU, with the event time as the message timestamp."""
    return [
        (kind, str(body["sku"]).encode(), orjson.dumps(body), int(body["ts"]))
        for kind, body in events
    ]


def mix(events: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """How many events of each type a stream holds (sales are `sale`), most first."""
    counts = Counter(str(body.get("type", "sale")) for _, body in events)
    return dict(counts.most_common())


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
