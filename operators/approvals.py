"""The planners' console's logic: what waits for a person, who may answer it, the events an
answer publishes, and a proposal explained in words. Pure: the console (flows/console.py),
the CLI (`stockshift pending|approve|reject`) and the tests call the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from operators.codec import rfc3339
from operators.parse import Invalid, parse_timestamp
from state.console import User, Waiting

# Decision codes, in words a planner reads.
IN_WORDS: Mapping[str, str] = {
    "no_net_benefit": "it would not pay: the sales it saves are worth less than it costs",
    "below_min_qty": "too few units to move (under the minimum transfer quantity)",
    "shelf_life": "the units would expire before the receiver could sell them",
    "cooldown": "this sender received stock lately (no ping-pong)",
    "no_sender_with_surplus": "no site has stock to spare",
    "no_allowed_lane": "no lane leads to this site",
    "warming_up": "demand not observed long enough yet",
    "reservation_outstanding": "a transfer to this site is already on its way",
    "lane_capacity": "the lane is full today",
    "storage_capacity": "the receiver has no room",
    "paused": "proposals are paused",
    "data_quality": "the data looks wrong at one of the sites",
}


# A planner's note as kept (events, records, the console): long enough for a reason,
# short enough that a pasted document does not ride along.
MAX_NOTE_CHARS = 500


def in_words(code: str | None) -> str:
    if not code:
        return ""
    return IN_WORDS.get(code, code.replace("_", " "))


def waiting_from_proposal(body: Mapping[str, Any]) -> Waiting | None:
    """A proposal message as a waiting item; None unless it needs approval and is sound."""
    if body.get("status") != "needs_approval":
        return None
    try:
        created = parse_timestamp(body.get("created_at"), "created_at")
        expires = parse_timestamp(body.get("expires_at"), "expires_at")
        evidence = body.get("evidence") or {}
        return Waiting(
            proposal_id=str(body["proposal_id"]),
            sku=str(body["sku"]),
            from_site=str(body["from_site"]),
            to_site=str(body["to_site"]),
            qty=int(body["qty"]),
            created_ms=created,
            expires_ms=expires,
            value=float(evidence.get("value", 0.0)),
            net_benefit=float(evidence.get("net_benefit", 0.0)),
            reason=str(body.get("reason", "")),
            evidence=dict(evidence),
        )
    except (Invalid, KeyError, TypeError, ValueError):
        return None


# What a decision record about a proposal says became of it.
_ANSWERS = {
    "approved": "approved",
    "dispatched": "dispatched",
    "rejected": "rejected",
    "failed": "failed",
    "expired": "expired",
}


def note_decision(item: Waiting, record: Mapping[str, Any]) -> None:
    """Apply a decision record about this proposal: its approval reasons, an answer."""
    outcome, reason = record.get("outcome"), str(record.get("reason", ""))
    if outcome == "needs_approval":
        item.approval_reasons = tuple(str(r) for r in record.get("approval_reasons") or ())
    elif outcome in ("planner_approved", "planner_rejected"):
        item.answer = "approved" if outcome == "planner_approved" else "rejected"
        item.answered_by, item.note = record.get("actor"), str(record.get("note", ""))
    elif outcome in ("approved", "reservation_released") and item.answer is None:
        item.answer = _ANSWERS.get(reason, "approved" if outcome == "approved" else reason)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # the HTTP status the console answers with
    message: str


def refusal(user: User, item: Waiting | None, now_ms: int) -> Refusal | None:
    """Why this user may not answer this proposal now; None when they may."""
    if item is None:
        return Refusal(404, "no proposal with this id is waiting for approval")
    if not user.may_answer(item.from_site, item.to_site):
        return Refusal(
            403, f"{user.name} may not answer transfers between {item.from_site} and {item.to_site}"
        )
    if item.answer is not None:
        who = f" by {item.answered_by}" if item.answered_by else ""
        return Refusal(409, f"already {item.answer}{who}")
    if now_ms >= item.expires_ms:
        return Refusal(409, f"expired at {rfc3339(item.expires_ms)}; the stock it held is released")
    return None


def answer_event(
    item: Waiting, approve: bool, user: User, note: str, now_ms: int
) -> dict[str, Any]:
    """The contract's `transfer_approved` or `transfer_rejected`, with an id derived from the
    proposal alone: two planners or a double click publish the same event once."""
    kind = "transfer_approved" if approve else "transfer_rejected"
    return {
        "event_id": f"answer:{item.proposal_id}",
        "ts": rfc3339(now_ms),
        "type": kind,
        "sku": item.sku,
        "site": item.to_site,
        "from_site": item.from_site,
        "qty": item.qty,
        "proposal_id": item.proposal_id,
        "actor": user.name,
        "note": note[:MAX_NOTE_CHARS],
    }


def audit_record(
    item: Waiting, approve: bool, user: User, note: str, now_ms: int
) -> dict[str, Any]:
    """The decision-log line for a person's answer (who, when, why)."""
    outcome = "planner_approved" if approve else "planner_rejected"
    return {
        "ts": rfc3339(now_ms),
        "outcome": outcome,
        "reason": outcome,
        "sku": item.sku,
        "site": item.to_site,
        "proposal_id": item.proposal_id,
        "actor": user.name,
        "note": note[:MAX_NOTE_CHARS],
        "detail": f"{outcome.replace('_', ' ')} by {user.name}"
        + (f": {note[:200]}" if note else ""),
    }


def control_audit(user: User, command: str, target: str | None, now_ms: int) -> dict[str, Any]:
    return {
        "ts": rfc3339(now_ms),
        "outcome": "control_requested",
        "reason": command,
        "actor": user.name,
        "target": target,
        "detail": f"{command} {target or ''} by {user.name} from the console".replace("  ", " "),
    }


@dataclass(frozen=True, slots=True)
class ProjectionPoint:
    hour: float
    without: float
    with_transfer: float


def projection(item: Waiting, steps: int = 12) -> list[ProjectionPoint]:
    """The receiver's expected stock over the lane lead time plus a day, without and with the
    transfer (which arrives after the lead time): a straight line of expected demand."""
    receiver = item.evidence.get("receiver") or {}
    lead = float(item.evidence.get("lead_hours", 0.0))
    rate = float(receiver.get("demand_per_hour", 0.0))
    start = float(receiver.get("on_hand", 0)) + float(receiver.get("inbound", 0))
    horizon = lead + 24.0
    hours = sorted({horizon * i / steps for i in range(steps + 1)} | {lead})
    points = []
    for hour in hours:
        without = max(start - rate * hour, 0.0)
        if hour == lead:  # the arrival: a step up, drawn as two points at the same hour
            points.append(ProjectionPoint(hour, without, without))
        arrived = item.qty if hour >= lead else 0
        points.append(ProjectionPoint(hour, without, max(start + arrived - rate * hour, 0.0)))
    return points


def explanation(item: Waiting) -> list[str]:
    """The proposal in plain sentences, from the evidence the flow published with it."""
    e = item.evidence
    receiver, sender = e.get("receiver") or {}, e.get("sender") or {}
    lines = [
        f"Move {item.qty} units of {item.sku} from {item.from_site} to {item.to_site}.",
        f"{item.to_site} holds {receiver.get('on_hand', '?')} with {receiver.get('inbound', 0)} "
        f"on the way and sells about {float(receiver.get('demand_per_hour', 0)):.2f} an hour; "
        f"it should hold at least {float(receiver.get('reorder_point', 0)):.0f} (its reorder "
        f"point) and is filled up to {float(receiver.get('target', 0)):.0f}.",
        f"{item.from_site} holds {sender.get('on_hand', '?')} and sells about "
        f"{float(sender.get('demand_per_hour', 0)):.2f} an hour; it keeps "
        f"{float(sender.get('target', 0)):.0f} for itself.",
        f"The lane takes {e.get('lead_hours', '?')} h and costs "
        f"{float(e.get('transfer_cost', 0)):.2f}.",
        f"Expected lost sales avoided at {item.to_site}: "
        f"{float(e.get('expected_units_saved', 0)):.1f}; caused at {item.from_site}: "
        f"{float(e.get('expected_units_lost_at_sender', 0)):.1f}; net benefit "
        f"{float(e.get('net_benefit', 0)):.2f}.",
    ]
    for alt in e.get("alternatives") or []:
        why = in_words(alt.get("rejected_because")) or (
            f"it pays less (net benefit {float(alt.get('net_benefit', 0)):.2f})"
        )
        lines.append(f"Not from {alt.get('from_site')}: {why}.")
    return lines
