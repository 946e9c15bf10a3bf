"""`stockshift compare`: the same input under two policy versions, side by side.

Input is a simulator scenario (closed loop: KPIs include fill rate) or a recorded event log
(JSON lines `{"topic": "<input topic>", "value": {...event...}}` as consumed; open loop:
KPIs are what the policies would have proposed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from adapters.lab import reports
from adapters.lab.simulator import Scenario, make_network
from flows.lab.simulate import run_stockshift
from operators.engine import DecisionContext
from operators.parse import parse_message, topic_kinds_for
from operators.replay import Replay
from state.config import Network, Policy
from state.records import Event, Outcome, RawMessage


def replay_log(
    lines: Iterable[bytes], network: Network, policy: Policy, prefix: str
) -> dict[str, Any]:
    replay = Replay.of(DecisionContext.build(network, policy))
    kinds = topic_kinds_for(prefix)
    summary: Counter[str] = Counter()
    units = cost = benefit = 0.0
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        record = orjson.loads(line)
        raw = RawMessage(record["topic"], 0, offset, None, orjson.dumps(record["value"]), 0)
        parsed = parse_message(raw, kinds, frozenset(network.sites))
        if not isinstance(parsed, Event):
            summary["dead_letters"] += 1
            continue
        replayed = replay.batch([parsed])
        for proposal in replayed.granted:  # as negotiation granted them, like the flow
            summary[f"proposals_{proposal.status.value}"] += 1
            units += proposal.qty
            cost += proposal.evidence.transfer_cost
            benefit += proposal.evidence.net_benefit
        decisions = [*replayed.outputs[0].decisions]
        decisions += [o.decision for o in replayed.negotiated if o.decision is not None]
        for decision in decisions:
            if decision.outcome is Outcome.SUPPRESSED:
                summary[f"suppressed_{decision.reason}"] += 1
    return {
        **dict(sorted(summary.items())),
        "units_proposed": int(units),
        "transfer_cost_proposed": round(cost, 2),
        "expected_net_benefit": round(benefit, 2),
    }


def compare_scenario(scenario: Scenario, a: Policy, b: Policy) -> dict[str, dict[str, Any]]:
    network = make_network(scenario)
    return {
        a.version: run_stockshift(scenario, network, a).kpis,
        b.version: run_stockshift(scenario, network, b).kpis,
    }


def compare_log(
    path: Path, network: Network, a: Policy, b: Policy, prefix: str
) -> dict[str, dict[str, Any]]:
    lines = path.read_bytes().splitlines()
    return {
        a.version: replay_log(lines, network, a, prefix),
        b.version: replay_log(lines, network, b, prefix),
    }


def print_comparison(columns: dict[str, dict[str, Any]]) -> None:
    names = list(columns)
    rows = sorted({row for column in columns.values() for row in column})
    diff: dict[str, Any] = {}
    for row in rows:
        x, y = columns[names[0]].get(row), columns[names[1]].get(row)
        numeric = isinstance(x, int | float) and isinstance(y, int | float)
        diff[row] = round(y - x, 4) if numeric else None  # type: ignore[operator]
    print(reports.comparison_table({**columns, "difference": diff}, rows))
