"""Every Prometheus metric stockshift exports, declared once.

The flow updates them from dedicated `inspect` steps so that operators stay pure.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

from state.governance import ControlCommand, ControlRejection
from state.records import DeadLetter, Event, StepOutput

EVENTS_CONSUMED = Counter(
    "stockshift_events_consumed_total", "Valid input events, by topic kind and type", ["type"]
)
DEAD_LETTERS = Counter(
    "stockshift_dead_letters_total", "Inputs routed to the DLQ, by reason", ["reason"]
)
DUPLICATES = Counter("stockshift_duplicate_events_total", "Events dropped as already seen")
LATE_EVENTS = Counter(
    "stockshift_late_events_total", "Events older than their site's open demand window"
)
PROPOSALS = Counter("stockshift_proposals_total", "Transfer proposals, by status", ["status"])
UNITS_PROPOSED = Counter("stockshift_units_proposed_total", "Units in transfer proposals")
DECISIONS = Counter(
    "stockshift_decisions_total", "Decision records, by outcome and reason", ["outcome", "reason"]
)
KAFKA_DELIVERY_FAILURES = Counter(
    "stockshift_kafka_delivery_failures_total", "Records the broker did not acknowledge", ["topic"]
)
REDIS_WRITE_FAILURES = Counter(
    "stockshift_redis_write_failures_total", "Redis operations that failed", ["operation"]
)
LEDGER_UNAVAILABLE = Counter(
    "stockshift_ledger_unavailable_total", "Proposals produced without the ledger (Redis down)"
)
PROPOSALS_DEDUPLICATED = Counter(
    "stockshift_proposals_deduplicated_total", "Replayed proposals the ledger kept off the topic"
)
CONTROL_COMMANDS = Counter(
    "stockshift_control_commands_total",
    "Control commands, by result and reason",
    ["result", "reason"],
)
PAUSED = Gauge("stockshift_paused", "1 while proposals are paused (latest command)")
FINDINGS = Counter("stockshift_signal_findings_total", "Signal-health findings, by kind", ["kind"])
UP = Gauge("stockshift_up", "1 while the flow runs")


def count_event(_step_id: str, event: Event) -> None:
    EVENTS_CONSUMED.labels(type=event.type.value).inc()


def count_dead_letter(_step_id: str, letter: DeadLetter) -> None:
    DEAD_LETTERS.labels(reason=letter.reason).inc()


def count_output(_step_id: str, keyed: tuple[str, StepOutput]) -> None:
    output = keyed[1]
    if output.duplicate:
        DUPLICATES.inc()
        return
    if output.late:
        LATE_EVENTS.inc()
    for proposal in output.proposals:
        PROPOSALS.labels(status=proposal.status.value).inc()
        UNITS_PROPOSED.inc(proposal.qty)
    for decision in output.decisions:
        DECISIONS.labels(outcome=decision.outcome.value, reason=decision.reason).inc()
    for finding in output.findings:
        FINDINGS.labels(kind=finding.kind).inc()


def count_control(_step_id: str, verdict: ControlCommand | ControlRejection) -> None:
    if isinstance(verdict, ControlCommand):
        CONTROL_COMMANDS.labels(result="accepted", reason=verdict.action.value).inc()
    else:
        CONTROL_COMMANDS.labels(result="rejected", reason=verdict.reason).inc()


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr)
    UP.set(1)
