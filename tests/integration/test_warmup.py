"""`stockshift warmup` as a new deployment uses it: past sales in, and the flow acts on the
first count instead of after days of watching."""

from __future__ import annotations

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


def test_a_history_file_lets_the_flow_propose_on_its_first_counts(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path
) -> None:
    history = tmp_path / "sales.csv"
    days = ["2025-12-29", "2025-12-30", "2025-12-31"]  # the three days before T0
    history.write_text(
        "date,sku,site,qty\n" + "".join(f"{d},SKU-1,{s},24\n" for d in days for s in "AB")
    )
    with flow_harness(kafka_brokers, topic_prefix, tmp_path) as flow:
        warmed = subprocess.run(
            [sys.executable, "-m", "flows.cli", "warmup", "--history", str(history)],
            cwd=ROOT, env=flow.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert warmed.returncode == 0, warmed.stderr
        assert "published 144 sale_history events (144 units)" in warmed.stdout
        flow.last_ts = T0
        flow.publish_events(
            [
                event("cA", EventType.SNAPSHOT, 0.2, "A", 300),
                event("cB", EventType.SNAPSHOT, 0.3, "B", 5),
            ]
        )
        proposals = read_topic(kafka_brokers, topic_prefix + "proposals", 1, timeout=60)
    assert len(proposals) == 1
    body = orjson.loads(proposals[0].value())
    assert (body["from_site"], body["to_site"]) == ("A", "B")


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
    with flow_harness(kafka_brokers, topic_prefix, tmp_path) as flow:
        warmed = subprocess.run(
            [sys.executable, "-m", "flows.cli", "warmup", "--forecasts", str(forecasts)],
            cwd=ROOT, env=flow.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert warmed.returncode == 0, warmed.stderr
        assert f"published 2 forecasts to {topic_prefix}forecasts" in warmed.stdout
        flow.last_ts = T0
        flow.publish_events(
            [
                event("cA", EventType.SNAPSHOT, 0.2, "A", 300),
                event("cB", EventType.SNAPSHOT, 0.3, "B", 5),
            ]
        )
        proposals = read_topic(kafka_brokers, topic_prefix + "proposals", 1, timeout=60)
    assert len(proposals) == 1
    body = orjson.loads(proposals[0].value())
    assert (body["from_site"], body["to_site"]) == ("A", "B")
