"""The flow's sink for what received transfers took and how late supplier deliveries came:
folds them into the process's `LeadTimeBoard` (which the planner reads) and exports each
lane's lead and each site's supplier delay as metrics."""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from adapters import metrics
from operators.leadtimes import LeadTimeBoard
from state.records import LeadTime, SupplierDelay

Received = LeadTime | SupplierDelay


class _BoardPartition(StatelessSinkPartition[Received]):
    def __init__(self, board: LeadTimeBoard) -> None:
        self._board = board

    def write_batch(self, items: list[Received]) -> None:
        lanes = [item for item in items if isinstance(item, LeadTime)]
        sites = [item for item in items if isinstance(item, SupplierDelay)]
        if lanes:
            metrics.record_lane_leads(self._board.learn(lanes))
        if sites:
            metrics.record_supplier_delays(self._board.learn_delays(sites))


class LeadTimeSink(DynamicSink[Received]):
    """Every worker folds what its own SKUs received into the one board of its process
    (workers are threads of it)."""

    def __init__(self, board: LeadTimeBoard) -> None:
        self._board = board
        metrics.record_lane_leads(board.leads())  # configured leads, before any transfer
        metrics.record_supplier_delays(board.delays())

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _BoardPartition:
        return _BoardPartition(self._board)
