"""What the planners' console reads and writes: proposals, decisions and exceptions from
Kafka, answers claimed in Redis, events and audit lines produced to Kafka, control commands
signed with the server's key.

The console follows `stockshift.proposals` and `stockshift.decisions` from the beginning
(their retention bounds the work) in a background thread and keeps the proposals that need
a person in memory; the CLI (`stockshift pending|approve|reject`) reads them to the end once.
An answer is claimed with SET NX on `{prefix}answer:{proposal_id}` before it is published,
so two planners (or a double click, or the CLI and the page) give one answer.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from adapters import clock
from adapters.control import send_command
from adapters.execution_store import ExecutionStore
from adapters.settings import Settings, control_topic
from operators import approvals
from operators import execution as exec_rules
from operators.codec import rfc3339
from operators.parse import Invalid, parse_timestamp
from state.console import User, Waiting
from state.execution import Stage

log = logging.getLogger("stockshift.console")

_ANSWER_KEEP_S = 90 * 86_400


@dataclass(frozen=True, slots=True)
class Stats:
    waiting: int
    proposals_last_24h: int
    proposals_last_hour: int
    transfer_cost_today: float
    units_today: int


class Backend:
    def __init__(self, settings: Settings, client: redis.Redis, producer: Producer) -> None:
        self.settings = settings
        self._redis = client
        self._producer = producer
        self._lock = threading.Lock()
        self._items: dict[str, Waiting] = {}
        self._early: dict[str, list[dict[str, Any]]] = {}  # decisions before their proposal
        self._recent: deque[tuple[int, float, int]] = deque(maxlen=200_000)
        self._exceptions: dict[str, dict[str, Any]] = {}
        self._caught_up = threading.Event()
        self._stopping = threading.Event()
        self.store = ExecutionStore(client, settings.redis_prefix)

    # -- following the topics ---------------------------------------------------------
    def start(self) -> Backend:
        threading.Thread(target=self._follow, name="console-follow", daemon=True).start()
        return self

    def wait_caught_up(self, timeout_s: float = 60.0) -> bool:
        return self._caught_up.wait(timeout_s)

    def stop(self) -> None:
        self._stopping.set()

    def _consumer(self) -> tuple[Consumer, dict[tuple[str, int], int]]:
        """Every partition from the beginning, and the offset each must reach (its high
        watermark now) before the console has caught up."""
        s = self.settings
        consumer = Consumer(
            {
                "bootstrap.servers": ",".join(s.brokers),
                **s.kafka_config,
                "group.id": "stockshift-console",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
            }
        )
        assigned, targets = [], {}
        for kind in ("proposals", "decisions", "exceptions"):
            topic = s.topic(kind)
            meta = consumer.list_topics(topic, timeout=s.broker_wait_s).topics.get(topic)
            for p in meta.partitions if meta is not None and not meta.error else ():
                assigned.append(TopicPartition(topic, p, OFFSET_BEGINNING))
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=s.broker_wait_s
                )
                if high > low:
                    targets[(topic, p)] = high
        consumer.assign(assigned)
        return consumer, targets

    def _follow(self) -> None:
        """Caught up once every partition reached the offset it had at start and then five
        reads in a row (a second) brought nothing (a broker's high watermark can lag its
        log: Tansu's did here, so the offsets alone declared the console caught up early)."""
        consumer, targets = self._consumer()
        quiet = 0
        try:
            while not self._stopping.is_set():
                batch = consumer.consume(500, timeout=0.2)
                quiet = quiet + 1 if not batch else 0
                for msg in batch:
                    if msg.error() is not None:
                        continue
                    topic, partition = msg.topic() or "", msg.partition() or 0
                    self.ingest(topic, msg.value() or b"")
                    target = targets.get((topic, partition))
                    if target is not None and (msg.offset() or 0) + 1 >= target:
                        del targets[(topic, partition)]
                if not targets and quiet >= 5:
                    self._caught_up.set()
        except Exception:
            log.exception("console stopped following the topics")
            raise
        finally:
            consumer.close()

    def ingest(self, topic: str, value: bytes) -> None:
        """One message of the proposals, decisions or exceptions topic."""
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict):
            return
        with self._lock:
            if topic == self.settings.topic("proposals"):
                self._take_proposal(body)
            elif topic == self.settings.topic("decisions"):
                self._take_decision(body)
            elif isinstance(body.get("exception_id"), str):
                self._exceptions[body["exception_id"]] = body

    def _take_proposal(self, body: dict[str, Any]) -> None:
        try:
            created = parse_timestamp(body.get("created_at"), "created_at")
            cost = float((body.get("evidence") or {}).get("transfer_cost", 0.0))
            self._recent.append((created, cost, int(body.get("qty", 0))))
        except (Invalid, TypeError, ValueError):
            pass
        item = approvals.waiting_from_proposal(body)
        if item is None or item.proposal_id in self._items:
            return
        for record in self._early.pop(item.proposal_id, []):
            approvals.note_decision(item, record)
        self._items[item.proposal_id] = item

    def _take_decision(self, body: dict[str, Any]) -> None:
        pid = body.get("proposal_id")
        if not isinstance(pid, str):
            return
        item = self._items.get(pid)
        if item is not None:
            approvals.note_decision(item, body)
        elif len(self._early) < 100_000:
            self._early.setdefault(pid, []).append(body)

    # -- reading ------------------------------------------------------------------------
    def get(self, proposal_id: str) -> Waiting | None:
        with self._lock:
            found = self._items.get(proposal_id)
            return replace(found) if found is not None else None

    def waiting(self, now_ms: int, site: str = "", sku: str = "") -> list[Waiting]:
        """Proposals still waiting for a person (not answered, not expired). An answer
        claimed in Redis counts even before its audit line has been read back."""
        with self._lock:
            items = [
                replace(w)
                for w in self._items.values()
                if w.answer is None
                and w.expires_ms > now_ms
                and (not site or site in (w.from_site, w.to_site))
                and (not sku or sku.lower() in w.sku.lower())
            ]
        return self._unclaimed(items)

    def _unclaimed(self, items: list[Waiting]) -> list[Waiting]:
        keys = [f"{self.settings.redis_prefix}answer:{w.proposal_id}" for w in items]
        try:
            claims: list[Any] = []
            for start in range(0, len(keys), 1000):
                claims += self._redis.mget(keys[start : start + 1000])
        except redis.RedisError:
            return items  # the page still shows; answering checks the claim itself
        return [w for w, claim in zip(items, claims, strict=True) if claim is None]

    def exceptions(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self._exceptions.values(), key=lambda e: str(e.get("ts")), reverse=True)

    def stats(self, now_ms: int) -> Stats:
        day_start = now_ms - now_ms % 86_400_000
        with self._lock:
            recent = list(self._recent)
            waiting = sum(
                1 for w in self._items.values() if w.answer is None and w.expires_ms > now_ms
            )
        today = [(c, q) for t, c, q in recent if t >= day_start]
        return Stats(
            waiting=waiting,
            proposals_last_24h=sum(1 for t, _, _ in recent if t >= now_ms - 86_400_000),
            proposals_last_hour=sum(1 for t, _, _ in recent if t >= now_ms - 3_600_000),
            transfer_cost_today=round(sum(c for c, _ in today), 2),
            units_today=sum(q for _, q in today),
        )

    # -- answering ----------------------------------------------------------------------
    def answer(
        self, proposal_id: str, approve: bool, user: User, note: str
    ) -> approvals.Refusal | Waiting:
        """Approve or reject once: checks, claims in Redis, then publishes the contract's
        event and the audit line (decisions topic and the proposal's trail)."""
        now = clock.now_ms()
        item = self.get(proposal_id)
        refused = approvals.refusal(user, item, now)
        if refused is not None or item is None:
            return refused or approvals.Refusal(404, "not found")
        claim = f"{self.settings.redis_prefix}answer:{proposal_id}"
        verdict = "approved" if approve else "rejected"
        if not self._redis.set(claim, f"{verdict} by {user.name}", nx=True, ex=_ANSWER_KEEP_S):
            earlier = self._redis.get(claim)
            said = earlier.decode() if isinstance(earlier, bytes) else str(earlier)
            return approvals.Refusal(409, f"already {said}")
        event = approvals.answer_event(item, approve, user, note, now)
        audit = approvals.audit_record(item, approve, user, note, now)
        self._produce("shipments", event, item.sku, now)
        self._produce("decisions", audit, item.sku, now)
        trail = f"{self.settings.redis_prefix}proposal:{proposal_id}:trail"
        self._redis.rpush(trail, orjson.dumps(audit))
        if not approve:
            self._decline_execution(proposal_id, note)
        self._producer.flush(15)
        with self._lock:
            live = self._items.get(proposal_id)
            if live is not None:
                live.answer, live.answered_by, live.note = verdict, user.name, note
        log.info(
            "proposal answered",
            extra={"proposal_id": proposal_id, "answer": verdict, "actor": user.name},
        )
        return replace(item, answer=verdict, answered_by=user.name, note=note)

    def _decline_execution(self, proposal_id: str, note: str) -> None:
        record = self.store.get(proposal_id)
        if record is not None:
            self.store.save(exec_rules.decline(record, note or "rejected in the console"))

    def _produce(self, kind: str, body: dict[str, Any], key: str, ts_ms: int) -> None:
        self._producer.produce(
            self.settings.topic(kind), orjson.dumps(body), key.encode(), timestamp=ts_ms
        )

    # -- exceptions: retry or withdraw an escalated execution --------------------------
    def retry(self, proposal_id: str, user: User) -> str:
        record = self.store.get(proposal_id)
        if record is None or record.stage is not Stage.ESCALATED:
            return "nothing to retry: the case is not escalated (any more)"
        if not user.may_answer(record.from_site, record.to_site):
            return "forbidden"
        self.store.save(exec_rules.retry(record, clock.now_ms(), f"retry by {user.name}"))
        return "retrying"

    def withdraw(self, proposal_id: str, user: User) -> str:
        record = self.store.get(proposal_id)
        if record is None or record.stage is not Stage.ESCALATED:
            return "nothing to cancel: the case is not escalated (any more)"
        if not user.may_answer(record.from_site, record.to_site):
            return "forbidden"
        step = exec_rules.withdraw(record, clock.now_ms(), f"cancelled by {user.name}")
        for event in step.outcomes:
            body = exec_rules.outcome_dict(event, rfc3339(event.ts_ms))
            self._produce("shipments", body, event.sku, event.ts_ms)
        self._producer.flush(15)
        self.store.save(step.record)
        return "cancelling" if step.record.stage is Stage.CANCELLING else "cancelled"

    # -- control ------------------------------------------------------------------------
    def control(self, user: User, command: str, target: str | None) -> None:
        """Sign a control command with the server's key (the browser never sees a key) and
        log who asked for it."""
        key_id = self.settings.console_key_id
        secret = self.settings.control_keys.get(key_id or "")
        if not key_id or secret is None:
            raise PermissionError("the console has no control key (STOCKSHIFT_CONSOLE_KEY_ID)")
        now = clock.now_ms()
        send_command(
            self.settings.brokers,
            control_topic(self.settings),
            key_id,
            secret,
            command,
            self.settings.kafka_config,
            target=target,
            actor=user.name,
            reason="from the planners' console",
        )
        self._produce(
            "decisions", approvals.control_audit(user, command, target, now), "control", now
        )
        self._producer.flush(15)


def read_all(settings: Settings, client: redis.Redis, producer: Producer) -> Backend:
    """For the CLI: a backend that has read the topics to their end."""
    backend = Backend(settings, client, producer).start()
    if not backend.wait_caught_up(settings.broker_wait_s):
        raise TimeoutError("could not read the proposals and decisions topics to their end")
    return backend


def sorted_waiting(items: Iterable[Waiting], key: str, descending: bool) -> list[Waiting]:
    keys: dict[str, Callable[[Waiting], Any]] = {
        "age": lambda w: -w.created_ms,
        "value": lambda w: w.value,
        "sku": lambda w: w.sku,
        "site": lambda w: (w.to_site, w.from_site),
        "expires": lambda w: w.expires_ms,
        "benefit": lambda w: w.net_benefit,
    }
    return sorted(items, key=keys.get(key, keys["age"]), reverse=descending)
