"""Every Prometheus metric stockshift exports, declared once.

The flow updates them from dedicated steps (a batch at a time) so that operators stay pure.
"""

from __future__ import annotations

import bisect
import collections
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from adapters import clock
from operators.lanes import NegotiationOutcome
from operators.leadtimes import LaneLead, SiteDelay
from operators.tally import tally_outputs
from state.governance import ControlCommand, ControlRejection
from state.records import DeadLetter, Event, EventType, StepOutput

EVENTS_CONSUMED = Counter(
    "stockshift_events_consumed_total", "Valid input events, by topic and type", ["topic", "type"]
)
DEAD_LETTERS = Counter(
    "stockshift_dead_letters_total", "Inputs routed to the DLQ, by topic and reason",
    ["topic", "reason"],
)  # fmt: skip
DUPLICATES = Counter("stockshift_duplicate_events_total", "Events dropped as already seen")
LATE_EVENTS = Counter(
    "stockshift_late_events_total", "Events older than their site's open demand window"
)
PROPOSALS = Counter("stockshift_proposals_total", "Transfer proposals, by status", ["status"])
UNITS_PROPOSED = Counter("stockshift_units_proposed_total", "Units in transfer proposals")
VALUE_PROPOSED = Counter(
    "stockshift_value_proposed_total", "Stock value (qty x unit cost) in transfer proposals"
)
RESERVATIONS_OUTSTANDING = Gauge(
    "stockshift_reservations_outstanding", "Proposals holding a reservation (not yet released)"
)
KEYS_HELD = Gauge("stockshift_state_keys", "SKUs held in state by this process")
KEYS_EVICTED = Counter("stockshift_state_keys_evicted_total", "Idle SKUs dropped from memory")
RECOVERY_TOMBSTONES_PRUNED = Counter(
    "stockshift_recovery_tombstones_pruned_total",
    "Rows of evicted SKUs deleted from the recovery store",
)
CONTROL_FOLLOWER_DOWN = Gauge(
    "stockshift_control_follower_down",
    "1 when this process's control-topic follower thread has stopped (see the log)",
)
NEGOTIATION_FAILURES = Counter(
    "stockshift_negotiation_failures_total",
    "Negotiation items that raised: proposal and occupancy (dropped), batch_order (the "
    "batch went in arrival order); the flow goes on",
    ["item"],
)
SKUS_REFUSED = Counter(
    "stockshift_skus_refused_total",
    "Events of new SKUs dead-lettered because the process holds its maximum (STOCKSHIFT_MAX_SKUS)",
)
TRIGGER_TO_PROPOSAL = Histogram(
    "stockshift_trigger_to_proposal_seconds",
    "From consuming the trigger event to the broker acknowledging the proposal",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class BatchHistogram(Collector):
    """A histogram observed a batch at a time, exported as an ordinary one.

    For a figure every event adds to: `Histogram.observe` takes a lock and walks the bounds
    in Python for each value (0.77 us a call, 40 % of the flow's per-event metrics); here a
    batch is bucketed by bisection into local counts and added under one lock."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: tuple[float, ...],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = tuple(sorted(float(b) for b in buckets))
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        counts, total, bounds = [0] * len(self._counts), 0.0, self._bounds
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
            total += value
        with self._lock:
            self._counts = [mine + more for mine, more in zip(self._counts, counts, strict=True)]
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        family = HistogramMetricFamily(self._name, self._documentation)
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
        family.add_metric([], buckets, total)
        yield family


EVENT_TIME_LAG = BatchHistogram(
    "stockshift_event_time_lag_seconds",
    "Wall clock minus event time at the decision step",
    buckets=(0.1, 0.5, 1, 5, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400),
)
CONSUMER_LAG = Gauge(
    "stockshift_consumer_lag_messages",
    "Messages behind the partition's high watermark (from client statistics)",
    ["topic", "partition"],
)
ACTIVE_POLICY = Gauge(
    "stockshift_active_policy_info", "1 for the policy version in force now", ["version"]
)
DECISIONS = Counter(
    "stockshift_decisions_total", "Decision records, by outcome and reason", ["outcome", "reason"]
)
KAFKA_DELIVERY_FAILURES = Counter(
    "stockshift_kafka_delivery_failures_total", "Records the broker did not acknowledge", ["topic"]
)
KAFKA_CLIENT_ERRORS = Counter(
    "stockshift_kafka_client_errors_total",
    "Errors the Kafka clients reported (broker down, transport), by client and error code",
    ["client", "code"],
)
KAFKA_BROKERS_DOWN = Gauge(
    "stockshift_kafka_brokers_down",
    "1 while the input consumer reaches no broker (it keeps retrying)",
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
LANE_LEAD_CONFIGURED = Gauge(
    "stockshift_lane_lead_time_configured_hours", "A lane's lead time in the network file",
    ["lane"],
)  # fmt: skip
LANE_LEAD_LEARNED = Gauge(
    "stockshift_lane_lead_time_learned_hours",
    "The lead-time quantile of a lane's recent received transfers (once enough arrived)",
    ["lane"],
)
SUPPLIER_DELAY_LEARNED = Gauge(
    "stockshift_supplier_delay_learned_hours",
    "The delay quantile of a site's recent supplier deliveries against their ETAs",
    ["site"],
)
SUPPLIER_DELAY_PLANNED = Gauge(
    "stockshift_supplier_delay_planned_hours",
    "How long after its ETA the planner counts on a site's supplier delivery (0: on time)",
    ["site"],
)
LANE_LEAD_PLANNED = Gauge(
    "stockshift_lane_lead_time_planned_hours",
    "The lead time the planner uses for a lane (learned, where longer than configured)",
    ["lane"],
)
FINDINGS = Counter("stockshift_signal_findings_total", "Signal-health findings, by kind", ["kind"])
UP = Gauge("stockshift_up", "1 while the flow runs")
# The execution layer (`stockshift execute`).
EXECUTION_OUTCOMES = Counter(
    "stockshift_execution_outcomes_total", "Execution events published, by type", ["outcome"]
)
EXECUTION_ESCALATIONS = Counter(
    "stockshift_execution_escalations_total", "Cases escalated to people, by kind", ["kind"]
)
EXECUTION_CALLS = Counter(
    "stockshift_execution_calls_total",
    "Calls to the WMS, by action and result",
    ["action", "result"],
)
EXECUTION_UNFINISHED = Gauge(
    "stockshift_execution_unfinished", "Proposals accepted by the executor and not finished"
)
EXECUTION_REJECTED_INPUT = Counter(
    "stockshift_execution_bad_proposals_total",
    "Proposals dead-lettered by the executor",
    ["reason"],
)
WMS_CIRCUIT_OPEN_SECONDS = Gauge(
    "stockshift_wms_circuit_open_seconds", "How long the WMS circuit has been open (0: closed)"
)
ORDER_LATENCY = Histogram(
    "stockshift_execution_order_seconds",
    "Proposal read by the executor -> transfer order created at the WMS",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
log = logging.getLogger("stockshift.decisions")


_event_counters: dict[tuple[str, EventType], Any] = {}


# The flow counts a batch at a time (`flat_map_batch` steps that emit nothing): one call per
# batch instead of one per item, and one increment per label set in the batch.
_NOTHING: tuple[()] = ()


def count_events(events: list[Event]) -> tuple[()]:
    """Events by topic and type; each labelled child is looked up once, then cached.

    Keyed by the type member, not its `.value` (a Python-level property on 3.11), in a plain
    dict (a Counter over a generator cost twice as much per event)."""
    counts: dict[tuple[str, EventType], int] = {}
    for event in events:
        source = event.source
        key = (source.topic if source is not None else "memory", event.type)
        counts[key] = counts.get(key, 0) + 1
    for key, count in counts.items():
        counter = _event_counters.get(key)
        if counter is None:
            counter = _event_counters[key] = EVENTS_CONSUMED.labels(topic=key[0], type=key[1].value)
        counter.inc(count)
    return _NOTHING


def count_dead_letters(letters: list[DeadLetter]) -> tuple[()]:
    for (topic, reason), count in collections.Counter(
        (d.source_topic, d.reason) for d in letters
    ).items():
        DEAD_LETTERS.labels(topic=topic, reason=reason).inc(count)
    return _NOTHING


def count_outputs(keyed: list[tuple[str, StepOutput]]) -> tuple[()]:
    """Each counter incremented once by the batch's total (`operators.tally`)."""
    tally = tally_outputs(keyed, clock.now_s())
    for counter, count in (
        (DUPLICATES, tally.duplicates),
        (KEYS_HELD, tally.new_keys),
        (LATE_EVENTS, tally.late),
    ):
        if count:
            counter.inc(count)
    # A proposal reserves its units when the engine makes it, whatever negotiation grants;
    # it is counted and logged as a proposal once granted (count_negotiated).
    if tally.reserved:
        RESERVATIONS_OUTSTANDING.inc(tally.reserved)
    if tally.released:
        RESERVATIONS_OUTSTANDING.dec(tally.released)
    for (outcome, reason), count in tally.decisions.items():
        DECISIONS.labels(outcome=outcome.value, reason=reason).inc(count)
    for kind, count in tally.findings.items():
        FINDINGS.labels(kind=kind).inc(count)
    EVENT_TIME_LAG.observe_many(tally.lags_s)
    return _NOTHING


def count_negotiations(outcomes: list[NegotiationOutcome]) -> tuple[()]:
    for outcome in outcomes:
        count_negotiated(outcome)
    return _NOTHING


def count_negotiated(outcome: NegotiationOutcome) -> None:
    """A proposal is counted and logged as negotiation granted it (the units published);
    its decision record (proposed, granted in part, or dropped) joins the engine's in
    `stockshift_decisions_total`, as it does in the decision log."""
    proposal = outcome.proposal
    if proposal is not None:
        log.info(
            "proposal",
            extra={
                "proposal_id": proposal.proposal_id,
                "sku": proposal.sku,
                "from_site": proposal.from_site,
                "to_site": proposal.to_site,
                "qty": proposal.qty,
                "status": proposal.status.value,
                "policy_version": proposal.policy_version,
                "trigger_event_ids": list(proposal.trigger_event_ids),
            },
        )
        PROPOSALS.labels(status=proposal.status.value).inc()
        UNITS_PROPOSED.inc(proposal.qty)
        VALUE_PROPOSED.inc(proposal.evidence.value)
    decision = outcome.decision
    if decision is not None and not decision.shadow:
        DECISIONS.labels(outcome=decision.outcome.value, reason=decision.reason).inc()


def count_control(_step_id: str, verdict: ControlCommand | ControlRejection) -> None:
    if isinstance(verdict, ControlCommand):
        CONTROL_COMMANDS.labels(result="accepted", reason=verdict.action.value).inc()
    else:
        CONTROL_COMMANDS.labels(result="rejected", reason=verdict.reason).inc()


def proposal_acknowledged(trigger_received_ms: int | None) -> None:
    if trigger_received_ms is not None:
        TRIGGER_TO_PROPOSAL.observe(max(clock.now_s() - trigger_received_ms / 1000, 0.0))


def policy_active(version: str, previous: str | None = None) -> None:
    if previous is not None and previous != version:
        ACTIVE_POLICY.labels(version=previous).set(0)
    ACTIVE_POLICY.labels(version=version).set(1)


# Set once start-up is done (config loaded, topics there, the control log applied): the
# readiness probe answers 200 from then on, while the brokers are reachable.
READY = threading.Event()


def health_app(metrics_app: Callable[..., Any]) -> Callable[..., Any]:
    """The metrics port's WSGI app: /healthz (liveness: the process serves), /readyz
    (readiness: started, and the brokers reachable), everything else the metrics."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _answer(start_response, 200, b"ok\n")
        if path == "/readyz":
            ready = READY.is_set() and KAFKA_BROKERS_DOWN._value.get() == 0
            return _answer(
                start_response, 200 if ready else 503, b"ready\n" if ready else b"not ready\n"
            )
        return metrics_app(environ, start_response)

    return app


def _answer(start_response: Callable[..., Any], status: int, body: bytes) -> list[bytes]:
    reason = {200: "OK", 503: "Service Unavailable"}[status]
    start_response(
        f"{status} {reason}", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds must not fill the log."""


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Metrics and the health probes on one port, in a background thread."""
    server = make_server(
        addr, port, health_app(make_wsgi_app()), _ThreadingServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    UP.set(1)


def record_lane_leads(leads: list[LaneLead]) -> None:
    """Each lane's configured, learned and planned lead time (learned only once known)."""
    for lead in leads:
        LANE_LEAD_CONFIGURED.labels(lead.lane_id).set(lead.configured_hours)
        LANE_LEAD_PLANNED.labels(lead.lane_id).set(lead.planned_hours)
        if lead.learned_hours is not None:
            LANE_LEAD_LEARNED.labels(lead.lane_id).set(lead.learned_hours)


def record_supplier_delays(delays: list[SiteDelay]) -> None:
    """Each site's planned supplier delay, and the learned one once known."""
    for delay in delays:
        SUPPLIER_DELAY_PLANNED.labels(delay.site_id).set(delay.planned_hours)
        if delay.learned_hours is not None:
            SUPPLIER_DELAY_LEARNED.labels(delay.site_id).set(delay.learned_hours)
