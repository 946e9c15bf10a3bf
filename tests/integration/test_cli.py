"""The CLI as a user runs it: a subprocess, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def stockshift(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_demo_command_prints_the_table_and_writes_files(tmp_path: Path) -> None:
    result = stockshift("demo", "--out", str(tmp_path), "--skus", "12", "--days", "7")
    assert result.returncode == 0, result.stderr
    assert "network_fill_rate" in result.stdout and "with stockshift" in result.stdout
    assert "day   7/7" in result.stderr  # progress
    kpis = json.loads((tmp_path / "kpis.json").read_text())["kpis"]
    assert kpis["with stockshift"]["network_fill_rate"] >= kpis["without"]["network_fill_rate"]
    assert (tmp_path / "proposals.jsonl").stat().st_size > 0
    assert (tmp_path / "fill_rate.png").stat().st_size > 0


def test_bad_config_exits_2_with_the_field_named(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text('version = "x"\ncover_hours = -4\n')
    result = stockshift(
        "check-config", "--network", str(ROOT / "configs/network.toml"), "--policy", str(bad)
    )
    assert result.returncode == 2
    assert "policy.cover_hours" in result.stderr


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2026-01-01,SKU-1,STORE-A,nan", "row 1 (SKU-1@STORE-A, qty 'nan') needs"),
        ("2026-01-01,SKU-1,STORE-A,1.5", "row 1 (SKU-1@STORE-A, qty 1.5) needs"),
        ("9999-01-01,SKU-1,STORE-A,3", "the flow would refuse 3 of 3 events"),
        ("2026-13-45,SKU-1,STORE-A,3", "unreadable dates or times: could not find"),
    ],
)
def test_a_bad_history_row_stops_warmup_before_it_publishes(
    tmp_path: Path, row: str, message: str
) -> None:
    """Exit 2 with one line naming the row, not a traceback and not a dead-letter topic
    full of the history the warm-up said it published."""
    history = tmp_path / "sales.csv"
    history.write_text(f"date,sku,site,qty\n{row}\n")
    network = str(ROOT / "configs/network.toml")
    result = stockshift("warmup", "--history", str(history), "--network", network, "--dry-run")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo", "--days", "-1"), "argument --days: must be within 1 to 366, got -1"),
        (("demo", "--skus", "100000000"), "argument --skus: must be within 1 to 10,000"),
        (("soak", "--rate", "nan"), "argument --rate: must be within 1 to 1,000,000, got nan"),
        (("--log-level", "FOO", "check-config"), "argument --log-level: 'FOO' is not one of"),
    ],
)
def test_a_bad_flag_value_is_a_usage_error(args: tuple[str, ...], message: str) -> None:
    result = stockshift(*args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_no_broker_answering_is_one_line_naming_it_not_a_traceback() -> None:
    result = stockshift("dlq", "list", "--brokers", "127.0.0.1:1")
    assert result.returncode == 1, result.stderr
    assert "stockshift dlq: Kafka at 127.0.0.1:1: Failed to get metadata" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set_approval_threshold", "--value", "nan"), "needs a non-negative `value`"),
        (("freeze_sku",), "freeze_sku needs a `target`"),
        (("pause", "--effective-at", "soon"), "`effective_at` is not an RFC 3339 timestamp"),
    ],
)
def test_a_control_command_the_flow_would_reject_is_not_sent(
    args: tuple[str, ...], message: str
) -> None:
    """Refused at the terminal, before signing: no broker is needed to find the typo (none
    answers at 127.0.0.1:1, and a command that passed would wait for it and fail)."""
    keys = {"STOCKSHIFT_CONTROL_KEYS": "ops=" + "ab" * 16, "STOCKSHIFT_CONTROL_KEY_ID": "ops"}
    result = stockshift("control", *args, "--brokers", "127.0.0.1:1", env=keys)
    assert result.returncode == 2, result.stderr
    assert f"{message}" in result.stderr and "(not sent)" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_accepts_the_shipped_files() -> None:
    result = stockshift(
        "check-config",
        "--network",
        str(ROOT / "configs/network.toml"),
        "--policy",
        str(ROOT / "configs/policies/default.toml"),
    )
    assert result.returncode == 0 and "ok" in result.stdout


def test_simulate_command_compares_policies_and_writes_a_report(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(
        'name = "tiny"\nn_sites = 3\nn_skus = 6\ndays = 5\nseed = 3\n'
        'replenishment = "one_for_one"\n'
    )
    result = stockshift("simulate", str(scenario), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    for name in ("none", "tie", "pooling", "stockshift", "hindsight", "gap_capture"):
        assert name in result.stdout
    report = tmp_path / "out" / "tiny"
    kpis = json.loads((report / "kpis.json").read_text())["kpis"]
    assert kpis["hindsight"]["gap_capture"] == 1.0
    assert kpis["none"]["network_fill_rate"] <= kpis["hindsight"]["network_fill_rate"]
    assert "| network_fill_rate |" in (report / "kpis.md").read_text()
    for chart in ("fill_rate.png", "units_moved.png", "stock_distribution.png"):
        assert (report / chart).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.integration
def test_check_config_with_brokers_reports_topics_set_up_otherwise(
    kafka_brokers: str, topic_prefix: str
) -> None:
    """A control topic someone created with three partitions (commands would lose their
    order) is reported; the topics `run` creates are as their roles need."""
    from adapters import kafka
    from adapters.settings import from_env
    from flows.entry import create_topics

    settings = from_env(
        {"STOCKSHIFT_BROKERS": kafka_brokers, "STOCKSHIFT_TOPIC_PREFIX": topic_prefix}
    )
    kafka.ensure_topics([kafka_brokers], [topic_prefix + "control"], 3)
    create_topics(settings)
    result = stockshift("check-config", "--brokers", kafka_brokers, "--topic-prefix", topic_prefix)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{topic_prefix}control: partitions is 3, expected 1" in result.stdout
    assert "10 of 10 exist" in result.stdout
    other = topic_prefix.replace(".", "x.")
    create_topics(from_env({"STOCKSHIFT_BROKERS": kafka_brokers, "STOCKSHIFT_TOPIC_PREFIX": other}))
    clean = stockshift("check-config", "--brokers", kafka_brokers, "--topic-prefix", other)
    assert clean.returncode == 0 and "as needed" in clean.stdout, clean.stdout + clean.stderr
