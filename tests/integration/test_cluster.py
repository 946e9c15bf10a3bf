"""Two Bytewax processes on loopback make exactly the proposals one process makes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from adapters.lab.devservices import free_port
from adapters.lab.flowproc import FlowHarness
from state.records import Event
from tests.integration.test_recovery import expected, scenario
from tests.support.helpers import T0, unique_prefix

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _publish_in_chunks(flow: FlowHarness, chunks: list[list[Event]]) -> None:
    """All but the last chunk, each once the flow is consuming (the caller sends the last)."""
    for chunk in chunks[:-1]:
        flow.publish_events(chunk)
        flow.wait_live()


def test_two_processes_make_the_same_proposals_as_one(
    kafka_brokers: str, redis_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    chunks = scenario(9)
    want_ids, _, _ = expected(chunks)
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    processes = []
    for pid in (0, 1):
        folder = tmp_path / f"p{pid}"
        folder.mkdir()
        processes.append(
            FlowHarness(
                kafka_brokers,
                topic_prefix,
                folder,
                STOCKSHIFT_ADDRESSES=addresses,
                STOCKSHIFT_PROCESS_ID=str(pid),
                STOCKSHIFT_WORKERS="1",
                STOCKSHIFT_REDIS_URL=redis_url,
                STOCKSHIFT_REDIS_PREFIX=unique_prefix("cl:", ":"),
            )
        )
    for process in processes:
        process.start()
    try:
        first = processes[0]
        _publish_in_chunks(first, chunks)
        first.publish_events(chunks[-1])
        proposals = first.records("proposals", len(want_ids), timeout=60)
        proposals = first.records("proposals", 10_000, timeout=3)
        assert all(p.alive for p in processes)
    finally:
        for process in processes:
            process.stop()
    ids = [p["proposal_id"] for p in proposals]
    assert sorted(ids) == sorted(want_ids)


def test_a_pause_reaches_every_process_of_a_cluster(
    kafka_brokers: str, redis_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """SKUs are spread over both processes; the control input runs in one of them."""
    chunks = scenario(8)
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    for pid in (0, 1):
        (tmp_path / f"p{pid}").mkdir()
    processes = [
        FlowHarness(
            kafka_brokers, topic_prefix, tmp_path / f"p{pid}",
            STOCKSHIFT_ADDRESSES=addresses, STOCKSHIFT_PROCESS_ID=str(pid),
            STOCKSHIFT_REDIS_URL=redis_url, STOCKSHIFT_REDIS_PREFIX=unique_prefix("cp:", ":"),
            STOCKSHIFT_METRICS_PORT=str(port),
        )
        for pid, port in ((0, free_port()), (1, free_port()))
    ]  # fmt: skip
    for process in processes:
        process.start()
    try:
        first = processes[0]
        _publish_in_chunks(first, chunks)
        sent = first.control("pause", "--reason", "cluster stocktake", "--effective-at", str(T0))
        assert sent.returncode == 0, sent.stderr
        assert first.records("decisions", 1, keep=lambda r: r["outcome"] == "control_applied")
        # What an operator checks: every process reports the pause (a command reaching a
        # process after it decided an event cannot undo that decision).
        deadline = time.monotonic() + 20
        while not all(p.metric("stockshift_paused") == 1.0 for p in processes):
            assert time.monotonic() < deadline, [p.metric("stockshift_paused") for p in processes]
            time.sleep(0.2)
        first.publish_events(chunks[-1])
        paused = first.records("decisions", 8, timeout=60, keep=lambda r: r["reason"] == "paused")
        proposals = first.records("proposals", 1, timeout=3)
    finally:
        for process in processes:
            process.stop()
    assert proposals == []
    assert len({r["sku"] for r in paused}) == 8
