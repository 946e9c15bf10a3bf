"""The dead-letter topic as an operator uses it: list what was refused, fix the cause,
replay, and the replayed messages make the decisions they would have made."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from adapters.lab.flowproc import ROOT, FlowHarness
from tests.support.helpers import E2E_B_STOCK, E2E_HOURS, e2e_trigger, warm_history

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def stockshift(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_fixed_cause_and_a_replay_yield_the_proposal(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path
) -> None:
    """SKU-2 arrives while the process is full (STOCKSHIFT_MAX_SKUS=1): its history and its
    trigger are dead-lettered as sku_limit. The limit is raised and the flow restarted from
    its recovery snapshot (past those offsets); `stockshift dlq replay --reason sku_limit`
    puts them back, and SKU-2 gets the proposal a clean run makes.

    The replay is a burst across two topics into a caught-up flow, which takes each topic's
    messages as they arrive: a merge grace holds them until the other topic's fetch is in
    (without it one CI run got no proposal; replayed through the engine alone, the damage
    count taken before B's sales, or amid them, makes none)."""
    flow = FlowHarness(
        kafka_brokers, topic_prefix, tmp_path,
        STOCKSHIFT_RECOVERY_DIR=str(tmp_path / "recovery"),
        STOCKSHIFT_SNAPSHOT_INTERVAL_S="1", STOCKSHIFT_MAX_SKUS="1",
        STOCKSHIFT_MERGE_GRACE_MS="300",
    )  # fmt: skip
    sku2 = [*warm_history(E2E_HOURS, sku="SKU-2", b_stock=E2E_B_STOCK)]
    trigger = replace(e2e_trigger(), sku="SKU-2", event_id="damage-B-2")
    try:
        flow.start()
        flow.publish_events(warm_history(5, sku="SKU-1"))
        flow.publish_events([*sku2, trigger])
        flow.wait_live()
        time.sleep(2.5)  # a snapshot after the last event
        flow.stop()
        listed = stockshift(flow.env, "dlq", "list", "--reason", "sku_limit")
        assert f"{len(sku2) + 1} dead letters" in listed.stdout, listed.stdout + listed.stderr
        flow.env["STOCKSHIFT_MAX_SKUS"] = "100"
        flow.start()
        assert not flow.records("proposals", 1, timeout=3)  # nothing without the replay
        replayed = stockshift(flow.env, "dlq", "replay", "--reason", "sku_limit")
        assert f"replayed {len(sku2) + 1} of {len(sku2) + 1}" in replayed.stdout, replayed.stderr
        proposals = flow.records("proposals", 1, timeout=60)
    finally:
        flow.stop()
    assert [p["sku"] for p in proposals] == ["SKU-2"]
    assert proposals[0]["trigger_event_ids"] == ["damage-B-2"]
