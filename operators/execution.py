"""The execution layer's decisions, as pure functions of a record, a reply and the time.

`stockshift execute` (flows/execute.py) asks `next_action` what to do with a proposal's
transfer order, does it through an adapter (adapters/wms.py), and hands the reply to
`on_reply`, which returns the new record, the outcome events to publish and, when a person
must act, an escalation. The same functions run in the tests with made-up replies.

The rules, as in ERP stock-transport orders (two legs: goods issue at the sender, goods
receipt at the receiver):
- an expired proposal is never started; one that expires before goods issue is cancelled;
- the sender cannot pick → `transfer_rejected` (the flow releases the reservation);
- receipt fails or times out → `transfer_failed` (the flow returns the units to the sender)
  and a person is asked to find the goods;
- a call that fails is retried with exponential backoff; after `max_attempts` in a row, or
  when cancelling fails that often, a person is asked;
- an answer that is not in the contract is never guessed at: a person is asked.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from operators.parse import Invalid, parse_timestamp
from state.execution import (
    Action,
    CallFailed,
    Escalation,
    ExecutionRecord,
    ExecutionSettings,
    OrderReply,
    Outcome,
    OutcomeEvent,
    Reply,
    Stage,
)

_MAX_TRIED = 20
_MAX_ID = 128
_MAX_QTY = 10_000_000


@dataclass(frozen=True, slots=True)
class Step:
    """What one reply changed: the record, events to publish, a case for a person."""

    record: ExecutionRecord
    outcomes: tuple[OutcomeEvent, ...] = ()
    escalation: Escalation | None = None


class BadProposal(ValueError):
    """A proposal the executor cannot carry out (dead-lettered with this reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _text(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID:
        raise BadProposal("invalid_field", f"{name}: expected a string of 1-{_MAX_ID} chars")
    return value


def accept(raw: Any, known_sites: frozenset[str], now_ms: int) -> ExecutionRecord:
    """A proposal message, validated into a new record (raises BadProposal)."""
    if not isinstance(raw, Mapping):
        raise BadProposal("invalid_field", "a proposal is a JSON object")
    proposal_id, sku = _text(raw, "proposal_id"), _text(raw, "sku")
    from_site, to_site = _text(raw, "from_site"), _text(raw, "to_site")
    for site in (from_site, to_site):
        if site not in known_sites:
            raise BadProposal("unknown_site", f"site {site!r} is not in the network")
    if from_site == to_site:
        raise BadProposal("invalid_field", "from_site and to_site are the same site")
    qty = raw.get("qty")
    if isinstance(qty, bool) or not isinstance(qty, int) or not 0 < qty <= _MAX_QTY:
        raise BadProposal("invalid_field", f"qty: expected an integer 1-{_MAX_QTY}")
    status = raw.get("status")
    if status not in ("proposed", "needs_approval"):
        raise BadProposal("invalid_field", "status: expected proposed or needs_approval")
    try:
        expires_at_ms = parse_timestamp(raw.get("expires_at"), "expires_at")
    except Invalid as exc:
        raise BadProposal("invalid_field", str(exc)) from None
    trace = raw.get("traceparent")
    return ExecutionRecord(
        proposal_id=proposal_id,
        sku=sku,
        from_site=from_site,
        to_site=to_site,
        qty=qty,
        expires_at_ms=expires_at_ms,
        stage=Stage.READY if status == "proposed" else Stage.AWAITING_APPROVAL,
        accepted_ms=now_ms,
        next_at_ms=now_ms,
        traceparent=trace if isinstance(trace, str) and len(trace) <= 64 else None,
    )


def approve(record: ExecutionRecord, qty: int, from_site: str, now_ms: int) -> ExecutionRecord:
    """A `transfer_approved` for this proposal: it may go ahead (if it still matches)."""
    if record.stage is not Stage.AWAITING_APPROVAL:
        return record
    if qty != record.qty or from_site != record.from_site:
        return _noted(record, f"approval ignored: qty {qty} from {from_site} does not match")
    return replace(record, stage=Stage.READY, next_at_ms=now_ms)


def next_action(record: ExecutionRecord, now_ms: int, paused: bool) -> Action:
    """What to do now. Expiry is checked here, so an expired proposal is never started."""
    stage = record.stage
    if stage.finished:
        return Action.NONE
    if now_ms < record.next_at_ms:
        return Action.WAIT
    if stage is Stage.AWAITING_APPROVAL:
        return Action.WAIT
    if stage is Stage.READY:
        if now_ms >= record.expires_at_ms:
            return Action.NONE  # `expire` finishes it
        return Action.WAIT if paused else Action.CREATE
    if stage is Stage.ORDERED and now_ms >= record.expires_at_ms:
        return Action.CANCEL
    if stage is Stage.CANCELLING:
        return Action.CANCEL
    return Action.POLL


def expire(record: ExecutionRecord, now_ms: int) -> ExecutionRecord | None:
    """A record that expired before it was started or approved; None when it has not.
    Nothing is reported: the flow releases an expired proposal's reservation by itself."""
    unstarted = record.stage in (Stage.READY, Stage.AWAITING_APPROVAL)
    if not unstarted or now_ms < record.expires_at_ms:
        return None
    return replace(
        _noted(record, "expired before it was started"), stage=Stage.EXPIRED, reason="expired"
    )


def on_reply(
    record: ExecutionRecord,
    action: Action,
    reply: Reply,
    now_ms: int,
    settings: ExecutionSettings,
    rng: random.Random | None = None,
) -> Step:
    """The record after the adapter answered `action` with `reply`."""
    if isinstance(reply, CallFailed):
        return _failed_call(record, action, reply, now_ms, settings, rng)
    record = replace(record, attempts=0, failing_since_ms=-1, order_id=reply.order_id)
    record = _noted(record, f"{action.value}: {reply.status}")
    handler = _BY_STATUS.get(reply.status)
    issued = Outcome.DISPATCHED.value in record.reported
    if issued and reply.status in _BEFORE_ISSUE:
        handler = None  # the goods left already: a WMS that says otherwise needs a person
    if handler is None:
        return _escalate(
            record, "unexpected_reply", f"WMS answered status {reply.status!r}", now_ms
        )
    return handler(record, reply, now_ms, settings)


def _failed_call(
    record: ExecutionRecord,
    action: Action,
    reply: CallFailed,
    now_ms: int,
    settings: ExecutionSettings,
    rng: random.Random | None,
) -> Step:
    record = _noted(record, f"{action.value} failed: {reply.detail}")
    attempts = record.attempts + 1
    since = record.failing_since_ms if record.failing_since_ms >= 0 else now_ms
    if reply.refused and action is Action.CREATE:
        # The WMS refused the order itself (a 4xx): it will not be carried out.
        step = _report(record, Outcome.REJECTED, now_ms, f"refused by the WMS: {reply.detail}")
        return _escalate(step.record, "refused_by_wms", reply.detail, now_ms, step.outcomes)
    if not reply.retryable or attempts >= settings.max_attempts:
        kind = "compensation_failed" if action is Action.CANCEL else "attempts_exhausted"
        if not reply.retryable:
            kind = "compensation_failed" if action is Action.CANCEL else "unexpected_reply"
        return _escalate(
            record, kind, f"{attempts} failed {action.value} calls: {reply.detail}", now_ms
        )
    delay = backoff_ms(attempts, settings, rng)
    return Step(
        replace(record, attempts=attempts, failing_since_ms=since, next_at_ms=now_ms + delay)
    )


def backoff_ms(attempt: int, settings: ExecutionSettings, rng: random.Random | None) -> int:
    """Exponential backoff with full jitter (AWS architecture blog's 'full jitter')."""
    ceiling = min(settings.backoff_max_ms, settings.backoff_base_ms * 2 ** (attempt - 1))
    return int((rng or random).uniform(0.5, 1.0) * ceiling)


def _on_progress(
    record: ExecutionRecord, reply: OrderReply, now_ms: int, settings: ExecutionSettings
) -> Step:
    """created or picked: goods not issued yet."""
    if record.stage is Stage.CANCELLING:
        return Step(replace(record, next_at_ms=now_ms))  # cancel again
    return Step(replace(record, stage=Stage.ORDERED, next_at_ms=now_ms + settings.poll_interval_ms))


def _on_shipped(
    record: ExecutionRecord, reply: OrderReply, now_ms: int, settings: ExecutionSettings
) -> Step:
    """Goods issued at the sender (also when a cancel came too late)."""
    step = _report(record, Outcome.DISPATCHED, now_ms)
    dispatched = record.dispatched_ms if record.dispatched_ms >= 0 else now_ms
    if now_ms - dispatched >= settings.receipt_timeout_ms:
        return _receipt_failed(step, now_ms, "no receipt within the receipt timeout")
    moved = replace(
        step.record,
        stage=Stage.IN_TRANSIT,
        dispatched_ms=dispatched,
        next_at_ms=now_ms + settings.poll_interval_ms,
    )
    return Step(moved, step.outcomes)


def _on_received(
    record: ExecutionRecord, reply: OrderReply, now_ms: int, settings: ExecutionSettings
) -> Step:
    outcomes: tuple[OutcomeEvent, ...] = ()
    if Outcome.DISPATCHED.value not in record.reported:
        step = _report(record, Outcome.DISPATCHED, now_ms)  # a receipt proves the issue
        record, outcomes = step.record, step.outcomes
    step = _report(record, Outcome.RECEIVED, now_ms)
    return Step(replace(step.record, stage=Stage.DONE, reason="received"), outcomes + step.outcomes)


def _on_refused(
    record: ExecutionRecord, reply: OrderReply, now_ms: int, settings: ExecutionSettings
) -> Step:
    """The sender could not pick (stock gone): the order is void; release the reservation."""
    step = _report(record, Outcome.REJECTED, now_ms, reply.reason or "refused at pick")
    return Step(replace(step.record, stage=Stage.DONE, reason="refused"), step.outcomes)


def _on_cancelled(
    record: ExecutionRecord, reply: OrderReply, now_ms: int, settings: ExecutionSettings
) -> Step:
    why = "expired before dispatch" if now_ms >= record.expires_at_ms else "cancelled"
    step = _report(record, Outcome.REJECTED, now_ms, reply.reason or why)
    return Step(replace(step.record, stage=Stage.DONE, reason="cancelled"), step.outcomes)


def _on_receipt_failed(
    record: ExecutionRecord, reply: OrderReply, now_ms: int, settings: ExecutionSettings
) -> Step:
    if Outcome.DISPATCHED.value not in record.reported:
        step = _report(record, Outcome.DISPATCHED, now_ms)
    else:
        step = Step(record)
    return _receipt_failed(step, now_ms, reply.reason or "receipt failed")


def _receipt_failed(step: Step, now_ms: int, why: str) -> Step:
    """Goods left the sender and did not arrive: report the failure (the flow puts them
    back at the sender's books) and ask a person to find them."""
    failed = _report(step.record, Outcome.FAILED, now_ms, why)
    return _escalate(failed.record, "receipt_failed", why, now_ms, step.outcomes + failed.outcomes)


def receipt_overdue(record: ExecutionRecord, now_ms: int, settings: ExecutionSettings) -> bool:
    return (
        record.stage is Stage.IN_TRANSIT
        and record.dispatched_ms >= 0
        and now_ms - record.dispatched_ms >= settings.receipt_timeout_ms
    )


def time_out_receipt(record: ExecutionRecord, now_ms: int) -> Step:
    return _receipt_failed(Step(record), now_ms, "no receipt within the receipt timeout")


_BEFORE_ISSUE = frozenset({"created", "picked", "refused", "cancelled"})
_BY_STATUS = {
    "created": _on_progress,
    "picked": _on_progress,
    "shipped": _on_shipped,
    "received": _on_received,
    "refused": _on_refused,
    "cancelled": _on_cancelled,
    "receipt_failed": _on_receipt_failed,
}


def _report(record: ExecutionRecord, kind: Outcome, now_ms: int, reason: str = "") -> Step:
    """The outcome event, once: a record that reported it already reports nothing."""
    if kind.value in record.reported:
        return Step(record)
    event = OutcomeEvent(
        kind,
        record.proposal_id,
        record.sku,
        record.from_site,
        record.to_site,
        record.qty,
        now_ms,
        reason,
    )
    return Step(replace(record, reported=[*record.reported, kind.value]), (event,))


def _escalate(
    record: ExecutionRecord,
    kind: str,
    detail: str,
    now_ms: int,
    outcomes: tuple[OutcomeEvent, ...] = (),
) -> Step:
    case = Escalation(
        record.proposal_id,
        record.sku,
        record.from_site,
        record.to_site,
        record.qty,
        kind,
        detail,
        tuple(record.tried),
        record.order_id,
        now_ms,
    )
    return Step(replace(record, stage=Stage.ESCALATED, reason=kind), outcomes, case)


def _noted(record: ExecutionRecord, what: str) -> ExecutionRecord:
    return replace(record, tried=[*record.tried, what[:200]][-_MAX_TRIED:])


def outcome_dict(event: OutcomeEvent, ts_text: str) -> dict[str, Any]:
    """The contract's shipments event for an outcome (`site` is the receiver)."""
    body: dict[str, Any] = {
        "event_id": event.event_id,
        "ts": ts_text,
        "type": event.kind.value,
        "sku": event.sku,
        "site": event.to_site,
        "from_site": event.from_site,
        "qty": event.qty,
        "proposal_id": event.proposal_id,
    }
    if event.reason:
        body["reason"] = event.reason
    return body


def escalation_dict(case: Escalation, ts_text: str) -> dict[str, Any]:
    """A stockshift.exceptions record (configs/schemas/exception.schema.json)."""
    return {
        "exception_id": case.exception_id,
        "ts": ts_text,
        "kind": case.kind,
        "proposal_id": case.proposal_id,
        "sku": case.sku,
        "from_site": case.from_site,
        "to_site": case.to_site,
        "qty": case.qty,
        "order_id": case.order_id,
        "detail": case.detail,
        "tried": list(case.tried),
    }


def later(record: ExecutionRecord, at_ms: int) -> ExecutionRecord:
    """The same record, next due at `at_ms`."""
    return replace(record, next_at_ms=at_ms)


def decline(record: ExecutionRecord, why: str) -> ExecutionRecord:
    """A planner rejected a proposal that waited for approval: it is not carried out."""
    if record.stage is not Stage.AWAITING_APPROVAL:
        return record
    noted = _noted(record, f"rejected by a planner: {why}"[:200])
    return replace(noted, stage=Stage.DONE, reason="rejected_by_planner")


def retry(record: ExecutionRecord, now_ms: int, who: str) -> ExecutionRecord:
    """A person asks to try an escalated case again, from where it stood."""
    if Outcome.DISPATCHED.value in record.reported:
        stage = Stage.IN_TRANSIT
    else:
        stage = Stage.ORDERED if record.order_id else Stage.READY
    noted = _noted(record, who)
    return replace(
        noted, stage=stage, attempts=0, failing_since_ms=-1, next_at_ms=now_ms, reason=""
    )


def withdraw(record: ExecutionRecord, now_ms: int, who: str) -> Step:
    """A person gives up an escalated case: its order is cancelled if it has one, else it is
    reported rejected (the flow releases the reservation). Goods already issued cannot be
    withdrawn: the record is returned as it is."""
    if Outcome.DISPATCHED.value in record.reported:
        return Step(record)
    noted = _noted(record, who)
    if record.order_id:
        return Step(replace(noted, stage=Stage.CANCELLING, attempts=0, next_at_ms=now_ms))
    step = _report(noted, Outcome.REJECTED, now_ms, "withdrawn by a person")
    return Step(replace(step.record, stage=Stage.DONE, reason="withdrawn"), step.outcomes)
