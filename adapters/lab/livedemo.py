"""`stockshift demo --live`: the whole loop on real parts, on this machine.

A Tansu broker, Redis, PostgreSQL, `stockshift run`, `stockshift execute` and the reference
WMS run together. Each SKU's stores are counted, sell for 50 hours, and one store loses
stock to damage; the flow proposes a transfer, the executor orders it at the WMS, the WMS
picks, ships and receives it, and the executor's events come back to the flow. The run ends
by comparing the WMS's stock per SKU-site with stockshift's positions (Redis live state):
they must be equal.

Every sale and adjustment is booked at the WMS too, as a store system would; transfers are
booked there only by the orders the executor creates.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from adapters.kafka import read_topic
from adapters.lab import refwms
from adapters.lab.devservices import (
    drop_schemas,
    free_port,
    redis_answers,
    redis_command,
    remove_keys,
    wait_for_port,
)
from adapters.lab.devservices import start_broker as start_tansu
from adapters.lab.flowproc import ROOT, FlowHarness, start_command, stop_process

SITES = ("A", "B", "C")
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
[[sites]]
id = "C"
replenishment_lead_hours = 96
[[lanes]]
from = "A"
to = "B"
lead_hours = 6
cost_per_unit = 0.2
fixed_cost = 5
bidirectional = true
[[lanes]]
from = "A"
to = "C"
lead_hours = 8
cost_per_unit = 0.2
fixed_cost = 5
bidirectional = true
"""
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class LiveResult:
    skus: int
    proposals: int
    orders: int
    received: int
    mismatches: list[str]
    seconds: float


@contextmanager
def _process(
    argv: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_for_port(port, process, timeout=60)
        yield
    finally:
        stop_process(process, 15)


@contextmanager
def services(folder: Path) -> Iterator[tuple[str, str, str]]:
    """Broker, Redis and PostgreSQL: what answers on loopback is used, the rest started."""
    with ExitStack() as stack:
        brokers, broker = start_tansu()
        stack.callback(broker.kill)
        redis_url = "redis://127.0.0.1:6379/0"
        if not redis_answers(redis_url):
            port = free_port()
            stack.enter_context(
                _process(redis_command(port, str(folder)), port, folder / "redis.log")
            )
            redis_url = f"redis://127.0.0.1:{port}/0"
        yield brokers, redis_url, stack.enter_context(_postgres(folder))


@contextmanager
def _postgres(folder: Path) -> Iterator[str]:
    import psycopg

    dsn = os.environ.get(
        "STOCKSHIFT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
    )
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
        yield dsn
        return
    except psycopg.Error:
        pass
    import pgserver  # a dev dependency: a PostgreSQL server in a wheel

    start = pgserver.get_server  # type: ignore[attr-defined]
    server = start(str(folder / "pg"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _events(skus: list[str], t0: int) -> tuple[list[Any], list[Any], list[Any]]:
    """Counts, 50 hours of sales at every store, and damage at B: (kind, body) per topic."""
    counts, sales, damage = [], [], []
    for k, sku in enumerate(skus):
        for site, units in zip(SITES, (300 + 10 * k, 91, 120), strict=True):
            body = {
                "event_id": f"c-{sku}-{site}",
                "ts": t0,
                "sku": sku,
                "site": site,
                "type": "snapshot",
                "on_hand": units,
            }
            counts.append(("inventory", body))
        for h in range(50):
            for site in SITES:
                body = {
                    "event_id": f"s-{sku}-{site}-{h}",
                    "ts": t0 + h * HOUR_MS + HOUR_MS // 2,
                    "sku": sku,
                    "site": site,
                    "qty": 1,
                }
                sales.append(("pos", body))
        body = {
            "event_id": f"d-{sku}",
            "ts": t0 + 50 * HOUR_MS,
            "sku": sku,
            "site": "B",
            "type": "adjustment",
            "delta": -15,
        }
        damage.append(("inventory", body))
    return counts, sales, damage


def _book(wms: httpx.Client, run: list[Any]) -> None:
    """What the stores' systems book at the WMS for the same events."""
    rows = []
    for _kind, e in run:
        if e.get("type") == "snapshot":
            continue
        rows.append({"sku": e["sku"], "site": e["site"], "delta": e.get("delta", -e.get("qty", 0))})
    if rows:
        wms.post("/_adjust", json=rows).raise_for_status()


def run_live_demo(folder: Path, n_skus: int = 12, say: Any = print) -> LiveResult:
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    skus = [f"SKU-{k + 1:03d}" for k in range(n_skus)]
    with services(folder) as (brokers, redis_url, dsn):
        say(f"services: broker {brokers}, redis {redis_url.split('@')[-1]}, postgresql")
        prefix = f"live{int(time.time())}."
        schema = prefix.rstrip(".").replace("-", "_")
        try:
            return _run(folder, skus, brokers, redis_url, dsn, prefix, schema, started, say)
        finally:
            # The Redis and PostgreSQL may be the user's own: leave nothing behind in them
            # (the run's record is the output folder).
            remove_keys(redis_url, prefix)
            drop_schemas(dsn, schema)


def _run(
    folder: Path,
    skus: list[str],
    brokers: str,
    redis_url: str,
    dsn: str,
    prefix: str,
    schema: str,
    started: float,
    say: Any,
) -> LiveResult:
    """The reference WMS, the flow and the executor on the services; then `_drive`."""
    wms_port = free_port()
    wms_argv = refwms.command(wms_port, dsn, schema, SITES, 200)
    with (
        _process(wms_argv, wms_port, folder / "wms.log"),
        httpx.Client(base_url=f"http://127.0.0.1:{wms_port}") as wms,
    ):
        flow = FlowHarness(
            brokers,
            prefix,
            folder,
            NETWORK,
            STOCKSHIFT_REDIS_URL=redis_url,
            STOCKSHIFT_REDIS_PREFIX=prefix,
        )
        flow.start()
        env = {
            **flow.env,
            "STOCKSHIFT_WMS_URL": f"http://127.0.0.1:{wms_port}",
            "STOCKSHIFT_EXECUTE_POLL_INTERVAL_S": "0.2",
        }
        executor = start_command("execute", env, folder / "execute.log")
        try:
            return _drive(flow, wms, skus, redis_url, prefix, brokers, started, say)
        finally:
            stop_process(executor)
            flow.stop()


def _drive(
    flow: FlowHarness,
    wms: httpx.Client,
    skus: list[str],
    redis_url: str,
    prefix: str,
    brokers: str,
    started: float,
    say: Any,
) -> LiveResult:
    t0 = int(time.time() * 1000) - 51 * HOUR_MS
    runs = _events(skus, t0)
    wms.post(
        "/_stock",
        json=[{"sku": e["sku"], "site": e["site"], "on_hand": e["on_hand"]} for _k, e in runs[0]],
    ).raise_for_status()
    for i, run in enumerate(runs):
        for kind, body in run:
            flow.producer.produce(
                prefix + kind, orjson.dumps(body), body["sku"].encode(), timestamp=body["ts"]
            )
            flow.last_ts = max(flow.last_ts, body["ts"])
        flow.producer.flush(30)
        _book(wms, run)
        flow.wait_live()
        say(f"published {['counts', 'sales', 'damage'][i]}: {len(run)} events")
    proposals = read_topic(brokers, prefix + "proposals", len(skus), timeout=60)
    say(f"proposals: {len(proposals)}")
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        orders = wms.get("/_orders").json()
        if len(orders) >= len(proposals) and all(o["status"] == "received" for o in orders):
            break
        time.sleep(0.5)
    received = sum(o["status"] == "received" for o in orders)
    say(f"orders at the WMS: {len(orders)}, received: {received}")
    mismatches = _compare(client, wms, skus, prefix, deadline=time.monotonic() + 60)
    return LiveResult(
        len(skus),
        len(proposals),
        len(orders),
        sum(o["status"] == "received" for o in orders),
        mismatches,
        time.monotonic() - started,
    )


def _compare(
    client: redis.Redis, wms: httpx.Client, skus: list[str], prefix: str, deadline: float
) -> list[str]:
    """WMS stock vs stockshift's on-hand per SKU-site, until equal or the deadline."""
    while True:
        wms_stock = {(r["sku"], r["site"]): r["on_hand"] for r in wms.get("/_stock").json()}
        mismatches = []
        for sku in skus:
            raw = client.hgetall(f"{prefix}pos:{sku}")
            ours = {
                k.decode() if isinstance(k, bytes) else k: orjson.loads(v)["on_hand"]
                for k, v in raw.items()
            }
            for site in SITES:
                if ours.get(site) != wms_stock.get((sku, site)):
                    mismatches.append(
                        f"{sku}@{site}: wms {wms_stock.get((sku, site))}, "
                        f"stockshift {ours.get(site)}"
                    )
        if not mismatches or time.monotonic() > deadline:
            return mismatches
        time.sleep(0.5)


def main(n_skus: int, out: str | None) -> int:
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="stockshift-live-"))
    result = run_live_demo(folder, n_skus)
    same = "equal" if not result.mismatches else f"{len(result.mismatches)} differ"
    print(
        f"live demo: {result.skus} SKUs, {result.proposals} proposals, {result.orders} orders, "
        f"{result.received} received; WMS stock vs stockshift positions: {same} "
        f"({result.seconds:.0f} s; logs in {folder})"
    )
    for line in result.mismatches[:20]:
        print("  " + line)
    return 0 if not result.mismatches and result.received == result.proposals > 0 else 1
