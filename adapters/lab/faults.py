"""Known faults injected into the simulated world's event stream, with their ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adapters.lab.simulator import HOURLY_PROFILE, Simulation
from state.units import HOUR_MS

Event = tuple[str, dict[str, Any]]


@dataclass
class FaultPlan:
    """Where and when each fault happens; `truth` collects what a detector should find."""

    shift_day: int = 10
    shift_factor: float = 1.5
    shift_share: float = 0.1
    bulk_orders: int = 30
    phantom_day: int = 12
    phantom_pairs: int = 20
    silent_day: int = 14
    skew_day: int = 18
    skew_hours: float = 3.0
    seed: int = 99
    shifted: set[tuple[str, str]] = field(default_factory=set)
    bulk_ids: set[str] = field(default_factory=set)
    phantom_ids: set[str] = field(default_factory=set)
    silent_site: str = ""
    skew_site: str = ""
    skewed_ids: set[str] = field(default_factory=set)


def prepare(sim: Simulation, plan: FaultPlan) -> None:
    """Shift demand in the world itself (a real change the flow must adapt to)."""
    rng = np.random.default_rng(plan.seed)
    busy = np.argwhere(sim.daily_rate >= 1.0)
    chosen = busy[rng.random(len(busy)) < plan.shift_share]
    start = plan.shift_day * 24
    hours = sim.demand.shape[0]
    profile = np.tile(HOURLY_PROFILE, hours // 24 + 1)[start:hours]
    for k, s in chosen:
        extra = rng.poisson((plan.shift_factor - 1) * sim.daily_rate[k, s] * profile)
        sim.demand[start:, k, s] += extra
        plan.shifted.add((sim.skus[k], sim.sites[s]))
    plan.silent_site = sim.sites[1]
    plan.skew_site = sim.sites[2]


def corrupt(
    sim: Simulation, plan: FaultPlan, events: list[Event], rng: np.random.Generator
) -> list[Event]:
    """The same hour's events as a faulty network would publish them."""
    day = (sim.hour - 1) // 24
    out: list[Event] = []
    for kind, body in events:
        site = body["site"]
        if kind == "pos" and site == plan.silent_site and day >= plan.silent_day:
            continue  # the site's POS feed went quiet; it still sells
        if site == plan.skew_site and day >= plan.skew_day:
            body = {
                **body,
                "ts": body["ts"] + int(plan.skew_hours * HOUR_MS),
                "_ingested": body["ts"],
            }
            plan.skewed_ids.add(body["event_id"])
        if (
            kind == "inventory"
            and body.get("type") == "snapshot"
            and body["event_id"].startswith("count-")
            and day == plan.phantom_day
            and len(plan.phantom_ids) < plan.phantom_pairs
            and rng.random() < 0.1
            and body["on_hand"] >= 4
        ):
            body = {**body, "on_hand": int(body["on_hand"] * 1.5) + 10}
            plan.phantom_ids.add(body["event_id"])
        out.append((kind, body))
    if len(plan.bulk_ids) < plan.bulk_orders and day >= 3 and rng.random() < 0.15:
        k, s = int(rng.integers(len(sim.skus))), int(rng.integers(len(sim.sites)))
        if sim.daily_rate[k, s] >= 1.0 and sim.sites[s] not in (plan.silent_site, plan.skew_site):
            event_id = f"bulk-{sim.hour}-{k}-{s}"
            plan.bulk_ids.add(event_id)
            out.append(
                (
                    "pos",
                    {
                        "event_id": event_id,
                        "ts": sim.ts(sim.hour - 1, 45),
                        "sku": sim.skus[k],
                        "site": sim.sites[s],
                        "qty": int(max(40, 30 * sim.daily_rate[k, s])),
                    },
                )
            )
    return out
