"""Read a proposal's decision trail back: from Redis (recent) or the decisions topic."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from adapters.redis_store import RedisSettings, connect, read_trail


def trail_from_redis(settings: RedisSettings, proposal_id: str) -> list[dict[str, Any]]:
    client = connect(settings)
    try:
        _, trail = read_trail(client, settings.prefix, proposal_id)
        return trail
    finally:
        client.close()


def trail_from_kafka(
    brokers: Iterable[str],
    topic: str,
    proposal_id: str,
    add_config: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """Scan the decisions topic to its end for records that name the proposal."""
    consumer = Consumer(
        {
            "bootstrap.servers": ",".join(brokers),
            "group.id": "stockshift-explain",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **(add_config or {}),
        }
    )
    found: list[dict[str, Any]] = []
    needle = proposal_id.encode()
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions) if topic in metadata.topics else []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        remaining = set(partitions)
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                continue
            value = msg.value() or b""
            if needle in value:
                record = orjson.loads(value)
                if record.get("proposal_id") == proposal_id:
                    found.append(record)
    finally:
        consumer.close()
    found.sort(key=lambda r: r.get("ts", ""))
    return found
