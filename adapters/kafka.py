"""Kafka I/O: the input source, a sink that never loses a record silently, topic setup.

Bytewax's own KafkaSink produces without a delivery callback and dies on a full queue
(`BufferError`, upstream issue #522). `ProducingSink` waits for room instead, counts every
delivery failure and flushes on close, so every record is either acknowledged by the broker
or counted and logged as failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from adapters import metrics
from state.records import DeadLetter, RawMessage

log = logging.getLogger("stockshift.kafka")
T = TypeVar("T")

# Low-latency defaults; anything given by the user's librdkafka config wins.
SOURCE_DEFAULTS: Mapping[str, str] = {"fetch.wait.max.ms": "5", "fetch.min.bytes": "1"}
SINK_DEFAULTS: Mapping[str, str] = {
    "linger.ms": "2",
    "acks": "all",
    "enable.idempotence": "true",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_raw(message: KafkaSourceMessage[bytes | None, bytes | None]) -> RawMessage:
    return RawMessage(
        topic=message.topic or "",
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        received_at_ms=now_ms(),
    )


def error_to_dead_letter(error: KafkaError[bytes | None, bytes | None]) -> DeadLetter:
    """A consumer-side error (corrupt record, etc.) becomes a dead letter, never a crash."""
    message = error.msg
    return DeadLetter(
        source_topic=message.topic or "",
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        payload=message.value,
        error=str(error.err),
        reason="consumer_error",
        received_at_ms=now_ms(),
    )


@dataclass
class DeliveryStats:
    """What the broker acknowledged or refused; shared by a sink's partitions."""

    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class _ProducingPartition(StatelessSinkPartition[T], Generic[T]):
    def __init__(
        self,
        producer: Producer,
        topic: str,
        serialize: Callable[[T], tuple[bytes | None, bytes]],
        stats: DeliveryStats,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._serialize = serialize
        self._stats = stats

    def _failed(self, err: object, key: bytes | None) -> None:
        self._stats.failed += 1
        if len(self._stats.errors) < 100:
            self._stats.errors.append(str(err))
        metrics.KAFKA_DELIVERY_FAILURES.labels(topic=self._topic).inc()
        log.error(
            "kafka delivery failed",
            extra={"topic": self._topic, "record_key": key, "error": str(err)},
        )

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self._stats.delivered += 1
        else:
            self._failed(err, msg.key())

    def write_batch(self, items: list[T]) -> None:
        for item in items:
            key, value = self._serialize(item)
            while True:
                try:
                    self._producer.produce(self._topic, value, key, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    # Queue full: serve delivery reports until there is room (backpressure).
                    self._producer.poll(0.05)
                except KafkaException as exc:
                    # Refused before sending (e.g. too large): counted and logged, never fatal.
                    self._failed(exc, key)
                    break
        self._producer.poll(0)

    def close(self) -> None:
        remaining = self._producer.flush(30)
        if remaining:
            self._stats.failed += remaining
            metrics.KAFKA_DELIVERY_FAILURES.labels(topic=self._topic).inc(remaining)
            log.error("kafka flush left undelivered records", extra={"count": remaining})


class ProducingSink(DynamicSink[T], Generic[T]):
    """Produce records to one topic with delivery reports and backpressure."""

    def __init__(
        self,
        brokers: Iterable[str],
        topic: str,
        serialize: Callable[[T], tuple[bytes | None, bytes]],
        add_config: Mapping[str, str] | None = None,
    ) -> None:
        self._config = {"bootstrap.servers": ",".join(brokers), **SINK_DEFAULTS}
        self._config.update(add_config or {})
        self._topic = topic
        self._serialize = serialize
        self.stats = DeliveryStats()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducingPartition[T]:
        return _ProducingPartition(Producer(self._config), self._topic, self._serialize, self.stats)


def ensure_topics(
    brokers: Iterable[str],
    topics: Iterable[str],
    partitions: int,
    add_config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create missing topics; waits and retries while the broker is not reachable yet."""
    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": ",".join(brokers),
        **(add_config or {}),
    }
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                where = config["bootstrap.servers"]
                raise ConnectionError(f"Kafka at {where} unreachable: {exc}") from exc
            log.warning("kafka not reachable yet; retrying", extra={"error": str(exc)})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    missing = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
    if not missing:
        return
    for topic, future in admin.create_topics(missing).items():
        try:
            future.result()
            log.info("created topic", extra={"topic": topic})
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
