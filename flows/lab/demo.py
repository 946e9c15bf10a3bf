"""`stockshift demo`: the production flow on a simulated network, with and without transfers."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bytewax.testing import run_main

from adapters.lab import reports
from adapters.lab.memory import ListSink, PullSource
from adapters.lab.simulator import (
    Kpis,
    Scenario,
    Simulation,
    SimulatorFeed,
    demo_policy,
    make_network,
    run_without_transfers,
)
from adapters.settings import Settings
from flows.pipeline import Sinks, build
from state.config import Policy
from state.records import DecisionRecord, Proposal

KPI_ROWS = (
    "network_fill_rate",
    "local_fill_rate",
    "share_served_by_transfer",
    "units_moved",
    "transfers",
    "transfer_cost",
    "transfer_efficiency",
    "proposals",
    "proposals_rejected",
    "proposals_failed",
)


def run_flow_on_simulation(
    scenario: Scenario, policy: Policy, quiet: bool = False
) -> tuple[Kpis, list[Proposal], list[DecisionRecord]]:
    """Drive the real flow (build()) through the simulator in lockstep; returns its KPIs."""
    network = make_network(scenario)
    sim = Simulation(scenario, network)

    def on_day(day: int, kpis: Kpis) -> None:
        if not quiet:
            fill = kpis.served / kpis.demand if kpis.demand else 1.0
            print(
                f"  day {day:>3}/{scenario.days}  fill so far {fill:.3f}  "
                f"proposals {kpis.proposals}  units moved {kpis.units_moved}",
                file=sys.stderr,
            )

    settings = Settings()
    feed = SimulatorFeed(sim, settings.topic_prefix, on_day)
    proposals: ListSink[Proposal] = ListSink()
    decisions: ListSink[DecisionRecord] = ListSink()
    sinks = Sinks(
        proposals=proposals,
        decisions=decisions,
        dead_letters=ListSink(feed.on_dead_letters),
        step_outputs=ListSink(feed.on_step_outputs),
        negotiated=ListSink(feed.on_negotiated),
    )
    flow = build(
        settings, source=PullSource(feed.pull), sinks=sinks, network=network, policy=policy
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    # Proposals of the final hour are made but never executed in the simulated horizon.
    sim.kpis.proposals = len(proposals.items)
    return sim.kpis, proposals.items, decisions.items


def run_demo(
    out_dir: Path, scenario: Scenario | None = None, quiet: bool = False
) -> dict[str, Any]:
    scenario = scenario or Scenario()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not quiet:
        print(
            f"stockshift demo: {scenario.n_sites} sites x {scenario.n_skus} SKUs, "
            f"{scenario.days} simulated days, seed {scenario.seed}",
            file=sys.stderr,
        )
    baseline = run_without_transfers(scenario, make_network(scenario))
    with_flow, proposals, decisions = run_flow_on_simulation(scenario, demo_policy(), quiet)
    elapsed = time.perf_counter() - started
    columns = {"without": baseline.summary(), "with stockshift": with_flow.summary()}
    daily = {"without": baseline.daily_fill, "with stockshift": with_flow.daily_fill}
    summary = {
        "scenario": asdict(scenario),
        "kpis": columns,
        "daily_network_fill": daily,
        "decision_records": len(decisions),
        "seconds": round(elapsed, 2),
    }
    reports.write_proposals(out_dir / "proposals.jsonl", proposals)
    reports.write_json(out_dir / "kpis.json", summary)
    charted = reports.fill_chart(
        out_dir / "fill_rate.png",
        daily,
        f"stockshift demo: {scenario.n_sites} sites, {scenario.n_skus} SKUs",
    )
    print(reports.comparison_table(columns, KPI_ROWS))
    print(
        f"\n{len(proposals)} proposals, {len(decisions)} decision records in {elapsed:.1f} s; "
        f"wrote {out_dir}/proposals.jsonl, kpis.json{', fill_rate.png' if charted else ''}"
    )
    return summary
