"""What one bad producer, clock or message can do to the decision core: each case is refused
with a reason and disturbs nothing else (issue #18's table, at the level of pure functions;
`stockshift reliability --adversarial` runs the same rows against the real process)."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.configfiles import load_network, load_policy
from operators import parse, snapshot
from operators.codec import DLQ_PAYLOAD_MAX_BYTES, dead_letter_headers, dead_letter_message
from operators.control import (
    CREATE_TIME,
    LOG_APPEND_TIME,
    ControlAuth,
    NonceMemory,
    arrival_ms,
    envelope,
    verify,
)
from operators.engine import DecisionContext, step
from operators.limits import (
    HOLD,
    LEAVE,
    MAX_FAILURE_TEXT,
    STAY,
    IdleSweep,
    KeyBudget,
    step_failed_letter,
)
from operators.parse import parse_message, topic_kinds_for
from state.config import ConfigError, network_from_dict, policy_from_dict
from state.governance import ControlCommand, ControlRejection
from state.records import DeadLetter, Event, EventType, Finding, RawMessage, SourceRef
from state.sku import Reservation, SkuState
from tests.support.helpers import HOUR, T0, event, policy, two_store_network, warm_history

KINDS = topic_kinds_for("stockshift.")
SITES = frozenset({"A", "B", "C"})
KEYS = {"ops-1": b"s3cret-one-0123456789"}
AUTH = ControlAuth(KEYS, 300_000)


def raw(kind: str, body: dict[str, object] | bytes, received: int = T0) -> RawMessage:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawMessage(f"stockshift.{kind}", 0, 7, b"SKU-1", value, received, received)


def sale(**extra: object) -> dict[str, object]:
    return {"event_id": "e1", "ts": T0, "sku": "SKU-1", "site": "A", "qty": 1, **extra}


# Row 1: one control message with a non-ASCII signature stopped the process for good.
@pytest.mark.parametrize(
    "signature", ["é", "E" * 64, "0" * 63, "g" * 64, "0" * 65, "\x00" * 64, "０" * 64]
)
def test_a_malformed_signature_is_a_rejection_never_an_exception(signature: str) -> None:
    value = orjson.dumps({"key_id": "ops-1", "signature": signature, "body": "{}"})
    verdict = verify(value, AUTH, T0, NonceMemory())
    assert isinstance(verdict, ControlRejection) and verdict.reason == "malformed"


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_no_control_message_can_raise(value: bytes) -> None:
    verdict = verify(value, AUTH, T0, NonceMemory())
    assert isinstance(verdict, ControlRejection)


# Row 8: freshness by the broker's clock; a captured command stays used forever.
def test_a_live_command_is_judged_by_its_arrival_not_the_signers_clock() -> None:
    now = T0 + 400 * HOUR
    assert arrival_ms(LOG_APPEND_TIME, now - 5, now, live=True) == now - 5
    assert arrival_ms(CREATE_TIME, T0, now, live=True) == now  # a replayed capture: stale
    assert arrival_ms(CREATE_TIME, 7_000_000_000_000, now, live=False) == now  # 2191: now
    assert arrival_ms(CREATE_TIME, T0, now, live=False) == T0  # re-read at start-up


def test_a_replayed_command_is_stale_and_its_nonce_is_never_forgotten() -> None:
    body = {"command": "pause", "nonce": "nonce-0001", "ts": T0}
    signed = envelope(body, "ops-1", KEYS["ops-1"])
    nonces = NonceMemory()
    assert isinstance(verify(signed, AUTH, T0, nonces), ControlCommand)
    later = T0 + 90 * 24 * HOUR
    stale = verify(signed, AUTH, arrival_ms(CREATE_TIME, T0, later, True), nonces)
    assert isinstance(stale, ControlRejection) and stale.reason == "stale"
    again = verify(signed, AUTH, T0, nonces)  # even at its claimed time
    assert isinstance(again, ControlRejection) and again.reason == "replayed"


# Row 2: an event far ahead of its arrival moved the SKU's clock to 2199.
def test_event_time_far_ahead_of_arrival_is_dead_lettered() -> None:
    letter = parse_message(raw("pos", sale(ts=7_000_000_000_000)), KINDS, SITES)
    assert isinstance(letter, DeadLetter) and letter.reason == "future_timestamp"
    near = parse_message(raw("pos", sale(ts=T0 + HOUR // 2)), KINDS, SITES)
    assert isinstance(near, Event)


def test_without_a_real_receive_clock_future_time_is_not_judged() -> None:
    """Replays and tests that leave the receive time unset (0) parse as before."""
    message = RawMessage("stockshift.pos", 0, 1, None, orjson.dumps(sale(ts=T0 + 99 * HOUR)), 0)
    assert isinstance(parse_message(message, KINDS, SITES), Event)


# Rows 3 and 11: a count of 1e9, or returns of 1e9, poisoned storage and on-hand.
def test_a_quantity_a_site_cannot_hold_is_dead_lettered() -> None:
    ceilings = {"A": 500, "B": 1_000_000, "C": 1_000_000}
    count = {"event_id": "c", "ts": T0, "sku": "S", "site": "A", "type": "snapshot"}
    letter = parse_message(
        raw("inventory", {**count, "on_hand": 1_000_000_000}), KINDS, SITES, ceilings
    )
    assert isinstance(letter, DeadLetter) and letter.reason == "implausible_quantity"
    fits = parse_message(raw("inventory", {**count, "on_hand": 500}), KINDS, SITES, ceilings)
    assert isinstance(fits, Event)
    big_sale = parse_message(raw("pos", sale(qty=10_000)), KINDS, SITES, ceilings)
    assert isinstance(big_sale, Event)  # a sale takes stock away: not capped here


def test_duplicate_json_keys_are_refused() -> None:
    value = b'{"event_id":"e1","ts":%d,"sku":"S","site":"A","qty":1,"qty":1000000000}' % T0
    letter = parse_message(raw("pos", value), KINDS, SITES)
    assert isinstance(letter, DeadLetter) and letter.reason == "duplicate_key"
    escaped = b'{"event_id":"e1","ts":%d,"sku":"S","site":"A","q\\u0074y":1,"qty":9}' % T0
    letter = parse_message(raw("pos", escaped), KINDS, SITES)
    assert isinstance(letter, DeadLetter) and letter.reason == "duplicate_key"
    quoted = b'{"event_id":"\\"qty\\"","ts":%d,"sku":"S","site":"A","qty":2}' % T0
    ok = parse_message(raw("pos", quoted), KINDS, SITES)
    assert isinstance(ok, Event) and ok.qty == 2  # a key's text inside a value is fine


def ctx(**limits: object) -> DecisionContext:
    base = {
        "sites": [{"id": s} for s in ("A", "B", "C")],
        "lanes": [{"from": "A", "to": "B", "lead_hours": 6, "bidirectional": True}],
        "limits": limits,
    }
    return DecisionContext.build(network_from_dict(base), policy())


def test_repeated_returns_cannot_lift_on_hand_past_the_ceiling() -> None:
    context = ctx(max_units_per_sku_site=1000)
    state, _ = step(None, event("n", EventType.SNAPSHOT, 0, "A", 900), context)
    state, out = step(state, event("r1", EventType.RETURN, 1, "A", 100), context)
    assert out.refused is None and state.sites["A"].on_hand == 1000
    state, out = step(state, event("r2", EventType.RETURN, 2, "A", 1), context)
    assert out.refused is not None and out.refused.reason == "implausible_quantity"
    assert state.sites["A"].on_hand == 1000
    body = orjson.loads(out.refused.payload or b"{}")
    assert (body["event_id"], body["qty"]) == ("r2", 1)  # the event, as a producer re-sends it


# Row 4: 50,000 expected deliveries on one SKU-site, never expiring.
def test_expected_deliveries_are_capped_and_expire_after_their_eta() -> None:
    context = ctx(max_inbound_per_sku_site=3, inbound_grace_hours=24)
    state = None
    refused = []
    for n in range(5):
        e = event(f"in{n}", EventType.INBOUND_EXPECTED, n * 0.1, "A", 5)
        e = Event(**{**_fields(e), "shipment_id": f"sh{n}", "eta_ms": T0 + 10 * HOUR})
        state, out = step(state, e, context)
        refused.append(out.refused.reason if out.refused else None)
    assert refused == [None, None, None, "inbound_limit", "inbound_limit"]
    assert state is not None and state.sites["A"].inbound_qty == 15
    state, out = step(state, event("late", EventType.SALE, 10 + 25, "B", 1), context)
    assert state.sites["A"].inbound is None
    assert [f.kind for f in out.findings].count("inbound_overdue") == 3


def _expected(event_id: str, hours: float, eta_hours: float) -> Event:
    """A supplier delivery to site A announced at `hours`, due at `eta_hours`."""
    e = event(event_id, EventType.INBOUND_EXPECTED, hours, "A", 5)
    return Event(**{**_fields(e), "shipment_id": event_id, "eta_ms": T0 + int(eta_hours * HOUR)})


def _overdue(findings: tuple[Finding, ...]) -> list[tuple[str, ...]]:
    return [f.event_ids for f in findings if f.kind == "inbound_overdue"]


def test_a_delivery_announced_after_a_look_still_expires_on_time() -> None:
    """The hourly look for overdue deliveries skips the walk while none can be overdue
    (`SkuState.inbound_eta_floor_ms`); one announced later with an earlier ETA, and a state
    restored from its snapshot (which leaves the floor out), still have theirs found."""
    context = ctx(inbound_grace_hours=24)
    state, _ = step(None, _expected("far", 0, 100), context)
    state, out = step(state, event("s1", EventType.SALE, 2, "B", 1), context)
    assert not _overdue(out.findings) and state.inbound_eta_floor_ms == T0 + 100 * HOUR
    state, _ = step(state, _expected("near", 3, 3), context)
    state, out = step(state, event("s2", EventType.SALE, 3 + 24.5, "B", 1), context)
    assert _overdue(out.findings) == [("near",)]
    restored = snapshot.decode(snapshot.encode(state))
    assert restored is not None and restored.inbound_eta_floor_ms < 0
    state, out = step(restored, event("s3", EventType.SALE, 100 + 24.5, "B", 1), context)
    assert _overdue(out.findings) == [("far",)]
    assert state.sites["A"].inbound is None and state.inbound_eta_floor_ms > T0 + 1000 * HOUR


def _fields(e: Event) -> dict[str, object]:
    return {spec.name: getattr(e, spec.name) for spec in fields(Event)}


def test_limits_are_validated_with_the_key_named() -> None:
    with pytest.raises(ConfigError, match="max_inbound_per_sku_sit"):
        ctx(max_inbound_per_sku_sit=3)
    with pytest.raises(ConfigError, match="inbound_grace_hours"):
        ctx(inbound_grace_hours=0)


# Row 5: no cap on SKUs per process.
def test_the_key_budget_admits_up_to_its_capacity() -> None:
    budget = KeyBudget(2)
    assert budget.take() and budget.take() and not budget.take()
    budget.give_back()
    assert budget.take() and budget.held == 2


def test_the_idle_sweep_lists_skus_idle_since_their_last_touch_once_per_interval() -> None:
    sweep = IdleSweep(80.0)
    assert sweep.every_s == 10.0  # an eighth of the idle time
    sweep.touch("SKU-1", 0.0)
    sweep.touch("SKU-2", 0.0)
    sweep.touch("SKU-2", 50.0)  # touched again: idle from here
    assert sweep.due(79.0) == []  # nothing idle yet; the next sweep is at 89
    assert sweep.due(85.0) == []  # SKU-1 is idle, but no sweep is due
    assert sweep.due(89.0) == ["SKU-1"]
    assert sweep.idle("SKU-1", 89.0) and not sweep.idle("SKU-2", 89.0)
    sweep.forget("SKU-1")
    assert not sweep.idle("SKU-1", 1e9)  # a SKU not held is never idle
    assert sweep.due(130.0) == ["SKU-2"]
    assert IdleSweep(7 * 86_400.0).every_s == 3600.0  # at most an hour between sweeps


def test_an_idle_check_keeps_a_busy_sku_holds_one_with_an_open_proposal_once() -> None:
    sweep = IdleSweep(100.0)
    plain = SkuState("SKU-1")
    waiting = SkuState("SKU-2", reservations={"p1": Reservation("A", "B", 3, 0, 4.0)})
    for state in (plain, waiting):
        sweep.touch(state.sku, 0.0)
    assert sweep.check(plain, 50.0, False, 500.0) == STAY  # touched 50 s ago
    assert sweep.check(waiting, 100.0, False, 500.0) == HOLD  # its proposal is unanswered
    assert not sweep.idle("SKU-2", 499.0) and sweep.idle("SKU-2", 600.0)  # held 500 s more
    assert sweep.check(waiting, 600.0, True, 500.0) == LEAVE  # held once already
    assert sweep.check(plain, 100.0, False, 500.0) == LEAVE
    assert sweep.touched == {}  # both left the table


# Row 10: a 170 KB payload made a dead letter the broker refused (JSON escaping grew it 6x).
def test_a_dead_letter_keeps_the_original_bytes_and_says_why_in_headers() -> None:
    payload = b"\x01" * 170_000
    letter = DeadLetter("stockshift.pos", 2, 7, b"k", payload, "too large", "too_large", T0, T0 - 5)
    message = dead_letter_message(letter)
    assert (message.key, message.value) == (b"k", payload)  # as the producer sent them
    fields = dead_letter_headers(message.headers)
    assert fields["reason"] == "too_large" and fields["source.topic"] == "stockshift.pos"
    assert (fields["source.partition"], fields["source.offset"]) == ("2", "7")
    assert fields["source.timestamp"] == str(T0 - 5) and fields["payload.truncated"] == "false"
    assert fields["payload.sha256"] == hashlib.sha256(payload).hexdigest()


def test_only_a_payload_near_the_brokers_limit_is_cut_with_its_size_and_hash() -> None:
    payload = b"x" * (DLQ_PAYLOAD_MAX_BYTES + 10)
    message = dead_letter_message(DeadLetter("t", 0, 1, None, payload, "e", "too_large", T0))
    fields = dead_letter_headers(message.headers)
    assert message.value is not None and len(message.value) == DLQ_PAYLOAD_MAX_BYTES
    assert fields["payload.truncated"] == "true"
    assert fields["payload.bytes"] == str(len(payload))


def test_the_engine_still_decides_for_other_skus_after_refusals() -> None:
    """A refused event leaves the SKU's state as it was: the same proposal as a clean run."""
    network = two_store_network()
    context = DecisionContext.build(network, policy())
    clean = None
    dirty = None
    for e in warm_history():
        clean, _ = step(clean, e, context)
        dirty, _ = step(dirty, e, context)
    bogus = event("bogus", EventType.RETURN, 30.1, "A", 999_999_999)
    dirty, out = step(dirty, bogus, context)
    assert out.refused is not None
    trigger = event("count-B", EventType.SNAPSHOT, 30.2, "B", 20)
    _, want = step(clean, trigger, context)
    _, got = step(dirty, trigger, context)
    assert [p.proposal_id for p in got.proposals] == [p.proposal_id for p in want.proposals]
    assert want.proposals


def test_a_count_the_books_cannot_explain_stays_out_of_storage_while_held() -> None:
    """Row 3 against history: a plausible count far above the books opens a hold, and its
    unexplained units do not fill the site's storage for other SKUs until the hold ends."""
    network = network_from_dict(
        {
            "sites": [{"id": "A"}, {"id": "B", "storage_capacity": 1000}],
            "lanes": [{"from": "A", "to": "B", "lead_hours": 6}],
        }
    )
    context = DecisionContext.build(network, replace(policy(), signal_checks=True))
    state, out = step(None, event("c1", EventType.SNAPSHOT, 0, "B", 10), context)
    assert [o.units for o in out.occupancy] == [10]
    state, out = step(state, event("c2", EventType.SNAPSHOT, 1, "B", 900), context)
    assert "phantom_stock" in [f.kind for f in out.findings]
    assert [o.units for o in out.occupancy] == [10] and state.sites["B"].on_hand == 900
    state, out = step(state, event("c3", EventType.SNAPSHOT, 2, "B", 900), context)
    assert [o.units for o in out.occupancy] == [900]  # a second count confirms it


_json_scalars = st.one_of(st.integers(), st.text(max_size=4), st.booleans(), st.none())
_pairs = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "é", 'q"']), _json_scalars), max_size=6)


@given(_pairs, st.lists(_pairs, max_size=2))
def test_the_quick_duplicate_key_test_agrees_with_a_key_by_key_reading(
    top: list[tuple[str, object]], nested: list[list[tuple[str, object]]]
) -> None:
    """Objects written with repeated keys at any depth (and keys or values that need
    escapes) are refused exactly when a key repeats within one object."""

    def text(pairs: list[tuple[str, object]]) -> str:
        return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"

    inner = [text(pairs) for pairs in nested]
    value = (
        text(top)[:-1]
        + ("," if top and inner else "")
        + ",".join(f'"n{i}":{body}' for i, body in enumerate(inner))
        + "}"
    )
    repeated = any(len({k for k, _ in p}) < len(p) for p in (top, *nested))
    try:
        parse._check_unique_keys(value.encode(), orjson.loads(value))
        refused = False
    except parse.Invalid as bad:
        refused = bad.reason == "duplicate_key"
    assert refused == repeated


def test_a_failed_steps_letter_keeps_the_event_and_names_the_error_briefly() -> None:
    sale = Event("s-1", EventType.SALE, T0, "SKU-1", "A", 2, source=SourceRef("t.pos", 3, 9))
    letter = step_failed_letter(sale, ValueError("x" * 5_000))
    assert (letter.reason, letter.source_topic, letter.offset) == ("step_failed", "t.pos", 9)
    assert letter.error.startswith("the decision step raised ValueError: xxx")
    assert len(letter.error) == MAX_FAILURE_TEXT and letter.error.endswith("...")
    assert orjson.loads(letter.payload)["event_id"] == "s-1"  # what a producer would re-send
    short = step_failed_letter(sale, ZeroDivisionError("float division by zero"))
    assert short.error == "the decision step raised ZeroDivisionError: float division by zero"


# --- No message the contract accepts makes the decision step raise --------------------
# A forecast of 2e-313 units a day did (it passed the parser, then stopped the flow at
# every replay). Messages of every type, with values at the contract's edges, parsed as
# the flow parses them, then stepped on a SKU with history under each shipped policy.
_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
_NETWORK = load_network(_CONFIGS / "network.toml")
_SITES = sorted(_NETWORK.sites)
_CONTEXTS = {
    name: DecisionContext.build(_NETWORK, load_policy(_CONFIGS / "policies" / f"{name}.toml"))
    for name in ("default", "service-first", "fast-movers")
}
_EDGE_TIMES = [parse.MIN_TS_MS, parse.MAX_TS_MS - 1, T0 - 400 * 24 * HOUR, T0 + 300 * 24 * HOUR]
_times = st.one_of(
    st.integers(0, 48 * 60).map(lambda m: T0 + m * 60_000), st.sampled_from(_EDGE_TIMES)
)
_quantities = st.one_of(st.integers(1, 5), st.sampled_from([100, 10**6, parse.MAX_QTY]))
# The edges, and values just past them (2e-313 and 1e-200 stopped the flow before the
# parser refused them).
_rates = st.sampled_from(
    [0, 2e-313, parse.MIN_FORECAST_PER_DAY, 0.001, 0.5, 3, 1e3, parse.MAX_FORECAST_PER_DAY]
)
_errors = st.sampled_from([None, 1e-200, parse.MIN_FORECAST_CV, 0.3, parse.MAX_FORECAST_CV])
_TOPIC_OF = {t.value: kind for kind, types in parse.TYPES_BY_TOPIC.items() for t in types}


@st.composite
def _contract_message(draw: st.DrawFn) -> RawMessage:
    kind = draw(st.sampled_from(sorted(_TOPIC_OF)))
    site = draw(st.sampled_from(_SITES))
    body: dict[str, object] = {
        "event_id": f"e{draw(st.integers(0, 10**6))}", "type": kind, "ts": draw(_times),
        "sku": draw(st.sampled_from(["S1", "S2"])), "site": site,
    }  # fmt: skip
    if kind == "snapshot":
        body["on_hand"] = draw(st.one_of(st.integers(0, 50), st.sampled_from([10**6])))
    elif kind == "adjustment":
        body["delta"] = draw(st.sampled_from([-1, 1, -5, 5, -(10**6), 10**6, -parse.MAX_QTY]))
    elif kind == "forecast":
        body["mean_per_day"] = draw(_rates)
        body["error_cv"] = draw(_errors)
    else:
        body["qty"] = draw(_quantities)
    if kind.startswith("inbound_"):
        body["shipment_id"] = f"in-{draw(st.integers(0, 3))}"
        if kind == "inbound_expected":
            body["eta"] = draw(_times)
    if kind.startswith("transfer_"):
        body["from_site"] = draw(st.sampled_from([s for s in _SITES if s != site]))
        body["proposal_id"] = f"p-{draw(st.integers(0, 3))}"
    topic = "stockshift." + _TOPIC_OF[kind]
    return RawMessage(topic, 0, 0, b"k", orjson.dumps(body), T0 + 400 * 24 * HOUR)


Body = tuple[str, str, str, int, dict[str, object]]  # topic, type, site, ts, its fields


def _messages(bodies: list[Body], prefix: str) -> list[RawMessage]:
    """The events as their producers would publish them (SKU "S1"), ids `prefix`0, 1, ..."""
    messages = []
    for i, (topic, kind, site, ts, fields_) in enumerate(bodies):
        body = {"event_id": f"{prefix}{i}", "type": kind, "sku": "S1", "site": site, "ts": ts}
        body.update(fields_)
        if kind.startswith("inbound"):
            body.setdefault("shipment_id", "x")
        messages.append(RawMessage(f"stockshift.{topic}", 0, i, b"k", orjson.dumps(body), 0))
    return messages


def _history_messages() -> list[RawMessage]:
    """Two days of one sale an hour at four sites, after a count at every site (one short)."""
    bodies: list[Body] = [
        ("inventory", "snapshot", s, T0 - 49 * HOUR, {"on_hand": 2 if s == _SITES[1] else 40})
        for s in _SITES
    ]
    bodies += [
        ("pos", "sale", s, T0 - (48 - h) * HOUR, {"qty": 1}) for h in range(48) for s in _SITES[:4]
    ]
    return _messages(bodies, "h")


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(sorted(_CONTEXTS)), st.lists(_contract_message(), max_size=40))
def test_no_message_the_contract_accepts_makes_the_step_raise(
    policy_name: str, messages: list[RawMessage]
) -> None:
    ctx, kinds = _CONTEXTS[policy_name], topic_kinds_for("stockshift.")
    states: dict[str, object] = {}
    taken = 0
    for raw in [*_history_messages(), *messages]:
        parsed = parse_message(raw, kinds, frozenset(_SITES), _NETWORK.unit_ceilings())
        if isinstance(parsed, DeadLetter):
            continue
        states[parsed.sku], _ = step(states.get(parsed.sku), parsed, ctx)  # type: ignore[arg-type]
        taken += 1
    assert taken >= len(_SITES)  # the history at least was taken


# --- No configuration validation accepts makes the decision step raise ----------------
# Each numeric value of the shipped network and default policy set in turn to an edge
# (the smallest positive float, a huge one, zero where allowed): a demand_index of 5e-324
# passed validation and made every decision at its SKUs raise.
_NETWORK_RAW = tomllib.loads((_CONFIGS / "network.toml").read_text())
_NETWORK_RAW.pop("sku_overrides_file", None)
_POLICY_RAW = tomllib.loads((_CONFIGS / "policies" / "default.toml").read_text())
_CONFIG_EDGES = (0, 5e-324, 1e300, 10**18)


# The numbers each kind of table may hold besides those the shipped files set.
_OPTIONAL_NUMBERS = {
    "policy": {"lost_sale_penalty", "estimate_risk_z", "integrity_hold_hours", "forecast_error_cv"},
    "sku_defaults": {"shelf_life_hours"},
    "limits": {"max_units_per_sku_site", "max_inbound_per_sku_site", "inbound_grace_hours"},
    "sites": {"demand_index", "storage_capacity"},
    "lanes": {"trip_cost", "min_trip_value", "capacity_per_day", "cutoff_hour"},
}


def _edge_cases() -> list[tuple[str, tuple[str | int, ...], object]]:
    """(which file, the path to a number in it, the value to set) for every number."""
    tables: list[tuple[str, tuple[str | int, ...], dict[str, Any]]] = [
        ("policy", (), _POLICY_RAW),
        ("sku_defaults", ("sku_defaults",), _NETWORK_RAW["sku_defaults"]),
        ("limits", ("limits",), {}),
    ]
    tables += [("sites", ("sites", i), site) for i, site in enumerate(_NETWORK_RAW["sites"])]
    tables += [("lanes", ("lanes", i), lane) for i, lane in enumerate(_NETWORK_RAW["lanes"])]
    cases: list[tuple[str, tuple[str | int, ...], object]] = []
    for kind, path, table in tables:
        numbers = {k for k, v in table.items() if type(v) in (int, float)}
        for key in sorted(numbers | _OPTIONAL_NUMBERS[kind]):
            which = "policy" if kind == "policy" else "network"
            cases += [(which, (*path, key), edge) for edge in _CONFIG_EDGES]
    return cases


def _with(raw: dict[str, object], path: tuple[str | int, ...], value: object) -> dict[str, object]:
    changed = copy.deepcopy(raw)
    table: Any = changed
    for part in path[:-1]:
        table = table.setdefault(part, {}) if isinstance(part, str) else table[part]
    table[path[-1]] = value
    return changed


def _config_stream(sites: list[str]) -> list[RawMessage]:
    """Counts, 60 hours of sales at the stores, then losses at two and a delivery under way
    (on the shipped network: STORE-B ends short, the DC holds plenty)."""
    t = T0 + 60 * HOUR
    bodies: list[Body] = [
        ("inventory", "snapshot", s, T0, {"on_hand": 1000 if s == "DC-NORTH" else 200})
        for s in sites
    ]
    bodies += [
        ("pos", "sale", s, T0 + h * HOUR + 1, {"qty": 1 + (h % 3 == 0)})
        for h in range(60)
        for s in sites
        if s != "DC-NORTH"
    ]
    bodies += [
        ("forecasts", "forecast", "STORE-A", t, {"mean_per_day": 20}),
        ("inventory", "adjustment", "STORE-C", t + 1, {"delta": -130}),
        ("inventory", "adjustment", "STORE-B", t + 1, {"delta": -135}),
        ("shipments", "inbound_expected", "STORE-A", t + 2, {"qty": 50, "eta": t + 30 * HOUR}),
        ("pos", "sale", "STORE-B", t + 7 * HOUR, {"qty": 40}),
        ("shipments", "inbound_received", "STORE-A", t + 40 * HOUR, {"qty": 50}),
    ]
    return _messages(bodies, "c")


def _proposals_under(network_raw: dict[str, object], policy_raw: dict[str, object]) -> int:
    network, policy_ = network_from_dict(network_raw), policy_from_dict(policy_raw)
    ctx, kinds = DecisionContext.build(network, policy_), topic_kinds_for("stockshift.")
    sites, state, made = frozenset(network.sites), None, 0
    for raw in _config_stream(sorted(network.sites)):
        parsed = parse_message(raw, kinds, sites, network.unit_ceilings())
        if isinstance(parsed, Event):
            state, out = step(state, parsed, ctx)
            made += len(out.proposals)
    return made


def test_no_configuration_validation_accepts_makes_the_step_raise() -> None:
    assert _proposals_under(_NETWORK_RAW, _POLICY_RAW) > 0  # the stream reaches a decision
    accepted = 0
    for which, path, value in _edge_cases():
        network_raw, policy_raw = _NETWORK_RAW, _POLICY_RAW
        if which == "network":
            network_raw = _with(_NETWORK_RAW, path, value)
        else:
            policy_raw = _with(_POLICY_RAW, path, value)
        try:
            _proposals_under(network_raw, policy_raw)
        except ConfigError:
            continue  # refused at load, with a message: what validation is for
        accepted += 1
    assert accepted > 100  # most edges are valid settings, and were stepped
