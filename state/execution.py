"""Records of the execution layer: one per proposal being carried into a WMS/ERP.

A record is what survives a restart of `stockshift execute` (adapters.execution_store keeps
it in Redis): where the proposal stands, the transfer order it created, what has been
reported back and what was tried. The WMS's own record is found again by the idempotency
key (the proposal id), so a record lost or stale never makes a second order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Stage(StrEnum):
    """Where a proposal stands in execution."""

    AWAITING_APPROVAL = "awaiting_approval"  # needs_approval: waits for transfer_approved
    READY = "ready"  # to be ordered
    ORDERED = "ordered"  # transfer order created, goods not yet issued at the sender
    CANCELLING = "cancelling"  # expired or withdrawn before dispatch: cancel the order
    IN_TRANSIT = "in_transit"  # goods issued at the sender, receipt awaited
    DONE = "done"  # outcome reported; nothing more to do
    EXPIRED = "expired"  # never started: it expired first
    ESCALATED = "escalated"  # a person must act (stockshift.exceptions)

    @property
    def finished(self) -> bool:
        return self in (Stage.DONE, Stage.EXPIRED, Stage.ESCALATED)


class Action(StrEnum):
    """What the executor does next with a record's transfer order."""

    CREATE = "create"
    POLL = "poll"
    CANCEL = "cancel"
    WAIT = "wait"  # nothing now (paused, waiting for approval, backing off)
    NONE = "none"  # finished


class Outcome(StrEnum):
    """The contract's execution events (stockshift.shipments), one of each at most."""

    DISPATCHED = "transfer_dispatched"
    RECEIVED = "transfer_received"
    REJECTED = "transfer_rejected"
    FAILED = "transfer_failed"


@dataclass(slots=True)
class ExecutionRecord:
    proposal_id: str
    sku: str
    from_site: str
    to_site: str
    qty: int
    expires_at_ms: int
    stage: Stage
    # When the record was accepted (wall clock, ms) and when it is next due for an action.
    accepted_ms: int = 0
    next_at_ms: int = 0
    order_id: str | None = None
    # Failed calls in a row for the current action, and when the first of them failed.
    attempts: int = 0
    failing_since_ms: int = -1
    dispatched_ms: int = -1
    reported: list[str] = field(default_factory=list)  # Outcome values already published
    tried: list[str] = field(default_factory=list)  # what was tried, newest last (capped)
    reason: str = ""  # why it ended as it did
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class OrderReply:
    """What the WMS said about a transfer order (its `status`, in the OpenAPI contract's
    words: created, picked, shipped, received, refused, cancelled, receipt_failed)."""

    order_id: str
    status: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CallFailed:
    """A call that did not get an answer to act on. `retryable` for timeouts, 5xx, 429, a
    broken connection or an open circuit; `refused` when the WMS said no to the request
    itself (another 4xx); neither for an answer that makes no sense (the order may or may
    not exist: a person looks)."""

    retryable: bool
    detail: str
    refused: bool = False


Reply = OrderReply | CallFailed


@dataclass(frozen=True, slots=True)
class ExecutionSettings:
    """How patient the executor is (STOCKSHIFT_EXECUTE_* variables)."""

    max_attempts: int = 8  # failed calls in a row before a person is asked
    backoff_base_ms: int = 500
    backoff_max_ms: int = 30_000
    poll_interval_ms: int = 1_000
    receipt_timeout_ms: int = 72 * 3_600_000  # in transit this long: failed, escalated


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """An execution event for stockshift.shipments, with an id derived from the proposal
    and the step so a retry or a replay publishes the same event (de-duplicated by id)."""

    kind: Outcome
    proposal_id: str
    sku: str
    from_site: str
    to_site: str
    qty: int
    ts_ms: int
    reason: str = ""

    @property
    def event_id(self) -> str:
        return f"exec:{self.proposal_id}:{self.kind.value}"


@dataclass(frozen=True, slots=True)
class Escalation:
    """A case for a person (stockshift.exceptions): what happened and what was tried."""

    proposal_id: str
    sku: str
    from_site: str
    to_site: str
    qty: int
    kind: str  # attempts_exhausted, compensation_failed, receipt_failed, refused_by_wms, ...
    detail: str
    tried: tuple[str, ...]
    order_id: str | None
    ts_ms: int

    @property
    def exception_id(self) -> str:
        return f"exc:{self.proposal_id}:{self.kind}"
