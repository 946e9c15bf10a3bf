"""Small builders shared by the tests: events, a two-store network, Kafka read-back."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from adapters.kafka import read_topic  # noqa: F401  (re-exported for tests)
from operators.codec import event_message
from operators.engine import step
from state.config import Network, Policy, network_from_dict
from state.records import Event, EventType, RawMessage

HOUR = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

# Every Redis key and topic name a test run makes starts with this run's mark, so the run
# can remove its keys at the end (tests/conftest.py) from a Redis it may share with others.
TEST_RUN = f"sst-{uuid.uuid4().hex[:6]}-"


def unique_prefix(tag: str, end: str = ":") -> str:
    """A fresh Redis key (or topic) prefix inside this test run's mark."""
    return f"{TEST_RUN}{tag}{uuid.uuid4().hex[:8]}{end}"


# The same mark for PostgreSQL schema names (letters, digits and _ only).
TEST_RUN_SCHEMA = TEST_RUN.replace("-", "_")


def unique_schema(tag: str) -> str:
    """A fresh PostgreSQL schema name inside this test run's mark."""
    return f"{TEST_RUN_SCHEMA}{tag}_{uuid.uuid4().hex[:8]}"


def two_store_network(**lane: Any) -> Network:
    return network_from_dict(
        {
            "sites": [
                {"id": "A", "replenishment_lead_hours": 96},
                {"id": "B", "replenishment_lead_hours": 96},
                {"id": "C", "replenishment_lead_hours": 96},
            ],
            "lanes": [
                {
                    "from": "A",
                    "to": "B",
                    "lead_hours": 6,
                    "cost_per_unit": 0.2,
                    "fixed_cost": 5,
                    "bidirectional": True,
                    **lane,
                },
                {"from": "A", "to": "C", "lead_hours": 30, "cost_per_unit": 0.5, "fixed_cost": 20},
            ],
            "sku_defaults": {"unit_cost": 10, "unit_margin": 6, "min_transfer_qty": 2},
        }
    )


def policy(**overrides: Any) -> Policy:
    """The test policy; low-confidence approval and signal checks are off unless a test
    turns them on (their own tests do), so the other rules can be tested alone."""
    return Policy(
        **{"version": "test-1", "confidence_hours": 0.0, "signal_checks": False, **overrides}
    )


# End-to-end runs use the shipped policy (all checks on): 50 hours of history, B ends it
# with 41 on hand, and a damage write-off of 15 (not an outlier: under half the stock)
# takes it well below its reorder point (39).
E2E_HOURS = 50
E2E_B_STOCK = 91


def e2e_trigger(name: str = "damage-B", hour: float = 50.2) -> Event:
    return event(name, EventType.ADJUSTMENT, hour, "B", -15)


def event(
    event_id: str, type_: EventType, hour: float, site: str, qty: int, sku: str = "SKU-1", **kw: Any
) -> Event:
    return Event(event_id, type_, T0 + int(hour * HOUR), sku, site, qty, **kw)


def warm_history(hours: int = 30, sku: str = "SKU-1", b_stock: int = 75) -> list[Event]:
    """A: 300 on hand, B: `b_stock`; both sell one unit an hour for `hours` hours."""
    events = [
        event(f"snap-A-{sku}", EventType.SNAPSHOT, 0, "A", 300, sku),
        event(f"snap-B-{sku}", EventType.SNAPSHOT, 0, "B", b_stock, sku),
    ]
    for h in range(hours):
        for site in ("A", "B"):
            events.append(event(f"sale-{site}-{h}-{sku}", EventType.SALE, h + 0.5, site, 1, sku))
    return events


def raw_of(e: Event, offset: int, prefix: str = "stockshift.") -> RawMessage:
    kind, body = event_message(e)
    return RawMessage(prefix + kind, 0, offset, e.sku.encode(), orjson.dumps(body), 0)


def run_engine(
    events: list[Event], ctx: Any, state: Any = None
) -> tuple[Any, list[Any], list[Any]]:
    """Every event through `engine.step` (no negotiation): the SKU's final state, the
    proposals, and every decision record, a proposal's own record included (it rides with
    the proposal to negotiation and is logged once granted)."""
    proposals: list[Any] = []
    decisions: list[Any] = []
    for e in events:
        state, out = step(state, e, ctx)
        proposals.extend(out.proposals)
        decisions.extend(out.decisions)
        decisions.extend(p.record for p in out.proposals if p.record is not None)
    return state, proposals, decisions


def run_flow(events: list[Event], network: Network, policy_: Policy) -> Any:
    """The production flow (flows.pipeline.build) over the events, in memory: its sinks."""
    return run_raw([raw_of(e, i) for i, e in enumerate(events)], network, policy_)


def run_raw(raws: list[RawMessage], network: Network, policy_: Policy, sinks: Any = None) -> Any:
    """The production flow over messages as consumed, into the given in-memory sinks (by
    default proposals, decisions, dead letters and step outputs); returns them."""
    from bytewax.testing import TestingSource, run_main

    from adapters.lab.memory import ListSink
    from adapters.settings import Settings
    from flows.pipeline import Sinks, build

    out = sinks if sinks is not None else Sinks(ListSink(), ListSink(), ListSink(), ListSink())
    run_main(
        build(Settings(), source=TestingSource(raws), sinks=out, network=network, policy=policy_)
    )
    return out
