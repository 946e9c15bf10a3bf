"""The JSON Schema files in configs/schemas/ and the parser describe the same contract."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from operators.codec import (
    dead_letter_headers,
    dead_letter_message,
    decision_json,
    proposal_dict,
    rfc3339,
)
from operators.engine import DecisionContext, step
from operators.parse import parse_message, topic_kinds_for
from state.records import Candidate, DeadLetter, Event, EventType, RawMessage
from tests.support.helpers import event, policy, two_store_network, warm_history

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "configs" / "schemas"


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


BASE = {"event_id": "e1", "ts": "2026-01-01T10:00:00Z", "sku": "S", "site": "A"}
CASES = [
    ("pos", {**BASE, "qty": 2}),
    ("pos", {**BASE, "type": "return", "qty": 1}),
    ("pos", {**BASE, "qty": 0}),
    ("pos", {**BASE}),
    ("inventory", {**BASE, "type": "snapshot", "on_hand": 0}),
    ("inventory", {**BASE, "type": "snapshot"}),
    ("inventory", {**BASE, "type": "adjustment", "delta": -3}),
    ("inventory", {**BASE, "type": "adjustment", "delta": 0}),
    (
        "shipments",
        {**BASE, "type": "inbound_expected", "qty": 3, "eta": 1767225600000, "shipment_id": "p"},
    ),
    ("shipments", {**BASE, "type": "inbound_expected", "qty": 3, "shipment_id": "p"}),
    (
        "shipments",
        {**BASE, "type": "transfer_failed", "qty": 3, "from_site": "B", "proposal_id": "x"},
    ),
    ("shipments", {**BASE, "type": "transfer_failed", "qty": 3, "from_site": "B"}),
    ("shipments", {**BASE, "type": "transfer_received", "qty": 3}),
    ("forecasts", {**BASE, "mean_per_day": 2.5}),
    ("forecasts", {**BASE, "type": "forecast", "mean_per_day": 0, "error_cv": 0.3}),
    ("forecasts", {**BASE, "mean_per_day": 1, "forecast_version": "w49"}),
    ("forecasts", {**BASE}),
    ("forecasts", {**BASE, "mean_per_day": -1}),
    ("forecasts", {**BASE, "mean_per_day": 1, "error_cv": 0}),
    ("forecasts", {**BASE, "mean_per_day": 1, "error_cv": 0.0005}),
    ("forecasts", {**BASE, "mean_per_day": 1, "error_cv": 0.001}),
    ("forecasts", {**BASE, "mean_per_day": 1e-9}),
    ("forecasts", {**BASE, "mean_per_day": 1e-6}),
    ("forecasts", {**BASE, "mean_per_day": 1, "error_cv": 10.5}),
    ("forecasts", {**BASE, "mean_per_day": 1, "type": "sale"}),
]


@pytest.mark.parametrize(("kind", "body"), CASES)
def test_schema_and_parser_agree(kind: str, body: dict) -> None:
    schema_ok = validator(kind).is_valid(body)
    parsed = parse_message(
        RawMessage(f"stockshift.{kind}", 0, 0, None, orjson.dumps(body), 0),
        topic_kinds_for("stockshift."),
        frozenset({"A", "B"}),
    )
    assert schema_ok == isinstance(parsed, Event), parsed


def test_outputs_match_their_schemas() -> None:
    ctx = DecisionContext.build(two_store_network(), policy())
    state = None
    proposals = []
    for e in [*warm_history(), event("count-B", EventType.SNAPSHOT, 30.2, "B", 20)]:
        state, out = step(state, e, ctx)
        proposals.extend(out.proposals)
    assert proposals
    body = orjson.loads(orjson.dumps(proposal_dict(proposals[0])))
    validator("proposal").validate(body)
    letter = DeadLetter("stockshift.pos", 0, 5, b"k", b"\xff", "bad", "not_json", 0)
    headers = dead_letter_headers(dead_letter_message(letter).headers)
    documented = (ROOT / "docs" / "contract.md").read_text()
    assert headers and all(f"`stockshift.{name}`" in documented for name in headers)


def test_a_decision_record_reads_as_its_fields_with_the_time_as_ts_last() -> None:
    """Each field in the record's order, nested records as objects, `ts_ms` written as `ts`
    at the end, and no `traceparent` unless the trigger had one: checked against orjson's
    own reading of the whole record: a real proposal's record, and one with an alternative."""
    ctx = DecisionContext.build(two_store_network(), policy())
    state = None
    records = []
    for e in [*warm_history(), event("count-B", EventType.SNAPSHOT, 30.2, "B", 20)]:
        state, out = step(state, e, ctx)
        records += [*out.decisions, *(p.record for p in out.proposals if p.record)]
    assert records and all(r.receiver and r.evidence for r in records)
    traced = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    rejected = Candidate("C", 2, 11.6, 8.37, 0.0835, 1.1835, -14.9695, "no_net_benefit")
    weighed = dataclasses.replace(records[-1], alternatives=(rejected,), traceparent=traced)
    for record in [*records, weighed]:
        expected = orjson.loads(orjson.dumps(record))
        expected["ts"] = rfc3339(expected.pop("ts_ms"))
        if expected["traceparent"] is None:
            del expected["traceparent"]
        written = orjson.loads(decision_json(record))
        assert list(written) == list(expected) and written == expected
    assert orjson.loads(decision_json(records[-1]))["outcome"] == records[-1].outcome.value


@given(st.integers(min_value=-62_135_596_800_000 + 86_400_000, max_value=253_402_300_799_999))
def test_output_times_read_as_the_datetime_library_writes_them(ts_ms: int) -> None:
    """Every output time is RFC 3339 UTC to the millisecond, exactly as datetime formats the
    same instant (rfc3339 caches each second's text)."""
    second, ms = divmod(ts_ms, 1000)
    expected = datetime.fromtimestamp(second, tz=UTC).replace(microsecond=ms * 1000)
    assert rfc3339(ts_ms) == expected.isoformat(timespec="milliseconds")
    assert datetime.fromisoformat(rfc3339(ts_ms)) == expected
