"""`stockshift bench --console`: how long the console's pages take with 10,000 proposals
waiting (in memory, as the console holds them), through the real app (Starlette's test
client: no network), as ratios to a plain page of the same app (`/healthz`)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import orjson
import redis
from starlette.testclient import TestClient

from adapters.console_auth import Account
from adapters.console_backend import Backend
from adapters.settings import Settings
from flows.console import Console, app
from state.console import Role, User
from state.governance import Governance


def _proposal(i: int, now_ms: int) -> bytes:
    evidence = {
        "receiver": {
            "site": "B",
            "on_hand": 2,
            "inbound": 0,
            "demand_per_hour": 1.0,
            "reorder_point": 40.0,
            "target": 64.0,
        },
        "sender": {"site": "A", "on_hand": 300, "demand_per_hour": 1.0, "target": 40.0},
        "lead_hours": 6.0,
        "transfer_cost": 9.0,
        "expected_units_saved": 5.0,
        "expected_units_lost_at_sender": 0.1,
        "net_benefit": 20.0 + i % 97,
        "value": 600.0,
    }
    return orjson.dumps(
        {
            "proposal_id": f"p{i:06d}",
            "sku": f"SKU-{i:05d}",
            "from_site": "A",
            "to_site": "B",
            "qty": 1 + i % 50,
            "status": "needs_approval",
            "created_at": now_ms - i * 1000,
            "expires_at": now_ms + 86_400_000,
            "reason": "B is short",
            "evidence": evidence,
        }
    )


def _timed(client: TestClient, path: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(path, headers={"x-auth-request-user": "ada"})
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return times


def run_console_bench(waiting: int = 10_000, runs: int = 30) -> list[str]:
    settings = Settings(
        console_auth="headers",
        console_trusted_proxies=("testclient",),
        console_secure_cookies=False,
    )
    # The pages read memory only: the clients are never used (redis-py connects lazily).
    backend = Backend(settings, client=redis.Redis(), producer=None)  # type: ignore[arg-type]
    now = int(time.time() * 1000)
    for i in range(waiting):
        backend.ingest(settings.topic("proposals"), _proposal(i, now))
    accounts = {"ada": Account(User("ada", Role.ADMIN), None)}
    console = Console(backend, accounts, lambda _now: Governance())
    lines = [f"console bench: {waiting:,} proposals waiting, {runs} requests per page (ms)"]
    with TestClient(app(console)) as client:
        base = statistics.median(_timed(client, "/healthz", runs))
        pages: dict[str, Any] = {
            "waiting, first page (50 of them)": "/",
            "waiting, sorted by value, page 100": "/?sort=value&desc=1&page=100",
            "waiting, filtered by SKU": "/?sku=SKU-0999",
            "why (one proposal)": "/proposals/p000123",
            "network now": "/network",
        }
        for name, path in pages.items():
            times = sorted(_timed(client, path, runs))
            p50, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
            lines.append(
                f"  {name:38s} p50 {p50:7.1f}  p95 {p95:7.1f}  ({p50 / base:5.1f} x /healthz)"
            )
    lines.append(f"  /healthz (baseline)                    p50 {base:7.1f}")
    return lines
