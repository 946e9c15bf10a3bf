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
from collections.abc import Collection, Mapping
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


@dataclass(slots=True)
class NonceMemory:
    """Nonces seen within the accepted clock skew; older ones would be stale anyway."""

    seen: dict[str, int] = field(default_factory=dict)

    def check_and_remember(self, nonce: str, ts_ms: int, window_ms: int) -> bool:
        """False if the nonce was already used; forgets nonces older than the window."""
        if nonce in self.seen:
            return False
        horizon = ts_ms - 2 * window_ms
        if len(self.seen) > 1024:
            self.seen = {n: t for n, t in self.seen.items() if t >= horizon}
        self.seen[nonce] = ts_ms
        return True


def verify(
    value: bytes | None,
    keys: Mapping[str, bytes],
    message_ts_ms: int,
    nonces: NonceMemory,
    max_skew_ms: int,
    known_versions: Collection[str],
    offset: int | None = None,
) -> ControlCommand | ControlRejection:
    """Authenticate and validate one control message against the message's own timestamp.

    The clock used for staleness is the Kafka message timestamp, not the wall clock, so
    re-reading the topic after a restart gives the same verdicts.
    """

    def reject(
        reason: str, detail: str, key_id: str | None = None, nonce: str | None = None
    ) -> ControlRejection:
        return ControlRejection(reason, detail, key_id, nonce, message_ts_ms, offset)

    if value is None or not value:
        return reject("malformed", "empty control message")
    if len(value) > MAX_CONTROL_BYTES:
        return reject(
            "oversized", f"control message is {len(value)} bytes; max {MAX_CONTROL_BYTES}"
        )
    try:
        outer = orjson.loads(value)
    except orjson.JSONDecodeError:
        return reject("malformed", "control message is not UTF-8 JSON")
    if not isinstance(outer, dict):
        return reject("malformed", "control message must be a JSON object")
    key_id, signature, body_text = outer.get("key_id"), outer.get("signature"), outer.get("body")
    if (
        not isinstance(signature, str)
        or not isinstance(key_id, str)
        or not isinstance(body_text, str)
    ):
        return reject("unsigned", "control message needs key_id, signature and body")
    secret = keys.get(key_id)
    if secret is None:
        return reject("unknown_key", f"no control key with id {key_id!r:.40}", key_id)
    body_bytes = body_text.encode("utf-8")
    if not hmac.compare_digest(sign(body_bytes, secret), signature):
        return reject("bad_signature", "signature does not match the body", key_id)
    try:
        body = orjson.loads(body_bytes)
        if not isinstance(body, dict):
            raise Invalid("malformed", "body must be a JSON object")
        return _command(body, key_id, message_ts_ms, nonces, max_skew_ms, known_versions)
    except Invalid as bad:
        nonce = body.get("nonce") if isinstance(body, dict) else None
        return reject(bad.reason, str(bad), key_id, nonce if isinstance(nonce, str) else None)
    except orjson.JSONDecodeError:
        return reject("malformed", "body is not JSON", key_id)


def _command(
    body: Mapping[str, Any],
    key_id: str,
    message_ts_ms: int,
    nonces: NonceMemory,
    max_skew_ms: int,
    known_versions: Collection[str],
) -> ControlCommand:
    try:
        action = Action(str(body.get("command")))
    except ValueError:
        raise Invalid("unknown_command", f"unknown command {body.get('command')!r:.40}") from None
    nonce = body.get("nonce")
    if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128:
        raise Invalid("malformed", "nonce must be a string of 8-128 characters")
    ts_ms = parse_timestamp(body.get("ts"))
    if abs(ts_ms - message_ts_ms) > max_skew_ms:
        raise Invalid("stale", f"signed at {ts_ms}, more than {max_skew_ms} ms from its arrival")
    effective = body.get("effective_at")
    effective_ms = ts_ms if effective is None else parse_timestamp(effective, "effective_at")
    target = body.get("target")
    if action in _NEEDS_TARGET and (not isinstance(target, str) or not 1 <= len(target) <= 64):
        raise Invalid("malformed", f"{action.value} needs a `target`")
    if action is Action.ACTIVATE_POLICY and target not in known_versions:
        raise Invalid("unknown_policy_version", f"policy version {target!r} is not loaded")
    value = body.get("value")
    if action is Action.SET_APPROVAL_THRESHOLD:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise Invalid("malformed", "set_approval_threshold needs a non-negative `value`")
    if not nonces.check_and_remember(nonce, ts_ms, max_skew_ms):
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
    keys: Mapping[str, bytes],
    max_skew_ms: int,
    known_versions: Collection[str],
    initial: NonceMemory,
) -> tuple[NonceMemory, ControlCommand | ControlRejection]:
    """The flow's `control_auth` step: verify against the nonces seen so far."""
    nonces = state if state is not None else NonceMemory(dict(initial.seen))
    ts = raw.timestamp_ms if raw.timestamp_ms is not None else raw.received_at_ms
    return nonces, verify(raw.value, keys, ts, nonces, max_skew_ms, known_versions, raw.offset)


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
