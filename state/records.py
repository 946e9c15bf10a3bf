"""Typed records that travel between steps of the flow.

Events, proposals and decision records are never changed once built, so that a step can
never change what an earlier step saw: mypy checks the code against a copy of this module
where they are frozen (tests/support/typecheck.py, run by `make lint` and the suite), so an
assignment to a field is a type error. They use slots because millions of them pass
through the hot path.

They are plain slotted dataclasses, not frozen ones: a frozen dataclass sets each field
through `object.__setattr__` (building an Event took 2.1 us that way against 0.54 plain),
and only a class decorated with `dataclasses.dataclass` itself compiles to a native class
under mypyc, whose fields compiled code reads directly (issue #23: about 6 % of the
compiled engine's time, while this module was left interpreted behind a decorator of our
own).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Self


class _Record:
    """Pickles as the frozen dataclasses of earlier releases did (the list of its field
    values), so records in recovery snapshots written before load, snapshots written now
    load in a release from before (negotiation's state holds proposals waiting for a
    trip), and the pure and the compiled core read each other's."""

    __slots__ = ()

    def __getstate__(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]  # type: ignore[arg-type]

    def __setstate__(self, state: list[Any]) -> None:
        for f, value in zip(fields(self), state, strict=True):  # type: ignore[arg-type]
            object.__setattr__(self, f.name, value)


class _OwnInit(_Record):
    """A record that writes out its `__init__`, because it is built at most events: a
    dataclass's generated `__init__` is interpreted even in the compiled core.

    Compiled, mypyc's default `__new__` calls a class's own `__init__` (so that every field
    is set), which breaks unpickling: pickle calls `__new__` alone, then `__setstate__`.
    This `__new__` only makes the object; Python calls `__init__` after it as usual."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        return super().__new__(cls)


class EventType(StrEnum):
    """The `type` field of an input event; one enum for all the input topics."""

    SALE = "sale"
    RETURN = "return"
    # Units sold before stockshift watched (`stockshift warmup`): they teach the demand
    # estimate and nothing else (no stock moves, no decision).
    SALE_HISTORY = "sale_history"
    SNAPSHOT = "snapshot"
    ADJUSTMENT = "adjustment"
    INBOUND_EXPECTED = "inbound_expected"
    INBOUND_RECEIVED = "inbound_received"
    TRANSFER_APPROVED = "transfer_approved"
    TRANSFER_DISPATCHED = "transfer_dispatched"
    TRANSFER_RECEIVED = "transfer_received"
    TRANSFER_REJECTED = "transfer_rejected"
    TRANSFER_FAILED = "transfer_failed"
    # A demand forecast for one SKU-site (topic `forecasts`): a prior for the planner's
    # demand estimate, weighed by the forecast's stated error against what sales show.
    FORECAST = "forecast"


@dataclass(slots=True, unsafe_hash=True, init=False)
class SourceRef(_OwnInit):
    """Where a record came from, so an auditor can fetch the original message."""

    topic: str
    partition: int
    offset: int

    # Written out: built for every input message (see SitePosition).
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset


@dataclass(slots=True, unsafe_hash=True)
class ForecastFigures(_Record):
    """What a `forecast` event says: mean units a day, its relative error (coefficient of
    variation of the true rate around the mean), and the forecast's version."""

    mean_per_day: float
    error_cv: float | None = None  # None: the policy's `forecast_error_cv`
    version: str | None = None


@dataclass(slots=True, unsafe_hash=True, init=False)
class Event(_OwnInit):
    """A validated input event.

    `qty` carries the event's one quantity: units sold, returned or shipped; the counted
    on-hand of a `snapshot`; the signed delta of an `adjustment`.
    """

    event_id: str
    type: EventType
    ts_ms: int
    sku: str
    site: str
    qty: int
    eta_ms: int | None = None
    shipment_id: str | None = None
    from_site: str | None = None
    proposal_id: str | None = None
    source: SourceRef | None = None
    # When the message entered Kafka: its timestamp, or the input's stream time when it
    # came if that is later (RawMessage.stream_time_ms), or when it reached us; for clock
    # checks and to date the decisions it causes.
    ingested_ms: int | None = None
    # When this process consumed it (wall clock); for trigger-to-proposal latency.
    received_ms: int | None = None
    # The W3C trace context its message carried (`traceparent` header), validated.
    traceparent: str | None = None
    # A `forecast` event's figures (its qty is 0).
    forecast: ForecastFigures | None = None

    # Written out: built for every input message (see SitePosition).
    def __init__(
        self,
        event_id: str,
        type: EventType,
        ts_ms: int,
        sku: str,
        site: str,
        qty: int,
        eta_ms: int | None = None,
        shipment_id: str | None = None,
        from_site: str | None = None,
        proposal_id: str | None = None,
        source: SourceRef | None = None,
        ingested_ms: int | None = None,
        received_ms: int | None = None,
        traceparent: str | None = None,
        forecast: ForecastFigures | None = None,
    ) -> None:
        self.event_id = event_id
        self.type = type
        self.ts_ms = ts_ms
        self.sku = sku
        self.site = site
        self.qty = qty
        self.eta_ms = eta_ms
        self.shipment_id = shipment_id
        self.from_site = from_site
        self.proposal_id = proposal_id
        self.source = source
        self.ingested_ms = ingested_ms
        self.received_ms = received_ms
        self.traceparent = traceparent
        self.forecast = forecast


@dataclass(slots=True, unsafe_hash=True)
class RawMessage(_Record):
    """An input message as consumed, before parsing; adapters build it from the client's."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    received_at_ms: int
    # The message's own timestamp (producer or broker time), when the client gives one.
    timestamp_ms: int | None = None
    # The timestamp was set by the broker when it appended the message (LogAppendTime).
    broker_time: bool = False
    # The message's W3C `traceparent` header, if it had a well-formed one.
    traceparent: str | None = None
    # The message's `content-type` header, if it had one (lower case, without parameters).
    content_type: str | None = None
    # The record decoded from a registry-framed Avro value (adapters.avro), when it was one:
    # parsed instead of the value, which stays as it came (for the dead-letter topic).
    decoded: dict[str, Any] | None = None
    # The input's stream time when the merged source emitted the message: the latest message
    # timestamp it had emitted (never after the receive time). Where producers stamp messages
    # with their event's time, a message that came after the stream moved on (a store's feed
    # hours behind) shows its arrival only here.
    stream_time_ms: int | None = None


@dataclass(slots=True, unsafe_hash=True)
class DeadLetter(_Record):
    """An input that failed to parse or validate, kept whole so nothing is lost."""

    source_topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    payload: bytes | None
    error: str
    reason: str
    received_at_ms: int
    # The message's own timestamp, when known: a replay puts the message back in its place.
    timestamp_ms: int | None = None


class ProposalStatus(StrEnum):
    PROPOSED = "proposed"
    NEEDS_APPROVAL = "needs_approval"


@dataclass(slots=True, unsafe_hash=True)
class SiteView(_Record):
    """A site's numbers at decision time: the inputs a planner would check."""

    site: str
    on_hand: int
    inbound: int
    reserved_in: int
    reserved_out: int
    position: int
    demand_per_hour: float
    demand_sd_per_hour: float
    reorder_point: float
    target: float
    # The site's forecast as the estimate used it (units an hour, corrected by how the SKU's
    # forecasts matched its sales); None without one.
    forecast_per_hour: float | None = None
    # How long after their ETAs its supplier deliveries were counted on (learned; 0: on time).
    supplier_delay_hours: float = 0.0


@dataclass(slots=True, unsafe_hash=True, init=False)
class Candidate(_OwnInit):
    """One sender considered for a receiver, with the numbers that ranked it."""

    from_site: str
    qty: int
    lead_hours: float
    transfer_cost: float
    expected_units_saved: float
    expected_units_lost_at_sender: float
    net_benefit: float
    rejected_because: str | None = None

    # Written out: built for every sender a plan weighs (see SitePosition).
    def __init__(
        self,
        from_site: str,
        qty: int,
        lead_hours: float,
        transfer_cost: float,
        expected_units_saved: float,
        expected_units_lost_at_sender: float,
        net_benefit: float,
        rejected_because: str | None = None,
    ) -> None:
        self.from_site = from_site
        self.qty = qty
        self.lead_hours = lead_hours
        self.transfer_cost = transfer_cost
        self.expected_units_saved = expected_units_saved
        self.expected_units_lost_at_sender = expected_units_lost_at_sender
        self.net_benefit = net_benefit
        self.rejected_because = rejected_because


@dataclass(slots=True, unsafe_hash=True)
class Evidence(_Record):
    receiver: SiteView
    sender: SiteView
    lead_hours: float
    cost_per_unit: float
    fixed_cost: float
    transfer_cost: float
    unit_margin: float
    expected_units_saved: float
    expected_units_lost_at_sender: float
    net_benefit: float
    alternatives: tuple[Candidate, ...] = ()
    value: float = 0.0  # qty x unit cost: the working capital it moves


@dataclass(slots=True, unsafe_hash=True)
class Proposal(_Record):
    proposal_id: str
    sku: str
    from_site: str
    to_site: str
    qty: int
    created_at_ms: int
    expires_at_ms: int
    policy_version: str
    status: ProposalStatus
    reason: str
    evidence: Evidence
    trigger_event_ids: tuple[str, ...]
    # When the trigger was consumed (wall clock), for latency metrics; not published.
    trigger_received_ms: int | None = None
    # The trigger's trace, continued: its trace id, a span id of this decision.
    traceparent: str | None = None
    # The decision record that goes to the audit log once negotiation has granted the
    # proposal (with the units granted); not published with it.
    record: DecisionRecord | None = field(default=None, compare=False, repr=False)


class Outcome(StrEnum):
    """What a decision record says happened."""

    PROPOSED = "proposed"
    NEEDS_APPROVAL = "needs_approval"
    SUPPRESSED = "suppressed"
    RESERVATION_RELEASED = "reservation_released"
    APPROVED = "approved"
    TRANSFER_RECEIVED = "transfer_received"
    CONTROL_APPLIED = "control_applied"
    CONTROL_REJECTED = "control_rejected"
    # A proposal held by negotiation until its lane's trip that day pays for itself.
    WAITING_FOR_TRIP = "waiting_for_trip"


class SuppressReason(StrEnum):
    """Why a receiver's need did not become a proposal (decision log and metrics label)."""

    NO_SENDER_WITH_SURPLUS = "no_sender_with_surplus"
    NO_ALLOWED_LANE = "no_allowed_lane"
    BELOW_MIN_QTY = "below_min_qty"
    SHELF_LIFE = "shelf_life"
    NO_NET_BENEFIT = "no_net_benefit"
    COOLDOWN = "cooldown"
    RESERVATION_OUTSTANDING = "reservation_outstanding"
    WARMING_UP = "warming_up"
    PAUSED = "paused"
    DATA_QUALITY = "data_quality"
    LANE_CAPACITY = "lane_capacity"
    STORAGE_CAPACITY = "storage_capacity"
    # The lane's trip that day did not gather enough value to pay for itself.
    TRIP_NOT_FILLED = "trip_not_filled"
    # Negotiation raised on the proposal (a defect; the flow goes on without it).
    NEGOTIATION_FAILED = "negotiation_failed"


class ReleaseReason(StrEnum):
    DISPATCHED = "dispatched"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(slots=True, unsafe_hash=True)
class DecisionRecord(_Record):
    """One audit line per decision, including the ones that did not become proposals."""

    sku: str
    site: str
    ts_ms: int
    outcome: Outcome
    reason: str
    detail: str
    policy_version: str
    trigger_event_id: str
    trigger_source: SourceRef | None = None
    proposal_id: str | None = None
    receiver: SiteView | None = None
    alternatives: tuple[Candidate, ...] = ()
    evidence: Evidence | None = None
    approval_reasons: tuple[str, ...] = ()
    shadow: bool = False
    traceparent: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class Finding(_Record):
    """A signal-health finding: what looked wrong, where, how strongly, by which detector."""

    kind: str
    sku: str
    site: str
    ts_ms: int
    score: float
    detector: str
    evidence: tuple[tuple[str, float], ...]
    event_ids: tuple[str, ...]


@dataclass(slots=True, unsafe_hash=True, init=False)
class SitePosition(_OwnInit):
    """A site's live numbers after an event, for the live-state store."""

    sku: str
    site: str
    on_hand: int
    inbound: int
    reserved_in: int
    reserved_out: int
    position: int
    demand_per_hour: float
    last_event_ms: int

    # Written out (here and in StepOutput, built for every event): a dataclass's generated
    # `__init__` is interpreted even in the compiled core, this one is compiled.
    def __init__(
        self,
        sku: str,
        site: str,
        on_hand: int,
        inbound: int,
        reserved_in: int,
        reserved_out: int,
        position: int,
        demand_per_hour: float,
        last_event_ms: int,
    ) -> None:
        self.sku = sku
        self.site = site
        self.on_hand = on_hand
        self.inbound = inbound
        self.reserved_in = reserved_in
        self.reserved_out = reserved_out
        self.position = position
        self.demand_per_hour = demand_per_hour
        self.last_event_ms = last_event_ms


@dataclass(slots=True, unsafe_hash=True)
class SiteOccupancy(_Record):
    """Units of one SKU a site holds or has coming (on hand, inbound, reserved in), sent to
    negotiation for sites with a storage capacity whenever an event touches them."""

    sku: str
    site: str
    units: int
    # The SKU's event-time clock when it was reported (a proposal's `created_at_ms` is the
    # same clock): negotiation orders a batch by it.
    clock_ms: int = 0


@dataclass(slots=True, unsafe_hash=True)
class LeadTime(_Record):
    """What one transfer took on its lane, from its dispatch to its receipt."""

    from_site: str
    to_site: str
    hours: float


@dataclass(slots=True, unsafe_hash=True)
class SupplierDelay(_Record):
    """How late a supplier delivery arrived against the ETA it was announced with (hours;
    negative when early)."""

    site: str
    hours: float


@dataclass(slots=True, unsafe_hash=True, init=False)
class StepOutput(_OwnInit):
    """Everything one input event caused; exactly one per event that reached the state."""

    event_id: str
    duplicate: bool = False
    late: bool = False
    event_ts_ms: int = 0
    new_key: bool = False
    proposals: tuple[Proposal, ...] = ()
    decisions: tuple[DecisionRecord, ...] = field(default=())
    positions: tuple[SitePosition, ...] = ()
    findings: tuple[Finding, ...] = ()
    occupancy: tuple[SiteOccupancy, ...] = ()
    # A transfer received: what it took on its lane (the planner learns lanes' lead times).
    lead_times: tuple[LeadTime, ...] = ()
    # A supplier delivery received: how late it was (the planner learns each site's delay).
    supplier_delays: tuple[SupplierDelay, ...] = ()
    # The event was refused (a limit or an implausible quantity): it changed nothing and
    # goes to the dead-letter topic as this record.
    refused: DeadLetter | None = None

    def __init__(
        self,
        event_id: str,
        duplicate: bool = False,
        late: bool = False,
        event_ts_ms: int = 0,
        new_key: bool = False,
        proposals: tuple[Proposal, ...] = (),
        decisions: tuple[DecisionRecord, ...] = (),
        positions: tuple[SitePosition, ...] = (),
        findings: tuple[Finding, ...] = (),
        occupancy: tuple[SiteOccupancy, ...] = (),
        lead_times: tuple[LeadTime, ...] = (),
        supplier_delays: tuple[SupplierDelay, ...] = (),
        refused: DeadLetter | None = None,
    ) -> None:
        self.event_id = event_id
        self.duplicate = duplicate
        self.late = late
        self.event_ts_ms = event_ts_ms
        self.new_key = new_key
        self.proposals = proposals
        self.decisions = decisions
        self.positions = positions
        self.findings = findings
        self.occupancy = occupancy
        self.lead_times = lead_times
        self.supplier_delays = supplier_delays
        self.refused = refused
