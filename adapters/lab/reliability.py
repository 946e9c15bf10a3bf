"""`stockshift reliability`: the fault matrix, run against the real `stockshift run` process,
a Tansu broker and a Redis server that this runner owns (so it can kill and restart them).

Every scenario feeds a known input, applies one fault, and reconciles what came out against
an uninterrupted run of the same input through the engine (operators/verify.py): the
proposals on the topic, the ledger, every SKU-site's live position in Redis, and the dead
letters for the bad input. One line per scenario.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import Producer

from adapters import kafka
from adapters.configfiles import load_policy
from adapters.dlq import read_dead_letters
from adapters.lab import benchgen
from adapters.lab.devservices import broker_command, free_port, redis_command, wait_for_port
from adapters.lab.faultproxy import FaultProxy
from adapters.lab.flowproc import NETWORK, FlowHarness
from adapters.redis_store import Keys
from adapters.settings import CONTROL_KIND, DEFAULT_CONFIG_DIR
from operators.control import MAX_CONTROL_BYTES, envelope
from operators.reference.verify import (
    T0_MS,
    Reconciliation,
    Reference,
    bad_inputs,
    message_of,
    reconcile,
    reference_run,
    workload,
)
from state.config import network_from_dict
from state.records import Event
from state.units import HOUR_MS


class Services:
    """A Tansu broker behind a fault proxy (clients reach it only through the proxy), and a
    Redis (append-only file on, as in production) that can be killed and restarted on the
    same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proxy = FaultProxy(free_port(), free_port())
        self.redis_port = free_port()
        self._broker: subprocess.Popen[bytes] | None = None
        self._redis: subprocess.Popen[bytes] | None = None

    @property
    def brokers(self) -> str:
        return f"127.0.0.1:{self.proxy.listen_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start_broker(self) -> None:
        argv = broker_command(self.proxy.target_port, advertised_port=self.proxy.listen_port)
        self._broker = self._spawn("tansu", argv, self.proxy.target_port)
        self.proxy.start()

    def start_redis(self) -> None:
        argv = redis_command(self.redis_port, str(self.folder))
        # Durable as the ledger needs it: a write acknowledged is on disk (with the default
        # everysec, a SIGKILL loses up to a second of acknowledged writes).
        argv[argv.index("--appendonly") + 1] = "yes"
        argv += ["--appendfsync", "always"]
        self._redis = self._spawn("redis", argv, self.redis_port)

    def kill_redis(self) -> None:
        self._redis = self._kill(self._redis)

    def _spawn(self, name: str, argv: list[str], port: int) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(port, process)
        return process

    @staticmethod
    def _kill(process: subprocess.Popen[bytes] | None) -> None:
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def close(self) -> None:
        self.proxy.close()
        self._broker = self._kill(self._broker)
        self.kill_redis()


@dataclass(frozen=True, slots=True)
class Line:
    fault: str
    events_in: int
    events_accounted: int
    proposals_expected: int
    proposals_produced: int
    duplicated_downstream: int
    passed: bool
    note: str = ""


@dataclass
class Sizes:
    """How big each scenario is; `quick` is what CI runs."""

    kill_runs: int = 5
    kill_skus: int = 2000
    idle_skus: int = 3000
    other_skus: int = 300
    snapshot_interval_s: float = 2.0
    seed: int = 20261125

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            kill_runs=2, kill_skus=400, idle_skus=500, other_skus=40, snapshot_interval_s=1.0
        )


@dataclass
class ScenarioRun:
    """One scenario's flow process, topics and Redis namespace."""

    services: Services
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    network_toml: str = NETWORK

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.folder = self.folder / tag
        self.folder.mkdir(parents=True)
        self.redis_prefix = f"rel:{tag}:"
        self.flow = FlowHarness(
            self.services.brokers,
            f"rel{tag}.",
            self.folder,
            self.network_toml,
            STOCKSHIFT_REDIS_URL=self.services.redis_url,
            STOCKSHIFT_REDIS_PREFIX=self.redis_prefix,
            STOCKSHIFT_METRICS_PORT=str(free_port()),
            **self.env,
        )

    def topic(self, kind: str) -> str:
        return self.flow.prefix + kind

    def publish_backlog(self, events: list[Event]) -> None:
        """All of it before the flow reads: the merged order is then the log's, whatever
        the timing of the fault."""
        messages = []
        for e in events:
            kind, value = message_of(e)
            messages.append((kind, e.sku.encode(), value, e.ts_ms))
        benchgen.produce(self.services.brokers, self.flow.prefix, messages)
        self.flow.last_ts = max(e.ts_ms for e in events)

    def outcome(self, reference: Reference) -> Reconciliation:
        ids = [
            orjson.loads(m.value())["proposal_id"]
            for m in kafka.read_to_end([self.services.brokers], self.topic("proposals"), "rel")
        ]
        client = redis.Redis.from_url(self.services.redis_url, socket_timeout=5)
        keys = Keys(self.redis_prefix)
        skus = sorted({sku for sku, _ in reference.positions})
        pipe = client.pipeline(transaction=False)
        for sku in skus:
            pipe.hgetall(keys.positions(sku))
        live: dict[tuple[str, str], dict[str, Any]] = {}
        for sku, fields in zip(skus, pipe.execute(), strict=True):
            for site, body in fields.items():
                live[(sku, site.decode())] = orjson.loads(body)
        pipe = client.pipeline(transaction=False)
        distinct = sorted(set(ids))
        for pid in distinct:
            pipe.hget(keys.proposal(pid), "state")
        states = pipe.execute()
        delivered = {pid for pid, s in zip(distinct, states, strict=True) if s == b"delivered"}
        return reconcile(reference, ids, live, delivered)

    def settle(self, reference: Reference, timeout_s: float, max_duplicates: int) -> Reconciliation:
        """Until the run reconciles (or the time is up): outputs trail the input."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.outcome(reference)
            if result.passed(max_duplicates) or time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def dead_letters(self) -> set[tuple[str, int | None, int | None]]:
        return {r.source for r in read_dead_letters([self.services.brokers], self.topic("dlq"))}


def _line(
    fault: str,
    events: int,
    result: Reconciliation,
    max_duplicates: int,
    note: str = "",
    ok: bool = True,
    accounted: int | None = None,
) -> Line:
    """`accounted`: events whose effect was verified (by default all of them when every
    SKU-site's state equals the reference)."""
    if accounted is None:
        accounted = events if result.state_mismatches == 0 else 0
    detail = (
        f"state {result.state_checked - result.state_mismatches}/{result.state_checked} "
        f"SKU-sites equal; ledger missing {result.ledger_missing}; missing {result.missing}, "
        f"unexpected {result.unexpected}"
        + (f"; e.g. {result.first_mismatch}" if result.first_mismatch else "")
    )
    return Line(
        fault, events, accounted, result.expected, result.produced, result.duplicated,
        ok and result.passed(max_duplicates), f"{detail}{'; ' + note if note else ''}",
    )  # fmt: skip


def _phases(events: list[Event], *cut_hours: float) -> list[list[Event]]:
    """Split an event-time-ordered input at the given hours."""
    bounds = [T0_MS + int(h * HOUR_MS) for h in cut_hours]
    out: list[list[Event]] = [[] for _ in range(len(bounds) + 1)]
    for e in events:
        out[sum(e.ts_ms >= b for b in bounds)].append(e)
    return out


def kill_run(
    services: Services, folder: Path, events: list[Event], reference: Reference, seed: int,
    snapshot_interval_s: float,
) -> Line:  # fmt: skip
    """SIGKILL at a seeded point of the backlog, restart from the recovery snapshot."""
    run = ScenarioRun(
        services, folder,
        {"STOCKSHIFT_RECOVERY_DIR": str(folder / f"recovery-{seed}"),
         "STOCKSHIFT_SNAPSHOT_INTERVAL_S": str(snapshot_interval_s)},
    )  # fmt: skip
    run.publish_backlog(events)
    kill_at = int(random.Random(seed).uniform(0.3, 0.9) * len(events))
    run.flow.start()
    try:
        # At a seeded point of the work done by the state step (what was parsed may run
        # far ahead of it in a backlog).
        while (processed := run.flow.metric("stockshift_event_time_lag_seconds_count")) < kill_at:
            if not run.flow.alive:
                raise RuntimeError("flow exited before the kill point")
            time.sleep(0.01)
        kill_at = int(processed)
        assert run.flow.process is not None
        run.flow.process.send_signal(signal.SIGKILL)
        killed = time.time()
        run.flow.process.wait(timeout=10)
        run.flow.start(wait=False)
        restarted = time.monotonic()
        while run.flow.metric("stockshift_event_time_lag_seconds_count") == 0:
            if time.monotonic() - restarted > 120:
                raise RuntimeError("no output within 120 s of the restart")
            time.sleep(0.02)
        resume_s = time.monotonic() - restarted
        result = run.settle(reference, 300, len(reference.proposal_ids))
        window = _duplicates_outside_window(run, killed, snapshot_interval_s)
        reread = int(run.flow.metric("stockshift_events_consumed_total"))
    finally:
        run.flow.stop()
    return _line(
        f"kill -9 at event {kill_at}, restart from snapshot", len(events), result,
        max_duplicates=len(reference.proposal_ids), ok=window == 0,
        note=f"restart resumed at event {len(events) - reread} (its last committed snapshot; "
        f"0 if killed before the first) and re-read {reread}; process start to first "
        f"output {resume_s:.2f} s; duplicates outside the ack-to-ledger window {window}",
    )  # fmt: skip


def _duplicates_outside_window(run: ScenarioRun, killed_s: float, interval_s: float) -> int:
    """A duplicate is allowed only if its first copy was produced in the last snapshot
    interval before the kill (acknowledged, ledger not yet written, then replayed)."""
    first: dict[str, float] = {}
    copies: dict[str, int] = {}
    for m in kafka.read_to_end([run.services.brokers], run.topic("proposals"), "rel"):
        pid = orjson.loads(m.value())["proposal_id"]
        copies[pid] = copies.get(pid, 0) + 1
        first.setdefault(pid, m.timestamp()[1] / 1000)
    earliest = killed_s - interval_s - 2.0  # an epoch may close up to a second late
    return sum(1 for pid, n in copies.items() if n > 1 and not earliest <= first[pid] <= killed_s)


def broker_down_at_start(
    services: Services, folder: Path, events: list[Event], reference: Reference
) -> Line:
    services.proxy.cut()
    run = ScenarioRun(services, folder, {"STOCKSHIFT_BROKER_WAIT_S": "120"})
    try:
        run.flow.start(wait=False)
        time.sleep(8)
        waited = run.flow.alive and "kafka not reachable yet" in run.flow.log.read_text()
        services.proxy.restore()
        run.flow.wait_started()
        run.flow.publish_events(events)
        result = run.settle(reference, 60, 0)
    finally:
        services.proxy.restore()
        run.flow.stop()
    return _line(
        "broker unreachable at start (8 s), then up", len(events), result, 0, ok=waited,
        note="waited and retried with backoff" if waited else "did NOT wait for the broker",
    )  # fmt: skip


def broker_outage(
    services: Services, folder: Path, events: list[Event], reference: Reference
) -> Line:
    """Every broker connection cut and refused for 5 s while the flow works through its
    input and produces proposals; it must continue where it stopped when the broker returns."""
    run = ScenarioRun(services, folder)
    run.publish_backlog(events)
    try:
        run.flow.start()
        while run.flow.metric("stockshift_events_consumed_total") < 0.4 * len(events):
            time.sleep(0.01)
        services.proxy.cut()
        time.sleep(5)
        survived = run.flow.alive
        down = run.flow.metric("stockshift_kafka_client_errors_total")
        services.proxy.restore()
        result = run.settle(reference, 60, 0)
    finally:
        services.proxy.restore()
        run.flow.stop()
    return _line(
        "broker unreachable mid-run (5 s), then back", len(events), result, 0, ok=survived,
        note=f"flow {'stayed up' if survived else 'EXITED'}; {down:.0f} client errors counted",
    )  # fmt: skip


def redis_outage(
    services: Services, folder: Path, events: list[Event], reference: Reference
) -> Line:
    """Redis dies while triggers arrive; proposals keep flowing without the ledger, and the
    ledger and live positions catch up when it returns."""
    run = ScenarioRun(services, folder)
    warm, damage = _phases(events, 50)
    half = len(damage) // 2
    try:
        run.flow.start()
        run.flow.publish_events(warm)
        run.flow.wait_live()
        services.kill_redis()
        run.flow.publish_events(damage[:half])
        run.flow.wait_live()
        during = len(run.flow.records("proposals", half, timeout=30))
        services.start_redis()
        run.flow.publish_events(damage[half:])
        result = run.settle(reference, 60, 0)
    finally:
        run.flow.stop()
    return _line(
        "Redis killed while triggers arrive, restarted", len(events), result, 0,
        ok=during == half,
        note=f"{during} of {half} proposals made while Redis was down",
    )  # fmt: skip


def poison_input(
    services: Services, folder: Path, events: list[Event], reference: Reference, seed: int
) -> Line:
    """Bad messages of every kind interleaved with the good input, on the SKUs' own keys."""
    run = ScenarioRun(services, folder)
    rng = random.Random(seed)
    warm, damage = _phases(events, 50)
    offsets: list[tuple[str, int, int]] = []
    kinds = 0

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            offsets.append((msg.topic(), msg.partition(), msg.offset()))

    try:
        run.flow.start()
        run.flow.publish_events(warm)
        producer = Producer({"bootstrap.servers": services.brokers, "message.max.bytes": 2_000_000})
        for e in damage[:: max(1, len(damage) // 5)]:
            bad = bad_inputs(rng, e.sku, e.ts_ms)
            kinds = len(bad)
            for kind, payload, _ in bad:
                producer.produce(
                    run.topic(kind), payload, e.sku.encode(), timestamp=warm[-1].ts_ms,
                    on_delivery=delivered,
                )  # fmt: skip
        producer.flush(30)
        run.flow.wait_live()
        run.flow.publish_events(damage)
        result = run.settle(reference, 60, 0)
        deadline = time.monotonic() + 60
        dead = run.dead_letters()
        while not set(offsets) <= dead and time.monotonic() < deadline:
            time.sleep(0.5)
            dead = run.dead_letters()
        alive = run.flow.alive
    finally:
        run.flow.stop()
    found = len(set(offsets) & dead)
    return _line(
        f"bad input: {len(offsets)} messages of {kinds} kinds", len(events) + len(offsets),
        result, 0, ok=alive and found == len(offsets),
        accounted=(len(events) if result.state_mismatches == 0 else 0) + found,
        note=f"{found} of {len(offsets)} bad messages in the DLQ with a reason; flow "
        f"{'up' if alive else 'DOWN'}",
    )  # fmt: skip


def control_abuse(
    services: Services, folder: Path, events: list[Event], reference: Reference
) -> Line:
    """Forged, unsigned, malformed, oversized and replayed pause commands change nothing."""
    run = ScenarioRun(services, folder)
    warm, damage = _phases(events, 50)
    now = int(time.time() * 1000)
    pause = {"command": "pause", "reason": "abuse", "ts": now}
    try:
        run.flow.start()
        run.flow.publish_events(warm)
        run.flow.wait_live()
        run.flow.publish("control", envelope({**pause, "nonce": "f1"}, "ops-1", b"x" * 32), b"c")
        run.flow.publish("control", orjson.dumps({"body": orjson.dumps(pause).decode()}), b"c")
        run.flow.publish("control", b"\xff{not json", b"c")
        oversized = envelope(
            {**pause, "nonce": "big", "reason": "x" * MAX_CONTROL_BYTES}, "ops-1", b"k"
        )
        run.flow.publish("control", oversized, b"c")
        sent = run.flow.control("resume", "--reason", "to be replayed")
        original = kafka.read_to_end([services.brokers], run.topic(CONTROL_KIND), "rel")
        last = list(original)[-1].value()
        run.flow.publish("control", last, b"c")  # the same signed bytes again
        rejected = run.flow.records(
            "decisions", 5, timeout=30, keep=lambda r: r["outcome"] == "control_rejected"
        )
        run.flow.publish_events(damage)
        result = run.settle(reference, 60, 0)
    finally:
        run.flow.stop()
    reasons = sorted(r["reason"] for r in rejected)
    return _line(
        "control abuse: forged, unsigned, malformed, oversized, replayed", len(events), result,
        0, ok=sent.returncode == 0 and len(rejected) == 5,
        note=f"rejected: {', '.join(reasons)}",
    )  # fmt: skip


@contextmanager
def services_in(folder: Path) -> Iterator[Services]:
    services = Services(folder)
    try:
        services.start_broker()
        services.start_redis()
        yield services
    finally:
        services.close()


def run_matrix(sizes: Sizes, say: Callable[[str], None] = lambda _: None) -> list[Line]:
    network = network_from_dict(tomllib.loads(NETWORK))
    policy = load_policy(DEFAULT_CONFIG_DIR / "policies" / "default.toml")
    folder = Path(tempfile.mkdtemp(prefix="stockshift-reliability-"))
    lines: list[Line] = []
    try:
        with services_in(folder) as services:
            big = workload(sizes.kill_skus, sizes.idle_skus)
            say(f"reference run over {len(big)} events")
            big_reference = reference_run(big, network, policy)
            for i in range(sizes.kill_runs):
                say(f"kill run {i + 1} of {sizes.kill_runs}")
                lines.append(
                    kill_run(services, folder, big, big_reference, sizes.seed + i,
                             sizes.snapshot_interval_s)
                )  # fmt: skip
            small = workload(sizes.other_skus)
            small_reference = reference_run(small, network, policy)
            for name, scenario in (
                ("broker down at start", broker_down_at_start),
                ("broker outage", broker_outage),
                ("Redis outage", redis_outage),
                ("control abuse", control_abuse),
            ):
                say(name)
                lines.append(scenario(services, folder, small, small_reference))
            say("bad input")
            lines.append(poison_input(services, folder, small, small_reference, sizes.seed))
    finally:
        with suppress(OSError):
            shutil.rmtree(folder)
    return lines
