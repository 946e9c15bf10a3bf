"""The dead-letter topic: read what is there, and put fixed messages back where they came from.

A dead letter is the original message (key and bytes as the producer sent them) with why it
was refused in `stockshift.*` headers (operators.codec.dead_letter_message). Once the cause
is fixed (a site added to the network, a limit raised, a producer bug corrected and the
message re-sent), `stockshift dlq replay` produces each chosen dead letter to its source
topic again, with its key and its original timestamp, so the merged input takes it in its
place; the flow's de-duplication by event id makes a replay of one already taken harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import Producer

from adapters.kafka import read_to_end
from operators.codec import dead_letter_headers


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One message of the DLQ as read back."""

    dlq_offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    error: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    source_timestamp_ms: int | None
    truncated: bool

    @property
    def source(self) -> tuple[str, int | None, int | None]:
        return self.source_topic, self.source_partition, self.source_offset


def _int(text: str | None) -> int | None:
    return int(text) if text else None


def read_dead_letters(
    brokers: Iterable[str], topic: str, add_config: Mapping[str, str] | None = None
) -> list[DeadLetterRecord]:
    records = []
    for msg in read_to_end(brokers, topic, "stockshift-dlq-reader", add_config):
        fields = dead_letter_headers(msg.headers() or [])
        records.append(
            DeadLetterRecord(
                dlq_offset=msg.offset(),
                key=msg.key(),
                value=msg.value(),
                reason=fields.get("reason", ""),
                error=fields.get("error", ""),
                source_topic=fields.get("source.topic", ""),
                source_partition=_int(fields.get("source.partition")),
                source_offset=_int(fields.get("source.offset")),
                source_timestamp_ms=_int(fields.get("source.timestamp")),
                truncated=fields.get("payload.truncated") == "true",
            )
        )
    return records


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command acts on: a reason, a source topic, from a DLQ offset."""

    reason: str | None = None
    source_topic: str | None = None
    from_offset: int = 0

    def __call__(self, record: DeadLetterRecord) -> bool:
        return (
            (self.reason is None or record.reason == self.reason)
            and (self.source_topic is None or record.source_topic == self.source_topic)
            and record.dlq_offset >= self.from_offset
        )


@dataclass(frozen=True, slots=True)
class ReplayReport:
    replayed: int
    skipped_truncated: int
    matched: int


def replay(
    brokers: Iterable[str],
    records: Iterable[DeadLetterRecord],
    chosen: Callable[[DeadLetterRecord], bool],
    add_config: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Produce every chosen dead letter to its source topic again. A truncated one cannot
    be: only its first part was kept (its source offset says where the whole one is).

    Dead letters come in the order the flow took them. A caught-up flow takes each topic's
    messages as they arrive (`adapters/kafka_source.py`), and a replay is a burst across
    topics: produced at once, a count could reach it before the sales that came first. So
    each topic's run is acknowledged before the next topic's starts: the broker then holds
    them in that order, and a fetch that returns a later message returns the earlier ones
    too (on one broker; across brokers the flow's merge grace is what orders a burst)."""
    producer = Producer({"bootstrap.servers": ",".join(brokers), **(add_config or {})})
    replayed = skipped = matched = 0
    previous_topic: str | None = None
    for record in records:
        if not chosen(record):
            continue
        matched += 1
        if record.truncated or not record.source_topic:
            skipped += 1
            continue
        if not dry_run:
            if previous_topic not in (None, record.source_topic):
                _acknowledged(producer)
            producer.produce(
                record.source_topic,
                record.value,
                record.key,
                timestamp=record.source_timestamp_ms or 0,
            )
            previous_topic = record.source_topic
        replayed += 1  # (with dry_run: would be)
    _acknowledged(producer)
    return ReplayReport(replayed, skipped, matched)


def _acknowledged(producer: Producer) -> None:
    if producer.flush(30):
        raise ConnectionError("dead letters not acknowledged by the broker in 30 s")
