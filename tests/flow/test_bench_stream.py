"""The bench's stream: a simulated network's events, which the flow replays from Kafka into
the same proposals (so the throughput bench times a flow that decides, and execution's
answers in the stream match what it proposed)."""

from __future__ import annotations

from bytewax.testing import TestingSource, run_main

from adapters.lab import benchgen
from adapters.lab.memory import ListSink
from adapters.lab.simulator import make_network
from adapters.settings import Settings
from flows.lab.bench import BENCH_POLICY, bench_scenario, bench_stream
from flows.pipeline import Sinks, build
from state.records import RawMessage


def test_the_flow_replaying_the_bench_stream_makes_the_proposals_the_world_answered() -> None:
    scenario = bench_scenario(n_skus=40, n_events=12_000)
    stream = bench_stream(scenario, 12_000)
    assert len(stream) == 12_000
    mix = benchgen.mix(stream)
    assert mix["sale"] > 0 and mix["snapshot"] > 0 and mix["inbound_expected"] > 0
    answered = {
        body["proposal_id"]
        for _, body in stream
        if body.get("type") in {"transfer_dispatched", "transfer_rejected", "transfer_failed"}
    }
    assert answered, "the bench world made no proposal: it would time a flow that never decides"

    settings = Settings()
    raws = [
        RawMessage(settings.topic(kind), 0, offset, key, value, ts, ts)
        for offset, (kind, key, value, ts) in enumerate(benchgen.encode(stream))
    ]
    # In the order the Kafka source merges the topics: by time, then topic.
    raws.sort(key=lambda raw: (raw.timestamp_ms, raw.topic, raw.offset))
    sinks = Sinks(ListSink(), ListSink(), ListSink())
    run_main(
        build(
            settings,
            source=TestingSource(raws, batch_size=500),
            sinks=sinks,
            network=make_network(scenario),
            policy=BENCH_POLICY,
            snapshots=False,
        )
    )
    proposed = {p.proposal_id for p in sinks.proposals.items}
    assert answered <= proposed
    assert not sinks.dead_letters.items
