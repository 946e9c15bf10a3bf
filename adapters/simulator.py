"""A seeded, closed-loop simulation of a multi-site network (the world, not the decisions).

It draws demand, serves it from true on-hand (lost sales when empty), replenishes each
site from a supplier with a base-stock policy whose forecast is wrong per site (the usual
source of imbalance), and executes the transfer proposals it is given. It emits exactly
the events a real network would publish to Kafka, so stockshift decides from the same
signals in simulation as in production; decisions are never made here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from state.config import Network, Policy, network_from_dict
from state.records import DeadLetter, Proposal, RawMessage, StepOutput

HOUR_MS = 3_600_000
# Share of a day's demand in each hour: stores open 08-21, busiest late afternoon.
_OPEN = np.array([0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 5, 6, 7, 6, 6, 7, 8, 9, 9, 8, 5, 3, 0, 0], float)
HOURLY_PROFILE = _OPEN / _OPEN.sum()


@dataclass(frozen=True)
class Scenario:
    name: str = "demo"
    n_sites: int = 8
    n_skus: int = 50
    days: int = 14
    seed: int = 7
    mean_daily_demand: float = 3.0
    site_scale_sigma: float = 0.6
    forecast_error_sigma: float = 0.45
    supplier_lead_days: int = 5
    base_stock_z: float = 1.0
    reject_share: float = 0.05
    start_ms: int = 1_767_571_200_000  # 2026-01-05T00:00:00Z, a Monday

    @property
    def hours(self) -> int:
        return self.days * 24


def site_ids(scenario: Scenario) -> list[str]:
    return [f"S{i + 1:02d}" for i in range(scenario.n_sites)]


def network_dict(scenario: Scenario) -> dict[str, Any]:
    """Sites on a line of regions; lanes between all pairs, slower and dearer with distance."""
    rng = np.random.default_rng(scenario.seed + 1)
    ids = site_ids(scenario)
    coords = rng.uniform(0, 100, size=(len(ids), 2))
    lanes = []
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            distance = float(np.hypot(*(coords[i] - coords[j])))
            lanes.append(
                {
                    "from": ids[i],
                    "to": ids[j],
                    "lead_hours": round(4 + distance / 5, 1),
                    "cost_per_unit": round(0.1 + distance / 200, 2),
                    "fixed_cost": round(4 + distance / 10, 2),
                    "bidirectional": True,
                }
            )
    return {
        "sites": [
            {"id": s, "replenishment_lead_hours": scenario.supplier_lead_days * 24} for s in ids
        ],
        "lanes": lanes,
        "sku_defaults": {
            "unit_cost": 12.0,
            "unit_margin": 6.0,
            "pack_size": 1,
            "min_transfer_qty": 2,
        },
    }


def make_network(scenario: Scenario) -> Network:
    return network_from_dict(network_dict(scenario))


def demo_policy() -> Policy:
    return Policy(version="demo-1", description="embedded demo policy")


@dataclass
class Kpis:
    demand: int = 0
    served: int = 0
    served_by_transfer: float = 0.0
    units_moved: int = 0
    transfers: int = 0
    transfer_cost: float = 0.0
    proposals: int = 0
    proposals_rejected: int = 0
    proposals_failed: int = 0
    daily_fill: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        network_fill = self.served / self.demand if self.demand else 1.0
        by_transfer = self.served_by_transfer / self.demand if self.demand else 0.0
        return {
            "demand_units": self.demand,
            "network_fill_rate": round(network_fill, 4),
            "local_fill_rate": round(network_fill - by_transfer, 4),
            "share_served_by_transfer": round(
                self.served_by_transfer / self.served if self.served else 0.0, 4
            ),
            "units_moved": self.units_moved,
            "transfers": self.transfers,
            "transfer_cost": round(self.transfer_cost, 2),
            "transfer_efficiency": round(
                self.served_by_transfer / self.units_moved if self.units_moved else 0.0, 4
            ),
            "proposals": self.proposals,
            "proposals_rejected": self.proposals_rejected,
            "proposals_failed": self.proposals_failed,
        }


class Simulation:
    """The world for one scenario; call `advance_hour` until `done`, feeding proposals back."""

    def __init__(self, scenario: Scenario, network: Network) -> None:
        self.scenario = scenario
        self.network = network
        self.sites = site_ids(scenario)
        self.skus = [f"SKU-{k + 1:04d}" for k in range(scenario.n_skus)]
        rng = np.random.default_rng(scenario.seed)
        n_skus, n_sites = scenario.n_skus, scenario.n_sites
        popularity = rng.lognormal(0.0, 0.8, size=n_skus)
        popularity *= scenario.mean_daily_demand / popularity.mean()
        scale = rng.lognormal(0.0, scenario.site_scale_sigma, size=n_sites)
        scale /= scale.mean()
        self.daily_rate = np.outer(popularity, scale)
        hourly = self.daily_rate[None, :, :] * np.tile(HOURLY_PROFILE, scenario.days)[:, None, None]
        self.demand = rng.poisson(hourly)
        forecast = self.daily_rate * rng.lognormal(
            0.0, scenario.forecast_error_sigma, (n_skus, n_sites)
        )
        cover_days = scenario.supplier_lead_days + 1
        self.base_stock = np.ceil(
            forecast * cover_days + scenario.base_stock_z * np.sqrt(forecast * cover_days)
        ).astype(int)
        self.on_hand = self.base_stock.copy()
        self.from_transfer = np.zeros((n_skus, n_sites))
        self.supplier_pipeline = np.zeros((n_skus, n_sites), dtype=int)
        self.arrivals: dict[int, list[tuple[str, int, int, int, str, str | None]]] = {}
        self.pending: list[Proposal] = []
        self.hour = 0
        self.kpis = Kpis()
        self._day_demand = 0
        self._day_served = 0
        self._site_index = {s: i for i, s in enumerate(self.sites)}
        self._sku_index = {s: i for i, s in enumerate(self.skus)}

    @property
    def done(self) -> bool:
        return self.hour >= self.scenario.hours

    def ts(self, hour: int, minute: int = 0) -> int:
        return self.scenario.start_ms + hour * HOUR_MS + minute * 60_000

    def accept(self, proposals: list[Proposal]) -> None:
        self.pending.extend(proposals)
        self.kpis.proposals += len(proposals)

    def initial_events(self) -> list[tuple[str, dict[str, Any]]]:
        """Opening counts for every SKU-site, as a store system would publish them."""
        return [
            (
                "inventory",
                {
                    "event_id": f"open-{sku}-{site}",
                    "ts": self.ts(0),
                    "sku": sku,
                    "site": site,
                    "type": "snapshot",
                    "on_hand": int(self.on_hand[k, s]),
                },
            )
            for k, sku in enumerate(self.skus)
            for s, site in enumerate(self.sites)
        ]

    def advance_hour(self) -> list[tuple[str, dict[str, Any]]]:
        """Simulate one hour; returns the events it published, in time order."""
        h = self.hour
        events: list[tuple[str, dict[str, Any]]] = []
        self._arrive(h, events)
        self._execute(h, events)
        self._sell(h, events)
        if h % 24 == 23:
            self._end_of_day(h, events)
        self.hour += 1
        return events

    def _arrive(self, h: int, events: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, k, s, qty, ref, from_site in self.arrivals.pop(h, []):
            sku, site = self.skus[k], self.sites[s]
            self.on_hand[k, s] += qty
            body: dict[str, Any] = {"ts": self.ts(h), "sku": sku, "site": site, "qty": qty}
            if kind == "supplier":
                self.supplier_pipeline[k, s] -= qty
                body.update(event_id=f"recv-{ref}", type="inbound_received", shipment_id=ref)
            else:
                self.from_transfer[k, s] += qty
                body.update(
                    event_id=f"xfer-recv-{ref}",
                    type="transfer_received",
                    from_site=from_site,
                    proposal_id=ref,
                )
            events.append(("shipments", body))

    def _execute(self, h: int, events: list[tuple[str, dict[str, Any]]]) -> None:
        for proposal in self.pending:
            k = self._sku_index[proposal.sku]
            src, dst = self._site_index[proposal.from_site], self._site_index[proposal.to_site]
            body: dict[str, Any] = {
                "ts": self.ts(h, 1),
                "sku": proposal.sku,
                "site": proposal.to_site,
                "from_site": proposal.from_site,
                "proposal_id": proposal.proposal_id,
            }
            draw = int(proposal.proposal_id[:8], 16) / 0xFFFFFFFF
            qty = min(proposal.qty, int(self.on_hand[k, src]))
            if draw < self.scenario.reject_share:
                self.kpis.proposals_rejected += 1
                body.update(
                    event_id=f"xfer-rej-{proposal.proposal_id}",
                    type="transfer_rejected",
                    qty=proposal.qty,
                )
            elif qty <= 0:
                self.kpis.proposals_failed += 1
                body.update(
                    event_id=f"xfer-fail-{proposal.proposal_id}",
                    type="transfer_failed",
                    qty=proposal.qty,
                )
            else:
                share = self.from_transfer[k, src] / self.on_hand[k, src]
                self.from_transfer[k, src] -= share * qty
                self.on_hand[k, src] -= qty
                lane = self.network.lanes[(proposal.from_site, proposal.to_site)]
                arrive = h + max(1, math.ceil(lane.lead_hours))
                self.arrivals.setdefault(arrive, []).append(
                    ("transfer", k, dst, qty, proposal.proposal_id, proposal.from_site)
                )
                self.kpis.units_moved += qty
                self.kpis.transfers += 1
                self.kpis.transfer_cost += lane.fixed_cost + lane.cost_per_unit * qty
                body.update(
                    event_id=f"xfer-disp-{proposal.proposal_id}",
                    type="transfer_dispatched",
                    qty=qty,
                )
            events.append(("shipments", body))
        self.pending = []

    def _sell(self, h: int, events: list[tuple[str, dict[str, Any]]]) -> None:
        demand = self.demand[h]
        served = np.minimum(demand, self.on_hand)
        with np.errstate(invalid="ignore", divide="ignore"):
            transfer_share = np.where(self.on_hand > 0, self.from_transfer / self.on_hand, 0.0)
        by_transfer = served * transfer_share
        self.from_transfer -= by_transfer
        self.on_hand -= served
        self.kpis.demand += int(demand.sum())
        self.kpis.served += int(served.sum())
        self.kpis.served_by_transfer += float(by_transfer.sum())
        self._day_demand += int(demand.sum())
        self._day_served += int(served.sum())
        for k, s in zip(*np.nonzero(served), strict=True):
            events.append(
                (
                    "pos",
                    {
                        "event_id": f"sale-{h}-{k}-{s}",
                        "ts": self.ts(h, 30),
                        "sku": self.skus[k],
                        "site": self.sites[s],
                        "qty": int(served[k, s]),
                    },
                )
            )

    def _end_of_day(self, h: int, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.kpis.daily_fill.append(
            self._day_served / self._day_demand if self._day_demand else 1.0
        )
        self._day_demand = self._day_served = 0
        in_transit = np.zeros_like(self.on_hand)
        for items in self.arrivals.values():
            for kind, k, s, qty, _, _ in items:
                if kind == "transfer":
                    in_transit[k, s] += qty
        position = self.on_hand + self.supplier_pipeline + in_transit
        order = np.maximum(self.base_stock - position, 0)
        lead = self.scenario.supplier_lead_days * 24
        for k, s in zip(*np.nonzero(order), strict=True):
            qty = int(order[k, s])
            ref = f"po-{h}-{k}-{s}"
            self.supplier_pipeline[k, s] += qty
            self.arrivals.setdefault(h + lead, []).append(("supplier", k, s, qty, ref, None))
            events.append(
                (
                    "shipments",
                    {
                        "event_id": f"po-exp-{ref}",
                        "ts": self.ts(h, 59),
                        "sku": self.skus[k],
                        "site": self.sites[s],
                        "type": "inbound_expected",
                        "qty": qty,
                        "eta": self.ts(h + lead),
                        "shipment_id": ref,
                    },
                )
            )
        for k, sku in enumerate(self.skus):
            for s, site in enumerate(self.sites):
                events.append(
                    (
                        "inventory",
                        {
                            "event_id": f"count-{h}-{k}-{s}",
                            "ts": self.ts(h, 59),
                            "sku": sku,
                            "site": site,
                            "type": "snapshot",
                            "on_hand": int(self.on_hand[k, s]),
                        },
                    )
                )


def run_without_transfers(scenario: Scenario, network: Network) -> Kpis:
    """The `none` baseline: the same world and demand, no proposals executed."""
    sim = Simulation(scenario, network)
    sim.initial_events()
    while not sim.done:
        sim.advance_hour()
    return sim.kpis


class SimulatorFeed:
    """Drives a flow from a Simulation in lockstep, closing the loop through its outputs.

    `pull` is a PullSource callable: it sends the next simulated hour only once the flow has
    accounted for every event already sent (a StepOutput or a dead letter each), then feeds
    the proposals those events caused back into the world as executed transfers.
    """

    def __init__(
        self,
        sim: Simulation,
        topic_prefix: str,
        on_day: Callable[[int, Kpis], None] | None = None,
    ) -> None:
        self.sim = sim
        self.topic_prefix = topic_prefix
        self.sent = 0
        self.accounted = 0
        self.proposals: list[Proposal] = []
        self._unfed: list[Proposal] = []
        self._opened = False
        self._offset = 0
        self._on_day = on_day

    def on_step_outputs(self, items: list[tuple[str, StepOutput]]) -> None:
        for _, output in items:
            self.accounted += 1
            self._unfed.extend(output.proposals)
            self.proposals.extend(output.proposals)

    def on_dead_letters(self, items: list[DeadLetter]) -> None:
        self.accounted += len(items)

    def _raw(self, events: list[tuple[str, dict[str, Any]]]) -> list[RawMessage]:
        batch = []
        for kind, body in events:
            batch.append(
                RawMessage(
                    topic=self.topic_prefix + kind,
                    partition=0,
                    offset=self._offset,
                    key=body["sku"].encode(),
                    value=orjson.dumps(body),
                    received_at_ms=int(body["ts"]) if isinstance(body["ts"], int) else 0,
                )
            )
            self._offset += 1
        self.sent += len(batch)
        return batch

    def pull(self) -> list[RawMessage] | None:
        if self.accounted < self.sent:
            return []
        if not self._opened:
            self._opened = True
            return self._raw(self.sim.initial_events())
        if self.sim.done:
            return None
        self.sim.accept(self._unfed)
        self._unfed = []
        events = self.sim.advance_hour()
        if self._on_day is not None and self.sim.hour % 24 == 0:
            self._on_day(self.sim.hour // 24, self.sim.kpis)
        return self._raw(events)
