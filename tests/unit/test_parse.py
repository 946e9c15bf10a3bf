from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.parse import parse_message, topic_kinds_for
from state.records import DeadLetter, Event, EventType, RawMessage

SITES = frozenset({"A", "B"})
KINDS = topic_kinds_for("stockshift.")


def parse(kind: str, body: object) -> Event | DeadLetter:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_message(RawMessage(f"stockshift.{kind}", 1, 42, b"k", value, 7), KINDS, SITES)


BASE = {"event_id": "e1", "ts": "2026-01-01T10:00:00+02:00", "sku": "SKU-1", "site": "A"}


def test_sale_defaults_type_and_converts_rfc3339_with_offset() -> None:
    event = parse("pos", {**BASE, "qty": 3})
    assert isinstance(event, Event)
    assert event.type is EventType.SALE
    assert event.ts_ms == 1_767_254_400_000  # 08:00Z
    assert event.qty == 3
    assert event.source is not None and (event.source.partition, event.source.offset) == (1, 42)


@pytest.mark.parametrize(
    ("kind", "body", "type_", "qty"),
    [
        ("pos", {"type": "return", "qty": 2}, EventType.RETURN, 2),
        ("inventory", {"type": "snapshot", "on_hand": 0}, EventType.SNAPSHOT, 0),
        ("inventory", {"type": "adjustment", "delta": -4}, EventType.ADJUSTMENT, -4),
        (
            "shipments",
            {"type": "inbound_expected", "qty": 5, "eta": 1_767_300_000_000, "shipment_id": "po1"},
            EventType.INBOUND_EXPECTED,
            5,
        ),
        (
            "shipments",
            {"type": "transfer_rejected", "qty": 5, "from_site": "B", "proposal_id": "p1"},
            EventType.TRANSFER_REJECTED,
            5,
        ),
    ],
)
def test_each_event_type_parses(kind: str, body: dict, type_: EventType, qty: int) -> None:
    event = parse(kind, {**BASE, "ts": 1_767_225_600_000, **body})
    assert isinstance(event, Event), event
    assert event.type is type_ and event.qty == qty


@pytest.mark.parametrize(
    ("kind", "body", "reason"),
    [
        ("pos", b"{not json", "not_json"),
        ("pos", b"\xff\xfe\x00", "not_json"),
        ("pos", [1, 2], "not_object"),
        ("pos", {**BASE}, "missing_field"),
        ("pos", {**BASE, "qty": 0}, "out_of_range"),
        ("pos", {**BASE, "qty": 1.5}, "wrong_type"),
        ("pos", {**BASE, "qty": True}, "wrong_type"),
        ("pos", {**BASE, "qty": 1, "site": "Z"}, "unknown_site"),
        ("pos", {**BASE, "qty": 1, "ts": "2026-01-01T10:00:00"}, "wrong_type"),
        ("pos", {**BASE, "qty": 1, "ts": 0}, "out_of_range"),
        ("pos", {**BASE, "qty": 1, "sku": "x" * 65}, "out_of_range"),
        ("pos", {**BASE, "qty": 1, "type": "snapshot"}, "unknown_type"),
        ("inventory", {**BASE, "type": "adjustment", "delta": 0}, "out_of_range"),
        ("inventory", {**BASE, "type": "snapshot", "on_hand": -1}, "out_of_range"),
        (
            "shipments",
            {**BASE, "type": "transfer_failed", "qty": 1, "from_site": "B"},
            "missing_field",
        ),
        (
            "shipments",
            {**BASE, "type": "transfer_received", "qty": 1, "from_site": "A"},
            "out_of_range",
        ),
        (
            "shipments",
            {**BASE, "type": "inbound_expected", "qty": 1, "shipment_id": "s"},
            "missing_field",
        ),
    ],
)
def test_contract_violations_become_dead_letters_with_reason(
    kind: str, body: object, reason: str
) -> None:
    letter = parse(kind, body)
    assert isinstance(letter, DeadLetter)
    assert letter.reason == reason
    assert letter.source_topic == f"stockshift.{kind}" and letter.offset == 42
    assert letter.payload is not None and letter.error


def test_unknown_topic_and_tombstone_and_oversize() -> None:
    raw = RawMessage("other", 0, 1, None, b"{}", 0)
    assert parse_message(raw, KINDS, SITES).reason == "unknown_topic"  # type: ignore[union-attr]
    raw = RawMessage("stockshift.pos", 0, 1, None, None, 0)
    assert parse_message(raw, KINDS, SITES).reason == "empty_payload"  # type: ignore[union-attr]
    big = orjson.dumps({**BASE, "qty": 1, "pad": "x" * 70_000})
    assert parse("pos", big).reason == "too_large"  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    result = parse("pos", payload)
    assert isinstance(result, Event | DeadLetter)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["pos", "inventory", "shipments"]),
    st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "ts",
                "sku",
                "site",
                "type",
                "qty",
                "on_hand",
                "delta",
                "eta",
                "shipment_id",
                "from_site",
                "proposal_id",
                "extra",
            ]
        ),
        json_values,
    ),
)
def test_arbitrary_objects_parse_or_dead_letter(kind: str, body: dict) -> None:
    result = parse(kind, {**BASE, **body})
    assert isinstance(result, Event | DeadLetter)
    if isinstance(result, Event):
        assert result.site in SITES and 1 <= len(result.sku) <= 64


def test_a_content_type_other_than_json_is_dead_lettered_with_a_reason() -> None:
    """Messages declare their format in a `content-type` header; without one, JSON is meant."""
    body = orjson.dumps({**BASE, "qty": 1})
    avro = RawMessage("stockshift.pos", 0, 1, b"k", body, 7, content_type="application/avro")
    letter = parse_message(avro, KINDS, SITES)
    assert isinstance(letter, DeadLetter) and letter.reason == "unsupported_content_type"
    for declared in ("application/json", None):
        json_ = RawMessage("stockshift.pos", 0, 1, b"k", body, 7, content_type=declared)
        assert isinstance(parse_message(json_, KINDS, SITES), Event)


@pytest.mark.parametrize(
    ("stamped_hour", "stream_hour", "ingested_hour"),
    [
        (10, 14, 14),  # stamped with event time, the stream four hours on: the stream's time
        (10, 10, 10),  # in order
        (10, 9, 10),  # the stream behind the stamp (LogAppendTime, a slower partition)
        (10, None, 10),  # not from the merged source
        (None, 14, 20),  # no message timestamp: when it reached us (the stream is not later)
    ],
)
def test_a_message_enters_kafka_at_the_later_of_its_stamp_and_the_stream_time_it_came_at(
    stamped_hour: int | None, stream_hour: int | None, ingested_hour: int
) -> None:
    """A store's 10:00 sale, stamped with its event time, comes when the other feeds have
    reached 14:00: it is dated as arriving at 14:00 (its decisions, and the clock checks),
    for sales and forecasts alike."""
    at = lambda hour: None if hour is None else 1_767_254_400_000 + hour * 3_600_000  # noqa: E731
    for kind, body in (("pos", {**BASE, "qty": 1}), ("forecasts", {**BASE, "mean_per_day": 2})):
        raw = RawMessage(
            f"stockshift.{kind}", 0, 1, b"k", orjson.dumps(body), at(20) or 0, at(stamped_hour),
            stream_time_ms=at(stream_hour),
        )  # fmt: skip
        event = parse_message(raw, KINDS, SITES)
        assert isinstance(event, Event) and event.ingested_ms == at(ingested_hour)
