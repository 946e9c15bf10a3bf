"""The stockshift dataflow: wiring only. Every step's logic lives in operators/.

    raw messages ──parse──► events ──key by SKU──► sku_state (operators.engine.step)
         │                                              │
         └─► dead letters ─► DLQ              proposals, decisions ─► sinks

Step ids are stable names: they key recovery snapshots and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink

from adapters import kafka, metrics
from adapters.configfiles import load_network, load_policy
from adapters.settings import Settings
from operators import codec
from operators.engine import DecisionContext, step
from operators.parse import parse_message, topic_kinds_for
from state.config import Network, Policy
from state.records import DeadLetter, DecisionRecord, Event, Proposal, RawMessage, StepOutput


@dataclass(frozen=True)
class Sinks:
    proposals: DynamicSink[Proposal]
    decisions: DynamicSink[DecisionRecord]
    dead_letters: DynamicSink[DeadLetter]
    # Optional: one StepOutput per event that reached the state (the demo's lockstep).
    step_outputs: DynamicSink[tuple[str, StepOutput]] | None = None


def kafka_sinks(settings: Settings) -> Sinks:
    def sink(kind: str, serialize: Any) -> kafka.ProducingSink[Any]:
        return kafka.ProducingSink(
            settings.brokers, settings.topic(kind), serialize, settings.kafka_config
        )

    return Sinks(
        proposals=sink("proposals", codec.encode_proposal),
        decisions=sink("decisions", codec.encode_decision),
        dead_letters=sink("dlq", codec.encode_dead_letter),
    )


def _kafka_input(
    flow: Dataflow, settings: Settings
) -> tuple[Stream[RawMessage], Stream[DeadLetter]]:
    consumed = kop.input(
        "kafka_input",
        flow,
        brokers=list(settings.brokers),
        topics=settings.input_topics,
        add_config={**kafka.SOURCE_DEFAULTS, **settings.kafka_config},
        batch_size=500,
    )
    raw = op.map("to_raw", consumed.oks, kafka.to_raw)
    consumer_errors = op.map("consumer_errors", consumed.errs, kafka.error_to_dead_letter)
    return raw, consumer_errors


def _is_event(item: Event | DeadLetter) -> bool:
    return isinstance(item, Event)


def _event_sku(event: Event) -> str:
    return event.sku


def _proposals(keyed: tuple[str, StepOutput]) -> tuple[Proposal, ...]:
    return keyed[1].proposals


def _decisions(keyed: tuple[str, StepOutput]) -> tuple[DecisionRecord, ...]:
    return keyed[1].decisions


def build(
    settings: Settings | None = None,
    *,
    source: Source[RawMessage] | None = None,
    sinks: Sinks | None = None,
    network: Network | None = None,
    policy: Policy | None = None,
) -> Dataflow:
    """The production flow on Kafka, or the same flow on the given source and sinks."""
    settings = settings or Settings()
    network = network or load_network(settings.network_path)
    policy = policy or load_policy(settings.policy_path)
    context = DecisionContext.build(network, policy)
    sinks = sinks or kafka_sinks(settings)

    flow = Dataflow("stockshift")
    consumer_errors: Stream[DeadLetter] | None = None
    if source is None:
        raw, consumer_errors = _kafka_input(flow, settings)
    else:
        raw = op.input("input", flow, source)
    parsed = op.map(
        "parse",
        raw,
        partial(
            parse_message,
            topic_kinds=topic_kinds_for(settings.topic_prefix),
            sites=frozenset(network.sites),
        ),
    )
    split = op.branch("split_dead_letters", parsed, _is_event)
    events: Stream[Event] = split.trues  # type: ignore[assignment]
    dead: Stream[DeadLetter] = split.falses  # type: ignore[assignment]
    if consumer_errors is not None:
        dead = op.merge("all_dead_letters", dead, consumer_errors)
    op.inspect("count_dead_letters", dead, metrics.count_dead_letter)
    op.output("dlq_out", dead, sinks.dead_letters)
    op.inspect("count_events", events, metrics.count_event)

    keyed = op.key_on("key_by_sku", events, _event_sku)
    outputs = op.stateful_map("sku_state", keyed, partial(step, ctx=context))
    # (sku, StepOutput): exactly one per event that reached the state
    op.inspect("count_outputs", outputs, metrics.count_output)
    op.output("proposals_out", op.flat_map("proposals", outputs, _proposals), sinks.proposals)
    op.output("decisions_out", op.flat_map("decisions", outputs, _decisions), sinks.decisions)
    if sinks.step_outputs is not None:
        op.output("step_outputs_out", outputs, sinks.step_outputs)
    return flow
