"""The README's producer example, run as written against the real broker and flow: it must
make the one proposal the README says it makes."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from adapters.kafka import read_topic
from adapters.lab.flowproc import ROOT, flow_harness

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def readme_producer_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("A producer sets each message's") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_readme_example_makes_the_proposal_it_promises(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path
) -> None:
    code = readme_producer_example()
    code = code.replace("127.0.0.1:9092", kafka_brokers)
    code = code.replace('f"stockshift.{topic}"', f'f"{topic_prefix}{{topic}}"')
    network = str(ROOT / "configs" / "network.toml")
    with flow_harness(kafka_brokers, topic_prefix, tmp_path, STOCKSHIFT_NETWORK=network):
        exec(compile(code, "README.md", "exec"), {})
        proposals = read_topic(kafka_brokers, topic_prefix + "proposals", 1, timeout=60)
    assert len(proposals) == 1
    body = orjson.loads(proposals[0].value())
    assert (body["from_site"], body["to_site"], body["status"]) == (
        "STORE-A",
        "STORE-B",
        "proposed",
    )
    assert (
        f"the proposal ({body['qty']} units, status `proposed`)" in (ROOT / "README.md").read_text()
    )
