"""The stockshift dataflow: wiring only. Every step's logic lives in operators/.

    raw messages ──parse──► events ──key by SKU──► sku_state (operators.engine.step)
         │                                              │        ▲ governance_at(ts)
         └─► dead letters ─► DLQ          proposals, decisions, live positions ─► sinks
    control ──control_auth──► commands ─► governance board ┘ (and the decision log)

Step ids are stable names: they key recovery snapshots and metrics.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.operators import KeyedStream, StatefulBatchLogic
from bytewax.outputs import DynamicSink

from adapters import clock, kafka, metrics
from adapters.control import GovernanceBoard, GovernanceSink
from adapters.kafka_source import MergedKafkaSource
from adapters.leadtimes import LeadTimeSink
from adapters.logs import FirstOccurrences
from adapters.redis_store import LiveStateItem, LiveStateSink, RedisSettings
from adapters.settings import Settings, control_topic
from operators import codec, snapshot
from operators.control import (
    ControlAuth,
    NonceMemory,
    as_command,
    authenticate,
    control_decision,
)
from operators.engine import DecisionContext, step
from operators.lanes import (
    NegotiationOutcome,
    ReceivingItem,
    ReceivingState,
    negotiate_batch,
    receiving_items,
    receiving_site,
)
from operators.limits import (
    HOLD,
    IDLE_CHECK,
    LEAVE,
    IdleCheck,
    IdleSweep,
    KeyBudget,
    over_budget_letter,
    step_failed_letter,
)
from operators.parse import parse_message, topic_kinds_for
from state.config import Network, Policy
from state.governance import ControlCommand, ControlRejection
from state.records import (
    DeadLetter,
    DecisionRecord,
    Event,
    Finding,
    LeadTime,
    Proposal,
    RawMessage,
    StepOutput,
    SupplierDelay,
)
from state.sku import SkuState

T = TypeVar("T")
log = logging.getLogger("stockshift")
# Each kind of step failure is logged once, with its traceback (a dead letter names each).
_FAILURES_LOGGED = FirstOccurrences()


@dataclass(frozen=True)
class Sinks:
    proposals: DynamicSink[Proposal]
    decisions: DynamicSink[DecisionRecord]
    dead_letters: DynamicSink[DeadLetter]
    # Optional: one StepOutput per event that reached the state (the demo's lockstep).
    step_outputs: DynamicSink[tuple[str, StepOutput]] | None = None
    # Optional: live positions and decision trails (Redis).
    # (the engine's outputs, and negotiation's decision records for the proposals' trails).
    live_state: DynamicSink[LiveStateItem] | None = None
    # Optional: signal-health findings (stockshift.anomalies).
    anomalies: DynamicSink[Finding] | None = None
    # Optional: every proposal's negotiation outcome (the demo's lockstep feeds granted ones
    # back into the simulated world).
    negotiated: DynamicSink[NegotiationOutcome] | None = None


@dataclass
class Control:
    """How operators steer the flow: the board decisions read, and where commands come from.

    `source` feeds control messages in memory (tests); in Kafka mode the control topic is read
    from `start_offset` (what `adapters.control.preload` left off at).
    """

    board: GovernanceBoard = field(default_factory=GovernanceBoard)
    # None: built from the settings' keys and skew, and the policy versions the flow loads.
    auth: ControlAuth | None = None
    start_offset: int = 0
    nonces: NonceMemory = field(default_factory=NonceMemory)
    source: Source[RawMessage] | None = None


def control_auth(settings: Settings, versions: Iterable[str]) -> ControlAuth:
    """How control messages are checked: the configured keys and skew, and the policy
    versions this flow can activate."""
    return ControlAuth(
        keys=dict(settings.control_keys),
        max_skew_ms=int(settings.control_max_skew_s * 1000),
        known_versions=frozenset(versions),
    )


def redis_settings(settings: Settings) -> RedisSettings | None:
    if settings.redis_url is None:
        return None
    return RedisSettings(url=settings.redis_url, prefix=settings.redis_prefix)


def proposal_encoder(settings: Settings) -> Callable[[Proposal], codec.KafkaMessage]:
    """JSON, or registry-framed Avro with STOCKSHIFT_OUTPUT_FORMAT=avro."""
    if settings.output_format != "avro" or not settings.schema_registry_url:
        return codec.encode_proposal
    from adapters.avro import AvroCodec

    avro, topic = AvroCodec(settings.schema_registry_url), settings.topic("proposals")
    return lambda proposal: avro.encode_proposal(proposal, topic)


def kafka_sinks(settings: Settings) -> Sinks:
    def sink(kind: str, serialize: Any) -> kafka.ProducingSink[Any]:
        return kafka.ProducingSink(
            settings.brokers, settings.topic(kind), serialize, settings.kafka_config
        )

    redis = redis_settings(settings)
    encode = proposal_encoder(settings)
    proposals: DynamicSink[Proposal] = kafka.ProposalSink(
        settings.brokers, settings.topic("proposals"), encode, settings.kafka_config
    )
    if redis is not None:
        proposals = kafka.LedgeredProposalSink(
            settings.brokers, settings.topic("proposals"), encode, redis, settings.kafka_config
        )
    return Sinks(
        proposals=proposals,
        decisions=sink("decisions", codec.encode_decision),
        dead_letters=sink("dlq", codec.dead_letter_message),
        live_state=LiveStateSink(redis) if redis is not None else None,
        anomalies=sink("anomalies", codec.encode_finding),
    )


class _only(Generic[T]):
    """`flat_map_batch` helper: keep a batch's items of one type (errors travel as data)."""

    def __init__(self, kind: type[T]) -> None:
        self.kind = kind

    def __call__(self, items: list[Any]) -> list[T]:
        kind = self.kind
        return [item for item in items if isinstance(item, kind)]


# The flow's stateless steps take a batch at a time (`flat_map_batch`): Bytewax's per-item
# operators (map, filter_map, inspect, key_on) are Python shims that call back once per
# item, and the flow had a dozen of them per event (issue #23: ~0.4 us each).
def _split(step_id: str, up: Stream[Any], kind: type[T]) -> Stream[T]:
    return op.flat_map_batch(step_id, up, _only(kind))


class SkuLogic(StatefulBatchLogic[Event | IdleCheck, StepOutput, bytes]):
    """Runs `engine.step` for one SKU; its snapshot is the pickled state.

    `stateful_map` would deep-copy the whole SKU state at every epoch a key is touched (with
    or without recovery); profiling the flow showed that copy taking 40% of the time. A
    pickle is an immutable snapshot at a fraction of the cost, and what recovery stores anyway.
    A new SKU is admitted only while the process's `KeyBudget` has room.

    Idle SKUs leave when an `IdleCheck` finds them idle (`operators.limits.IdleSweep`), not
    at a deadline handed to Bytewax (`notify_at` stays None): Bytewax's scheduler walks every
    held key's deadline at each activation.
    """

    __slots__ = ("_budget", "_ctx", "_idle_rounds", "_snapshots", "_state", "_sweep")

    def __init__(
        self,
        ctx: DecisionContext,
        sweep: IdleSweep | None,
        snapshots: bool,
        budget: KeyBudget,
        resume: bytes | None,
    ) -> None:
        self._ctx = ctx
        self._sweep = sweep
        self._snapshots = snapshots
        self._budget = budget
        self._state: SkuState | None = snapshot.decode(resume) if resume else None
        if self._state is not None:
            budget.restored()
            if sweep is not None:
                sweep.touch(self._state.sku, clock.now_s())
        self._idle_rounds = 0

    def on_batch(self, values: list[Event | IdleCheck]) -> tuple[list[StepOutput], bool]:
        outputs = []
        for value in values:
            if isinstance(value, IdleCheck):
                self._leave_if_idle()
            else:
                outputs.append(self.on_item(value))
        return outputs, self._state is None

    def on_item(self, value: Event) -> StepOutput:
        """One event's output; a SKU the budget has no room for is refused, with a letter."""
        if self._state is None and not self._budget.take():
            metrics.SKUS_REFUSED.inc()
            letter = over_budget_letter(value, self._budget.capacity)
            return StepOutput(value.event_id, event_ts_ms=value.ts_ms, refused=letter)
        try:
            self._state, output = step(self._state, value, self._ctx)
        except Exception as failure:  # any defect (see `_failed`)
            return self._failed(value, failure)
        if self._sweep is not None:
            self._sweep.touched[value.sku] = clock.now_s()
        self._idle_rounds = 0
        return output

    def _failed(self, value: Event, failure: Exception) -> StepOutput:
        """An event whose step raised is a dead letter (`step_failed`), not the flow's end:
        a restart would replay it and stop again, for every SKU. The SKU keeps the state
        the step left (the event may be partly applied; docs/runbook.md says what to do),
        and a SKU the step would have created is not held."""
        if _FAILURES_LOGGED.first(f"{type(failure).__name__}: {failure}"):
            log.error(
                "decision step failed; its event is dead-lettered (step_failed)",
                exc_info=failure,
                extra={"event_id": value.event_id, "sku": value.sku, "site": value.site},
            )
        if self._state is None:
            self._budget.give_back()
        letter = step_failed_letter(value, failure)
        return StepOutput(value.event_id, event_ts_ms=value.ts_ms, refused=letter)

    def _leave_if_idle(self) -> None:
        """Idle SKUs leave memory (their last positions stay in Redis): `IdleSweep.check`."""
        state, sweep = self._state, self._sweep
        if state is None or sweep is None:
            return
        policy = self._ctx.policy
        hold_s = max(policy.proposal_ttl_hours, policy.approval_ttl_hours) * 3600
        verdict = sweep.check(state, clock.now_s(), self._idle_rounds > 0, hold_s)
        if verdict == HOLD:
            self._idle_rounds = 1
        elif verdict == LEAVE:
            self._state = None
            self._idle_rounds = 0
            self._budget.give_back()
            metrics.KEYS_HELD.dec()
            metrics.KEYS_EVICTED.inc()

    @property
    def state(self) -> SkuState | None:
        return self._state

    def snapshot(self) -> bytes:
        """The pickled state; empty when the run has no recovery to store it."""
        return snapshot_state(self._state) if self._snapshots else b""


class NegotiationLogic(StatefulBatchLogic[ReceivingItem, NegotiationOutcome, ReceivingState]):
    """Negotiation in the dataflow: one receiving site, a batch at a time, in
    `operators.lanes.negotiate_batch`. Its snapshot is a copy of the site's state, as
    `stateful_map` stored it."""

    def __init__(self, network: Network, resume: ReceivingState | None) -> None:
        self._network = network
        self._state = resume or ReceivingState()

    def on_batch(self, values: list[ReceivingItem]) -> tuple[list[NegotiationOutcome], bool]:
        self._state, outcomes = negotiate_batch(
            self._state, values, self._network, _negotiation_failed
        )
        return outcomes, StatefulBatchLogic.RETAIN

    def snapshot(self) -> ReceivingState:
        return copy.deepcopy(self._state)


def _negotiation_failed(item: ReceivingItem | None, failure: Exception) -> None:
    """Counted, and logged with its traceback once per kind of failure; the item's answer
    is `operators.lanes.failed_outcome` (the same guard as the decision step's). No item:
    ordering the batch failed, and it was negotiated in arrival order."""
    kind = _negotiation_item_kind(item)
    metrics.NEGOTIATION_FAILURES.labels(item=kind).inc()
    if _FAILURES_LOGGED.first(f"negotiation {kind} {type(failure).__name__}: {failure}"):
        _log_negotiation_failure(item, kind, failure)


def _log_negotiation_failure(item: ReceivingItem | None, kind: str, failure: Exception) -> None:
    if item is None:
        message = "ordering a negotiation batch failed; it went in arrival order"
        log.error(message, exc_info=failure, extra={"item": kind})
        return
    message = "negotiation failed; the item is dropped (negotiation_failed)"
    where = {"sku": item.sku, "item": kind, "site": receiving_site(item)}
    log.error(message, exc_info=failure, extra=where)


def _negotiation_item_kind(item: ReceivingItem | None) -> str:
    if item is None:
        return "batch_order"
    return "proposal" if isinstance(item, Proposal) else "occupancy"


# Recovery keys a snapshot by the full path of the step that holds it. Negotiation ran as
# `stateful_map("negotiation")` before, whose state lives at
# negotiation.stateful_flat_map.stateful.stateful_batch; these scopes keep that path, so a
# restart after an upgrade resumes each site's lane grants and occupancy instead of
# starting them empty.
@operator
def _negotiation(
    step_id: str, up: KeyedStream[ReceivingItem], network: Network
) -> KeyedStream[NegotiationOutcome]:
    return _stateful_flat_map_scope("stateful_flat_map", up, network)


@operator
def _stateful_flat_map_scope(
    step_id: str, up: KeyedStream[ReceivingItem], network: Network
) -> KeyedStream[NegotiationOutcome]:
    return _stateful_scope("stateful", up, network)


@operator
def _stateful_scope(
    step_id: str, up: KeyedStream[ReceivingItem], network: Network
) -> KeyedStream[NegotiationOutcome]:
    return op.stateful_batch("stateful_batch", up, partial(NegotiationLogic, network))


# `op.stateful("sku_state")` held this state before, at sku_state.stateful_batch; this scope
# keeps that path, so a restart after an upgrade resumes every SKU.
@operator
def _sku_state(
    step_id: str,
    up: KeyedStream[Event | IdleCheck],
    builder: Callable[[bytes | None], SkuLogic],
) -> KeyedStream[StepOutput]:
    return op.stateful_batch("stateful_batch", up, builder)


def snapshot_state(state: SkuState | None) -> bytes:
    """What recovery stores for a SKU at each epoch it was touched (and what `stockshift
    bench` times per key): operators.snapshot."""
    return snapshot.encode(state)


class KeyBySku:
    """Each event keyed by its SKU; ahead of them, when a sweep is due, an `IdleCheck` for
    every SKU held that has been idle long enough. Sweeps ride on arriving batches, and on
    Kafka on a clock as well (`build`)."""

    def __init__(self, sweep: IdleSweep | None) -> None:
        self._sweep = sweep

    def __call__(self, events: list[Event]) -> list[tuple[str, Event | IdleCheck]]:
        keyed: list[tuple[str, Event | IdleCheck]] = [(event.sku, event) for event in events]
        if self._sweep is not None:
            checks = _idle_checks(self._sweep, events)
            if checks:
                keyed[:0] = checks
        return keyed


def _idle_checks(sweep: IdleSweep, _woken_by: list[Any]) -> list[tuple[str, Event | IdleCheck]]:
    """An `IdleCheck` for each SKU held that has been idle long enough, when a sweep is due."""
    return [(sku, IDLE_CHECK) for sku in sweep.due(clock.now_s())]


def _control_key(_raw: RawMessage) -> str:
    return "control"


def _to_negotiation(keyed: list[tuple[str, StepOutput]]) -> list[tuple[str, ReceivingItem]]:
    """Each output's proposals and occupancy, keyed by the site that would receive them."""
    return [(receiving_site(item), item) for _, output in keyed for item in receiving_items(output)]


def _refused(keyed: list[tuple[str, StepOutput]]) -> list[DeadLetter]:
    return [output.refused for _, output in keyed if output.refused is not None]


def _decisions(keyed: list[tuple[str, StepOutput]]) -> list[DecisionRecord]:
    return [decision for _, output in keyed for decision in output.decisions]


def _negotiation_outcomes(keyed: list[tuple[str, NegotiationOutcome]]) -> list[NegotiationOutcome]:
    """Occupancy updates come out as an empty outcome; only proposals' outcomes go on."""
    return [
        outcome
        for _, outcome in keyed
        if outcome.proposal is not None or outcome.decision is not None
    ]


def _granted(outcomes: list[NegotiationOutcome]) -> list[Proposal]:
    return [outcome.proposal for outcome in outcomes if outcome.proposal is not None]


def _negotiation_decisions(outcomes: list[NegotiationOutcome]) -> list[DecisionRecord]:
    return [outcome.decision for outcome in outcomes if outcome.decision is not None]


def _lead_times(keyed: list[tuple[str, StepOutput]]) -> list[LeadTime | SupplierDelay]:
    found: list[LeadTime | SupplierDelay] = [seen for _, out in keyed for seen in out.lead_times]
    return found + [seen for _, out in keyed for seen in out.supplier_delays]


def _findings(keyed: list[tuple[str, StepOutput]]) -> list[Finding]:
    return [finding for _, output in keyed for finding in output.findings]


def _verdict(
    keyed: tuple[str, ControlCommand | ControlRejection],
) -> ControlCommand | ControlRejection:
    return keyed[1]


@dataclass(frozen=True)
class _Inputs:
    """The flow's input streams: raw input messages, the consumers' own errors, and control
    messages (None when the run has no control input)."""

    raw: Stream[RawMessage]
    consumer_errors: Stream[DeadLetter]
    control_raw: Stream[RawMessage] | None


def build(
    settings: Settings,
    *,
    network: Network,
    policy: Policy,
    policies: Mapping[str, Policy] | None = None,
    shadow_policy: Policy | None = None,
    source: Source[Any] | None = None,
    sinks: Sinks | None = None,
    control: Control | None = None,
    snapshots: bool = True,
) -> Dataflow:
    """The production flow on Kafka, or the same flow on the given source and sinks.

    `snapshots=False` for a run without recovery: Bytewax asks every SKU touched in an epoch
    for a snapshot whether or not anything stores it, and pickling thousands of SKU states
    at each epoch's end stalls the worker for that long (the p99 of trigger-to-proposal
    latency)."""
    control = control or Control()
    sinks = sinks or kafka_sinks(settings)
    context = DecisionContext.build(
        network,
        policy,
        policies=policies,
        governance_at=control.board.at,
        shadow_policy=shadow_policy,
        shadow_share=settings.shadow_share,
        emit_positions=sinks.live_state is not None,
    )
    flow = Dataflow("stockshift")
    inputs = _inputs(flow, settings, network, source, control)
    events, dead = _parse(inputs.raw, settings, network)
    sweep = IdleSweep(settings.idle_eviction_s) if settings.idle_eviction_s > 0 else None
    keyed: KeyedStream[Event | IdleCheck] = op.flat_map_batch("key_by_sku", events, KeyBySku(sweep))
    if sweep is not None and source is None:
        # On Kafka the input never ends and may fall quiet: a clock wakes the sweep too.
        ticks = op.input("idle_sweep_clock", flow, clock.Ticks(sweep.every_s))
        checks = op.flat_map_batch("idle_checks", ticks, partial(_idle_checks, sweep))
        keyed = op.merge("keyed_with_idle_checks", keyed, checks)
    budget = KeyBudget(settings.max_skus)
    outputs = _sku_state("sku_state", keyed, partial(SkuLogic, context, sweep, snapshots, budget))
    # (sku, StepOutput): exactly one per event that reached the state
    op.flat_map_batch("count_outputs", outputs, metrics.count_outputs)
    refused = op.flat_map_batch("refused_events", outputs, _refused)
    dead = op.merge("all_dead_letters", dead, inputs.consumer_errors, refused)
    op.flat_map_batch("count_dead_letters", dead, metrics.count_dead_letters)
    op.output("dlq_out", dead, sinks.dead_letters)
    if context.lead_times is not None:
        received = op.flat_map_batch("lead_times", outputs, _lead_times)
        op.output("lead_times_out", received, LeadTimeSink(context.lead_times))
    lane_decisions = _negotiate(outputs, network, sinks)
    decisions = op.merge(
        "engine_and_negotiation_decisions",
        op.flat_map_batch("decisions", outputs, _decisions),
        lane_decisions,
    )
    if inputs.control_raw is not None:
        auth = control.auth or control_auth(settings, context.policies)
        audit = _control(inputs.control_raw, control, auth, policy)
        decisions = op.merge("all_decisions", decisions, audit)
    op.output("decisions_out", decisions, sinks.decisions)
    _optional_outputs(outputs, lane_decisions, sinks)
    return flow


def _inputs(
    flow: Dataflow,
    settings: Settings,
    network: Network,
    source: Source[Any] | None,
    control: Control,
) -> _Inputs:
    """Kafka (the input topics merged in order, and the control topic), or the given
    source (and control source)."""
    if source is not None:
        given = op.input("input", flow, source)
        control_raw = None
        if control.source is not None:
            control_raw = op.input("control_input", flow, control.source)
        return _Inputs(
            _split("given_messages", given, RawMessage),
            _split("given_errors", given, DeadLetter),
            control_raw,
        )
    merged_source: Source[RawMessage | DeadLetter] = MergedKafkaSource(
        settings.brokers,
        settings.input_topics,
        settings.kafka_config,
        consumer_config=kafka.SOURCE_DEFAULTS,
        grace_ms=settings.merge_grace_ms,
        max_future_ms=int(network.limits.max_future_minutes * 60_000),
        consumer_group=settings.consumer_group,
    )
    merged = op.input("kafka_input", flow, merged_source)
    input_errors = _split("consumer_errors", merged, DeadLetter)
    # The control topic through the same non-blocking consumer: Bytewax's own Kafka input
    # waits up to 1 ms in each poll, and the worker with it (measured: 4 ms of p50
    # trigger-to-proposal latency at 2,000 events/s).
    control_source: Source[RawMessage | DeadLetter] = MergedKafkaSource(
        settings.brokers,
        [control_topic(settings)],
        settings.kafka_config,
        consumer_config=kafka.SOURCE_DEFAULTS,
        grace_ms=0.0,
        start_offset=control.start_offset,
        part_name="control",
    )
    control_merged = op.input("control_input", flow, control_source)
    control_errors = _split("control_consumer_errors", control_merged, DeadLetter)
    return _Inputs(
        _split("consumed_messages", merged, RawMessage),
        op.merge("consumer_errors_all", input_errors, control_errors),
        _split("control_messages", control_merged, RawMessage),
    )


def _parse(
    raw: Stream[RawMessage], settings: Settings, network: Network
) -> tuple[Stream[Event], Stream[DeadLetter]]:
    """Every message an event or a dead letter with its reason (operators.parse)."""
    letters: list[Stream[DeadLetter]] = []
    if settings.schema_registry_url:
        from adapters.avro import AvroCodec

        decoded = op.map("decode_avro", raw, AvroCodec(settings.schema_registry_url).decode_raw)
        raw = _split("decoded", decoded, RawMessage)
        letters.append(_split("undecodable", decoded, DeadLetter))
    parse = partial(
        parse_message,
        topic_kinds=topic_kinds_for(settings.topic_prefix),
        sites=frozenset(network.sites),
        ceilings=network.unit_ceilings(),
        max_future_ms=int(network.limits.max_future_minutes * 60_000),
    )
    parsed = op.flat_map_batch("parse", raw, partial(_parse_batch, parse))
    events = _split("events", parsed, Event)
    dead = _split("dead_letters", parsed, DeadLetter)
    if letters:
        dead = op.merge("parse_and_decode_dead_letters", dead, *letters)
    op.flat_map_batch("count_events", events, metrics.count_events)
    return events, dead


def _parse_batch(
    parse: Callable[[RawMessage], Event | DeadLetter], raws: list[RawMessage]
) -> list[Event | DeadLetter]:
    return [parse(raw) for raw in raws]


def _negotiate(
    outputs: KeyedStream[StepOutput], network: Network, sinks: Sinks
) -> Stream[DecisionRecord]:
    """Proposals (and, for sites with a storage capacity, occupancy) keyed by receiving
    site, where lane capacity and storage are both shared (operators.lanes); granted
    proposals to their sink. Returns negotiation's decision records: a proposal's record
    comes from here, once granted (with the units granted), or its refusal."""
    receiving: KeyedStream[ReceivingItem] = op.flat_map_batch(
        "to_negotiation", outputs, _to_negotiation
    )
    negotiated = op.flat_map_batch(
        "negotiation_outcomes",
        _negotiation("negotiation", receiving, network),
        _negotiation_outcomes,
    )
    op.flat_map_batch("count_negotiation", negotiated, metrics.count_negotiations)
    if sinks.negotiated is not None:
        op.output("negotiated_out", negotiated, sinks.negotiated)
    op.output("proposals_out", op.flat_map_batch("granted", negotiated, _granted), sinks.proposals)
    return op.flat_map_batch("lane_decisions", negotiated, _negotiation_decisions)


def _control(
    control_raw: Stream[RawMessage], control: Control, auth: ControlAuth, policy: Policy
) -> Stream[DecisionRecord]:
    """Authenticate control messages; accepted commands go to the governance board. Returns
    the audit line of every control message, applied or rejected."""
    verdicts = op.map(
        "control_verdicts",
        op.stateful_map(
            "control_auth",
            op.key_on("key_control", control_raw, _control_key),
            partial(
                authenticate,
                auth=auth,
                initial=control.nonces,
            ),
        ),
        _verdict,
    )
    op.inspect("count_control", verdicts, metrics.count_control)
    commands = op.filter_map("accepted_commands", verdicts, as_command)
    op.output("governance_out", commands, GovernanceSink(control.board))
    return op.map(
        "control_audit", verdicts, partial(control_decision, policy_version=policy.version)
    )


def _optional_outputs(
    outputs: KeyedStream[StepOutput], lane_decisions: Stream[DecisionRecord], sinks: Sinks
) -> None:
    if sinks.step_outputs is not None:
        op.output("step_outputs_out", outputs, sinks.step_outputs)
    if sinks.live_state is not None:
        trail: Stream[LiveStateItem] = op.merge("live_state_items", outputs, lane_decisions)
        op.output("live_state_out", trail, sinks.live_state)
    if sinks.anomalies is not None:
        findings = op.flat_map_batch("findings", outputs, _findings)
        op.output("anomalies_out", findings, sinks.anomalies)
