"""The reliability verifier: what an uninterrupted run decides, and the reconciliation of a
faulty run against it. Pure: the runner in adapters/reliability.py does the I/O.

Modelled on Kafka Streams' exactly-once system test: the same input is run once through the
engine in order (the reference) and once through `stockshift run` under a fault; the final
per-SKU state and the set of proposals must match, and the proposals topic may hold a
duplicate only from the documented window between the broker's acknowledgement and the
ledger record.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from operators.codec import event_message
from operators.engine import DecisionContext
from operators.replay import Replay
from state.config import Network, Policy
from state.records import Event, EventType, SitePosition
from state.units import HOUR_MS

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# Fields of a live position (adapters.redis_store.position_json) compared with the reference.
POSITION_FIELDS = ("on_hand", "inbound", "reserved_in", "reserved_out", "position")


@dataclass(frozen=True, slots=True)
class Reference:
    """An uninterrupted run: the proposals made and each SKU-site's final live numbers."""

    proposal_ids: frozenset[str]
    positions: Mapping[tuple[str, str], SitePosition]
    events: int


def reference_run(events: Iterable[Event], network: Network, policy: Policy) -> Reference:
    """Every event through `engine.step` in order, proposals through lane negotiation."""
    replay = Replay.of(DecisionContext.build(network, policy, emit_positions=True))
    ids: set[str] = set()
    positions: dict[tuple[str, str], SitePosition] = {}
    count = 0
    for event in events:
        count += 1
        replayed = replay.batch([event])
        for position in replayed.outputs[0].positions:
            positions[(position.sku, position.site)] = position
        ids.update(proposal.proposal_id for proposal in replayed.granted)
    return Reference(frozenset(ids), positions, count)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    expected: int
    produced: int  # distinct proposal ids on the topic
    duplicated: int  # messages on the topic beyond the first of each id
    missing: int
    unexpected: int
    ledger_missing: int  # produced ids the ledger does not record as delivered
    state_checked: int  # SKU-site positions compared
    state_mismatches: int
    first_mismatch: str = ""

    def passed(self, max_duplicates: int) -> bool:
        return (
            self.missing == 0
            and self.unexpected == 0
            and self.duplicated <= max_duplicates
            and self.ledger_missing == 0
            and self.state_mismatches == 0
        )


def position_matches(live: Mapping[str, Any] | None, want: SitePosition) -> bool:
    if live is None:
        return False
    if any(live.get(name) != getattr(want, name) for name in POSITION_FIELDS):
        return False
    return math.isclose(
        float(live.get("demand_per_hour", -1.0)), want.demand_per_hour, abs_tol=1e-6
    )


def reconcile(
    reference: Reference,
    produced_ids: list[str],
    live_positions: Mapping[tuple[str, str], Mapping[str, Any]],
    delivered_in_ledger: set[str] | None,
) -> Reconciliation:
    """`delivered_in_ledger` None: the run had no ledger to check (no Redis)."""
    distinct = set(produced_ids)
    wrong = [
        (key, want)
        for key, want in reference.positions.items()
        if not position_matches(live_positions.get(key), want)
    ]
    first = ""
    if wrong:
        (sku, site), want = wrong[0]
        expected = {name: getattr(want, name) for name in (*POSITION_FIELDS, "demand_per_hour")}
        first = f"{sku}@{site}: live {live_positions.get((sku, site))} != expected {expected}"
    return Reconciliation(
        expected=len(reference.proposal_ids),
        produced=len(distinct),
        duplicated=len(produced_ids) - len(distinct),
        missing=len(reference.proposal_ids - distinct),
        unexpected=len(distinct - reference.proposal_ids),
        ledger_missing=0 if delivered_in_ledger is None else len(distinct - delivered_in_ledger),
        state_checked=len(reference.positions),
        state_mismatches=len(wrong),
        first_mismatch=first,
    )


def workload(skus: int, idle_skus: int = 0, hours: int = 50) -> list[Event]:
    """Input for the fault runs, in event-time order, on the two-store network (A, B).

    Each active SKU: opening counts (A 300, B 91), one sale an hour at both stores for `hours`
    hours, then a damage write-off of 15 at B that needs a transfer from A: one proposal per
    active SKU. Idle SKUs only get their opening counts: state that must survive a restart
    without input to rebuild it. 103 events per active SKU, 2 per idle SKU.
    """
    names = [f"SKU-{i:06d}" for i in range(skus)]
    idle = [f"IDLE-{i:06d}" for i in range(idle_skus)]
    out: list[Event] = []
    for sku in names + idle:
        for site, stock in (("A", 300), ("B", 91)):
            out.append(Event(f"snap-{site}-{sku}", EventType.SNAPSHOT, T0_MS, sku, site, stock))
    for h in range(hours):
        ts = T0_MS + h * HOUR_MS + HOUR_MS // 2
        for sku in names:
            for site in ("A", "B"):
                out.append(Event(f"s-{site}-{h}-{sku}", EventType.SALE, ts, sku, site, 1))
    damage_ts = T0_MS + hours * HOUR_MS + HOUR_MS // 5
    out += [Event(f"damage-{sku}", EventType.ADJUSTMENT, damage_ts, sku, "B", -15) for sku in names]
    return out


def bad_inputs(rng: random.Random, sku: str, ts_ms: int) -> list[tuple[str, bytes, str]]:
    """Messages the parser must dead-letter, one of each kind: (topic kind, payload, kind)."""
    good = {"event_id": "bad", "ts": ts_ms, "sku": sku, "site": "A", "qty": 1}

    def body(**changes: Any) -> bytes:
        return orjson.dumps({**good, **changes, "event_id": f"bad-{rng.getrandbits(48):x}"})

    without_id = dict(good)
    del without_id["event_id"]
    return [
        ("pos", bytes(rng.getrandbits(8) for _ in range(64)) + b"\xff", "random bytes"),
        ("pos", body()[:25], "truncated json"),
        ("pos", body(qty="three"), "wrong type"),
        ("pos", orjson.dumps(without_id), "missing field"),
        ("pos", body()[:-1] + b',"qty":1000000000000000000000000000000}', "huge number"),
        ("pos", body(qty=-5), "negative quantity"),
        ("pos", body()[:-1] + b',"x":NaN}', "NaN"),
        ("inventory", body(type="snapshot")[:-1] + b',"on_hand":Infinity}', "Infinity"),
        ("pos", "é".encode("latin-1") + body(), "not UTF-8"),
        ("pos", body(sku="S" * 100_000), "very long string"),
        ("pos", body(note="x" * 900_000), "900 KB payload"),
        ("pos", body(ts=0), "timestamp 1970"),
        ("pos", body(ts="9999-12-31T23:59:59Z"), "timestamp 9999"),
        ("pos", body(site="NOWHERE"), "unknown site"),
        ("shipments", body(type="teleport"), "unknown type"),
        ("inventory", b"[]", "not an object"),
    ]


def message_of(event: Event) -> tuple[str, bytes]:
    kind, body = event_message(event)
    return kind, orjson.dumps(body)
