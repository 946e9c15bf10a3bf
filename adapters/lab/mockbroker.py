"""librdkafka's mock cluster as a broker of its own for `stockshift bench --latency`.

librdkafka tests itself against this Kafka-protocol broker; a client started with
`test.mock.num.brokers` hosts one on a loopback port that other processes can use. It lives
here in a process that does nothing else (hosted in a process that also produced and
relayed, it measured seconds at p95). It does not implement CreateTopics: topics come into
being when a client first asks for their metadata (`touch_topics`).

python -m adapters.lab.mockbroker  -> prints "127.0.0.1:PORT", then serves until killed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable

from confluent_kafka import Producer


def serve() -> None:
    host = Producer({"bootstrap.servers": "", "test.mock.num.brokers": 1, "log_level": 3})
    broker = next(iter(host.list_topics(timeout=10).brokers.values()))
    print(f"{broker.host}:{broker.port}", flush=True)
    while True:
        host.poll(1.0)


def start_mock_broker() -> tuple[str, subprocess.Popen[bytes]]:
    """A mock cluster in its own process; the caller stops it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.lab.mockbroker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    address = process.stdout.readline().decode().strip()
    if not address:
        process.kill()
        raise RuntimeError("the mock broker did not start")
    return address, process


def touch_topics(brokers: str, topics: Iterable[str]) -> None:
    """Create topics on the mock cluster by asking for their metadata."""
    client = Producer({"bootstrap.servers": brokers, "allow.auto.create.topics": True})
    for topic in topics:
        client.list_topics(topic, timeout=10)
    client.flush(5)


if __name__ == "__main__":
    serve()
