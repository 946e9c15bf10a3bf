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
    recovery = folder / "recovery"
    run = ScenarioRun(
        services,
        folder,
        {
            "STOCKSHIFT_RECOVERY_DIR": str(recovery),
            "STOCKSHIFT_SNAPSHOT_INTERVAL_S": "10",
            "STOCKSHIFT_IDLE_EVICTION_S": str(idle_eviction_s),
        },
    )
    kafka.ensure_topics(
        [services.brokers], [run.topic(k) for k in (*INPUT_KINDS, *OUTPUT_KINDS)], 3
    )
    kafka.ensure_topics([services.brokers], [run.topic(CONTROL_KIND)], 1)
    producer = Producer(
        {
            "bootstrap.servers": services.brokers,
            "linger.ms": 20,
            "queue.buffering.max.messages": 500_000,
        }
    )
    result = SoakResult()
    lock = threading.Lock()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    proposals = 0
    stop = threading.Event()

    def delivered(err: Any, _msg: Any) -> None:
        with lock:
            if err is None:
                result.produced += 1
            else:
                result.errors += 1

    def send(kind: str, body: dict[str, Any]) -> None:
        while True:
            try:
                producer.produce(
                    run.topic(kind),
                    orjson.dumps(body),
                    body["sku"].encode(),
                    timestamp=body["ts"],
                    on_delivery=delivered,
                )
                return
            except BufferError:
                producer.poll(0.01)

    def execution() -> None:
        """Reads proposals like an ERP adapter: dispatch and receive each one."""
        nonlocal proposals
        consumer = Consumer(
            {
                "bootstrap.servers": services.brokers,
                "group.id": "soak-exec",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        topic = run.topic("proposals")
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            now = time.time()
            body = orjson.loads(msg.value() or b"{}")
            with lock:
                proposals += 1
                for trigger in body.get("trigger_event_ids", []):
                    if trigger in sent_at:
                        latencies.append((now - sent_at.pop(trigger)) * 1000)
            ts = event_ms(time.monotonic())
            for step, kind in ((0, "transfer_dispatched"), (1, "transfer_received")):
                send(
                    "shipments",
                    {
                        "event_id": f"{kind}-{body['proposal_id']}",
                        "ts": ts + step,
                        "sku": body["sku"],
                        "site": body["to_site"],
                        "from_site": body["from_site"],
                        "type": kind,
                        "qty": body["qty"],
                        "proposal_id": body["proposal_id"],
                    },
                )
        consumer.close()

    started = time.monotonic()

    def event_ms(now: float) -> int:
        return T0_MS + int((now - started) * SPEEDUP * 1000)

    def sampler() -> None:
        last = 0.0
        while not stop.wait(1.0):
            now = time.monotonic() - started
            if now - last < sample_s:
                continue
            last = now
            pid = run.flow.process.pid if run.flow.process is not None else 0
            with lock:
                window = list(latencies)
                latencies.clear()
                produced = result.produced
            accounted = int(
                run.flow.metric("stockshift_events_consumed_total")
                + run.flow.metric("stockshift_dead_letters_total")
            )
            sample = Sample(
                round(now),
                produced,
                accounted,
                round(_rss_mb(pid), 1),
                int(run.flow.metric("stockshift_state_keys")),
                round(_dir_mb(recovery), 1),
                proposals,
                _pct(window, 0.5),
                _pct(window, 0.99),
            )
            result.samples.append(sample)
            say(str(sample))

    run.flow.start()
    threads = [threading.Thread(target=f, daemon=True) for f in (execution, sampler)]
    for thread in threads:
        thread.start()
    # Per event-hour slot: `births` new SKUs; every living SKU sells at A and B.
    births = max(1, round(rate * SLOT_S / (2 * LIFE_HOURS)))
    alive: list[tuple[str, int]] = []  # (sku, hour born)
    slot = 0
    try:
        while time.monotonic() - started < minutes * 60:
            slot_start = started + slot * SLOT_S
            hour_ms = T0_MS + slot * HOUR_MS
            for i in range(births):
                sku = f"SOAK-{slot:06d}-{i:03d}"
                alive.append((sku, slot))
                result.births += 1
                for site, stock in (("A", 300), ("B", 91)):
                    send(
                        "inventory",
                        {
                            "event_id": f"snap-{site}-{sku}",
                            "ts": hour_ms,
                            "sku": sku,
                            "site": site,
                            "type": "snapshot",
                            "on_hand": stock,
                        },
                    )
            keep: list[tuple[str, int]] = []
            todo: list[tuple[str, dict[str, Any]]] = []
            for sku, born in alive:
                age = slot - born
                if age < LIFE_HOURS:
                    for site in ("A", "B"):
                        todo.append(
                            (
                                "pos",
                                {
                                    "event_id": f"s-{site}-{age}-{sku}",
                                    "sku": sku,
                                    "site": site,
                                    "qty": 1,
                                },
                            )
                        )
                    keep.append((sku, born))
                else:
                    todo.append(
                        (
                            "inventory",
                            {
                                "event_id": f"damage-{sku}",
                                "sku": sku,
                                "site": "B",
                                "type": "adjustment",
                                "delta": -15,
                            },
                        )
                    )
            alive = keep
            for n, (kind, body) in enumerate(todo):
                due = slot_start + SLOT_S * n / max(len(todo), 1)
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                body["ts"] = max(hour_ms + HOUR_MS // 2, event_ms(time.monotonic()))
                if body["event_id"].startswith("damage-"):
                    with lock:
                        sent_at[body["event_id"]] = time.time()
                send(kind, body)
                producer.poll(0)
            slot += 1
        producer.flush(60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            accounted = run.flow.metric("stockshift_events_consumed_total") + run.flow.metric(
                "stockshift_dead_letters_total"
            )
            if accounted >= result.produced:
                break
            time.sleep(0.5)
        result.accounted = int(accounted)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        run.flow.stop()
    return result


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
