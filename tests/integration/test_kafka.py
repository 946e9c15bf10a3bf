"""Against the real broker: our sink's delivery reports, and `stockshift run` end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from adapters.kafka import SOURCE_DEFAULTS, ProducingSink, ensure_topics
from adapters.kafka_source import MergedKafkaSource
from adapters.lab.flowproc import NETWORK
from operators.codec import dead_letter_headers
from state.records import EventType, RawMessage
from tests.support.helpers import (
    E2E_B_STOCK,
    E2E_HOURS,
    HOUR,
    T0,
    e2e_trigger,
    event,
    event_message,
    read_topic,
    warm_history,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_producing_sink_reports_every_delivery(kafka_brokers: str, topic_prefix: str) -> None:
    topic = topic_prefix + "out"
    ensure_topics([kafka_brokers], [topic], partitions=2)
    sink: ProducingSink[int] = ProducingSink(
        [kafka_brokers], topic, lambda i: (str(i).encode(), b"v%d" % i)
    )
    part = sink.build("out", 0, 1)
    part.write_batch(list(range(250)))
    part.close()
    assert sink.stats.delivered == 250 and sink.stats.failed == 0
    got = read_topic(kafka_brokers, topic, 250)
    assert sorted(int(m.key()) for m in got) == list(range(250))


def test_producing_sink_counts_failures_instead_of_losing_them(kafka_brokers: str) -> None:
    # A record above the producer's max size is refused; it must be counted, not dropped silently.
    sink: ProducingSink[int] = ProducingSink(
        [kafka_brokers],
        "stockshift-tests.too-big",
        lambda i: (None, b"x" * 2_000_000),
        {"message.max.bytes": "1000000"},
    )
    part = sink.build("out", 0, 1)
    part.write_batch([1, 2])
    part.close()
    assert sink.stats.failed == 2 and sink.stats.delivered == 0
    assert "too large" in sink.stats.errors[0].lower() or "MSG_SIZE" in sink.stats.errors[0]


@pytest.mark.e2e
def test_stockshift_run_end_to_end(kafka_brokers: str, topic_prefix: str, tmp_path: Path) -> None:
    network = tmp_path / "network.toml"
    network.write_text(NETWORK)
    env = {
        **os.environ,
        "STOCKSHIFT_BROKERS": kafka_brokers,
        "STOCKSHIFT_TOPIC_PREFIX": topic_prefix,
        "STOCKSHIFT_NETWORK": str(network),
        "STOCKSHIFT_POLICY": str(ROOT / "configs" / "policies" / "default.toml"),
    }
    ensure_topics(
        [kafka_brokers],
        [
            topic_prefix + k
            for k in ("pos", "inventory", "shipments", "proposals", "decisions", "dlq")
        ],
        3,
    )
    flow = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    producer = Producer({"bootstrap.servers": kafka_brokers, "linger.ms": 1})

    def publish(kind: str, body: dict | bytes, key: bytes | None = b"SKU-1") -> None:
        value = body if isinstance(body, bytes) else orjson.dumps(body)
        producer.produce(topic_prefix + kind, value, key)

    try:
        # 50 hours of history: past the warm-up and the low-confidence window. The counts go
        # first and are consumed (a malformed message behind them reaches the DLQ) before the
        # sales, so no arrival race across topics decides the state.
        history = warm_history(E2E_HOURS, b_stock=E2E_B_STOCK)
        for e in history:
            if e.type is EventType.SNAPSHOT:
                publish(*event_message(e))
        publish("inventory", b"{this is not json")
        producer.flush(10)
        assert len(read_topic(kafka_brokers, topic_prefix + "dlq", 1, timeout=60)) == 1
        for e in history:
            if e.type is not EventType.SNAPSHOT:
                publish(*event_message(e))
        # Malformed input in the middle of the stream.
        publish("pos", b"{this is not json")
        publish(
            "pos",
            {"event_id": "bad-site", "ts": 1767225600000, "sku": "SKU-1", "site": "NOPE", "qty": 1},
        )
        publish("inventory", b"\xff\xfe not utf-8", key=None)
        producer.flush(10)
        # Once the bad messages reach the DLQ, the history before them has been consumed too.
        dead = read_topic(kafka_brokers, topic_prefix + "dlq", 4, timeout=60)
        assert len(dead) == 4, flow.poll()
        reasons = sorted(dead_letter_headers(m.headers() or [])["reason"] for m in dead)
        assert reasons == ["not_json", "not_json", "not_json", "unknown_site"]
        assert b"\xff\xfe not utf-8" in {m.value() for m in dead}  # the original bytes

        trigger_kind, trigger = event_message(e2e_trigger())
        sent_at = time.monotonic()
        publish(trigger_kind, trigger)
        producer.flush(10)
        proposals = read_topic(kafka_brokers, topic_prefix + "proposals", 1, timeout=5)
        elapsed = time.monotonic() - sent_at
        assert len(proposals) == 1, f"no proposal within 5 s (flow alive: {flow.poll() is None})"
        proposal = orjson.loads(proposals[0].value())
        assert (proposal["from_site"], proposal["to_site"], proposal["sku"]) == ("A", "B", "SKU-1")
        assert proposal["trigger_event_ids"] == ["damage-B"]
        assert proposal["status"] == "proposed"
        assert proposals[0].key() == b"SKU-1"
        assert elapsed < 5.0
        decisions = read_topic(
            kafka_brokers,
            topic_prefix + "decisions",
            1,
            timeout=5,
            keep=lambda m: orjson.loads(m.value())["proposal_id"] == proposal["proposal_id"],
        )
        assert len(decisions) == 1 and orjson.loads(decisions[0].value())["outcome"] == "proposed"
        # A mis-keyed quantity lands on the anomalies topic as a finding.
        bulk = {
            "event_id": "bulk-A",
            "ts": T0 + int(50.5 * HOUR),
            "sku": "SKU-1",
            "site": "A",
            "qty": 90,
        }
        publish("pos", bulk)
        producer.flush(10)
        # (This producer leaves message timestamps to the client, so the January history
        # also yields late_event findings: event time is ten months before it arrived.)
        found = read_topic(
            kafka_brokers, topic_prefix + "anomalies", 1, 10,
            keep=lambda m: orjson.loads(m.value())["kind"] == "sale_outlier",
        )  # fmt: skip
        (finding,) = [orjson.loads(m.value()) for m in found]
        assert (finding["kind"], finding["site"], finding["event_ids"]) == (
            "sale_outlier",
            "A",
            ["bulk-A"],
        )
        assert finding["detector"] and finding["evidence"]["qty"] == 90
        # Still alive after bad input.
        assert flow.poll() is None
    finally:
        flow.terminate()
        try:
            out, _ = flow.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            flow.kill()
            out, _ = flow.communicate()
        if out:
            sys.stderr.write(out.decode(errors="replace")[-3000:])


@pytest.mark.integration
def test_with_a_consumer_group_input_offsets_are_committed_for_lag_tools(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Lag tools read a group's committed offsets: with STOCKSHIFT_CONSUMER_GROUP the flow
    commits how far it has read at each snapshot (recovery still uses its snapshots)."""
    from confluent_kafka import Consumer, TopicPartition

    from adapters.lab.flowproc import flow_harness

    group = f"lag-{topic_prefix}"
    events = warm_history(3)
    with flow_harness(
        kafka_brokers, topic_prefix, tmp_path, STOCKSHIFT_CONSUMER_GROUP=group
    ) as flow:
        flow.publish_events(events)
        flow.wait_live()
        reader = Consumer({"bootstrap.servers": kafka_brokers, "group.id": group})
        wanted = {"pos": 6, "inventory": 2}
        deadline = time.monotonic() + 30
        while True:
            committed = {}
            for kind in wanted:
                topic = topic_prefix + kind
                parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
                offsets = reader.committed([TopicPartition(topic, p) for p in parts], timeout=10)
                committed[kind] = sum(max(tp.offset, 0) for tp in offsets)
            if committed["pos"] >= wanted["pos"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        reader.close()
    assert committed["inventory"] == wanted["inventory"]
    assert committed["pos"] >= wanted["pos"]  # the live marker is a pos message too


@pytest.mark.integration
def test_a_traceparent_on_the_trigger_reaches_its_proposal_and_decision_record(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Lineage end to end: the trace id a producer sets on the triggering event is on the
    proposal (field and header) and on its decision record."""
    from adapters.lab.flowproc import flow_harness
    from operators.codec import event_message

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with flow_harness(kafka_brokers, topic_prefix, tmp_path) as flow:
        flow.publish_events(warm_history(E2E_HOURS, b_stock=E2E_B_STOCK))
        flow.wait_live()
        kind, body = event_message(e2e_trigger())
        flow.producer.produce(
            topic_prefix + kind, orjson.dumps(body), b"SKU-1", timestamp=body["ts"],
            headers=[("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01".encode())],
        )  # fmt: skip
        flow.producer.flush(10)
        proposals = read_topic(kafka_brokers, topic_prefix + "proposals", 1, timeout=60)
        decisions = flow.records(
            "decisions",
            1,
            timeout=30,
            keep=lambda r: r["outcome"] in ("proposed", "needs_approval"),
        )
    assert len(proposals) == 1
    body = orjson.loads(proposals[0].value())
    assert body["traceparent"][3:35] == trace_id
    assert dict(proposals[0].headers() or [])["traceparent"].decode() == body["traceparent"]
    assert decisions[0]["traceparent"] == body["traceparent"]


@pytest.mark.integration
@pytest.mark.e2e
def test_a_trigger_stamped_with_event_time_behind_the_stream_lives_from_its_arrival(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Producers stamp messages with event time (the harness does, as the README's
    producer). Another SKU's count takes the input to hour 55; B's damage, stamped 50.2,
    comes after it: its proposal is created at 55:00 and expires a TTL after that, not
    after 50.2, which had left it under five hours to live."""
    from adapters.lab.flowproc import flow_harness
    from operators.parse import parse_timestamp

    with flow_harness(kafka_brokers, topic_prefix, tmp_path) as flow:
        flow.publish_events(warm_history(E2E_HOURS, b_stock=E2E_B_STOCK))
        flow.publish_events([event("snap-A-SKU-9", EventType.SNAPSHOT, 55, "A", 40, "SKU-9")])
        flow.wait_live()
        flow.publish_events([e2e_trigger()])
        (proposal,) = flow.records("proposals", 1, timeout=60)
    assert proposal["trigger_event_ids"] == ["damage-B"]
    created, expires = (parse_timestamp(proposal[k]) for k in ("created_at", "expires_at"))
    assert created == T0 + 55 * HOUR
    assert expires - created == 6 * HOUR  # the default policy's proposal_ttl_hours


def test_a_broker_that_never_creates_a_topic_fails_start_up_with_the_reason() -> None:
    """librdkafka's mock cluster has no CreateTopics: topic creation must give up with a
    reason after its wait, not hang start-up for ever."""
    from adapters.lab.mockbroker import start_mock_broker

    address, process = start_mock_broker()
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=r"did not create topic never\.created"):
            ensure_topics([address], ["never.created"], 1, timeout_s=2)
        assert time.monotonic() - started < 30
    finally:
        process.terminate()
        process.wait(timeout=10)


def _emitted(part: Any, count: int, timeout_s: float = 30) -> list[RawMessage]:
    """The next `count` messages a merged source's partition emits."""
    got: list[RawMessage] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got.extend(m for m in part.next_batch() if isinstance(m, RawMessage))
        time.sleep(0.01)
    assert len(got) == count, got
    return got


def test_the_merged_source_dates_a_message_stamped_with_event_time_by_the_stream(
    kafka_brokers: str, topic_prefix: str
) -> None:
    """Producers stamp messages with their event's time. The counts reach 14:00; then a
    store's 10:00 sale comes: its timestamp says 10:00, its stream time says when it came,
    14:00. In order, a message's stream time is its own timestamp. The snapshot holds the
    offsets only (a release from before reads it): a source resumed from it starts the
    stream time again from what it emits."""
    pos, inventory = topic_prefix + "pos", topic_prefix + "inventory"
    ensure_topics([kafka_brokers], [pos, inventory], 1)
    start = (int(time.time() * 1000) - 24 * HOUR) // HOUR * HOUR
    at = lambda hour: start + hour * HOUR  # noqa: E731
    producer = Producer({"bootstrap.servers": kafka_brokers})

    def send(topic: str, hour: int) -> None:
        producer.produce(topic, b"{}", b"SKU-1", timestamp=at(hour))
        assert producer.flush(10) == 0

    send(inventory, 12)
    send(inventory, 14)
    source = MergedKafkaSource([kafka_brokers], [pos, inventory], consumer_config=SOURCE_DEFAULTS)
    part = source.build_part("inputs", "merged-inputs", None)
    try:
        in_order = _emitted(part, 2)
        assert [m.stream_time_ms for m in in_order] == [at(12), at(14)]
        send(pos, 10)
        (late,) = _emitted(part, 1)
        assert (late.timestamp_ms, late.stream_time_ms) == (at(10), at(14))
        snapshot = part.snapshot()
    finally:
        part.close()
    assert snapshot == {f"0-{pos}": 1, f"0-{inventory}": 2}
    send(inventory, 15)
    send(pos, 11)
    resumed = source.build_part("inputs", "merged-inputs", snapshot)
    try:
        after = _emitted(resumed, 2)
    finally:
        resumed.close()
    assert [(m.topic, m.offset, m.stream_time_ms) for m in after] == [
        (pos, 1, at(11)),
        (inventory, 2, at(15)),
    ]
