from __future__ import annotations

from pathlib import Path

import orjson

from flows.lab.compare import compare_log
from operators.codec import event_message
from state.records import EventType
from tests.support.helpers import event, policy, two_store_network, warm_history


def test_compare_replays_a_recorded_log_under_two_policies(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    events = [*warm_history(), event("count-B", EventType.SNAPSHOT, 30.2, "B", 20)]
    lines = []
    for e in events:
        kind, body = event_message(e)
        lines.append(orjson.dumps({"topic": f"stockshift.{kind}", "value": body}))
    lines.append(orjson.dumps({"topic": "stockshift.pos", "value": {"event_id": "broken"}}))
    log.write_bytes(b"\n".join(lines))
    strict = policy(version="strict", min_net_benefit=1e9)
    columns = compare_log(log, two_store_network(), policy(), strict, "stockshift.")
    assert columns["test-1"]["proposals_proposed"] == 1
    assert "proposals_proposed" not in columns["strict"]
    assert columns["strict"]["suppressed_no_net_benefit"] == 1
    assert columns["test-1"]["dead_letters"] == columns["strict"]["dead_letters"] == 1
