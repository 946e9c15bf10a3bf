"""Kafka I/O: the input source, a sink that never loses a record silently, topic setup.

Bytewax's own KafkaSink produces without a delivery callback and dies on a full queue
(`BufferError`, upstream issue #522). `ProducingSink` waits for room instead, counts every
delivery failure and flushes on close, so every record is either acknowledged by the broker
or counted and logged as failed.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import KafkaError as ClientError
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from adapters import metrics
from adapters.redis_store import ProposalLedger, RedisSettings, connect
from operators.codec import KafkaMessage
from state.records import Proposal

log = logging.getLogger("stockshift.kafka")
__all__ = ["OFFSET_BEGINNING", "LedgeredProposalSink", "ProducingSink", "ensure_topics"]
T = TypeVar("T")

# Low-latency defaults; anything given by the user's librdkafka config wins.
# auto.offset.reset=earliest: if the broker ever answers "offset out of range" (Tansu does
# for a partition that was empty when assigned), restart from the beginning rather than
# jump to the end and silently skip what was produced in between.
SOURCE_DEFAULTS: Mapping[str, str] = {
    # How long the broker may hold a fetch for data. Kafka answers as soon as data arrives
    # (fetch.min.bytes 1), so this costs no latency there; Tansu spends it as a time budget
    # across the request's partitions, and at 5 ms a growing live log starved some
    # partitions for good (the input stalled after ~60k events at 2,000/s; at 100 ms none).
    "fetch.wait.max.ms": "100",
    "fetch.min.bytes": "1",
    "auto.offset.reset": "earliest",
}
SINK_DEFAULTS: Mapping[str, str] = {
    "linger.ms": "2",
    "acks": "all",
    "enable.idempotence": "true",
}


@dataclass
class DeliveryStats:
    """What the broker acknowledged or refused; shared by a sink's partitions."""

    delivered: int = 0
    failed: int = 0
    deduplicated: int = 0
    errors: list[str] = field(default_factory=list)


class _ProducingPartition(StatelessSinkPartition[T], Generic[T]):
    def __init__(
        self,
        producer: Producer,
        topic: str,
        serialize: Callable[[T], tuple[bytes | None, bytes] | KafkaMessage],
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

    def _produce(
        self,
        key: bytes | None,
        value: bytes | None,
        on_delivery: Callable[[Any, Any], None],
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    self._topic, value, key, on_delivery=on_delivery, headers=list(headers)
                )
                return
            except BufferError:
                # Queue full: serve delivery reports until there is room (backpressure).
                self._producer.poll(0.05)
            except KafkaException as exc:
                # Refused before sending (e.g. too large): counted and logged, never fatal.
                self._failed(exc, key)
                return

    def write_batch(self, items: list[T]) -> None:
        for item in items:
            record = self._message(item)
            self._produce(record.key, record.value, self._on_delivery, record.headers)
        self._producer.poll(0)

    def _message(self, item: T) -> KafkaMessage:
        record = self._serialize(item)
        return record if isinstance(record, KafkaMessage) else KafkaMessage(*record)

    def close(self) -> None:
        remaining = self._producer.flush(30)
        if remaining:
            self._stats.failed += remaining
            metrics.KAFKA_DELIVERY_FAILURES.labels(topic=self._topic).inc(remaining)
            log.error("kafka flush left undelivered records", extra={"count": remaining})


class _ProposalPartition(_ProducingPartition[Proposal]):
    """The plain proposals sink (no ledger); still measures trigger-to-ack latency."""

    def write_batch(self, items: list[Proposal]) -> None:
        self._produce_all(items)
        self._producer.poll(0)

    def _produce_all(self, items: list[Proposal]) -> None:
        for proposal in items:
            record = self._message(proposal)
            self._produce(record.key, record.value, self._delivery_of(proposal), record.headers)

    def _delivery_of(self, proposal: Proposal) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            self._on_delivery(err, msg)
            if err is None:
                self._acknowledged(proposal)

        return on_delivery

    def _acknowledged(self, proposal: Proposal) -> None:
        metrics.proposal_acknowledged(proposal.trigger_received_ms)


def on_client_error(client: str) -> Callable[[ClientError], None]:
    """librdkafka's error callback: the clients retry by themselves (broker restarts, network
    blips); these errors are reported, counted and never fatal to the flow."""

    def report(error: ClientError) -> None:
        code = error.name()
        metrics.KAFKA_CLIENT_ERRORS.labels(client=client, code=code).inc()
        if error.code() == ClientError._ALL_BROKERS_DOWN and client == "input":
            metrics.KAFKA_BROKERS_DOWN.set(1)
        log.warning(
            "kafka client error; retrying",
            extra={"client": client, "code": code, "error": error.str()},
        )

    return report


def reporting_producer(config: Mapping[str, Any], topic: str) -> Producer:
    """A producer whose client errors are counted and logged under its topic."""
    return Producer({**config, "error_cb": on_client_error(topic)})


class ProducingSink(DynamicSink[T], Generic[T]):
    """Produce records to one topic with delivery reports and backpressure."""

    def __init__(
        self,
        brokers: Iterable[str],
        topic: str,
        serialize: Callable[[T], tuple[bytes | None, bytes] | KafkaMessage],
        add_config: Mapping[str, str] | None = None,
    ) -> None:
        self._config = {"bootstrap.servers": ",".join(brokers), **SINK_DEFAULTS}
        self._config.update(add_config or {})
        self._topic = topic
        self._serialize = serialize
        self.stats = DeliveryStats()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducingPartition[T]:
        return _ProducingPartition(self._producer(), self._topic, self._serialize, self.stats)

    def _producer(self) -> Producer:
        return reporting_producer(self._config, self._topic)


class ProposalSink(ProducingSink[Proposal]):
    """Proposals without the Redis ledger; measures trigger-to-acknowledgement latency."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProposalPartition:
        return _ProposalPartition(self._producer(), self._topic, self._serialize, self.stats)


def read_to_end(
    brokers: Iterable[str],
    topic: str,
    group: str,
    add_config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Iterator[Any]:
    """Every message on every partition of a topic, from the beginning to its current end.

    Reads by assignment (offsets stay ours, no group join) and stops at end-of-partition;
    raises TimeoutError if the end is not reached in time.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": ",".join(brokers),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **(add_config or {}),
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        partitions = list(metadata.partitions) if metadata is not None else []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        remaining = set(partitions)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is None:
                yield msg
            elif error.code() == ClientError._PARTITION_EOF:
                remaining.discard(msg.partition())
    finally:
        consumer.close()


def ensure_topics(
    brokers: Iterable[str],
    topics: Iterable[str],
    partitions: int,
    add_config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
    topic_config: Mapping[str, str] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create missing topics (with `topic_config`); waits and retries while the broker is
    not reachable yet."""
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
            metrics.KAFKA_BROKERS_DOWN.set(0)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                where = config["bootstrap.servers"]
                raise ConnectionError(f"Kafka at {where} unreachable: {exc}") from exc
            metrics.KAFKA_BROKERS_DOWN.set(1)
            metrics.KAFKA_CLIENT_ERRORS.labels(client="admin", code="unreachable").inc()
            log.warning("kafka not reachable yet; retrying", extra={"error": str(exc)})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    missing = [
        NewTopic(t, partitions, replication_factor, config=dict(topic_config or {}))
        for t in topics
        if t not in existing
    ]
    if not missing:
        return
    for topic, future in admin.create_topics(missing).items():
        try:
            future.result(timeout=timeout_s)
            log.info("created topic", extra={"topic": topic})
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        except concurrent.futures.TimeoutError:
            # A broker without CreateTopics (librdkafka's mock cluster) never answers:
            # say so instead of waiting for ever.
            where = config["bootstrap.servers"]
            raise ConnectionError(
                f"Kafka at {where} did not create topic {topic} within {timeout_s:.0f} s; "
                "create it beforehand"
            ) from None


def produce_all(
    brokers: Iterable[str],
    topic: str,
    bodies: Iterable[Mapping[str, Any]],
    add_config: Mapping[str, str] | None = None,
) -> int:
    """Input events as a producer should send them: keyed by SKU, timestamped with their
    event time; raises if the broker does not acknowledge them all."""
    producer = Producer(
        {"bootstrap.servers": ",".join(brokers), **SINK_DEFAULTS, **(add_config or {})}
    )
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    sent = 0
    for body in bodies:
        while True:
            try:
                producer.produce(
                    topic, orjson.dumps(body), str(body["sku"]).encode(),
                    timestamp=int(str(body["ts"])), on_delivery=delivered,
                )  # fmt: skip
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
    if producer.flush(60) or failed:
        raise ConnectionError(f"{len(failed)} events not acknowledged: {failed[:3]}")
    return sent


def describe_topics(
    brokers: Iterable[str], topics: Iterable[str], add_config: Mapping[str, str] | None = None
) -> dict[str, tuple[int, dict[str, str]]]:
    """Partition count and configuration of each of the topics that exists."""
    admin = AdminClient({"bootstrap.servers": ",".join(brokers), **(add_config or {})})
    listed = admin.list_topics(timeout=10).topics
    present = [t for t in topics if t in listed]
    found: dict[str, tuple[int, dict[str, str]]] = {}
    if not present:
        return found
    resources = [ConfigResource("topic", t) for t in present]
    for resource, future in admin.describe_configs(resources).items():
        entries = future.result(timeout=10)
        config = {k: str(v.value) for k, v in entries.items() if v.value is not None}
        found[resource.name] = (len(listed[resource.name].partitions), config)
    return found


class _LedgerPartition(_ProposalPartition):
    """Produces each proposal at most once per ledger: skip delivered, mark pending, then
    delivered on the broker's acknowledgement.

    The one window left: a crash after the broker acknowledged a proposal and before the
    ledger recorded it; the replay then produces it again. Consumers dedupe by proposal_id.
    An acknowledgement that arrives after `write_batch` gave up waiting (broker or Redis
    briefly away) is served by a background thread, so the ledger catches up without
    waiting for the next proposal.
    """

    ACK_POLL_S = 0.5

    def __init__(
        self,
        producer: Producer,
        topic: str,
        serialize: Callable[[Proposal], tuple[bytes | None, bytes] | KafkaMessage],
        stats: DeliveryStats,
        ledger: ProposalLedger,
        flush_timeout_s: float,
    ) -> None:
        super().__init__(producer, topic, serialize, stats)
        self._ledger = ledger
        self._flush_timeout_s = flush_timeout_s
        self._acked: list[Proposal] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._serve_acks, name="ledger-acks", daemon=True)
        self._poller.start()

    def _serve_acks(self) -> None:
        while not self._stopping.wait(self.ACK_POLL_S):
            self._producer.poll(0)
            self._record_acks()

    def _acknowledged(self, proposal: Proposal) -> None:
        super()._acknowledged(proposal)
        with self._lock:
            self._acked.append(proposal)

    def write_batch(self, items: list[Proposal]) -> None:
        delivered = self._ledger.claim(items)
        if delivered is None:
            metrics.LEDGER_UNAVAILABLE.inc(len(items))
            delivered = set()
        fresh = [p for p in items if p.proposal_id not in delivered]
        if len(fresh) < len(items):
            metrics.PROPOSALS_DEDUPLICATED.inc(len(items) - len(fresh))
            self._stats.deduplicated += len(items) - len(fresh)
        self._produce_all(fresh)
        # Wait for the acknowledgements so the ledger knows at once (proposals are few).
        self._producer.flush(self._flush_timeout_s)
        self._record_acks()

    def _record_acks(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
        if acked and not self._ledger.mark_delivered(acked):
            with self._lock:
                self._acked = acked + self._acked  # Redis away: try again later

    def close(self) -> None:
        self._stopping.set()
        self._poller.join(timeout=5)
        super().close()
        self._record_acks()


class LedgeredProposalSink(DynamicSink[Proposal]):
    """The proposals sink with the Redis idempotency ledger (effectively once)."""

    def __init__(
        self,
        brokers: Iterable[str],
        topic: str,
        serialize: Callable[[Proposal], tuple[bytes | None, bytes] | KafkaMessage],
        redis_settings: RedisSettings,
        add_config: Mapping[str, str] | None = None,
        flush_timeout_s: float = 5.0,
    ) -> None:
        self._config = {
            "bootstrap.servers": ",".join(brokers),
            **SINK_DEFAULTS,
            **(add_config or {}),
        }
        self._topic = topic
        self._serialize = serialize
        self._redis_settings = redis_settings
        self._flush_timeout_s = flush_timeout_s
        self.stats = DeliveryStats()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LedgerPartition:
        ledger = ProposalLedger(connect(self._redis_settings), self._redis_settings)
        return _LedgerPartition(
            reporting_producer(self._config, self._topic),
            self._topic,
            self._serialize,
            self.stats,
            ledger,
            self._flush_timeout_s,
        )


def read_topic(
    brokers: str,
    topic: str,
    want: int,
    timeout: float = 15.0,
    keep: Callable[[Any], bool] | None = None,
) -> list[Any]:
    """Read messages from every partition of a topic (assign, no group: Tansu joins slowly)."""
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
