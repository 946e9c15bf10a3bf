"""`stockshift bench --execute`: how fast `stockshift execute` turns proposals into orders.

On a real broker, Redis and PostgreSQL, with the reference WMS answering every call after
`wms_ms` (20 ms by default):
- ceiling: the same WMS's creates per second from a plain client with as many concurrent
  requests as the executor may make (measured in the same run: the figure the executor is
  judged against);
- throughput: orders created per second by one executor process from a backlog of proposals;
- latency: proposal produced -> order created at the WMS, at a steady rate (100/s), p50/p99.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from adapters.lab import refwms
from adapters.lab.devservices import free_port
from adapters.lab.flowproc import start_command, stop_process
from adapters.lab.livedemo import NETWORK, _process, services
from adapters.settings import from_env
from flows.entry import create_topics


@dataclass(frozen=True)
class ExecBench:
    ceiling_per_s: float
    orders_per_s: float
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    floor_p50_ms: float
    floor_p99_ms: float
    concurrency: int
    wms_ms: float
    wms_p50_ms: float = 0.0
    wms_p99_ms: float = 0.0
    cpu_ms_per_order: float = 0.0

    def lines(self) -> list[str]:
        ratio = self.orders_per_s / self.ceiling_per_s if self.ceiling_per_s else 0.0
        return [
            f"execute bench (WMS answers in {self.wms_ms:.0f} ms; {self.concurrency} concurrent "
            f"calls; {os.cpu_count()} cores)",
            f"  ceiling: plain client creates     {self.ceiling_per_s:8.0f} orders/s",
            f"  executor: backlog                 {self.orders_per_s:8.0f} orders/s "
            f"({ratio:.2f} x ceiling); the executor's CPU: {self.cpu_ms_per_order:.2f} ms an "
            f"order, {1000 / max(self.cpu_ms_per_order, 1e-9):.0f} orders/s per core",
            f"  latency at {self.rate:.0f}/s, produced -> created: p50 {self.p50_ms:.0f} ms, "
            f"p99 {self.p99_ms:.0f} ms, max {self.max_ms:.0f} ms",
            f"  broker floor at {self.rate:.0f}/s, produced -> consumed by a plain consumer: "
            f"p50 {self.floor_p50_ms:.0f} ms, p99 {self.floor_p99_ms:.0f} ms",
            f"  WMS alone at {self.rate:.0f}/s, a plain client's create -> created: "
            f"p50 {self.wms_p50_ms:.0f} ms, p99 {self.wms_p99_ms:.0f} ms",
            f"  the executor adds (latency - broker floor - WMS alone): "
            f"p50 {self.p50_ms - self.floor_p50_ms - self.wms_p50_ms:.0f} ms, "
            f"p99 {self.p99_ms - self.floor_p99_ms - self.wms_p99_ms:.0f} ms",
        ]


def _proposal(i: int, now_ms: int) -> dict[str, Any]:
    return {
        "proposal_id": f"b{i:06d}-{uuid.uuid4().hex[:6]}",
        "sku": f"SKU-{i % 500:04d}",
        "from_site": "A",
        "to_site": "B",
        "qty": 1,
        "status": "proposed",
        "created_at": now_ms,
        "expires_at": now_ms + 3_600_000,
        "policy_version": "bench",
    }


def _ceiling(wms_url: str, n: int, concurrency: int) -> float:
    with httpx.Client(base_url=wms_url, limits=httpx.Limits(max_connections=concurrency)) as c:

        def create(i: int) -> None:
            body = {"sku": "CEIL", "from_site": "A", "to_site": "B", "qty": 1}
            c.post("/transfer-orders", json=body, headers={"Idempotency-Key": f"ceil-{i}"})

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(create, range(n)))
        return n / (time.perf_counter() - start)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wms_latency(wms_url: str, rate: float, seconds: float) -> list[float]:
    """The WMS's own share: a plain client's creates at the bench's rate, one at a time."""
    times = []
    with httpx.Client(base_url=wms_url) as client:
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            time.sleep(max(start + i / rate - time.perf_counter(), 0))
            sent = time.perf_counter()
            body = {"sku": "ALONE", "from_site": "A", "to_site": "B", "qty": 1}
            client.post("/transfer-orders", json=body, headers={"Idempotency-Key": f"alone-{i}"})
            times.append((time.perf_counter() - sent) * 1000)
    return times


def _created_at(dsn: str, schema: str) -> dict[str, float]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT reference, created_at FROM {schema}.orders").fetchall()
    return {ref: at for ref, at in rows if ref}


def _wait_orders(dsn: str, schema: str, want: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        found = {k: v for k, v in _created_at(dsn, schema).items() if k in want}
        if len(found) >= len(want) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def run_exec_bench(
    folder: Path,
    backlog: int = 3000,
    rate: float = 100.0,
    seconds: float = 20.0,
    wms_ms: float = 20.0,
    concurrency: int = 64,
) -> ExecBench:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "network.toml").write_text(NETWORK)
    with services(folder) as (brokers, redis_url, dsn):
        prefix = f"xb{uuid.uuid4().hex[:8]}."
        schema = prefix.rstrip(".")
        create_topics(from_env({"STOCKSHIFT_BROKERS": brokers, "STOCKSHIFT_TOPIC_PREFIX": prefix}))
        port = free_port()
        wms_url = f"http://127.0.0.1:{port}"
        argv = refwms.command(port, dsn, schema, ("A", "B", "C"), 1000)
        with _process(argv, port, folder / "wms.log"), httpx.Client(base_url=wms_url) as wms:
            wms.post("/_faults", json={"slow_ms": wms_ms}).raise_for_status()
            ceiling = _ceiling(wms_url, min(backlog, 2000), concurrency)
            wms_alone = sorted(_wms_latency(wms_url, rate, min(seconds, 10.0)))
            env = {
                **os.environ,
                "STOCKSHIFT_BROKERS": brokers,
                "STOCKSHIFT_TOPIC_PREFIX": prefix,
                "STOCKSHIFT_REDIS_URL": redis_url,
                "STOCKSHIFT_REDIS_PREFIX": prefix,
                "STOCKSHIFT_WMS_URL": wms_url,
                "STOCKSHIFT_NETWORK": str(folder / "network.toml"),
                "STOCKSHIFT_EXECUTE_CONCURRENCY": str(concurrency),
                "STOCKSHIFT_EXECUTE_POLL_INTERVAL_S": "60",
                "STOCKSHIFT_CONSUMER_GROUP": f"{prefix}execute",
            }
            producer = Producer({"bootstrap.servers": brokers, "linger.ms": 2})
            executor = start_command("execute", env, folder / "execute.log")
            try:
                floor = sorted(_broker_floor(brokers, producer, prefix, rate, seconds))
                cpu_before = _cpu_seconds(executor.pid)
                throughput = _throughput(producer, prefix, dsn, schema, backlog)
                cpu_ms = (_cpu_seconds(executor.pid) - cpu_before) * 1000 / backlog
                latencies = _latency(producer, prefix, dsn, schema, rate, seconds)
            finally:
                stop_process(executor, 30)
    latencies.sort()

    return ExecBench(
        ceiling,
        throughput,
        rate,
        _pick(latencies, 0.5),
        _pick(latencies, 0.99),
        latencies[-1],
        _pick(floor, 0.5),
        _pick(floor, 0.99),
        concurrency,
        wms_ms,
        _pick(wms_alone, 0.5),
        _pick(wms_alone, 0.99),
        cpu_ms,
    )


def _pick(values: list[float], q: float) -> float:
    return values[min(int(q * len(values)), len(values) - 1)] if values else float("nan")


def _broker_floor(
    brokers: str, producer: Producer, prefix: str, rate: float, seconds: float
) -> list[float]:
    """Produce -> consume on this broker with the executor's consumer settings: the part of
    the latency that is the broker's, not the executor's."""
    topic = prefix + "floor"
    create_topics_named(brokers, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"{prefix}floor",
            "fetch.wait.max.ms": 20,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
    consumer.poll(1.0)
    seen: list[float] = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        time.sleep(max(start + i / rate - time.perf_counter(), 0))
        producer.produce(topic, orjson.dumps(time.time()), b"k", partition=0)
        producer.flush(1)
        for msg in consumer.consume(100, timeout=0):
            if msg.error() is None:
                seen.append((time.time() - orjson.loads(msg.value() or b"0")) * 1000)
    deadline = time.monotonic() + 5
    while len(seen) < int(rate * seconds) and time.monotonic() < deadline:
        for msg in consumer.consume(100, timeout=0.05):
            if msg.error() is None:
                seen.append((time.time() - orjson.loads(msg.value() or b"0")) * 1000)
    consumer.close()
    return seen


def create_topics_named(brokers: str, topic: str) -> None:
    from adapters.kafka import ensure_topics

    ensure_topics([brokers], [topic], 1)


def _produce(producer: Producer, topic: str, body: dict[str, Any]) -> None:
    producer.produce(topic, orjson.dumps(body), body["sku"].encode())
    producer.poll(0)


def _throughput(producer: Producer, prefix: str, dsn: str, schema: str, n: int) -> float:
    now = int(time.time() * 1000)
    bodies = [_proposal(i, now) for i in range(n)]
    for body in bodies:
        _produce(producer, prefix + "proposals", body)
    producer.flush(30)
    found = _wait_orders(dsn, schema, {b["proposal_id"] for b in bodies}, timeout=300)
    if len(found) < n:
        raise RuntimeError(f"only {len(found)} of {n} orders were created in 300 s")
    times = sorted(found.values())
    return (len(times) - 1) / max(times[-1] - times[0], 1e-9) if len(times) > 1 else 0.0


def _latency(
    producer: Producer, prefix: str, dsn: str, schema: str, rate: float, seconds: float
) -> list[float]:
    sent: dict[str, float] = {}
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        due = start + i / rate
        time.sleep(max(due - time.perf_counter(), 0))
        body = _proposal(1_000_000 + i, int(time.time() * 1000))
        sent[body["proposal_id"]] = time.time()
        _produce(producer, prefix + "proposals", body)
        producer.flush(1)
        i += 1
    found = _wait_orders(dsn, schema, set(sent), timeout=120)
    return [(found[k] - sent[k]) * 1000 for k in found]
