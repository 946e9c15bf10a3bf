from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from bytewax.testing import TestingSource, run_main

from adapters.lab.memory import ListSink, PullSource
from adapters.lab.simulator import Scenario, Simulation, SimulatorFeed, make_network
from adapters.recovery import recovery_config
from adapters.settings import Settings
from flows.lab.demo import run_demo
from flows.pipeline import Sinks, SkuLogic, build
from operators.engine import DecisionContext, step
from operators.lanes import ReceivingState, negotiate_all, receiving_items
from operators.limits import KeyBudget
from operators.parse import parse_message, topic_kinds_for
from state.records import Event, EventType, RawMessage
from tests.support.helpers import event, policy, raw_of, run_raw, two_store_network, warm_history

NEGOTIATION_REASONS = {
    "granted in part",
    "lane_capacity",
    "storage_capacity",
    "waiting_for_trip",
    "trip_not_filled",
}


def memory_sinks() -> Sinks:
    return Sinks(ListSink(), ListSink(), ListSink(), ListSink())


def test_flow_turns_events_into_a_proposal_and_bad_input_into_dead_letters() -> None:
    events = [*warm_history(), event("count-B", EventType.SNAPSHOT, 30.2, "B", 20)]
    raws = [raw_of(e, i) for i, e in enumerate(events)]
    bad = [
        RawMessage("stockshift.pos", 0, 900, b"SKU-1", b"{oops", 0),
        RawMessage("stockshift.pos", 0, 901, b"SKU-1", orjson.dumps({"event_id": "x"}), 0),
        RawMessage("stockshift.inventory", 0, 902, None, b"\xff", 0),
    ]
    # Bad input in the middle of the stream must not stop what follows.
    stream = raws[:10] + bad + raws[10:]
    sinks = run_raw(stream, two_store_network(), policy(), memory_sinks())
    assert [(p.from_site, p.to_site) for p in sinks.proposals.items] == [("A", "B")]
    assert sinks.proposals.items[0].trigger_event_ids == ("count-B",)
    assert sorted(d.offset for d in sinks.dead_letters.items) == [900, 901, 902]
    assert {d.reason for d in sinks.dead_letters.items} == {"not_json", "missing_field"}
    # Every message is accounted for: processed or dead-lettered.
    assert len(sinks.step_outputs.items) + len(sinks.dead_letters.items) == len(stream)
    assert any(d.proposal_id == sinks.proposals.items[0].proposal_id for d in sinks.decisions.items)


@pytest.mark.parametrize(
    ("seed", "lane_capacity", "trips_and_forecasts"), [(3, 3, False), (5, 6, False), (8, 6, True)]
)
def test_flow_and_direct_engine_make_identical_proposals_for_the_same_events(
    seed: int, lane_capacity: int, trips_and_forecasts: bool
) -> None:
    # Lanes and sites constrained, so negotiation cuts and drops proposals on both paths.
    # (Seed 5 with 6-unit lanes gave different grants before negotiation ordered its batch:
    # the dataflow hands it on SKU by SKU, the simulator in event order.) The third case
    # adds forecasts and trip costs: proposals wait for their trip and go on later (seed 8:
    # since forecasts are scored against sales, seed 5's draw no longer has one that waits
    # and then goes; which draws do is chance, the test needs one).
    scenario = Scenario(
        n_sites=4,
        n_skus=12,
        days=6,
        seed=seed,
        lane_capacity_per_day=lane_capacity,
        storage_capacity_days=5,
        publish_forecasts=trips_and_forecasts,
        cost_model="per_trip" if trips_and_forecasts else "per_transfer",
    )
    network = make_network(scenario)
    pol = policy()
    feed = SimulatorFeed(Simulation(scenario, network), "stockshift.")
    sent: list[list[RawMessage]] = []

    def recording_pull() -> list[RawMessage] | None:
        batch = feed.pull()
        if batch:
            sent.append(batch)
        return batch

    sinks = Sinks(
        ListSink(),
        ListSink(),
        ListSink(feed.on_dead_letters),
        ListSink(feed.on_step_outputs),
        negotiated=ListSink(feed.on_negotiated),
    )
    run_main(
        build(
            Settings(), source=PullSource(recording_pull), sinks=sinks, network=network, policy=pol
        )
    )
    assert sinks.proposals.items, "the scenario should need transfers"
    ctx = DecisionContext.build(network, pol)
    states: dict[str, object] = {}
    receiving: dict[str, ReceivingState] = {}
    direct = []
    kinds = topic_kinds_for("stockshift.")
    for batch in sent:  # one simulated hour: negotiated together, as in the flow
        items = []
        for raw in batch:
            parsed = parse_message(raw, kinds, frozenset(network.sites))
            assert isinstance(parsed, Event)
            states[parsed.sku], out = step(states.get(parsed.sku), parsed, ctx)  # type: ignore[arg-type]
            items.extend(receiving_items(out))
        outcomes = negotiate_all(receiving, items, network)
        direct.extend(o.proposal for o in outcomes if o.proposal is not None)
    key = lambda p: (p.sku, p.created_at_ms, p.proposal_id)  # noqa: E731
    assert sorted(sinks.proposals.items, key=key) == sorted(direct, key=key)
    # Negotiation changed some (fewer units, or dropped): the constraints were in play.
    negotiated = [d for d in sinks.decisions.items if d.reason in NEGOTIATION_REASONS]
    assert negotiated, "the constrained scenario should make negotiation cut or drop proposals"
    if trips_and_forecasts:
        waited = {d.proposal_id for d in negotiated if d.reason == "waiting_for_trip"}
        # Some waited for their trip and then went out once it paid.
        assert waited & {p.proposal_id for p in sinks.proposals.items}


def test_demo_writes_outputs_and_improves_fill_rate(tmp_path: Path) -> None:
    summary = run_demo(tmp_path, Scenario(n_sites=4, n_skus=10, days=7, seed=11), quiet=True)
    without, with_ = summary["kpis"]["without"], summary["kpis"]["with stockshift"]
    assert with_["network_fill_rate"] > without["network_fill_rate"]
    assert with_["units_moved"] > 0 and without["units_moved"] == 0
    lines = (tmp_path / "proposals.jsonl").read_bytes().splitlines()
    assert len(lines) == with_["proposals"] > 0
    first = orjson.loads(lines[0])
    assert {
        "proposal_id",
        "sku",
        "from_site",
        "to_site",
        "qty",
        "created_at",
        "expires_at",
        "policy_version",
        "status",
        "reason",
        "evidence",
        "trigger_event_ids",
    } <= set(first)
    assert orjson.loads((tmp_path / "kpis.json").read_bytes())["kpis"] == summary["kpis"]
    assert (tmp_path / "fill_rate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recovery_keeps_each_stateful_steps_snapshot_path(tmp_path: Path) -> None:
    """Recovery keys a snapshot by its step's full path: the paths earlier versions wrote
    must stay, or a restart after an upgrade starts that state empty (negotiation moved
    from stateful_map to its own batch logic and kept stateful_map's path)."""
    scenario = Scenario(
        n_sites=4, n_skus=6, days=2, seed=3, lane_capacity_per_day=3, storage_capacity_days=5
    )
    network = make_network(scenario)
    feed = SimulatorFeed(Simulation(scenario, network), "stockshift.")
    messages = feed._raw(feed.sim.initial_events())
    while not feed.sim.done:
        messages += feed._raw(feed.sim.advance_hour())
    sinks = Sinks(ListSink(), ListSink(), ListSink())
    run_main(
        build(
            Settings(),
            source=TestingSource(messages, batch_size=200),
            sinks=sinks,
            network=network,
            policy=policy(),
        ),
        epoch_interval=timedelta(seconds=0),
        recovery_config=recovery_config(tmp_path, 0),
    )
    (store,) = tmp_path.glob("part-*.sqlite3")
    with closing(sqlite3.connect(store)) as db:
        steps = {row[0] for row in db.execute("select distinct step_id from snaps")}
    assert {
        "stockshift.sku_state.stateful_batch",
        "stockshift.negotiation.stateful_flat_map.stateful.stateful_batch",
    } <= steps
    assert "stockshift.negotiation" not in steps


def test_sku_state_is_pickled_for_a_snapshot_only_when_recovery_stores_it() -> None:
    """Without recovery nothing stores a snapshot, and pickling every touched SKU at each
    epoch's end stalls the worker; with it, the snapshot resumes the same state."""
    ctx = DecisionContext.build(two_store_network(), policy())
    budget = KeyBudget(10)
    kept = SkuLogic(ctx, None, True, budget, None)
    skipped = SkuLogic(ctx, None, False, budget, None)
    for e in warm_history():
        kept.on_item(e)
        skipped.on_item(e)
    snapshot = kept.snapshot()
    assert snapshot and SkuLogic(ctx, None, True, budget, snapshot).snapshot() == snapshot
    assert skipped.snapshot() == b""
    assert SkuLogic(ctx, None, False, budget, b"").snapshot() == b""
    assert budget.held == 3  # two admitted SKUs and one restored


def test_the_flow_learns_a_slow_lane_and_a_late_supplier_and_exports_them() -> None:
    """Twenty transfers on A->B (configured 5 h) each take 15 h, and twenty deliveries to C
    come 9 h after their ETAs: the flow's sink folds them into the board the planner reads
    and exports configured, learned and planned leads and delays."""
    from prometheus_client import REGISTRY

    from tests.unit.test_leadtimes import delivery, transfer

    events = [event("count-A", EventType.SNAPSHOT, 0, "A", 500)]
    for n in range(20):
        events += transfer(n, "A", "B", 1.0 + n, 15.0)
        events += delivery(n, "C", 1.0 + n, 30.0 + n, 9.0)
    events.sort(key=lambda e: e.ts_ms)
    run_raw([raw_of(e, i) for i, e in enumerate(events)], two_store_network(lead_hours=5), policy())

    def gauge(name: str, lane: str) -> float | None:
        return REGISTRY.get_sample_value(f"stockshift_lane_lead_time_{name}_hours", {"lane": lane})

    assert gauge("configured", "A->B") == 5.0
    assert gauge("learned", "A->B") == 15.0 and gauge("planned", "A->B") == 15.0
    assert gauge("planned", "A->C") == 30.0  # no transfers: as configured
    delay = REGISTRY.get_sample_value
    assert delay("stockshift_supplier_delay_planned_hours", {"site": "C"}) == 9.0
    assert delay("stockshift_supplier_delay_learned_hours", {"site": "C"}) == 9.0
    assert delay("stockshift_supplier_delay_planned_hours", {"site": "B"}) == 0.0
