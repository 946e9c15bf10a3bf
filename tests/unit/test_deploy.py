"""The shipped manifest and image agree with each other and with the code."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def _docs(name: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all((K8S / name).read_text())}


def test_every_configmap_and_secret_key_the_manifest_reads_has_an_example() -> None:
    container = _docs("stockshift.yaml")["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    examples = _docs("config-example.yaml")
    provided = {
        "configMapKeyRef": set(examples["ConfigMap"]["data"]),
        "secretKeyRef": set(examples["Secret"]["stringData"]),
    }
    refs = [e["valueFrom"] for e in container["env"] if "valueFrom" in e]
    assert refs
    for ref in refs:
        ((kind, target),) = ref.items()
        assert target["key"] in provided[kind], target


def test_probes_ask_the_paths_the_metrics_port_serves() -> None:
    from adapters.metrics import health_app

    container = _docs("stockshift.yaml")["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    paths = {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    statuses: list[str] = []
    app = health_app(lambda environ, start: [b"metrics"])
    for path in paths:
        app({"PATH_INFO": path}, lambda status, headers: statuses.append(status))
    assert paths == {"/healthz", "/readyz"} and len(statuses) == 2
    assert "/healthz" in (ROOT / "Dockerfile").read_text()


def test_the_image_carries_the_core_only_and_its_policies() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"adapters/lab", "flows/lab", "operators/reference", "tests"} <= set(ignored)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "STOCKSHIFT_POLICIES_DIR=/app/configs/policies" in dockerfile
    assert 'ENTRYPOINT ["stockshift", "run"]' in dockerfile
