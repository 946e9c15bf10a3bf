"""An input source that merges the input topics in a deterministic order.

Kafka orders messages only within a partition. A SKU's sales, counts and shipments live in
three topics, so a plain consumer interleaves them by fetch timing: on a backlog (a restart,
a replay) a count from the end of the day can overtake the sales before it. This source
assigns every input partition to one consumer and emits, among the partitions that have
data, the message with the smallest (message timestamp, topic, partition, offset). It waits
for a partition whose state is unknown (fetched nothing yet, no end-of-partition either),
so a backlog yields the same sequence whatever the fetch timing. A caught-up partition is
not waited for (Kafka Streams' `max.task.idle.ms = 0`): live events go on in the order they
arrive, since waiting for a later fetch that may bring something older is latency spent on
every event. `grace_ms` buys that wait where users want it (a burst published together can
reach the client in several fetches).

Recovery: the snapshot is, per partition, the offset of the next message not yet emitted.

Each message carries the stream time it was emitted at (the latest timestamp emitted so
far): where producers stamp messages with event time, the only record of when a late one
came. It is not in the snapshot, so a release from before reads this one's snapshots; after
a restart it starts again from the messages the catch-up emits, in timestamp order, as a
replay of the log does.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from adapters import metrics
from adapters.clock import now_ms
from adapters.kafka import on_client_error
from operators.trace import valid_traceparent
from state.records import DeadLetter, RawMessage

log = logging.getLogger("stockshift.kafka")
Key = tuple[str, int]
_MAX_BUFFERED_PER_PARTITION = 20_000


class _MergedPartition(StatefulSourcePartition[RawMessage | DeadLetter, dict[str, int]]):
    def __init__(
        self,
        config: dict[str, Any],
        partitions: list[Key],
        resume: Mapping[str, int] | None,
        batch_size: int,
        stop_at_end: bool = False,
        grace_ms: float = 0.0,
        max_future_ms: int = 3_600_000,
        commit_offsets: bool = False,
        start_offset: int = OFFSET_BEGINNING,
    ) -> None:
        self._max_future_ms = max_future_ms
        self._commit_offsets = commit_offsets
        self._watermark = -1  # the largest merge time emitted so far: the stream time
        self._consumer = Consumer(
            {**config, "stats_cb": self._on_stats, "error_cb": on_client_error("input")}
        )
        self._next: dict[str, int] = dict(resume or {})
        self._consumer.assign(
            [
                TopicPartition(topic, part, self._next.get(f"{part}-{topic}", start_offset))
                for topic, part in partitions
            ]
        )
        self._buffers: dict[Key, deque[RawMessage]] = {key: deque() for key in partitions}
        self._fetched: dict[Key, deque[float]] = {key: deque() for key in partitions}
        self._grace_s = grace_ms / 1000
        self._caught_up: set[Key] = set()
        self._paused: set[Key] = set()
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end
        # When the message held back for the grace may go (monotonic s; 0: none held).
        self._held_until = 0.0

    def next_batch(self) -> list[RawMessage | DeadLetter]:
        if (
            self._stop_at_end
            and len(self._caught_up) == len(self._buffers)
            and not any(self._buffers.values())
        ):
            raise StopIteration  # a bounded run (benchmarks): everything consumed
        out: list[RawMessage | DeadLetter] = []
        buffered = sum(len(b) for b in self._buffers.values())
        # Hand out at most one batch per call and fetch only while little is buffered: a
        # backlog then spreads over many epochs, so snapshots commit as often as configured
        # (one 35k-event batch held the first snapshot of a replay back for seconds).
        starved = any(not b and k not in self._caught_up for k, b in self._buffers.items())
        fetched = self._drain() if starved or buffered < 4 * self._batch_size else []
        # One clock read per fetch: its messages arrived in the same consume calls.
        received_ms, fetched_at = now_ms(), time.monotonic()
        for msg in fetched:
            key = (msg.topic() or "", msg.partition() or 0)
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._caught_up.add(key)
                else:
                    out.append(_dead(msg, str(error)))
                continue
            self._caught_up.discard(key)
            self._fetched[key].append(fetched_at)
            self._buffers[key].append(_raw(msg, key, received_ms))
        out.extend(self._merge(self._batch_size))
        self._apply_backpressure()
        return out

    def next_awake(self) -> datetime | None:
        """When a message held for the grace may go; otherwise Bytewax's own pace (at once
        after a batch, 1 ms after an empty one). `next_batch` never blocks: a wait inside
        it kept the events already emitted from the steps downstream (measured: 5 ms of
        trigger-to-proposal latency with a 5 ms consume timeout)."""
        if not self._held_until:
            return None
        return datetime.now(UTC) + timedelta(seconds=max(self._held_until - time.monotonic(), 0))

    def _drain(self) -> list[Any]:
        """Everything the client has fetched so far (bounded), without waiting: a message
        still queued locally in another partition may be older than the ones already taken."""
        messages: list[Any] = self._consumer.consume(self._batch_size, 0)
        batch = messages
        while len(batch) == self._batch_size and len(messages) < 20 * self._batch_size:
            batch = self._consumer.consume(self._batch_size, 0)
            messages.extend(batch)
        return messages

    def _merge(self, limit: int) -> list[RawMessage]:
        """Emit in (timestamp, topic, partition, offset) order while no partition is unknown."""
        heads: list[tuple[int, str, int, int, Key]] = []
        idle = False
        for key, buffer in self._buffers.items():
            if buffer:
                heads.append(self._head(buffer[0], key))
            elif key not in self._caught_up:
                return []  # its next message may come first: wait for it
            else:
                idle = True
        heapq.heapify(heads)
        merged: list[RawMessage] = []
        settled = time.monotonic() - self._grace_s
        self._held_until = 0.0
        while heads and len(merged) < limit:
            key = heads[0][4]
            if idle and self._fetched[key][0] > settled:
                # An idle partition may still deliver something older: wait a little.
                self._held_until = self._fetched[key][0] + self._grace_s
                break
            self._watermark = max(self._watermark, heapq.heappop(heads)[0])
            buffer = self._buffers[key]
            message = buffer.popleft()
            _stamp_stream_time(message, min(self._watermark, message.received_at_ms))
            self._fetched[key].popleft()
            merged.append(message)
            self._next[f"{key[1]}-{key[0]}"] = (message.offset or 0) + 1
            if buffer:
                heapq.heappush(heads, self._head(buffer[0], key))
            elif key not in self._caught_up:
                break
        return merged

    def _head(self, message: RawMessage, key: Key) -> tuple[int, str, int, int, Key]:
        """A partition's place in the merge: its head's timestamp. A timestamp more than
        `max_future_ms` after the message reached us is no event time (no clock runs that
        far ahead): the message takes its place at the merged stream's current time, so one
        message stamped 2100 cannot hold its partition back until every other partition is
        drained. Genuine timestamps, live or replayed, are never that far ahead."""
        ts = message.timestamp_ms or 0
        if ts > message.received_at_ms + self._max_future_ms:
            ts = max(self._watermark, 0)
        return (ts, key[0], key[1], message.offset or 0, key)

    def _apply_backpressure(self) -> None:
        full = {k for k, b in self._buffers.items() if len(b) >= _MAX_BUFFERED_PER_PARTITION}
        drained = {
            k for k in self._paused if len(self._buffers[k]) < _MAX_BUFFERED_PER_PARTITION // 2
        }
        if full - self._paused:
            self._consumer.pause([TopicPartition(t, p) for t, p in full - self._paused])
            self._paused |= full
        if drained:
            self._consumer.resume([TopicPartition(t, p) for t, p in drained])
            self._paused -= drained

    def _on_stats(self, text: str) -> None:
        """Consumer lag per partition: the high watermark the fetches saw, minus what we
        emitted (the broker's watermark query is not trusted: Tansu answers it wrongly)."""
        try:
            report = orjson.loads(text)
            brokers = report.get("brokers", {}).values()
            if brokers:
                up = any(b.get("state") == "UP" for b in brokers if b.get("nodeid", 0) >= 0)
                metrics.KAFKA_BROKERS_DOWN.set(0 if up else 1)
            topics = report.get("topics", {})
            for topic, body in topics.items():
                for part, stats in body.get("partitions", {}).items():
                    high = stats.get("hi_offset", -1)
                    if part == "-1" or high < 0:
                        continue
                    done = self._next.get(f"{part}-{topic}", 0)
                    metrics.CONSUMER_LAG.labels(topic=topic, partition=part).set(
                        max(high - done, 0)
                    )
        except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
            log.warning("unreadable client statistics", extra={"error": str(exc)})

    def snapshot(self) -> dict[str, int]:
        """The next offset per partition. With `commit_offsets`, also committed to the
        consumer group at each snapshot, so lag tools (consumer-group describe, Burrow,
        exporters) see how far the flow is; recovery still resumes from the snapshot."""
        if self._commit_offsets and self._next:
            self._commit()
        return dict(self._next)

    def _commit(self) -> None:
        offsets = []
        for name, offset in self._next.items():
            part, _, topic = name.partition("-")
            offsets.append(TopicPartition(topic, int(part), offset))
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:  # lag reporting is best effort; never fatal
            log.warning("offset commit failed", extra={"error": str(exc)})

    def close(self) -> None:
        self._consumer.close()


def _raw(msg: Any, key: Key, received_ms: int) -> RawMessage:
    """A consumed message as the flow's record. Positional: records are interpreted
    dataclasses, and ten keywords cost a dict per message (0.6-0.8 against 0.3 us)."""
    ts_type, ts = msg.timestamp()
    headers = msg.headers()
    traceparent = content_type = None
    if headers is not None:
        traceparent, content_type = _traceparent(headers), _content_type(headers)
    return RawMessage(
        key[0], key[1], msg.offset(), msg.key(), msg.value(), received_ms,
        ts if ts_type else None, ts_type == TIMESTAMP_LOG_APPEND_TIME, traceparent,
        content_type,
    )  # fmt: skip


def _stamp_stream_time(message: RawMessage, stream_ms: int) -> None:
    """Fill in the stream time the merge emits a message at (the one field set after the
    record is built: only the merge knows it). It is the latest timestamp emitted so far,
    this message's included, but never after the receive time (a message stamped up to
    `max_future_ms` ahead moves the watermark). The merged order is the same on every replay
    of a backlog, and so is each message's stream time."""
    object.__setattr__(message, "stream_time_ms", stream_ms)


def _header(headers: list[tuple[str, bytes | None]] | None, wanted: str) -> bytes | None:
    for name, value in headers or ():
        if name.lower() == wanted:
            return value
    return None


def _traceparent(headers: list[tuple[str, bytes | None]] | None) -> str | None:
    """The message's W3C trace context, when it carries a well-formed one."""
    value = _header(headers, "traceparent")
    return valid_traceparent(value) if value is not None else None


def _content_type(headers: list[tuple[str, bytes | None]] | None) -> str | None:
    """The media type a `content-type` header names (parameters dropped), bounded."""
    value = _header(headers, "content-type")
    if value is None:
        return None
    return value[:100].decode("latin-1").split(";")[0].strip().lower()


def _dead(msg: Any, error: str) -> DeadLetter:
    return DeadLetter(
        source_topic=msg.topic() or "",
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        payload=msg.value(),
        error=error,
        reason="consumer_error",
        received_at_ms=now_ms(),
    )


class MergedKafkaSource(FixedPartitionedSource[RawMessage | DeadLetter, dict[str, int]]):
    """One Bytewax input partition over all input topic partitions, merged in order.

    `start_offset`: where a partition with no snapshot starts (the control topic starts
    where the start-up replay of its log left off)."""

    def __init__(
        self,
        brokers: Iterable[str],
        topics: Iterable[str],
        add_config: Mapping[str, str] | None = None,
        batch_size: int = 1000,
        stop_at_end: bool = False,
        consumer_config: Mapping[str, str] | None = None,
        grace_ms: float = 0.0,
        max_future_ms: int = 3_600_000,
        consumer_group: str | None = None,
        start_offset: int = OFFSET_BEGINNING,
        part_name: str = "merged-inputs",
    ) -> None:
        self._start_offset = start_offset
        self._part_name = part_name
        self._max_future_ms = max_future_ms
        self._consumer_group = consumer_group
        self._brokers = list(brokers)
        self._grace_ms = grace_ms
        self._consumer_config = dict(consumer_config or {})
        self._stop_at_end = stop_at_end
        self._topics = list(topics)
        self._add_config = dict(add_config or {})
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [self._part_name]

    def _partitions(self) -> list[Key]:
        admin = AdminClient({"bootstrap.servers": ",".join(self._brokers), **self._add_config})
        found: list[Key] = []
        for topic in self._topics:
            metadata = admin.list_topics(topic, timeout=30).topics[topic]
            if metadata.error is not None:
                raise RuntimeError(f"cannot list partitions of {topic}: {metadata.error.str()}")
            found.extend((topic, p) for p in sorted(metadata.partitions))
        return found

    def build_part(
        self, step_id: str, for_part: str, resume_state: dict[str, int] | None
    ) -> _MergedPartition:
        config: dict[str, Any] = {
            "bootstrap.servers": ",".join(self._brokers),
            # Offsets live in Bytewax snapshots; the group only reports them to lag tools.
            "group.id": self._consumer_group or "stockshift-unused",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "statistics.interval.ms": 5000,
            **self._consumer_config,
            **self._add_config,
        }
        return _MergedPartition(
            config,
            self._partitions(),
            resume_state,
            self._batch_size,
            self._stop_at_end,
            self._grace_ms,
            self._max_future_ms,
            commit_offsets=self._consumer_group is not None,
            start_offset=self._start_offset,
        )
