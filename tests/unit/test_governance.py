"""Control commands: signatures, replay protection, and what they do to decisions."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.control import (
    ControlAuth,
    NonceMemory,
    Timeline,
    check_command,
    envelope,
    sign,
    verify,
)
from operators.engine import DecisionContext, in_shadow_share, step
from operators.parse import Invalid
from state.governance import Action, ControlCommand, ControlRejection
from state.records import EventType, Outcome, ProposalStatus
from tests.support.helpers import (
    HOUR,
    T0,
    event,
    policy,
    run_engine,
    two_store_network,
    warm_history,
)

KEYS = {"ops-1": b"s3cret-one", "ops-2": b"s3cret-two"}
NOW = T0 + 30 * HOUR
SKEW = 300_000


def body(command: str, nonce: str = "nonce-0001", ts: int = NOW, **extra: object) -> dict:
    return {"command": command, "nonce": nonce, "ts": ts, **extra}


def check(value: bytes | None, nonces: NonceMemory | None = None, msg_ts: int = NOW):
    auth = ControlAuth(KEYS, SKEW, frozenset({"test-1", "test-2"}))
    return verify(value, auth, msg_ts, nonces or NonceMemory())


def test_a_signed_command_is_accepted_with_its_fields() -> None:
    result = check(envelope(body("pause", reason="audit", actor="ana"), "ops-1", KEYS["ops-1"]))
    assert isinstance(result, ControlCommand)
    assert result.action is Action.PAUSE and result.effective_at_ms == NOW
    assert (result.reason, result.actor, result.key_id) == ("audit", "ana", "ops-1")


def test_rotated_keys_both_verify() -> None:
    nonces = NonceMemory()
    for key_id, nonce in (("ops-1", "nonce-aaaa"), ("ops-2", "nonce-bbbb")):
        signed = envelope(body("resume", nonce=nonce), key_id, KEYS[key_id])
        assert isinstance(check(signed, nonces), ControlCommand)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "malformed"),
        (b"not json", "malformed"),
        (orjson.dumps({"body": "{}"}), "unsigned"),
        (envelope(body("pause"), "ops-9", b"whatever"), "unknown_key"),
        (envelope(body("pause"), "ops-1", b"wrong-secret"), "bad_signature"),
        (envelope(body("pause", ts=NOW - 3_600_000), "ops-1", KEYS["ops-1"]), "stale"),
        (envelope(body("explode"), "ops-1", KEYS["ops-1"]), "unknown_command"),
        (
            envelope(body("activate_policy", target="v9"), "ops-1", KEYS["ops-1"]),
            "unknown_policy_version",
        ),
        (envelope(body("freeze_site"), "ops-1", KEYS["ops-1"]), "malformed"),
        (envelope(body("set_approval_threshold", value=-5), "ops-1", KEYS["ops-1"]), "malformed"),
        (envelope(body("pause", pad="x" * 5000), "ops-1", KEYS["ops-1"]), "oversized"),
    ],
)
def test_forged_malformed_and_stale_commands_are_rejected(value: bytes | None, reason: str) -> None:
    result = check(value)
    assert isinstance(result, ControlRejection)
    assert result.reason == reason


_FIELD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=70),
)


@given(
    st.sampled_from(["pause", "freeze_site", "freeze_sku", "set_approval_threshold", "x"]),
    _FIELD,
    _FIELD,
    _FIELD,
)
def test_the_senders_check_refuses_exactly_what_the_flow_would_for_these_fields(
    command: str, target: object, value: object, effective_at: object
) -> None:
    """`check_command` (run before signing) and the flow's verdict on the signed command
    agree, so a sender never sends what the flow rejects for its fields, nor refuses what
    it would take. (Policy versions are the flow's alone; they are not drawn here.)"""
    fields = {"target": target, "value": value, "effective_at": effective_at}
    sent = body(command, **{k: v for k, v in fields.items() if v is not None})
    try:
        check_command(sent, NOW)
        refused_here = None
    except Invalid as exc:
        refused_here = exc.reason
    try:
        on_the_wire = orjson.loads(orjson.dumps(sent))
    except TypeError:  # an integer JSON cannot carry: never sent either way
        return
    if on_the_wire != sent:  # nan and inf travel as null; the sender refuses them first
        return
    verdict = check(envelope(sent, "ops-1", KEYS["ops-1"]))
    refused_there = verdict.reason if isinstance(verdict, ControlRejection) else None
    assert refused_here == refused_there


def test_tampered_body_fails_the_signature() -> None:
    signed = orjson.loads(envelope(body("pause"), "ops-1", KEYS["ops-1"]))
    signed["body"] = signed["body"].replace("pause", "resume")
    assert check(orjson.dumps(signed)).reason == "bad_signature"  # type: ignore[union-attr]


def test_a_replayed_nonce_is_rejected() -> None:
    nonces = NonceMemory()
    signed = envelope(body("pause"), "ops-1", KEYS["ops-1"])
    assert isinstance(check(signed, nonces), ControlCommand)
    assert check(signed, nonces).reason == "replayed"  # type: ignore[union-attr]


def test_sign_is_hmac_sha256() -> None:
    assert (
        sign(b"abc", b"key") == "9c196e32dc0175f86f4b1cb89289d6619de6bee699e4c378e68309ed97a1a6ab"
    )


def command(
    action: Action, at_hour: float, target: str | None = None, value: float | None = None
) -> ControlCommand:
    at = T0 + int(at_hour * HOUR)
    return ControlCommand(f"n-{action}-{at_hour}", action, at, at, "ops-1", target, value)


def run_with(timeline: Timeline, events, **ctx_kwargs):
    ctx = DecisionContext.build(
        two_store_network(), policy(), governance_at=timeline.at, **ctx_kwargs
    )
    return run_engine(events, ctx)


def scenario_events():
    return [*warm_history(), event("count-B", EventType.SNAPSHOT, 30.2, "B", 20)]


def test_pause_suppresses_with_reason_and_resume_lets_the_next_event_propose() -> None:
    timeline = Timeline()
    timeline.add(command(Action.PAUSE, 29))
    timeline.add(command(Action.RESUME, 31))
    events = [*scenario_events(), event("s-after", EventType.SALE, 31.5, "B", 1)]
    _, proposals, decisions = run_with(timeline, events)
    paused = [d for d in decisions if d.reason == "paused"]
    assert [d.trigger_event_id for d in paused] == ["count-B"]
    assert [p.trigger_event_ids for p in proposals] == [("s-after",)]


def test_commands_take_effect_by_event_time_so_replays_agree() -> None:
    timeline = Timeline()
    # Added out of order; the timeline orders by effective time.
    timeline.add(command(Action.RESUME, 31))
    timeline.add(command(Action.PAUSE, 29))
    first = run_with(timeline, scenario_events())[2]
    second = run_with(timeline, scenario_events())[2]
    assert first == second and any(d.reason == "paused" for d in first)


def test_policy_switch_mid_stream_changes_the_version_on_proposals() -> None:
    timeline = Timeline()
    timeline.add(command(Action.ACTIVATE_POLICY, 30, target="test-2"))
    second = policy(version="test-2", cover_hours=48.0)
    _, proposals, decisions = run_with(timeline, scenario_events(), policies={"test-2": second})
    assert [p.policy_version for p in proposals] == ["test-2"]
    assert {d.policy_version for d in decisions if d.outcome is Outcome.PROPOSED} == {"test-2"}


def test_frozen_site_and_threshold_and_low_confidence_need_approval() -> None:
    for cmd, reason in (
        (command(Action.FREEZE_SITE, 1, target="B"), "frozen"),
        (command(Action.SET_APPROVAL_THRESHOLD, 1, value=10.0), "approval threshold"),
    ):
        timeline = Timeline()
        timeline.add(cmd)
        _, (proposal,), decisions = run_with(timeline, scenario_events())
        assert proposal.status is ProposalStatus.NEEDS_APPROVAL
        assert reason in proposal.reason
        record = next(d for d in decisions if d.proposal_id == proposal.proposal_id)
        assert record.outcome is Outcome.NEEDS_APPROVAL and record.approval_reasons
    ctx = DecisionContext.build(two_store_network(), policy(confidence_hours=48.0))
    state = None
    out_props = []
    for e in scenario_events():
        state, out = step(state, e, ctx)
        out_props.extend(out.proposals)
    assert out_props[0].status is ProposalStatus.NEEDS_APPROVAL
    assert "low confidence" in out_props[0].reason


def test_approval_extends_the_reservation() -> None:
    timeline = Timeline()
    timeline.add(command(Action.FREEZE_SKU, 1, target="SKU-1"))
    state, (p,), _ = run_with(timeline, scenario_events())
    ctx = DecisionContext.build(two_store_network(), policy(), governance_at=timeline.at)
    approved = event(
        "ok-1",
        EventType.TRANSFER_APPROVED,
        40,
        "B",
        p.qty,
        from_site="A",
        proposal_id=p.proposal_id,
    )
    state, out = step(state, approved, ctx)
    assert [d.outcome for d in out.decisions] == [Outcome.APPROVED]
    assert state.reservations[p.proposal_id].expires_at_ms >= approved.ts_ms + 6 * HOUR


def test_shadow_policy_logs_flagged_decisions_and_never_proposes() -> None:
    shadow = policy(version="shadow-1", cover_hours=72.0)
    _, proposals, decisions = run_with(
        Timeline(), scenario_events(), shadow_policy=shadow, shadow_share=1.0
    )
    assert all(p.policy_version == "test-1" for p in proposals) and proposals
    shadowed = [d for d in decisions if d.shadow]
    assert shadowed and {d.policy_version for d in shadowed if d.policy_version} == {"shadow-1"}
    assert any(d.outcome is Outcome.PROPOSED for d in shadowed)


def test_shadow_share_is_a_stable_hash() -> None:
    skus = [f"SKU-{i}" for i in range(2000)]
    chosen = [s for s in skus if in_shadow_share(s, 0.25)]
    assert 400 < len(chosen) < 600
    assert chosen == [s for s in skus if in_shadow_share(s, 0.25)]
