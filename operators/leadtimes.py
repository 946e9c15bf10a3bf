"""Lanes' lead times learned from the transfers that arrive on them, and each site's supplier
delay from the deliveries that arrive after their ETA.

A network file says how long each lane takes; real lanes drift (a carrier changes its
round, a route congests). Every transfer the engine sees received says what its lane took
(`StepOutput.lead_times`); the board folds them per lane and keeps the network the planner
plans with: a lane whose learned lead (a high quantile of its recent transfers) runs longer
than its configured one by more than the tolerance is planned with the learned lead.

The board belongs to a process, not to a SKU: it is folded after each batch of steps (by
`operators.replay` and by the flow's `lead_times` sink), so decisions within a batch see the
board as the batch began, in the simulator as in the flow. It starts from the network file
after a restart and learns again within `min_samples` transfers per lane; with several
processes each learns from the transfers of the SKUs it holds.

Supplier deliveries the same way, per receiving site: how late each `inbound_received` came
against its `inbound_expected` ETA; a site whose delay quantile exceeds the tolerance has
its deliveries counted on that much after their ETAs (`Site.supplier_delay_hours`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from river import stats

from state.config import Lane, LeadTimeLearning, Network
from state.records import LeadTime, SupplierDelay


@dataclass(frozen=True, slots=True)
class LaneLead:
    """One lane's lead time as the board sees it: configured, learned (None until enough
    transfers arrived) and the one the planner uses."""

    lane_id: str
    configured_hours: float
    learned_hours: float | None
    planned_hours: float
    samples: int


@dataclass(frozen=True, slots=True)
class SiteDelay:
    """One site's supplier delay: learned (None until enough deliveries arrived) and the one
    the planner counts deliveries with (0: on time)."""

    site_id: str
    learned_hours: float | None
    planned_hours: float
    samples: int


@dataclass(slots=True)
class _Observed:
    quantile: Any  # river.stats.RollingQuantile over the last `window` observations
    samples: int = 0


class LeadTimeBoard:
    """Per process: what each lane's transfers took, and the network to plan with."""

    def __init__(self, network: Network) -> None:
        self.configured = network
        self.settings: LeadTimeLearning = network.lead_times
        # The network the planner uses: the configured one with learned leads put in.
        self.network = network
        self._lanes: dict[tuple[str, str], _Observed] = {}
        self._sites: dict[str, _Observed] = {}

    def _record(self, records: dict[Any, _Observed], key: Any, hours: float) -> None:
        record = records.get(key)
        if record is None:
            window = self.settings.window
            record = _Observed(stats.RollingQuantile(self.settings.quantile, window))
            records[key] = record
        record.quantile.update(hours)
        record.samples += 1

    def _learned(self, record: _Observed | None) -> float | None:
        if record is None or record.samples < self.settings.min_samples:
            return None
        return float(record.quantile.get())

    def learn(self, observations: Iterable[LeadTime]) -> list[LaneLead]:
        """Fold received transfers in; each touched lane's lead after them."""
        touched: dict[tuple[str, str], None] = {}
        for seen in observations:
            key = (seen.from_site, seen.to_site)
            if key not in self.configured.lanes:
                continue  # a transfer on a lane the network does not have: nothing to plan
            self._record(self._lanes, key, seen.hours)
            touched[key] = None
        leads = [self.lead(key) for key in touched]
        changed = {
            key: lead.planned_hours
            for key, lead in zip(touched, leads, strict=True)
            if lead.planned_hours != self.network.lanes[key].lead_hours
        }
        if changed:
            self.network = _with_leads(self.network, changed)
        return leads

    def lead(self, key: tuple[str, str]) -> LaneLead:
        lane = self.configured.lanes[key]
        record = self._lanes.get(key)
        samples = record.samples if record is not None else 0
        learned = self._learned(record)
        return LaneLead(
            lane.lane_id, lane.lead_hours, learned, self.planned(lane, learned), samples
        )

    def planned(self, lane: Lane, learned: float | None) -> float:
        """The learned lead, rounded up to a tenth of an hour, where it exceeds the
        configured one by more than the tolerance; else the configured one."""
        if learned is None or learned <= lane.lead_hours + self.settings.tolerance_hours:
            return lane.lead_hours
        return _tenth_up(learned)

    def leads(self) -> list[LaneLead]:
        """Every lane of the network, for metrics."""
        return [self.lead(key) for key in self.configured.lanes]

    def learn_delays(self, observations: Iterable[SupplierDelay]) -> list[SiteDelay]:
        """Fold received supplier deliveries in; each touched site's delay after them."""
        touched: dict[str, None] = {}
        for seen in observations:
            if seen.site in self.configured.sites:
                self._record(self._sites, seen.site, seen.hours)
                touched[seen.site] = None
        delays = [self.delay(site) for site in touched]
        changed = {
            d.site_id: d.planned_hours
            for d in delays
            if d.planned_hours != self.network.sites[d.site_id].supplier_delay_hours
        }
        if changed:
            self.network = _with_delays(self.network, changed)
        return delays

    def delay(self, site_id: str) -> SiteDelay:
        """The learned delay, rounded up to a tenth of an hour, where it exceeds the
        tolerance; else 0 (deliveries on time or early are counted from their ETAs)."""
        record = self._sites.get(site_id)
        learned = self._learned(record)
        planned = 0.0
        if learned is not None and learned > self.settings.tolerance_hours:
            planned = _tenth_up(learned)
        return SiteDelay(site_id, learned, planned, record.samples if record else 0)

    def delays(self) -> list[SiteDelay]:
        return [self.delay(site_id) for site_id in self.configured.sites]


def _with_leads(network: Network, leads: dict[tuple[str, str], float]) -> Network:
    """The network with those lanes' lead times replaced (its lane indexes rebuilt)."""
    lanes = dict(network.lanes)
    for key, hours in leads.items():
        lanes[key] = replace(lanes[key], lead_hours=hours)
    return replace(network, lanes=lanes, _into={}, _from={})


def _with_delays(network: Network, delays: dict[str, float]) -> Network:
    """The network with those sites' supplier delays replaced."""
    sites = dict(network.sites)
    for site_id, hours in delays.items():
        sites[site_id] = replace(sites[site_id], supplier_delay_hours=hours)
    return replace(network, sites=sites, _into={}, _from={})


def _tenth_up(hours: float) -> float:
    """Hours rounded up to a tenth (a plan never counts on less than was learned; the
    inner round keeps 12.0 from becoming 12.1 through float error)."""
    return math.ceil(round(hours * 10.0, 6)) / 10.0
