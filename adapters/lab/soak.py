"""`stockshift soak`: a bounded run at a steady input rate with churning SKUs, through the
real broker and `stockshift run` (recovery on, Redis on, idle eviction short), sampled
every interval: events in vs accounted, resident memory, SKUs held in state, recovery
store size, and trigger-to-proposal latency seen by an outside consumer.

Event time runs `SPEEDUP` times faster than the wall clock, so a SKU lives out two days of
sales (warm-up, confidence, a transfer) in a couple of minutes. Every SKU is born with
opening counts, sells at A and B once an event-hour, gets a damage write-off at B that
needs a transfer, and goes silent; this runner also plays the execution service (it
dispatches and receives each proposal), so the SKU's reservations resolve and it becomes
evictable. Keys churn; a flow whose state does not drop them grows for the whole run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from adapters import kafka
from adapters.lab.reliability import ScenarioRun, Services
from adapters.settings import CONTROL_KIND, INPUT_KINDS, OUTPUT_KINDS
from operators.reference.verify import T0_MS
from state.units import HOUR_MS

SPEEDUP = 1800  # one wall-clock second is half an event-hour
LIFE_HOURS = 60  # sales per SKU and site before its damage write-off
SLOT_S = HOUR_MS / SPEEDUP / 1000  # wall seconds per event-hour


@dataclass
class Sample:
    at_s: float
    produced: int
    accounted: int
    rss_mb: float
    keys_held: int
    recovery_mb: float
    proposals: int
    p50_ms: float
    p99_ms: float


@dataclass
class SoakResult:
    samples: list[Sample] = field(default_factory=list)
    produced: int = 0
    accounted: int = 0
    errors: int = 0
    births: int = 0


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.glob("*") if f.is_file()) / 1e6


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)], 1)


def run_soak(
    services: Services,
    folder: Path,
    minutes: float,
    rate: float,
    sample_s: float = 30.0,
    idle_eviction_s: float = 30.0,
    say: Callable[[str], None] = lambda _: None,
) -> SoakResult:
    """Drive `stockshift run` at `rate` events/s for `minutes` with churning SKUs, an
    execution service answering every proposal, and a sample every `sample_s` seconds."""
    return _Soak(services, folder, rate, sample_s, idle_eviction_s, say).run(minutes)


Message = tuple[str, dict[str, Any]]  # (topic kind, body)


class _Soak:
    """One soak run: the flow process, the producer, and what the helper threads share."""

    def __init__(
        self,
        services: Services,
        folder: Path,
        rate: float,
        sample_s: float,
        idle_eviction_s: float,
        say: Callable[[str], None],
    ) -> None:
        self.recovery = folder / "recovery"
        self.flow_run = ScenarioRun(
            services,
            folder,
            {
                "STOCKSHIFT_RECOVERY_DIR": str(self.recovery),
                "STOCKSHIFT_SNAPSHOT_INTERVAL_S": "10",
                "STOCKSHIFT_IDLE_EVICTION_S": str(idle_eviction_s),
            },
        )
        topics = [self.flow_run.topic(k) for k in (*INPUT_KINDS, *OUTPUT_KINDS)]
        kafka.ensure_topics([services.brokers], topics, 3)
        kafka.ensure_topics([services.brokers], [self.flow_run.topic(CONTROL_KIND)], 1)
        self.brokers = services.brokers
        self.producer = Producer(
            {"bootstrap.servers": services.brokers, "linger.ms": 20,
             "queue.buffering.max.messages": 500_000}
        )  # fmt: skip
        self.rate, self.sample_s, self.say = rate, sample_s, say
        self.result = SoakResult()
        self.lock = threading.Lock()
        self.sent_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self.proposals = 0
        self.stop = threading.Event()
        self.started = time.monotonic()

    def run(self, minutes: float) -> SoakResult:
        flow = self.flow_run.flow
        flow.start()
        self.started = time.monotonic()
        threads = [
            threading.Thread(target=f, daemon=True) for f in (self._execution, self._sampler)
        ]
        for thread in threads:
            thread.start()
        try:
            self._drive(minutes)
            self.producer.flush(60)
            self.result.accounted = self._wait_accounted(60)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=5)
            flow.stop()
        return self.result

    def event_ms(self, now: float) -> int:
        return T0_MS + int((now - self.started) * SPEEDUP * 1000)

    def _delivered(self, err: Any, _msg: Any) -> None:
        with self.lock:
            if err is None:
                self.result.produced += 1
            else:
                self.result.errors += 1

    def send(self, kind: str, body: dict[str, Any]) -> None:
        while True:
            try:
                self.producer.produce(
                    self.flow_run.topic(kind), orjson.dumps(body), body["sku"].encode(),
                    timestamp=body["ts"], on_delivery=self._delivered,
                )  # fmt: skip
                return
            except BufferError:
                self.producer.poll(0.01)

    def _drive(self, minutes: float) -> None:
        """Per event-hour slot: `births` new SKUs; every living SKU sells at A and B for
        LIFE_HOURS, then gets a damage write-off that needs a transfer."""
        births = max(1, round(self.rate * SLOT_S / (2 * LIFE_HOURS)))
        alive: list[tuple[str, int]] = []  # (sku, hour born)
        slot = 0
        while time.monotonic() - self.started < minutes * 60:
            hour_ms = T0_MS + slot * HOUR_MS
            for i in range(births):
                sku = f"SOAK-{slot:06d}-{i:03d}"
                alive.append((sku, slot))
                self.result.births += 1
                for site, stock in (("A", 300), ("B", 91)):
                    self.send("inventory", {"event_id": f"snap-{site}-{sku}", "ts": hour_ms,
                                            "sku": sku, "site": site, "type": "snapshot",
                                            "on_hand": stock})  # fmt: skip
            alive, todo = _slot_events(alive, slot)
            self._pace(todo, self.started + slot * SLOT_S, hour_ms)
            slot += 1

    def _pace(
        self, todo: list[tuple[str, dict[str, Any]]], slot_start: float, hour_ms: int
    ) -> None:
        """The slot's events spread evenly over its wall-clock second(s)."""
        for n, (kind, body) in enumerate(todo):
            pause = slot_start + SLOT_S * n / max(len(todo), 1) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            body["ts"] = max(hour_ms + HOUR_MS // 2, self.event_ms(time.monotonic()))
            if body["event_id"].startswith("damage-"):
                with self.lock:
                    self.sent_at[body["event_id"]] = time.time()
            self.send(kind, body)
            self.producer.poll(0)

    def _accounted(self) -> int:
        flow = self.flow_run.flow
        consumed = flow.metric("stockshift_events_consumed_total")
        return int(consumed + flow.metric("stockshift_dead_letters_total"))

    def _wait_accounted(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        accounted = self._accounted()
        while accounted < self.result.produced and time.monotonic() < deadline:
            time.sleep(0.5)
            accounted = self._accounted()
        return accounted

    def _execution(self) -> None:
        """Reads proposals like an ERP adapter: dispatch and receive each one."""
        consumer = Consumer(
            {"bootstrap.servers": self.brokers, "group.id": "soak-exec",
             "enable.auto.commit": False, "fetch.wait.max.ms": 5}
        )  # fmt: skip
        topic = self.flow_run.topic("proposals")
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        while not self.stop.is_set():
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            self._answer(orjson.loads(msg.value() or b"{}"), time.time())
        consumer.close()

    def _answer(self, proposal: dict[str, Any], now: float) -> None:
        with self.lock:
            self.proposals += 1
            for trigger in proposal.get("trigger_event_ids", []):
                if trigger in self.sent_at:
                    self.latencies.append((now - self.sent_at.pop(trigger)) * 1000)
        ts = self.event_ms(time.monotonic())
        for offset, kind in ((0, "transfer_dispatched"), (1, "transfer_received")):
            self.send("shipments", {
                "event_id": f"{kind}-{proposal['proposal_id']}", "ts": ts + offset,
                "sku": proposal["sku"], "site": proposal["to_site"],
                "from_site": proposal["from_site"], "type": kind, "qty": proposal["qty"],
                "proposal_id": proposal["proposal_id"],
            })  # fmt: skip

    def _sampler(self) -> None:
        last = 0.0
        while not self.stop.wait(1.0):
            now = time.monotonic() - self.started
            if now - last >= self.sample_s:
                last = now
                sample = self._sample(now)
                self.result.samples.append(sample)
                self.say(str(sample))

    def _sample(self, now: float) -> Sample:
        flow = self.flow_run.flow
        pid = flow.process.pid if flow.process is not None else 0
        with self.lock:
            window = list(self.latencies)
            self.latencies.clear()
            produced = self.result.produced
        return Sample(
            round(now),
            produced,
            self._accounted(),
            round(_rss_mb(pid), 1),
            int(flow.metric("stockshift_state_keys")),
            round(_dir_mb(self.recovery), 1),
            self.proposals,
            _pct(window, 0.5),
            _pct(window, 0.99),
        )


def _slot_events(
    alive: list[tuple[str, int]], slot: int
) -> tuple[list[tuple[str, int]], list[Message]]:
    """The SKUs still alive after this slot, and the slot's events: a sale at each store
    for the living, a damage write-off at B for those whose life ends."""
    keep: list[tuple[str, int]] = []
    todo: list[Message] = []
    for sku, born in alive:
        age = slot - born
        if age < LIFE_HOURS:
            for site in ("A", "B"):
                todo.append(
                    ("pos", {"event_id": f"s-{site}-{age}-{sku}", "sku": sku, "site": site,
                             "qty": 1})
                )  # fmt: skip
            keep.append((sku, born))
        else:
            todo.append(
                ("inventory", {"event_id": f"damage-{sku}", "sku": sku, "site": "B",
                               "type": "adjustment", "delta": -15})
            )  # fmt: skip
    return keep, todo


def flat(samples: list[Sample], name: str) -> tuple[float, float, bool]:
    """Mean of the middle and the last third of the samples; flat within 10%."""
    values = [float(getattr(s, name)) for s in samples]
    third = max(len(values) // 3, 1)
    middle_values = values[third : 2 * third]
    middle = sum(middle_values) / max(len(middle_values), 1)
    last = sum(values[-third:]) / third
    return middle, last, middle > 0 and abs(last - middle) <= 0.10 * middle


def warmup_s(idle_eviction_s: float, sample_s: float) -> float:
    """When the churn reaches steady state: a SKU's life, its eviction, one more sample."""
    return LIFE_HOURS * SLOT_S + idle_eviction_s + sample_s
