"""Signed control commands: verification, replay protection and their effect on governance.

Envelope (the Kafka message value), UTF-8 JSON:
    {"key_id": "ops-2026", "signature": "<hex HMAC-SHA256 of body>", "body": "<JSON text>"}
Body fields: `command`, `nonce` (unique), `ts` (when signed; epoch ms or RFC 3339),
optional `effective_at` (event time from which it applies; default `ts`), `target`
(policy version, site or SKU), `value` (approval threshold), `reason`, `actor`.
The signature covers the body's exact bytes, so nothing in it can be altered.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson

from operators.parse import Invalid, parse_timestamp
from state.governance import (
    DEFAULT_GOVERNANCE,
    Action,
    ControlCommand,
    ControlRejection,
    Governance,
)
from state.records import DecisionRecord, Outcome, RawMessage

MAX_CONTROL_BYTES: Final = 4096
# What `sign` produces: HMAC-SHA256 as 64 lowercase hex digits. Anything else is malformed
# before any comparison (compare_digest raises on non-ASCII text).
_SIGNATURE: Final = re.compile(r"[0-9a-f]{64}")
_NEEDS_TARGET: Final = frozenset(
    {
        Action.ACTIVATE_POLICY,
        Action.FREEZE_SITE,
        Action.UNFREEZE_SITE,
        Action.FREEZE_SKU,
        Action.UNFREEZE_SKU,
    }
)


def sign(body: bytes, secret: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def envelope(body: Mapping[str, Any], key_id: str, secret: bytes) -> bytes:
    """What `stockshift control` produces: the body text and its signature."""
    text = orjson.dumps(dict(body))
    return orjson.dumps(
        {"key_id": key_id, "signature": sign(text, secret), "body": text.decode("utf-8")}
    )


# Kafka's timestamp types (confluent_kafka.TIMESTAMP_*): set by the producer, or by the
# broker when it appended the message (a topic with message.timestamp.type=LogAppendTime).
CREATE_TIME: Final = 1
LOG_APPEND_TIME: Final = 2
# Nonces of accepted commands are kept for as long as a command can be accepted: all of
# them (only a holder of a key can add one), up to this many, oldest signing time out first.
MAX_NONCES: Final = 1_000_000


def arrival_ms(timestamp_type: int, timestamp_ms: int | None, received_ms: int, live: bool) -> int:
    """When a control message reached Kafka, as far as can be trusted: staleness is judged
    against it.

    The broker's append time when the topic has one (a producer cannot set it). Otherwise
    the producer's timestamp is only a claim: a live message is judged by the time we
    received it, so a captured command re-published later is stale; a message re-read at
    start-up by its claimed time, never later than now (the control topic keeps every
    command, so a replay is caught by its nonce there)."""
    if timestamp_type == LOG_APPEND_TIME and timestamp_ms is not None:
        return timestamp_ms
    if live or timestamp_ms is None:
        return received_ms
    return min(timestamp_ms, received_ms)


@dataclass(frozen=True, slots=True)
class ControlAuth:
    """What checking a control message needs: the signing secrets by key id (several during
    a rotation), how far a command's signing time may be from its arrival, and the policy
    versions `activate_policy` may name."""

    keys: Mapping[str, bytes]
    max_skew_ms: int = 300_000
    known_versions: frozenset[str] = frozenset()


@dataclass(slots=True)
class NonceMemory:
    """The nonces of every command accepted so far, with their signing times."""

    seen: dict[str, int] = field(default_factory=dict)

    def check_and_remember(self, nonce: str, ts_ms: int, window_ms: int = 0) -> bool:
        """False if the nonce was already used. Nothing is forgotten short of MAX_NONCES:
        a nonce dropped by time would let a captured command be replayed once the skew
        window is judged by a clock the sender controls."""
        if nonce in self.seen:
            return False
        if len(self.seen) >= MAX_NONCES:
            oldest = sorted(self.seen.items(), key=lambda item: item[1])[: MAX_NONCES // 10]
            for old, _ in oldest:
                del self.seen[old]
        self.seen[nonce] = ts_ms
        return True


def verify(
    value: bytes | None,
    auth: ControlAuth,
    message_ts_ms: int,
    nonces: NonceMemory,
    offset: int | None = None,
) -> ControlCommand | ControlRejection:
    """Authenticate and validate one control message against its arrival time
    (`arrival_ms`): the broker's clock, not the signer's, so a command cannot be made fresh
    by the clock of whoever publishes it. Never raises: any failure is a rejection."""

    try:
        return _verify(value, auth, message_ts_ms, nonces, offset)
    except Exception as exc:  # authentication fails closed: a rejection, never a raise
        detail = f"control message could not be checked: {type(exc).__name__}"
        return ControlRejection("malformed", detail, None, None, message_ts_ms, offset)


@dataclass(frozen=True, slots=True)
class _Envelope:
    key_id: str
    signature: str
    body_text: str


class _Rejected(Exception):
    """Raised inside this module only; always turned into a ControlRejection."""

    def __init__(self, reason: str, detail: str, key_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason, self.key_id = reason, key_id


def _verify(
    value: bytes | None,
    auth: ControlAuth,
    message_ts_ms: int,
    nonces: NonceMemory,
    offset: int | None,
) -> ControlCommand | ControlRejection:
    try:
        outer = _envelope(value)
        body = _authenticated_body(outer, auth.keys)
    except _Rejected as bad:
        return ControlRejection(bad.reason, str(bad), bad.key_id, None, message_ts_ms, offset)
    try:
        return _command(body, outer.key_id, message_ts_ms, nonces, auth)
    except Invalid as bad:
        nonce = body.get("nonce")
        nonce = nonce if isinstance(nonce, str) else None
        return ControlRejection(bad.reason, str(bad), outer.key_id, nonce, message_ts_ms, offset)


def _envelope(value: bytes | None) -> _Envelope:
    """The outer JSON: which key signed what body, with what signature."""
    if value is None or not value:
        raise _Rejected("malformed", "empty control message")
    if len(value) > MAX_CONTROL_BYTES:
        raise _Rejected(
            "oversized", f"control message is {len(value)} bytes; max {MAX_CONTROL_BYTES}"
        )
    try:
        outer = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise _Rejected("malformed", "control message is not UTF-8 JSON") from None
    if not isinstance(outer, dict):
        raise _Rejected("malformed", "control message must be a JSON object")
    key_id, signature, body_text = outer.get("key_id"), outer.get("signature"), outer.get("body")
    if isinstance(key_id, str) and isinstance(signature, str) and isinstance(body_text, str):
        return _Envelope(key_id, signature, body_text)
    raise _Rejected("unsigned", "control message needs key_id, signature and body")


def _authenticated_body(outer: _Envelope, keys: Mapping[str, bytes]) -> dict[str, Any]:
    """The body, once its signature checks out against the named key."""
    if _SIGNATURE.fullmatch(outer.signature) is None:
        raise _Rejected("malformed", "signature must be 64 lowercase hex digits", outer.key_id[:64])
    secret = keys.get(outer.key_id)
    if secret is None:
        raise _Rejected("unknown_key", f"no control key with id {outer.key_id!r:.40}", outer.key_id)
    body_bytes = outer.body_text.encode("utf-8")
    if not hmac.compare_digest(sign(body_bytes, secret), outer.signature):
        raise _Rejected("bad_signature", "signature does not match the body", outer.key_id)
    try:
        body = orjson.loads(body_bytes)
    except orjson.JSONDecodeError:
        raise _Rejected("malformed", "body is not JSON", outer.key_id) from None
    if not isinstance(body, dict):
        raise _Rejected("malformed", "body must be a JSON object", outer.key_id)
    return body


def _command(
    body: Mapping[str, Any],
    key_id: str,
    message_ts_ms: int,
    nonces: NonceMemory,
    auth: ControlAuth,
) -> ControlCommand:
    action = _action(body)
    nonce = body.get("nonce")
    if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128:
        raise Invalid("malformed", "nonce must be a string of 8-128 characters")
    ts_ms = parse_timestamp(body.get("ts"))
    if abs(ts_ms - message_ts_ms) > auth.max_skew_ms:
        raise Invalid(
            "stale", f"signed at {ts_ms}, more than {auth.max_skew_ms} ms from its arrival"
        )
    effective_ms = _checked_fields(body, action, ts_ms)
    target, value = body.get("target"), body.get("value")
    if action is Action.ACTIVATE_POLICY and target not in auth.known_versions:
        raise Invalid("unknown_policy_version", f"policy version {target!r} is not loaded")
    if not nonces.check_and_remember(nonce, ts_ms, auth.max_skew_ms):
        raise Invalid("replayed", f"nonce {nonce!r} was already used")
    reason, actor = body.get("reason", ""), body.get("actor", "")
    return ControlCommand(
        nonce=nonce,
        action=action,
        ts_ms=ts_ms,
        effective_at_ms=effective_ms,
        key_id=key_id,
        target=target if isinstance(target, str) else None,
        value=float(value)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else None,
        reason=str(reason)[:500],
        actor=str(actor)[:100],
    )


def check_command(body: Mapping[str, Any], ts_ms: int) -> None:
    """A command as the flow will judge its action, target, value and `effective_at`
    (raises `Invalid`): the sender checks before signing, so a typo is an error at the
    terminal rather than a rejection in the flow's log. Whether a policy version is loaded
    only the flow knows."""
    _checked_fields(body, _action(body), ts_ms)


def _action(body: Mapping[str, Any]) -> Action:
    try:
        return Action(str(body.get("command")))
    except ValueError:
        raise Invalid("unknown_command", f"unknown command {body.get('command')!r:.40}") from None


def _checked_fields(body: Mapping[str, Any], action: Action, ts_ms: int) -> int:
    """When the command takes effect, after checking its target and value."""
    effective = body.get("effective_at")
    effective_ms = ts_ms if effective is None else parse_timestamp(effective, "effective_at")
    target = body.get("target")
    if action in _NEEDS_TARGET and (not isinstance(target, str) or not 1 <= len(target) <= 64):
        raise Invalid("malformed", f"{action.value} needs a `target`")
    value = body.get("value")
    if action is Action.SET_APPROVAL_THRESHOLD and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise Invalid("malformed", "set_approval_threshold needs a non-negative `value`")
    return effective_ms


def apply_command(governance: Governance, command: ControlCommand) -> Governance:
    action, target = command.action, command.target or ""
    if action is Action.PAUSE:
        return replace(governance, paused=True)
    if action is Action.RESUME:
        return replace(governance, paused=False)
    if action is Action.FREEZE_SITE:
        return replace(governance, frozen_sites=governance.frozen_sites | {target})
    if action is Action.UNFREEZE_SITE:
        return replace(governance, frozen_sites=governance.frozen_sites - {target})
    if action is Action.FREEZE_SKU:
        return replace(governance, frozen_skus=governance.frozen_skus | {target})
    if action is Action.UNFREEZE_SKU:
        return replace(governance, frozen_skus=governance.frozen_skus - {target})
    if action is Action.SET_APPROVAL_THRESHOLD:
        return replace(governance, approval_threshold=command.value)
    return replace(governance, policy_version=target)


@dataclass(slots=True)
class Timeline:
    """Governance as a function of event time, built from commands in effective order.

    Decisions ask `at(event_ts)`, so a replay of the same events under the same commands
    makes the same decisions, whatever the wall clock says.
    """

    commands: list[tuple[int, int, ControlCommand]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    states: list[Governance] = field(default_factory=list)
    _seq: int = 0

    def add(self, command: ControlCommand) -> None:
        self._seq += 1
        bisect.insort(
            self.commands, (command.effective_at_ms, self._seq, command), key=lambda c: (c[0], c[1])
        )
        governance = DEFAULT_GOVERNANCE
        self.starts, self.states = [], []
        for effective, _, cmd in self.commands:
            governance = apply_command(governance, cmd)
            self.starts.append(effective)
            self.states.append(governance)

    def at(self, ts_ms: int) -> Governance:
        index = bisect.bisect_right(self.starts, ts_ms) - 1
        return self.states[index] if index >= 0 else DEFAULT_GOVERNANCE


def authenticate(
    state: NonceMemory | None,
    raw: RawMessage,
    *,
    auth: ControlAuth,
    initial: NonceMemory,
) -> tuple[NonceMemory, ControlCommand | ControlRejection]:
    """The flow's `control_auth` step: verify against the nonces seen so far. The flow reads
    the control topic live (from where start-up left off)."""
    nonces = state if state is not None else NonceMemory(dict(initial.seen))
    kind = LOG_APPEND_TIME if raw.broker_time else CREATE_TIME
    live = raw.received_at_ms > 0
    ts = arrival_ms(kind, raw.timestamp_ms, raw.received_at_ms, live)
    return nonces, verify(raw.value, auth, ts, nonces, raw.offset)


def control_decision(
    verdict: ControlCommand | ControlRejection, policy_version: str
) -> DecisionRecord:
    """Every control message leaves an audit line, applied or rejected."""
    if isinstance(verdict, ControlCommand):
        target = f" {verdict.target}" if verdict.target else ""
        value = f" {verdict.value}" if verdict.value is not None else ""
        return DecisionRecord(
            sku="",
            site="",
            ts_ms=verdict.effective_at_ms,
            outcome=Outcome.CONTROL_APPLIED,
            reason=verdict.action.value,
            detail=(
                f"{verdict.action.value}{target}{value} by {verdict.actor or 'unknown'} "
                f"(key {verdict.key_id}, nonce {verdict.nonce}): "
                f"{verdict.reason or 'no reason given'}"
            ),
            policy_version=policy_version,
            trigger_event_id=verdict.nonce,
        )
    return DecisionRecord(
        sku="",
        site="",
        ts_ms=verdict.received_at_ms,
        outcome=Outcome.CONTROL_REJECTED,
        reason=verdict.reason,
        detail=f"control message rejected ({verdict.reason}): {verdict.detail}",
        policy_version=policy_version,
        trigger_event_id=verdict.nonce or f"offset-{verdict.offset}",
    )


def as_command(verdict: ControlCommand | ControlRejection) -> ControlCommand | None:
    return verdict if isinstance(verdict, ControlCommand) else None
