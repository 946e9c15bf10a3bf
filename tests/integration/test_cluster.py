"""Two Bytewax processes on loopback make exactly the proposals one process makes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from adapters.devservices import free_port
from adapters.flowproc import FlowHarness
from tests.integration.test_recovery import expected, scenario

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


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
                STOCKSHIFT_REDIS_PREFIX=f"cl:{uuid.uuid4().hex[:6]}:",
            )
        )
    for process in processes:
        process.start()
    try:
        first = processes[0]
        for chunk in chunks[:-1]:
            first.publish_events(chunk)
            first.wait_live()
        first.publish_events(chunks[-1])
        proposals = first.records("proposals", len(want_ids), timeout=60)
        proposals = first.records("proposals", 10_000, timeout=3)
        assert all(p.alive for p in processes)
    finally:
        for process in processes:
            process.stop()
    ids = [p["proposal_id"] for p in proposals]
    assert sorted(ids) == sorted(want_ids)
