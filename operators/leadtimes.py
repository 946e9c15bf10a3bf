"""Lanes' lead times learned from the transfers that arrive on them.

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
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from river import stats

from state.config import Lane, LeadTimeLearning, Network
from state.records import LeadTime


@dataclass(frozen=True, slots=True)
class LaneLead:
    """One lane's lead time as the board sees it: configured, learned (None until enough
    transfers arrived) and the one the planner uses."""

    lane_id: str
    configured_hours: float
    learned_hours: float | None
    planned_hours: float
    samples: int


@dataclass(slots=True)
class _LaneRecord:
    quantile: Any  # river.stats.RollingQuantile over the last `window` transfers
    samples: int = 0


class LeadTimeBoard:
    """Per process: what each lane's transfers took, and the network to plan with."""

    def __init__(self, network: Network) -> None:
        self.configured = network
        self.settings: LeadTimeLearning = network.lead_times
        # The network the planner uses: the configured one with learned leads put in.
        self.network = network
        self._lanes: dict[tuple[str, str], _LaneRecord] = {}

    def learn(self, observations: Iterable[LeadTime]) -> list[LaneLead]:
        """Fold received transfers in; each touched lane's lead after them."""
        touched: dict[tuple[str, str], None] = {}
        for seen in observations:
            key = (seen.from_site, seen.to_site)
            if key not in self.configured.lanes:
                continue  # a transfer on a lane the network does not have: nothing to plan
            record = self._lanes.get(key)
            if record is None:
                window = self.settings.window
                record = _LaneRecord(stats.RollingQuantile(self.settings.quantile, window))
                self._lanes[key] = record
            record.quantile.update(seen.hours)
            record.samples += 1
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
        learned = None
        if record is not None and samples >= self.settings.min_samples:
            learned = float(record.quantile.get())
        return LaneLead(
            lane.lane_id, lane.lead_hours, learned, self.planned(lane, learned), samples
        )

    def planned(self, lane: Lane, learned: float | None) -> float:
        """The learned lead, rounded up to a tenth of an hour, where it exceeds the
        configured one by more than the tolerance; else the configured one."""
        if learned is None or learned <= lane.lead_hours + self.settings.tolerance_hours:
            return lane.lead_hours
        return math.ceil(round(learned * 10.0, 6)) / 10.0

    def leads(self) -> list[LaneLead]:
        """Every lane of the network, for metrics and the console."""
        return [self.lead(key) for key in self.configured.lanes]


def _with_leads(network: Network, leads: dict[tuple[str, str], float]) -> Network:
    """The network with those lanes' lead times replaced (its lane indexes rebuilt)."""
    lanes = dict(network.lanes)
    for key, hours in leads.items():
        lanes[key] = replace(lanes[key], lead_hours=hours)
    return replace(network, lanes=lanes, _into={}, _from={})
