"""Run `stockshift run` as a subprocess against a broker, and talk to it: the integration
tests and `stockshift reliability` drive the real process the same way."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from adapters.kafka import read_topic
from adapters.lab.latency import NETWORK as LATENCY_NETWORK
from adapters.settings import DEFAULT_CONFIG_DIR
from operators.codec import event_message
from state.records import Event

ROOT = Path(__file__).resolve().parents[2]
TEST_CONTROL_KEYS = "ops-1=test-secret-0123456789,ops-2=rotated-secret-9876543210"
# The two-store network the end-to-end tests (and the latency bench) run on.
NETWORK = LATENCY_NETWORK


def start_command(command: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`stockshift <command>` in a subprocess, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", command],
            env=dict(env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within the timeout."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class FlowNotLive(RuntimeError):
    """The flow process exited, or did not start or consume in time."""


class FlowHarness:
    def __init__(
        self, brokers: str, prefix: str, folder: Path, network_toml: str = NETWORK, **env: str
    ) -> None:
        self.brokers = brokers
        self.prefix = prefix
        network = folder / "network.toml"
        network.write_text(network_toml)
        self.env = {
            **os.environ,
            "STOCKSHIFT_BROKERS": brokers,
            "STOCKSHIFT_TOPIC_PREFIX": prefix,
            "STOCKSHIFT_NETWORK": str(network),
            "STOCKSHIFT_POLICY": str(DEFAULT_CONFIG_DIR / "policies" / "default.toml"),
            "STOCKSHIFT_CONTROL_KEYS": TEST_CONTROL_KEYS,
            **env,
        }
        self.producer = Producer({"bootstrap.servers": brokers, "linger.ms": 1})
        # The newest event time published: markers carry it, so they sit among the events
        # in the merge order (a wall-clock marker in a partition would hold back the older
        # events behind it when the log is replayed).
        self.last_ts = 0
        # The topic of the last events published and not yet seen consumed (`publish_events`).
        self._last_kind: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "flow.log"
        self._starts_seen = 0

    def start(self, wait: bool = True) -> None:
        self._starts_seen = self._count_starts()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_started()

    def _count_starts(self) -> int:
        return (
            self.log.read_text(errors="replace").count("starting flow") if self.log.exists() else 0
        )

    def wait_started(self, timeout_s: float = 60.0) -> None:
        """Ready once it has created its topics and replayed the control log."""
        deadline = time.monotonic() + timeout_s
        while self._count_starts() <= self._starts_seen:
            if not self.alive:
                raise FlowNotLive(f"flow exited; {self.report()}")
            if time.monotonic() > deadline:
                raise FlowNotLive(f"flow did not start within {timeout_s:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def publish(
        self, kind: str, body: dict[str, Any] | bytes, key: bytes | None = b"SKU-1"
    ) -> None:
        value = body if isinstance(body, bytes) else orjson.dumps(body)
        self.producer.produce(self.prefix + kind, value, key)
        self.producer.flush(10)

    def publish_events(self, events: list[Event]) -> None:
        """As the contract asks: the Kafka message timestamp is the event's time.

        Consecutive events on one topic go out together; before switching topic the flow
        is given time to consume what was sent, within a call and across calls (a live
        burst spread over several topics may be applied in arrival order, which would make
        the expected decisions a race: a trigger sent right after sales on another topic
        once overtook their last hours, CHANGELOG's eleventh round).
        """
        runs: list[list[tuple[str, dict[str, Any], Event]]] = []
        for e in events:
            kind, body = event_message(e)
            if not runs or runs[-1][0][0] != kind:
                runs.append([])
            runs[-1].append((kind, body, e))
        for run in runs:
            kind = run[0][0]
            if self._last_kind is not None and self._last_kind != kind:
                self.wait_live()
            for _, body, e in run:
                self.producer.produce(
                    self.prefix + kind, orjson.dumps(body), e.sku.encode(), timestamp=e.ts_ms
                )
                self.last_ts = max(self.last_ts, e.ts_ms)
            self.producer.flush(10)
            self._last_kind = kind

    def control(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flows.cli", "control", *args],
            cwd=ROOT,
            env={**self.env, "STOCKSHIFT_CONTROL_KEY_ID": "ops-1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def records(
        self,
        kind: str,
        want: int,
        timeout: float = 15.0,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        messages = read_topic(
            self.brokers,
            self.prefix + kind,
            want,
            timeout,
            keep=None if keep is None else (lambda m: keep(orjson.loads(m.value()))),
        )
        return [orjson.loads(m.value()) for m in messages]

    def report(self, lines: int = 40) -> str:
        """For a failure's message (a test's, or `FlowNotLive`): whether the flow still runs,
        and its log's tail (a flow that stalled and one that decided otherwise look alike
        from the topics)."""
        tail = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"flow alive: {self.alive}; its log's last {len(tail)} lines:\n" + "\n".join(tail)

    def metric(self, name: str) -> float:
        """The sum of a metric's series as the flow serves it (STOCKSHIFT_METRICS_PORT);
        0 while the flow does not answer (starting, or killed)."""
        port = self.env["STOCKSHIFT_METRICS_PORT"]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                text = answer.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " "))
        )

    def wait_live(self) -> None:
        """Publish a malformed message and wait for it in the DLQ: the flow is consuming."""
        marker = f"live-{time.monotonic_ns()}".encode()
        self.producer.produce(
            self.prefix + "pos",
            b"{" + marker,
            b"SKU-1",
            timestamp=self.last_ts,  # 0: the producer's clock
        )
        self.producer.flush(10)
        found = read_topic(
            self.brokers, self.prefix + "dlq", 1, 60, keep=lambda m: marker in (m.value() or b"")
        )
        if not found:
            raise FlowNotLive(f"flow not live; {self.report()}")
        self._last_kind = None


@contextmanager
def flow_harness(brokers: str, prefix: str, folder: Path, **env: str) -> Iterator[FlowHarness]:
    harness = FlowHarness(brokers, prefix, folder, **env)
    harness.start()
    try:
        yield harness
    finally:
        harness.stop()
