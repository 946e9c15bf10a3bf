"""The flow's sink for received transfers' lead times: folds them into the process's
`LeadTimeBoard` (which the planner reads) and exports each lane's lead as metrics."""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from adapters import metrics
from operators.leadtimes import LeadTimeBoard
from state.records import LeadTime


class _BoardPartition(StatelessSinkPartition[LeadTime]):
    def __init__(self, board: LeadTimeBoard) -> None:
        self._board = board

    def write_batch(self, items: list[LeadTime]) -> None:
        metrics.record_lane_leads(self._board.learn(items))


class LeadTimeSink(DynamicSink[LeadTime]):
    """Every worker folds the transfers its own SKUs received into the one board of its
    process (workers are threads of it)."""

    def __init__(self, board: LeadTimeBoard) -> None:
        self._board = board
        metrics.record_lane_leads(board.leads())  # configured leads, before any transfer

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _BoardPartition:
        return _BoardPartition(self._board)
