"""`stockshift bench --latency`: trigger event produced -> proposal received by an outside
consumer, at a steady input rate, through `stockshift run` on a real broker."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from adapters import kafka
from adapters.lab.compiled import env_for
from adapters.lab.devservices import start_broker
from adapters.lab.mockbroker import start_mock_broker, touch_topics
from adapters.settings import (
    DEFAULT_CONFIG_DIR,
    INPUT_KINDS,
    KAFKA_ENV_PREFIX,
    OUTPUT_KINDS,
    Settings,
)
from adapters.topics import topic_specs
from state.units import HOUR_MS

T0 = 1_767_225_600_000
NETWORK = """
[sku_defaults]
unit_cost = 10.0
unit_margin = 6.0
min_transfer_qty = 2
[[sites]]
id = "A"
replenishment_lead_hours = 96
[[sites]]
id = "B"
replenishment_lead_hours = 96
[[lanes]]
from = "A"
to = "B"
lead_hours = 6
cost_per_unit = 0.2
fixed_cost = 5
bidirectional = true
"""


def _history(sku: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "inventory",
            {
                "event_id": f"snap-{site}-{sku}",
                "ts": T0,
                "sku": sku,
                "site": site,
                "type": "snapshot",
                "on_hand": stock,
            },
        )
        for site, stock in (("A", 300), ("B", 91))
    ]
    for h in range(50):
        for site in ("A", "B"):
            body = {
                "event_id": f"s-{site}-{h}-{sku}",
                "ts": T0 + h * HOUR_MS + HOUR_MS // 2,
                "sku": sku,
                "site": site,
                "qty": 1,
            }
            events.append(("pos", body))
    return events


def _produce(producer: Producer, prefix: str, kind: str, body: dict[str, Any]) -> None:
    while True:
        try:
            producer.produce(
                prefix + kind, orjson.dumps(body), body["sku"].encode(), timestamp=body["ts"]
            )
            return
        except BufferError:
            producer.poll(0.01)


def relay(brokers: str, prefix: str, overrides: dict[str, str] | None = None) -> None:
    """The baseline beside the flow: a plain confluent-kafka loop that consumes the input
    topics, parses each message, and answers every damage write-off with a message on the
    proposals topic naming it (python -m adapters.lab.latency BROKERS PREFIX)."""
    consumer = Consumer(
        {"bootstrap.servers": brokers, "group.id": "relay", "enable.auto.commit": False,
         **kafka.SOURCE_DEFAULTS, **(overrides or {})}
    )  # fmt: skip
    parts = []
    for kind in INPUT_KINDS:
        topic = prefix + kind
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    consumer.assign(parts)
    producer = Producer({"bootstrap.servers": brokers, **kafka.SINK_DEFAULTS})
    while True:
        # Wait for the first message only (a batch consume waits its whole timeout unless
        # the batch fills), then take what else has arrived: the tightest plain relay.
        first = consumer.poll(0.005)
        for msg in [first, *consumer.consume(499, 0)] if first is not None else ():
            if msg.error() is not None:
                continue
            body = orjson.loads(msg.value() or b"{}")
            if body.get("type") == "adjustment":
                answer = {"proposal_id": body["event_id"], "trigger_event_ids": [body["event_id"]]}
                producer.produce(prefix + "proposals", orjson.dumps(answer), msg.key())
        producer.poll(0)


def measure(
    brokers: str,
    rate: float,
    seconds: float,
    skus: int,
    target: str = "stockshift",
    linger_ms: float = 20.0,
    mock_broker: bool = False,
    core_root: Path | None = None,
) -> dict[str, Any]:
    """Warm `skus` SKUs up, then send `rate` events/s for `seconds`; every SKU gets one
    damage write-off that needs a transfer. Returns latency percentiles in milliseconds.

    `target` "relay" runs the plain consume->produce baseline instead of `stockshift run`.
    The input producer batches for `linger_ms`, as a real one does; it is part of the
    latency measured. `mock_broker`: librdkafka's mock cluster, whose topics are created by
    asking for them (it has no CreateTopics). `core_root`: run stockshift from that copy of
    the checkout (the compiled core, as the image ships it)."""
    prefix = f"lat{uuid.uuid4().hex[:6]}."
    if mock_broker:  # every topic `stockshift run` would create, control included
        touch_topics(brokers, topic_specs(Settings(brokers=(brokers,), topic_prefix=prefix)))
    else:
        kafka.ensure_topics([brokers], [prefix + k for k in (*INPUT_KINDS, *OUTPUT_KINDS)], 3)
    folder = Path(tempfile.mkdtemp(prefix="stockshift-latency-"))
    consumer = MOCK_FETCH if mock_broker else {}
    flow = _start_target(brokers, prefix, folder, target, consumer, core_root)
    producer = Producer(
        {"bootstrap.servers": brokers, "linger.ms": linger_ms,
         "queue.buffering.max.messages": 200000}
    )  # fmt: skip
    watcher = _ProposalWatcher(brokers, prefix + "proposals")
    sent_at: dict[str, float] = {}
    try:
        names = [f"SKU-{i:05d}" for i in range(skus)]
        for sku in names:
            for kind, body in _history(sku):
                _produce(producer, prefix, kind, body)
        producer.flush(60)
        # Let the flow finish the warm-up before the clock starts.
        time.sleep(max(5.0, len(names) * 102 / 5000))
        watcher.start()
        _drive(producer, prefix, names, rate, seconds, sent_at)
        deadline = time.time() + 10
        while time.time() < deadline and len(set(sent_at) & set(watcher.received)) < len(sent_at):
            time.sleep(0.1)
    finally:
        watcher.stop()
        flow.terminate()
        flow.wait(timeout=15)
    received = watcher.received
    latencies = sorted((received[e] - sent_at[e]) * 1000 for e in sent_at if e in received)
    if not latencies:
        raise RuntimeError(f"no proposal arrived; flow log: {folder / 'flow.log'}")
    return {
        "target": target,
        "linger_ms": linger_ms,
        "rate_events_per_s": rate,
        "seconds": seconds,
        "triggers": len(sent_at),
        "proposals_received": len(latencies),
        **_percentiles(latencies),
    }


# The mock cluster holds a fetch for its whole wait, even once data has arrived (Kafka
# answers at once; Tansu needs 100 ms, see kafka.SOURCE_DEFAULTS): both consumers, the
# relay's and stockshift's, ask it to wait 5 ms.
MOCK_FETCH = {"fetch.wait.max.ms": "5"}


def _start_target(
    brokers: str,
    prefix: str,
    folder: Path,
    target: str,
    consumer: dict[str, str],
    core_root: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`stockshift run` (from `core_root` when given), or the plain relay, as its own
    process on the given topics, their consumers with the `consumer` settings."""
    (folder / "network.toml").write_text(NETWORK)
    flow_from = core_root if core_root is not None and target == "stockshift" else None
    env = {
        **(env_for(flow_from) if flow_from is not None else os.environ),
        "STOCKSHIFT_BROKERS": brokers,
        "STOCKSHIFT_TOPIC_PREFIX": prefix,
        "STOCKSHIFT_NETWORK": str(folder / "network.toml"),
        "STOCKSHIFT_POLICY": str(DEFAULT_CONFIG_DIR / "policies" / "default.toml"),
        "STOCKSHIFT_LOG_LEVEL": "WARNING",
        # Recovery on, as in production: snapshots at each epoch's end are part of the cost.
        "STOCKSHIFT_RECOVERY_DIR": str(folder / "recovery"),
        **{KAFKA_ENV_PREFIX + k.replace(".", "_").upper(): v for k, v in consumer.items()},
    }
    command = (
        [sys.executable, "-m", "flows.cli", "run"]
        if target == "stockshift"
        else [
            sys.executable,
            "-m",
            "adapters.lab.latency",
            brokers,
            prefix,
            orjson.dumps(consumer).decode(),
        ]
    )
    log = (folder / "flow.log").open("wb")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=flow_from)


class _ProposalWatcher:
    """Reads the proposals topic in a thread: when each trigger's proposal arrived."""

    def __init__(self, brokers: str, topic: str) -> None:
        self.received: dict[str, float] = {}
        self._brokers, self._topic = brokers, topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._consume, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _consume(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._brokers,
                "group.id": "latency",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 1,
            }
        )
        parts = consumer.list_topics(self._topic, timeout=10).topics[self._topic].partitions
        consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in parts])
        while not self._stop.is_set():
            msg = consumer.poll(0.01)
            if msg is None or msg.error():
                continue
            now = time.time()
            for trigger in orjson.loads(msg.value() or b"{}").get("trigger_event_ids", []):
                self.received.setdefault(trigger, now)
        consumer.close()


def _drive(
    producer: Producer,
    prefix: str,
    names: list[str],
    rate: float,
    seconds: float,
    sent_at: dict[str, float],
) -> None:
    """`rate` events/s for `seconds`: each SKU's trigger spread over the run, background
    sales on other SKUs in between (so the triggered SKUs keep their surplus)."""
    total = int(rate * seconds)
    every = max(total // max(len(names), 1), 1)
    started = time.perf_counter()
    triggered = 0
    for n in range(total):
        pause = started + n / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        ts = T0 + 50 * HOUR_MS + n * 10
        if n % every == 0 and triggered < len(names):
            sku = names[triggered]
            triggered += 1
            trigger = f"damage-{sku}"
            body: dict[str, Any] = {"event_id": trigger, "ts": ts, "sku": sku, "site": "B",
                                    "type": "adjustment", "delta": -15}  # fmt: skip
            sent_at[trigger] = time.time()
            _produce(producer, prefix, "inventory", body)
        else:
            body = {"event_id": f"x{n}", "ts": ts, "sku": f"BG-{n % 5000:04d}", "site": "A",
                    "qty": 1}  # fmt: skip
            _produce(producer, prefix, "pos", body)
        producer.poll(0)
    producer.flush(30)


def _percentiles(latencies: list[float]) -> dict[str, float]:
    def pct(q: float) -> float:
        return round(latencies[min(int(q * len(latencies)), len(latencies) - 1)], 1)

    return {
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1], 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
    }


BROKERS = ("tansu", "librdkafka mock")
# Triggers (one per SKU) in a latency run (`stockshift bench --seconds`, now 30 by default):
# with 400 over 15 s the p99 was the 4th-worst trigger, and an epoch's snapshot pause landing
# on a few of them moved it between 3.5 and 75 ms on one build; with 1,200 it is the 12th.
TRIGGERS = 1_200
_PERCENTILES = ("p50_ms", "p95_ms", "p99_ms", "max_ms")


def run_latency(
    rates: list[float],
    seconds: float,
    skus: int,
    linger_ms: float,
    brokers: str | None,
    core_root: Path | None = None,
) -> list[dict[str, Any]]:
    """The relay and stockshift at each rate on each broker (`brokers`: only that one, an
    outside Kafka), with stockshift's added latency per percentile; stockshift from
    `core_root` when given (a copy with the compiled core)."""
    rows: list[dict[str, Any]] = []
    for name in ("given",) if brokers else BROKERS:
        address, process = (
            (brokers, None) if brokers
            else start_broker() if name == "tansu"
            else start_mock_broker()
        )  # fmt: skip
        try:
            for rate in rates:
                relay_row, flow_row = (
                    measure(address, rate, seconds, skus, target, linger_ms,
                            mock_broker=name == "librdkafka mock", core_root=core_root)
                    for target in ("relay", "stockshift")
                )  # fmt: skip
                added = {k: round(flow_row[k] - relay_row[k], 1) for k in _PERCENTILES}
                rows.append({"broker": name, "rate": rate, "relay": relay_row,
                             "stockshift": flow_row, "added": added,
                             "core": "pure" if core_root is None else "compiled"})  # fmt: skip
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
    return rows


def latency_lines(rows: list[dict[str, Any]]) -> list[str]:
    head = f"{'broker':<17}{'events/s':>9}  {'run':<11}" + "".join(
        f"{k.removesuffix('_ms'):>9}" for k in _PERCENTILES
    )
    cores = {row["core"] for row in rows}
    lines = [
        "trigger -> proposal latency, ms (input producer linger included; stockshift with the "
        f"{' and '.join(sorted(cores))} core, recovery snapshots every 10 s)",
        head,
    ]
    for row in rows:
        for run in ("relay", "stockshift", "added"):
            figures = row[run]
            lines.append(
                f"{row['broker']:<17}{row['rate']:>9.0f}  {run:<11}"
                + "".join(f"{figures[k]:>9.1f}" for k in _PERCENTILES)
            )
    return lines


if __name__ == "__main__":
    relay(sys.argv[1], sys.argv[2], orjson.loads(sys.argv[3]) if len(sys.argv) > 3 else None)
