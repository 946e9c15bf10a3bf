"""The execution layer's rules (operators/execution.py), with made-up WMS replies."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import execution as rules
from state.execution import (
    Action,
    CallFailed,
    ExecutionRecord,
    ExecutionSettings,
    OrderReply,
    Outcome,
    Stage,
)

SITES = frozenset({"A", "B"})
NOW = 1_767_571_200_000
PATIENCE = ExecutionSettings(max_attempts=3, backoff_base_ms=100, poll_interval_ms=10)


def proposal(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "proposal_id": "p1",
        "sku": "S",
        "from_site": "A",
        "to_site": "B",
        "qty": 4,
        "status": "proposed",
        "expires_at": NOW + 3_600_000,
    }
    body.update(changes)
    return body


def record(**changes: object) -> ExecutionRecord:
    return rules.accept(proposal(**changes), SITES, NOW)


def reply(status: str, reason: str = "") -> OrderReply:
    return OrderReply("o1", status, reason)


def test_a_proposal_goes_create_poll_ship_receive_reporting_each_step_once() -> None:
    r = record()
    assert rules.next_action(r, NOW, paused=False) is Action.CREATE
    step = rules.on_reply(r, Action.CREATE, reply("created"), NOW, PATIENCE)
    assert step.record.stage is Stage.ORDERED and not step.outcomes
    step = rules.on_reply(step.record, Action.POLL, reply("shipped"), NOW + 10, PATIENCE)
    assert [e.kind for e in step.outcomes] == [Outcome.DISPATCHED]
    again = rules.on_reply(step.record, Action.POLL, reply("shipped"), NOW + 20, PATIENCE)
    assert not again.outcomes  # reported once
    done = rules.on_reply(again.record, Action.POLL, reply("received"), NOW + 30, PATIENCE)
    assert [e.kind for e in done.outcomes] == [Outcome.RECEIVED]
    assert done.record.stage is Stage.DONE
    assert rules.next_action(done.record, NOW + 40, paused=False) is Action.NONE
    assert done.outcomes[0].event_id == "exec:p1:transfer_received"


def test_an_expired_proposal_is_never_started_and_one_expiring_before_dispatch_is_cancelled() -> (
    None
):
    late = record(expires_at=NOW - 1)
    assert rules.next_action(late, NOW, paused=False) is Action.NONE
    expired = rules.expire(late, NOW)
    assert expired is not None and expired.stage is Stage.EXPIRED
    ordered = rules.on_reply(record(), Action.CREATE, reply("created"), NOW, PATIENCE).record
    after = NOW + 3_600_000
    assert rules.next_action(ordered, after, paused=False) is Action.CANCEL
    step = rules.on_reply(ordered, Action.CANCEL, reply("cancelled"), after, PATIENCE)
    assert [e.kind for e in step.outcomes] == [Outcome.REJECTED]
    assert step.outcomes[0].reason == "expired before dispatch"


def test_paused_means_no_new_orders_but_orders_in_flight_are_followed() -> None:
    assert rules.next_action(record(), NOW, paused=True) is Action.WAIT
    ordered = rules.on_reply(record(), Action.CREATE, reply("created"), NOW, PATIENCE).record
    assert rules.next_action(ordered, NOW + 10, paused=True) is Action.POLL


def test_sender_cannot_pick_reports_rejected_with_the_reason() -> None:
    step = rules.on_reply(
        record(), Action.POLL, reply("refused", "not enough stock"), NOW, PATIENCE
    )
    assert [(e.kind, e.reason) for e in step.outcomes] == [(Outcome.REJECTED, "not enough stock")]
    assert step.record.stage is Stage.DONE


def test_receipt_failure_reports_failed_and_asks_a_person() -> None:
    shipped = rules.on_reply(record(), Action.POLL, reply("shipped"), NOW, PATIENCE).record
    step = rules.on_reply(shipped, Action.POLL, reply("receipt_failed"), NOW + 10, PATIENCE)
    assert [e.kind for e in step.outcomes] == [Outcome.FAILED]
    assert step.escalation is not None and step.escalation.kind == "receipt_failed"
    overdue = ExecutionSettings(receipt_timeout_ms=1000)
    assert rules.receipt_overdue(shipped, NOW + 1000, overdue)
    timed_out = rules.time_out_receipt(shipped, NOW + 1000)
    assert [e.kind for e in timed_out.outcomes] == [Outcome.FAILED]


def test_retryable_failures_back_off_then_escalate_without_reporting() -> None:
    r, rng = record(), random.Random(1)
    delays = []
    for attempt in range(PATIENCE.max_attempts - 1):
        step = rules.on_reply(r, Action.CREATE, CallFailed(True, "HTTP 503"), NOW, PATIENCE, rng)
        assert step.escalation is None and not step.outcomes
        delays.append(step.record.next_at_ms - NOW)
        r = step.record
        assert r.attempts == attempt + 1
    assert delays[1] > delays[0] / 2  # grows (full jitter keeps at least half the ceiling)
    last = rules.on_reply(r, Action.CREATE, CallFailed(True, "HTTP 503"), NOW, PATIENCE, rng)
    assert last.escalation is not None and last.escalation.kind == "attempts_exhausted"
    assert not last.outcomes and len(last.escalation.tried) == PATIENCE.max_attempts


def test_a_refused_order_is_rejected_and_a_garbled_answer_goes_to_a_person() -> None:
    refused = rules.on_reply(
        record(), Action.CREATE, CallFailed(False, "HTTP 422", True), NOW, PATIENCE
    )
    assert [e.kind for e in refused.outcomes] == [Outcome.REJECTED]
    assert refused.escalation is not None and refused.escalation.kind == "refused_by_wms"
    garbled = rules.on_reply(record(), Action.CREATE, CallFailed(False, "not JSON"), NOW, PATIENCE)
    assert not garbled.outcomes  # the order may exist: nothing is released on a guess
    assert garbled.escalation is not None and garbled.escalation.kind == "unexpected_reply"
    cancel = rules.on_reply(record(), Action.CANCEL, CallFailed(False, "HTTP 500?"), NOW, PATIENCE)
    assert cancel.escalation is not None and cancel.escalation.kind == "compensation_failed"


def test_waiting_for_approval_until_a_matching_approval() -> None:
    waiting = record(status="needs_approval")
    assert rules.next_action(waiting, NOW, paused=False) is Action.WAIT
    assert rules.approve(waiting, 3, "A", NOW).stage is Stage.AWAITING_APPROVAL  # wrong qty
    assert rules.approve(waiting, 4, "A", NOW).stage is Stage.READY
    assert rules.decline(waiting, "no").stage is Stage.DONE


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"to_site": "Z"}, "unknown_site"),
        ({"qty": 0}, "invalid_field"),
        ({"qty": True}, "invalid_field"),
        ({"status": "granted"}, "invalid_field"),
        ({"expires_at": "tomorrow"}, "invalid_field"),
        ({"proposal_id": ""}, "invalid_field"),
        ({"to_site": "A"}, "invalid_field"),
    ],
)
def test_bad_proposals_are_refused_with_a_reason(change: dict[str, object], reason: str) -> None:
    with pytest.raises(rules.BadProposal) as raised:
        rules.accept(proposal(**change), SITES, NOW)
    assert raised.value.reason == reason


STATUSES = ["created", "picked", "shipped", "received", "refused", "cancelled", "receipt_failed"]
replies = st.one_of(
    st.sampled_from(STATUSES).map(reply),
    st.builds(CallFailed, st.booleans(), st.just("x"), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(replies, max_size=25), st.integers(0, 7_200_000))
def test_whatever_the_wms_says_each_outcome_is_reported_at_most_once(
    answers: list[OrderReply | CallFailed], expires_in: int
) -> None:
    """And a transfer is never both received and rejected, nor reported after it finished."""
    r = record(expires_at=NOW + expires_in)
    seen: list[Outcome] = []
    now = NOW
    for answer in answers:
        action = rules.next_action(r, r.next_at_ms, paused=False)
        if action in (Action.NONE, Action.WAIT):
            break
        now = max(now, r.next_at_ms)
        step = rules.on_reply(r, action, answer, now, PATIENCE, random.Random(0))
        seen += [e.kind for e in step.outcomes]
        r = step.record
    assert len(seen) == len(set(seen))
    assert not {Outcome.RECEIVED, Outcome.REJECTED} <= set(seen)
    assert not {Outcome.DISPATCHED, Outcome.REJECTED} <= set(seen)
    assert not {Outcome.RECEIVED, Outcome.FAILED} <= set(seen)
    if Outcome.RECEIVED in seen or Outcome.FAILED in seen:
        assert Outcome.DISPATCHED in seen  # goods issue is always reported before
