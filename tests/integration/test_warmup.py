"""`stockshift warmup` as a new deployment uses it: past sales in, and the flow acts on the
first count instead of after days of watching."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from adapters.kafka import read_topic
from adapters.lab.flowproc import ROOT, flow_harness
from state.records import EventType
from tests.support.helpers import T0, event

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def warm_then_count(
    brokers: str, prefix: str, tmp_path: Path, option: str, path: Path, says: str
) -> str:
    """`stockshift warmup <option> <path>` (its output must say `says`), then the first
    counts (A full, B nearly empty): the flow proposes A -> B at once. Returns what
    warmup printed."""
    with flow_harness(brokers, prefix, tmp_path) as flow:
        warmed = subprocess.run(
            [sys.executable, "-m", "flows.cli", "warmup", option, str(path)],
            cwd=ROOT, env=flow.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert warmed.returncode == 0, warmed.stderr
        assert says in warmed.stdout
        flow.last_ts = T0
        flow.publish_events(
            [
                event("cA", EventType.SNAPSHOT, 0.2, "A", 300),
                event("cB", EventType.SNAPSHOT, 0.3, "B", 5),
            ]
        )
        proposals = read_topic(brokers, prefix + "proposals", 1, timeout=60)
    assert len(proposals) == 1
    body = orjson.loads(proposals[0].value())
    assert (body["from_site"], body["to_site"]) == ("A", "B")
    return warmed.stdout


def test_a_history_file_lets_the_flow_propose_on_its_first_counts(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path
) -> None:
    history = tmp_path / "sales.csv"
    days = ["2025-12-29", "2025-12-30", "2025-12-31"]  # the three days before T0
    history.write_text(
        "date,sku,site,qty\n" + "".join(f"{d},SKU-1,{s},24\n" for d in days for s in "AB")
    )
    says = "published 144 sale_history events (144 units)"
    printed = warm_then_count(kafka_brokers, topic_prefix, tmp_path, "--history", history, says)
    # Both stores sold the same: each is the mean site (the network config's demand_index).
    assert "demand_index by site in this history" in printed
    assert re.search(r"^\s+A\s+1\.000\s+\(1\)$", printed, re.MULTILINE)
    assert re.search(r"^\s+B\s+1\.000\s+\(1\)$", printed, re.MULTILINE)


def test_a_forecast_file_lets_the_flow_propose_on_its_first_counts(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path
) -> None:
    """No history at all: forecasts published before the first counts are enough to act on
    (a site with a forecast needs no warm-up)."""
    forecasts = tmp_path / "forecasts.csv"
    issued = T0 - 3_600_000  # an hour before the counts, so the merged source takes it first
    forecasts.write_text(
        "sku,site,mean_per_day,error_cv,forecast_version,ts\n"
        + "".join(f"SKU-1,{s},24,0.3,w1,{issued}\n" for s in "AB")
    )
    says = f"published 2 forecasts to {topic_prefix}forecasts"
    warm_then_count(kafka_brokers, topic_prefix, tmp_path, "--forecasts", forecasts, says)
