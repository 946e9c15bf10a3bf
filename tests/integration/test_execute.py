"""`stockshift execute` against the real broker, Redis, PostgreSQL and the reference WMS.

Each proposal must reach the WMS exactly once and its outcome come back once, through kill -9
of the executor, WMS errors and timeouts, a WMS that is down, duplicate deliveries and
proposals that expire; bad input is dead-lettered or escalated; units are conserved.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
import redis

from adapters import kafka
from adapters.lab import refwms
from adapters.lab.devservices import free_port, wait_for_port
from adapters.settings import from_env
from flows.entry import create_topics
from tests.support.helpers import unique_schema

pytestmark = pytest.mark.integration

SITES = ["DC-NORTH", "STORE-A", "STORE-B", "STORE-C", "OUTLET-1"]
NOW_MS = lambda: int(time.time() * 1000)  # noqa: E731


@contextmanager
def reference_wms(
    dsn: str, schema: str, port: int, sites: list[str] = SITES
) -> Iterator[subprocess.Popen[bytes]]:
    argv = refwms.command(port, dsn, schema, sites, 50)
    process = subprocess.Popen(argv)
    try:
        wait_for_port(port, process)
        yield process
    finally:
        process.kill()
        process.wait()


def start_executor(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "flows.cli", "execute"]
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def proposal(i: int, sku: str, expires_in_ms: int = 600_000, **extra: Any) -> dict[str, Any]:
    rng = random.Random(i)
    from_site, to_site = rng.sample(SITES, 2)
    body = {
        "proposal_id": f"p{i:04d}-{uuid.uuid4().hex[:6]}",
        "sku": sku,
        "from_site": from_site,
        "to_site": to_site,
        "qty": rng.randint(1, 5),
        "status": "proposed",
        "created_at": NOW_MS(),
        "ts": NOW_MS(),
        "expires_at": NOW_MS() + expires_in_ms,
        "policy_version": "t",
    }
    body.update(extra)
    return body


@pytest.fixture
def setup(
    kafka_brokers: str, redis_url: str, postgres_dsn: str, topic_prefix: str, tmp_path: Any
) -> Iterator[dict[str, Any]]:
    settings = from_env(
        {"STOCKSHIFT_BROKERS": kafka_brokers, "STOCKSHIFT_TOPIC_PREFIX": topic_prefix}
    )
    create_topics(settings)
    port = free_port()
    schema = unique_schema("wms")
    env = {
        **os.environ,
        "STOCKSHIFT_BROKERS": kafka_brokers,
        "STOCKSHIFT_TOPIC_PREFIX": topic_prefix,
        "STOCKSHIFT_REDIS_URL": redis_url,
        "STOCKSHIFT_REDIS_PREFIX": f"{topic_prefix}",
        "STOCKSHIFT_WMS_URL": f"http://127.0.0.1:{port}",
        "STOCKSHIFT_WMS_TIMEOUT_S": "0.5",
        "STOCKSHIFT_EXECUTE_POLL_INTERVAL_S": "0.1",
        "STOCKSHIFT_CONSUMER_GROUP": f"{topic_prefix}execute",
        "STOCKSHIFT_BROKER_WAIT_S": "30",
    }
    yield {
        "settings": settings,
        "env": env,
        "port": port,
        "schema": schema,
        "dsn": postgres_dsn,
        "brokers": kafka_brokers,
        "log": tmp_path / "execute.log",
    }


def stock_everything(wms: httpx.Client, skus: list[str], units: int) -> None:
    rows = [{"sku": sku, "site": site, "on_hand": units} for sku in skus for site in SITES]
    wms.post("/_stock", json=rows).raise_for_status()


def total_stock(wms: httpx.Client) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for row in wms.get("/_stock").json():
        totals[row["sku"]] += row["on_hand"]
    return dict(totals)


def wait_finished(client: redis.Redis, prefix: str, want: int, timeout: float) -> None:
    """Until `want` records exist and none is left in the executor's due set."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = sum(1 for _ in client.scan_iter(match=f"{prefix}exec:record:*", count=1000))
        if records >= want and client.zcard(f"{prefix}exec:due") == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"executor did not finish {want} proposals in {timeout} s")


def outcomes(brokers: str, topic: str, want: int) -> list[dict[str, Any]]:
    got = kafka.read_topic(
        brokers,
        topic,
        want,
        timeout=20,
        keep=lambda m: str(orjson.loads(m.value()).get("event_id", "")).startswith("exec:"),
    )
    return [orjson.loads(m.value()) for m in got]


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_every_proposal_reaches_the_wms_once_through_kill_9_errors_and_timeouts(
    setup: dict[str, Any], redis_url: str, seed: int
) -> None:
    """Three runs, each with three kill -9s at seeded random moments."""
    s, env = setup, setup["env"]
    skus = [f"SKU-{k}" for k in range(8)]
    proposals = [proposal(seed * 1000 + i, skus[i % len(skus)]) for i in range(40)]
    prefix = env["STOCKSHIFT_REDIS_PREFIX"]
    with (
        reference_wms(s["dsn"], s["schema"], s["port"]),
        httpx.Client(base_url=env["STOCKSHIFT_WMS_URL"]) as wms,
        open(s["log"], "wb") as log,
    ):
        stock_everything(wms, skus, 100)
        before = total_stock(wms)
        wms.post("/_faults", json={"error_rate": 0.15, "timeout_rate": 0.03}).raise_for_status()
        topic = s["settings"].topic("proposals")
        # Each proposal twice: a producer's retry or a replay must not make a second order.
        kafka.produce_all([s["brokers"]], topic, proposals + proposals[:20])
        rng = random.Random(seed)
        executor = start_executor(env, log)
        for _ in range(3):  # kill -9 at seeded random moments, then start again
            time.sleep(rng.uniform(1.0, 4.0))
            executor.send_signal(signal.SIGKILL)
            executor.wait()
            executor = start_executor(env, log)
        try:
            wms.post("/_faults", json={}).raise_for_status()
            wait_finished(redis.Redis.from_url(redis_url), prefix, len(proposals), timeout=120)
        finally:
            executor.terminate()
            executor.wait(timeout=20)
        orders = wms.get("/_orders").json()
        after = total_stock(wms)
    references = Counter(o["reference"] for o in orders)
    assert sorted(references) == sorted(p["proposal_id"] for p in proposals)
    assert set(references.values()) == {1}  # exactly one order per proposal
    assert after == before  # units conserved inside the WMS
    events = outcomes(s["brokers"], s["settings"].topic("shipments"), 2 * len(proposals))
    by_id = {e["event_id"]: e for e in events}
    received = {e["proposal_id"] for e in by_id.values() if e["type"] == "transfer_received"}
    dispatched = {e["proposal_id"] for e in by_id.values() if e["type"] == "transfer_dispatched"}
    assert received == dispatched == {p["proposal_id"] for p in proposals}
    assert all(o["status"] == "received" for o in orders)


def test_expiry_bad_input_and_a_garbled_wms_are_handled_without_stopping(
    setup: dict[str, Any], redis_url: str
) -> None:
    s, env = setup, setup["env"]
    good = [proposal(i, "SKU-G") for i in range(5)]
    expired = proposal(100, "SKU-X", expires_in_ms=-1000)
    slow = proposal(101, "SKU-S", expires_in_ms=10_000)  # will expire while not yet picked
    unknown = proposal(102, "SKU-U", to_site="NOWHERE")
    with (
        reference_wms(s["dsn"], s["schema"], s["port"]),
        httpx.Client(base_url=env["STOCKSHIFT_WMS_URL"]) as wms,
        open(s["log"], "wb") as log,
    ):
        stock_everything(wms, ["SKU-G", "SKU-X", "SKU-S", "SKU-U"], 50)
        wms.post("/_faults", json={"pick_delay_ms": 60_000}).raise_for_status()
        topic = s["settings"].topic("proposals")
        kafka.produce_all([s["brokers"]], topic, [expired, slow, unknown])
        producer_bad = kafka.Producer({"bootstrap.servers": s["brokers"]})
        producer_bad.produce(topic, b"{not json", b"SKU-B")
        producer_bad.flush(10)
        executor = start_executor(env, log)
        try:
            client = redis.Redis.from_url(redis_url)
            prefix = env["STOCKSHIFT_REDIS_PREFIX"]
            wait_finished(client, prefix, 2, timeout=60)
            wms.post("/_faults", json={"garbage_rate": 1.0}).raise_for_status()
            kafka.produce_all([s["brokers"]], topic, good)
            wait_finished(client, prefix, 7, timeout=60)
            assert executor.poll() is None  # still running
        finally:
            executor.terminate()
            executor.wait(timeout=20)
        orders = {o["reference"]: o for o in wms.get("/_orders").json()}
    assert expired["proposal_id"] not in orders  # never started
    assert orders[slow["proposal_id"]]["status"] == "cancelled"
    events = outcomes(s["brokers"], s["settings"].topic("shipments"), 1)
    rejected = [e for e in events if e["proposal_id"] == slow["proposal_id"]]
    assert [e["type"] for e in rejected] == ["transfer_rejected"]
    letters = kafka.read_topic(s["brokers"], s["settings"].topic("dlq"), 2, timeout=20)
    reasons = sorted(dict(m.headers())["stockshift.reason"].decode() for m in letters)
    assert reasons == ["not_json", "unknown_site"]
    cases = kafka.read_topic(s["brokers"], s["settings"].topic("exceptions"), 5, timeout=20)
    kinds = Counter(orjson.loads(m.value())["kind"] for m in cases)
    assert kinds == {"unexpected_reply": 5}  # garbage: a person looks, nothing is guessed


def test_a_wms_down_for_30_s_delays_orders_and_loses_none(
    setup: dict[str, Any], redis_url: str
) -> None:
    """The WMS process is stopped for 30 s with orders in flight, then started again on the
    same database: every order completes once and nobody is asked to intervene."""
    s, env = setup, setup["env"]
    skus = ["SKU-D1", "SKU-D2"]
    first = [proposal(i, skus[i % 2]) for i in range(10)]
    second = [proposal(50 + i, skus[i % 2]) for i in range(10)]
    prefix = env["STOCKSHIFT_REDIS_PREFIX"]
    client = redis.Redis.from_url(redis_url)
    topic = s["settings"].topic("proposals")
    with open(s["log"], "wb") as log:
        with (
            reference_wms(s["dsn"], s["schema"], s["port"]),
            httpx.Client(base_url=env["STOCKSHIFT_WMS_URL"]) as wms,
        ):
            stock_everything(wms, skus, 100)
            wms.post("/_faults", json={"pick_delay_ms": 2000}).raise_for_status()
            executor = start_executor(env, log)
            kafka.produce_all([s["brokers"]], topic, first)
            deadline = time.monotonic() + 30
            while len(wms.get("/_orders").json()) < len(first) and time.monotonic() < deadline:
                time.sleep(0.2)
        # The WMS is down now: new proposals arrive and orders in flight cannot be followed.
        kafka.produce_all([s["brokers"]], topic, second)
        time.sleep(30)
        try:
            with (
                reference_wms(s["dsn"], s["schema"], s["port"]),
                httpx.Client(base_url=env["STOCKSHIFT_WMS_URL"]) as wms,
            ):
                wait_finished(client, prefix, len(first) + len(second), timeout=120)
                orders = wms.get("/_orders").json()
        finally:
            executor.terminate()
            executor.wait(timeout=20)
    everything = {p["proposal_id"] for p in first + second}
    assert Counter(o["reference"] for o in orders) == Counter(everything)
    assert all(o["status"] == "received" for o in orders)
    records = [client.get(f"{prefix}exec:record:{pid}") for pid in everything]
    stages = Counter(orjson.loads(r)["stage"] for r in records if r is not None)
    assert stages == {"done": len(everything)}  # none escalated
