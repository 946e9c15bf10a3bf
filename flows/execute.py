"""`stockshift execute`: carries each granted proposal into the WMS/ERP exactly once and
reports the outcome back to stockshift.shipments.

Why a partitioned consumer and not a second Bytewax flow: execution is I/O-bound (most of
its time is waiting for the WMS), its progress must survive a crash independently of any
snapshot interval, and it scales by running more copies in one consumer group. So it is a
plain loop: read proposals and approvals, record each proposal in Redis before its offset
is committed (adapters.execution_store), then advance due records through the adapter
(adapters.wms) with up to `execute_concurrency` calls at once. What each reply means is
decided by operators.execution; nothing here decides.

Exactly once, end to end: a proposal is recorded once (SET NX by proposal id, so a
duplicate delivery is dropped), every create carries the proposal id as its idempotency
key (a retry after a crash finds the first order), and every outcome event has an id
derived from the proposal and the step (the flow ignores a repeat).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from adapters import clock, metrics
from adapters.execution_store import ExecutionStore
from adapters.settings import Settings
from adapters.wms import CircuitOpen, TransferOrder, TransferOrders, WmsError
from operators import execution as rules
from operators.codec import dead_letter_message, rfc3339
from state.config import ConfigError
from state.execution import (
    Action,
    CallFailed,
    ExecutionRecord,
    ExecutionSettings,
    OrderReply,
    Reply,
    Stage,
)
from state.records import DeadLetter

log = logging.getLogger("stockshift.execute")

GROUP = "stockshift-execute"
_APPROVAL_KEEP_S = 7 * 86_400


@dataclass
class Executor:
    """One executor process: its clients, the rules' settings and the pause switch."""

    settings: Settings
    adapter: TransferOrders
    store: ExecutionStore
    producer: Producer
    known_sites: frozenset[str]
    paused: Callable[[int], bool] = lambda _now: False
    rules_settings: ExecutionSettings = field(default_factory=ExecutionSettings)
    open_for_s: Callable[[], float] = lambda: 0.0
    rng: random.Random = field(default_factory=random.Random)
    _outage_reported: bool = False

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.settings.execute_concurrency, "execute")

    # -- input -------------------------------------------------------------------------
    def take(self, msg: Message) -> None:
        """One consumed message: a proposal, or an answer to one on the shipments topic."""
        if msg.topic() == self.settings.topic("proposals"):
            self._take_proposal(msg)
        else:
            self._take_answer(msg)

    def _take_proposal(self, msg: Message) -> None:
        now = clock.now_ms()
        try:
            raw = orjson.loads(msg.value() or b"")
            record = rules.accept(raw, self.known_sites, now)
        except orjson.JSONDecodeError:
            self._dead_letter(msg, "not_json", "a proposal must be a JSON object")
            return
        except rules.BadProposal as bad:
            self._dead_letter(msg, bad.reason, str(bad))
            return
        approval = self.store.approval_for(record.proposal_id)
        if approval is not None:
            record = self._approved(record, approval, now)
        if not self.store.accept(record):
            log.info("duplicate proposal ignored", extra={"proposal_id": record.proposal_id})

    def _take_answer(self, msg: Message) -> None:
        """transfer_approved releases a waiting proposal; a planner's transfer_rejected
        ends one. Other shipments events (our own outcomes among them) are not for us."""
        try:
            raw = orjson.loads(msg.value() or b"")
        except orjson.JSONDecodeError:
            return  # the flow dead-letters bad shipments; they are not ours to judge
        if not isinstance(raw, dict) or not isinstance(raw.get("proposal_id"), str):
            return
        kind, pid = raw.get("type"), raw["proposal_id"]
        if kind not in ("transfer_approved", "transfer_rejected"):
            return
        record = self.store.get(pid)
        now = clock.now_ms()
        if record is None:
            if kind == "transfer_approved":
                self.store.remember_approval(pid, msg.value() or b"", _APPROVAL_KEEP_S)
            return
        if record.stage is not Stage.AWAITING_APPROVAL:
            return
        if kind == "transfer_approved":
            self.store.save(self._approved(record, msg.value() or b"", now))
        elif not str(raw.get("event_id", "")).startswith("exec:"):
            self.store.save(rules.decline(record, str(raw.get("reason", ""))))

    def _approved(self, record: ExecutionRecord, body: bytes, now: int) -> ExecutionRecord:
        raw = orjson.loads(body)
        qty = raw.get("qty") if isinstance(raw.get("qty"), int) else -1
        return rules.approve(record, qty, str(raw.get("from_site", "")), now)

    def _dead_letter(self, msg: Message, reason: str, error: str) -> None:
        metrics.EXECUTION_REJECTED_INPUT.labels(reason=reason).inc()
        ts_type, ts = msg.timestamp()
        letter = DeadLetter(
            source_topic=msg.topic() or "",
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key(),
            payload=msg.value(),
            error=error,
            reason=reason,
            received_at_ms=clock.now_ms(),
            timestamp_ms=ts if ts_type else None,
        )
        out = dead_letter_message(letter)
        self.producer.produce(
            self.settings.topic("dlq"), out.value, out.key, headers=list(out.headers)
        )

    # -- progress ----------------------------------------------------------------------
    def advance_due(self, limit: int) -> int:
        """Advance every record due now (at most `limit`); returns how many were due."""
        now = clock.now_ms()
        due = self.store.due(now, limit)
        if not due:
            self._watch_outage(now)
            return 0
        steps = list(self._pool.map(lambda r: self._advance(r, now), due))
        for step in steps:
            self._publish(step)
        self.producer.flush(30)  # outcomes are out before the record says they are
        for step in steps:
            self.store.save(step.record)
        metrics.EXECUTION_UNFINISHED.set(self.store.unfinished())
        self._watch_outage(now)
        return len(due)

    def _advance(self, record: ExecutionRecord, now: int) -> rules.Step:
        expired = rules.expire(record, now)
        if expired is not None:
            return rules.Step(expired)
        if rules.receipt_overdue(record, now, self.rules_settings):
            return rules.time_out_receipt(record, now)
        action = rules.next_action(record, now, self.paused(now))
        if action in (Action.WAIT, Action.NONE):
            # Check again after a poll interval (paused, or waiting for an approval).
            return rules.Step(rules.later(record, now + self.rules_settings.poll_interval_ms))
        reply = self._call(action, record)
        if reply is None:
            # Not tried (the circuit is open): not the record's failure, so it waits for the
            # circuit without spending its attempts.
            return rules.Step(rules.later(record, now + self.rules_settings.backoff_base_ms * 4))
        if action is Action.CREATE and isinstance(reply, OrderReply):
            metrics.ORDER_LATENCY.observe(max(now - record.accepted_ms, 0) / 1000)
        return rules.on_reply(record, action, reply, clock.now_ms(), self.rules_settings, self.rng)

    def _call(self, action: Action, record: ExecutionRecord) -> Reply | None:
        """The adapter's answer; None when the call was not made (circuit open)."""
        try:
            if action is Action.CREATE or record.order_id is None:
                # No order id yet (or the create's answer was lost): the idempotency key
                # finds the order a create made before, never a second one.
                order = TransferOrder(
                    record.sku,
                    record.from_site,
                    record.to_site,
                    record.qty,
                    record.proposal_id,
                    record.expires_at_ms,
                )
                reply = self.adapter.create(order, record.proposal_id)
            elif action is Action.CANCEL:
                reply = self.adapter.cancel(record.order_id)
            else:
                reply = self.adapter.status(record.order_id)
        except CircuitOpen:
            metrics.EXECUTION_CALLS.labels(action=action.value, result="not_tried").inc()
            return None
        except WmsError as exc:
            metrics.EXECUTION_CALLS.labels(action=action.value, result="failed").inc()
            return CallFailed(exc.retryable, str(exc), exc.refused)
        metrics.EXECUTION_CALLS.labels(action=action.value, result=reply.status).inc()
        return reply

    def _publish(self, step: rules.Step) -> None:
        shipments = self.settings.topic("shipments")
        for event in step.outcomes:
            body = rules.outcome_dict(event, rfc3339(event.ts_ms))
            self.producer.produce(
                shipments, orjson.dumps(body), event.sku.encode(), timestamp=event.ts_ms
            )
            metrics.EXECUTION_OUTCOMES.labels(outcome=event.kind.value).inc()
        case = step.escalation
        if case is not None:
            body = rules.escalation_dict(case, rfc3339(case.ts_ms))
            self.producer.produce(
                self.settings.topic("exceptions"), orjson.dumps(body), case.proposal_id.encode()
            )
            metrics.EXECUTION_ESCALATIONS.labels(kind=case.kind).inc()
            log.warning(
                "escalated to people",
                extra={"proposal_id": case.proposal_id, "kind": case.kind, "detail": case.detail},
            )

    def _watch_outage(self, now: int) -> None:
        """A WMS unreachable (circuit open) for longer than allowed is a case itself."""
        open_s = self.open_for_s()
        metrics.WMS_CIRCUIT_OPEN_SECONDS.set(open_s)
        if open_s <= 0:
            self._outage_reported = False
            return
        if self._outage_reported or open_s < self.settings.execute_escalate_open_s:
            return
        self._outage_reported = True
        body = {
            "exception_id": f"exc:wms:{now - int(open_s * 1000)}",
            "ts": rfc3339(now),
            "kind": "wms_unreachable",
            "detail": f"the WMS circuit has been open {open_s:.0f} s",
            "tried": [],
        }
        self.producer.produce(self.settings.topic("exceptions"), orjson.dumps(body), b"wms")
        metrics.EXECUTION_ESCALATIONS.labels(kind="wms_unreachable").inc()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.producer.flush(30)


def consume_loop(
    executor: Executor,
    consumer: Consumer,
    stopping: threading.Event,
    batch: int = 500,
) -> None:
    """Read, record, commit, advance; until `stopping` is set."""
    limit = executor.settings.execute_concurrency * 8
    idle = False
    while not stopping.is_set():
        # What is there now; when the last round found nothing to do, wait for the next
        # message (poll returns as soon as one arrives) rather than sleep.
        messages = consumer.consume(batch, timeout=0)
        if not messages and idle:
            first = consumer.poll(0.05)
            messages = [first] if first is not None else []
        taken = [m for m in messages if m.error() is None]
        for msg in taken:
            executor.take(msg)
        if taken:
            executor.producer.flush(30)  # dead letters out before the offsets move on
            # Asynchronous: every proposal taken is in Redis already, so a commit lost in a
            # crash only re-reads proposals that the record (SET NX) then drops.
            consumer.commit(asynchronous=True)
        idle = executor.advance_due(limit) == 0 and not taken


def kafka_clients(settings: Settings) -> tuple[Consumer, Producer]:
    """A consumer that takes every partition of the proposals and shipments topics from the
    group's committed offsets (assigned, not subscribed: a group join costs seconds on some
    brokers, and one executor per consumer group is the supported layout today), and an
    idempotent producer."""
    base: Mapping[str, Any] = {
        "bootstrap.servers": ",".join(settings.brokers),
        **settings.kafka_config,
    }
    group = settings.consumer_group or GROUP
    consumer = Consumer(
        {
            **base,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 20,
        }
    )
    topics = [settings.topic("proposals"), settings.topic("shipments")]
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in consumer.list_topics(topic, timeout=settings.broker_wait_s)
        .topics[topic]
        .partitions
    ]
    committed = consumer.committed(partitions, timeout=settings.broker_wait_s)
    consumer.assign(
        [
            tp if tp.offset >= 0 else TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)
            for tp in committed
        ]
    )
    producer = Producer({**base, "enable.idempotence": True, "linger.ms": 2})
    return consumer, producer


def stop_on_signals(stopping: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())


def serve(settings: Settings) -> int:
    """`stockshift execute`: build the clients from the settings and run until signalled."""
    import redis

    from adapters.configfiles import load_config
    from adapters.wms import RestTransferOrders
    from flows.entry import create_topics, start_control

    if not settings.wms_url:
        raise ConfigError("STOCKSHIFT_WMS_URL: the WMS/ERP's base URL is required by execute")
    if not settings.redis_url:
        raise ConfigError("STOCKSHIFT_REDIS_URL: execute keeps its progress in Redis")
    config = load_config(settings.network_path, settings.policy_path, settings.policies_dir)
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    if settings.create_topics:
        create_topics(settings)
    control, _ = start_control(settings, config.policy.version, config.policies)
    adapter = RestTransferOrders(
        settings.wms_url,
        settings.wms_timeout_s,
        token=settings.wms_token,
    )
    store = ExecutionStore(redis.Redis.from_url(settings.redis_url), settings.redis_prefix)
    consumer, producer = kafka_clients(settings)
    rules_settings = ExecutionSettings(
        max_attempts=settings.execute_max_attempts,
        poll_interval_ms=int(settings.execute_poll_interval_s * 1000),
    )
    executor = Executor(
        settings,
        adapter,
        store,
        producer,
        frozenset(config.network.sites),
        paused=lambda now: control.board.at(now).paused,
        rules_settings=rules_settings,
        open_for_s=adapter.open_for_s,
    )
    stopping = threading.Event()
    stop_on_signals(stopping)
    metrics.READY.set()
    log.info("executor started", extra={"wms": settings.wms_url, "group": GROUP})
    try:
        consume_loop(executor, consumer, stopping)
    finally:
        executor.close()
        consumer.close()
        adapter.close()
    return 0
