"""The console's rules (operators/approvals.py) and sign-in (adapters/console_auth.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.console_auth import check_password, from_headers, hash_password, load_users
from operators import approvals
from state.config import ConfigError
from state.console import Role, User, Waiting

NOW = 1_767_571_200_000
EVIDENCE = {
    "receiver": {
        "site": "B",
        "on_hand": 2,
        "inbound": 0,
        "demand_per_hour": 1.0,
        "reorder_point": 40.0,
        "target": 64.0,
    },
    "sender": {"site": "A", "on_hand": 300, "demand_per_hour": 1.0, "target": 40.0},
    "lead_hours": 6.0,
    "transfer_cost": 9.0,
    "expected_units_saved": 5.0,
    "expected_units_lost_at_sender": 0.1,
    "net_benefit": 20.4,
    "value": 620.0,
    "alternatives": [{"from_site": "C", "rejected_because": "cooldown", "net_benefit": 0.0}],
}


def proposal(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "proposal_id": "p1",
        "sku": "S",
        "from_site": "A",
        "to_site": "B",
        "qty": 62,
        "status": "needs_approval",
        "created_at": NOW - 60_000,
        "expires_at": NOW + 3_600_000,
        "reason": "B is short",
        "evidence": EVIDENCE,
    }
    body.update(changes)
    return body


def waiting(**changes: object) -> Waiting:
    item = approvals.waiting_from_proposal(proposal(**changes))
    assert item is not None
    return item


PLANNER_B = User("pat", Role.PLANNER, frozenset({"B"}))
PLANNER_Z = User("zoe", Role.PLANNER, frozenset({"Z"}))


def test_only_needs_approval_proposals_wait_and_bad_ones_are_left_out() -> None:
    assert approvals.waiting_from_proposal(proposal(status="proposed")) is None
    assert approvals.waiting_from_proposal(proposal(qty="many")) is None
    assert approvals.waiting_from_proposal(proposal(expires_at="soon")) is None
    item = waiting()
    assert (item.value, item.net_benefit, item.answer) == (620.0, 20.4, None)


def test_who_may_answer_and_when() -> None:
    item = waiting()
    assert approvals.refusal(PLANNER_B, item, NOW) is None
    assert approvals.refusal(User("v", Role.VIEWER), item, NOW).status == 403  # type: ignore[union-attr]
    assert approvals.refusal(PLANNER_Z, item, NOW).status == 403  # type: ignore[union-attr]
    assert approvals.refusal(User("a", Role.ADMIN, frozenset()), item, NOW) is None
    assert approvals.refusal(PLANNER_B, None, NOW).status == 404  # type: ignore[union-attr]
    late = approvals.refusal(PLANNER_B, item, item.expires_ms)
    assert late is not None and late.status == 409 and "expired" in late.message
    approvals.note_decision(item, {"outcome": "planner_approved", "actor": "sam"})
    done = approvals.refusal(PLANNER_B, item, NOW)
    assert done is not None and done.message == "already approved by sam"


def test_decisions_fill_in_reasons_and_what_became_of_it() -> None:
    item = waiting()
    approvals.note_decision(
        item, {"outcome": "needs_approval", "approval_reasons": ["low confidence"]}
    )
    assert item.approval_reasons == ("low confidence",)
    approvals.note_decision(item, {"outcome": "reservation_released", "reason": "expired"})
    assert item.answer == "expired"


def test_an_answer_is_one_event_whoever_sends_it() -> None:
    item = waiting()
    first = approvals.answer_event(item, True, PLANNER_B, "ok", NOW)
    second = approvals.answer_event(item, True, User("sam", Role.ADMIN), "", NOW + 5)
    assert first["event_id"] == second["event_id"] == "answer:p1"
    assert first["type"] == "transfer_approved" and first["site"] == "B"
    assert first["from_site"] == "A" and first["qty"] == 62
    rejected = approvals.answer_event(item, False, PLANNER_B, "no", NOW)
    assert rejected["type"] == "transfer_rejected"
    audit = approvals.audit_record(item, True, PLANNER_B, "ok", NOW)
    assert (audit["actor"], audit["note"], audit["outcome"]) == ("pat", "ok", "planner_approved")


def test_the_explanation_is_in_words_and_the_projection_shows_the_arrival() -> None:
    lines = approvals.explanation(waiting())
    text = " ".join(lines)
    assert "Move 62 units of S from A to B." in text
    assert "Not from C: this sender received stock lately (no ping-pong)." in text
    assert "cooldown" not in text
    points = approvals.projection(waiting())
    before = [p for p in points if p.hour < 6.0]
    after = [p for p in points if p.hour > 6.0]
    assert all(p.with_transfer == p.without for p in before)
    assert all(p.with_transfer > p.without for p in after)


def test_users_file_passwords_and_proxy_headers(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(
        f'[[users]]\nname = "pat"\nrole = "planner"\nsites = ["B"]\n'
        f'password_hash = "{hash_password("correct horse")}"\n'
        '[[users]]\nname = "sso-only"\nrole = "admin"\nsites = ["*"]\n'
    )
    accounts = load_users(users)
    assert check_password(accounts, "pat", "correct horse") == PLANNER_B
    assert check_password(accounts, "pat", "wrong") is None
    assert check_password(accounts, "nobody", "correct horse") is None
    assert check_password(accounts, "sso-only", "") is None  # no password: headers only
    headers = {"x-auth-request-user": "sso-only"}
    assert from_headers(accounts, headers, "127.0.0.1", ("127.0.0.1",)) is not None
    assert from_headers(accounts, headers, "10.0.0.9", ("127.0.0.1",)) is None  # untrusted
    stranger = from_headers(accounts, {"x-auth-request-user": "eve"}, "127.0.0.1", ("127.0.0.1",))
    assert stranger is not None and stranger.role is Role.VIEWER
    users.write_text('[[users]]\nname = "x"\nrole = "boss"\n')
    with pytest.raises(ConfigError, match="role"):
        load_users(users)
    users.write_text('[[users]]\nname = "x"\nrole = "viewer"\nsite = ["B"]\n')
    with pytest.raises(ConfigError, match="did you mean 'sites'"):
        load_users(users)


def test_explain_names_the_planner_and_the_note() -> None:
    from operators.explain import explain

    item = waiting()
    origin = {
        "outcome": "needs_approval",
        "ts": "t0",
        "policy_version": "v",
        "sku": "S",
        "detail": "B is short",
        "trigger_event_id": "e1",
    }
    audit = approvals.audit_record(item, True, PLANNER_B, "checked with the store", NOW)
    text = explain("p1", [origin, audit])
    assert "approved by a planner (pat: checked with the store)" in text
