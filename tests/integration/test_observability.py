"""Alert rules under promtool, the dashboard and runbook against what the flow exports,
and a real Prometheus scraping a running flow."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import adapters.metrics  # noqa: F401  (registers every metric)
from adapters.lab.devservices import free_port
from adapters.lab.flowproc import flow_harness
from tests.conftest import running
from tests.support.helpers import E2E_B_STOCK, E2E_HOURS, HOUR, T0, warm_history

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "configs" / "prometheus" / "alerts.yml"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)


def exported_names() -> set[str]:
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for metric in REGISTRY.collect():
        if metric.name.startswith("stockshift"):
            names.update(metric.name + s for s in suffixes.get(metric.type, ("",)))
    return names


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def metric_names(expr: str) -> set[str]:
    unquoted = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\b(stockshift[a-z_:0-9]*)", unquoted))


@needs_promtool
def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULES.with_name("alerts_test.yml"))],
        capture_output=True, text=True,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "SUCCESS" in tests.stdout


def test_rules_dashboard_and_runbook_name_only_real_metrics() -> None:
    exported = exported_names()
    recorded = {r["record"] for r in rules() if "record" in r}
    known = exported | recorded
    for rule in rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown}"
    dashboard = json.loads((ROOT / "configs" / "grafana" / "stockshift.json").read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and not names - known, f"panel {panel['title']!r}: {names - known}"
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for rule in rules():
        if "alert" in rule:
            assert f"## {rule['alert']}\n" in runbook, rule["alert"]
            assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]["result"]


def wait_for(port: int, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = query(port, promql)
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"no result for {promql!r} within {timeout}s")


@pytest.mark.integration
@pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get install prometheus)"
)
def test_a_real_prometheus_scrapes_the_flow_and_evaluates_alerts(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path
) -> None:
    metrics_port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "stockshift",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    argv = [
        str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]  # fmt: skip
    with (
        running(argv, prom_port, "prometheus"),
        flow_harness(
            kafka_brokers, topic_prefix, tmp_path, STOCKSHIFT_METRICS_PORT=str(metrics_port)
        ) as flow,
    ):
        flow.publish_events(warm_history(E2E_HOURS, b_stock=E2E_B_STOCK))
        flow.wait_live()
        consumed = wait_for(
            prom_port, 'sum(stockshift_events_consumed_total{job="stockshift"}) >= 102'
        )
        assert float(consumed[0]["value"][1]) >= 102
        wait_for(prom_port, 'stockshift_dead_letters_total{reason="not_json"} >= 1')
        wait_for(prom_port, 'up{job="stockshift"} == 1')
        # The kill switch: the paused gauge moves and its alert starts pending (for: 2h).
        sent = flow.control(
            "pause", "--reason", "scrape test", "--effective-at", str(T0 + 49 * HOUR)
        )
        assert sent.returncode == 0, sent.stderr
        wait_for(prom_port, "stockshift_paused == 1")
        alerts = wait_for(prom_port, 'ALERTS{alertname="StockshiftPausedTooLong"}')
        assert alerts[0]["metric"]["alertstate"] == "pending"
        # A recording rule evaluates on the scraped data.
        wait_for(prom_port, "stockshift:events_consumed:rate5m")


@pytest.mark.integration
def test_the_metrics_port_answers_the_liveness_and_readiness_probes(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path
) -> None:
    """What Kubernetes probes and the image's HEALTHCHECK ask: alive at once, ready once
    start-up is done, and the metrics on the same port."""
    port = free_port()
    with flow_harness(kafka_brokers, topic_prefix, tmp_path, STOCKSHIFT_METRICS_PORT=str(port)):
        answers = {}
        for path in ("/healthz", "/readyz", "/metrics"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                answers[path] = (reply.status, reply.read())
    assert answers["/healthz"] == (200, b"ok\n")
    assert answers["/readyz"] == (200, b"ready\n")
    assert b"stockshift_events_consumed_total" in answers["/metrics"][1]


def test_readiness_waits_for_start_up() -> None:
    from adapters import metrics

    statuses: list[str] = []
    app = metrics.health_app(lambda environ, start: [b""])
    was_ready = metrics.READY.is_set()
    metrics.READY.clear()
    try:
        app({"PATH_INFO": "/readyz"}, lambda status, headers: statuses.append(status))
        metrics.READY.set()
        app({"PATH_INFO": "/readyz"}, lambda status, headers: statuses.append(status))
    finally:
        if not was_ready:
            metrics.READY.clear()
    assert statuses == ["503 Service Unavailable", "200 OK"]
