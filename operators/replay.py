"""The decision core outside a dataflow: every event through `engine.step`, then the batch's
requests through negotiation, as the flow's two stateful stages do.

The simulator, the reference run, the signal bench and `stockshift compare` all replay
through this one loop, so none of them can forget negotiation (lane capacity and storage)
or do it in another order than the flow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from operators.engine import DecisionContext, step
from operators.lanes import NegotiationOutcome, ReceivingState, negotiate_all, receiving_items
from state.config import Network
from state.records import Event, Proposal, StepOutput
from state.sku import SkuState


@dataclass(frozen=True, slots=True)
class ReplayedBatch:
    """What one batch of events caused: one StepOutput per event, in order, and the
    negotiation outcome of every proposal they made."""

    outputs: tuple[StepOutput, ...]
    negotiated: tuple[NegotiationOutcome, ...]

    @property
    def granted(self) -> list[Proposal]:
        """The proposals as negotiation granted them (maybe fewer units): what the flow
        publishes."""
        return [o.proposal for o in self.negotiated if o.proposal is not None]


@dataclass(slots=True)
class Replay:
    """Per-SKU and per-receiving-site state across batches. `network` is the one
    negotiation is told about (the engine's is in `ctx`)."""

    ctx: DecisionContext
    network: Network
    states: dict[str, SkuState] = field(default_factory=dict)
    receiving: dict[str, ReceivingState] = field(default_factory=dict)

    @classmethod
    def of(cls, ctx: DecisionContext) -> Replay:
        return cls(ctx, ctx.network)

    def batch(self, events: Iterable[Event]) -> ReplayedBatch:
        """Decide every event, then negotiate the batch's requests together (the flow's
        negotiation stage takes each receiving site's items of an epoch as one batch)."""
        outputs: list[StepOutput] = []
        for event in events:
            self.states[event.sku], output = step(self.states.get(event.sku), event, self.ctx)
            outputs.append(output)
        if self.ctx.lead_times is not None:  # as the flow's sink does after the SKU step
            board = self.ctx.lead_times
            board.learn(seen for output in outputs for seen in output.lead_times)
            board.learn_delays(seen for output in outputs for seen in output.supplier_delays)
        items = [item for output in outputs for item in receiving_items(output)]
        negotiated = negotiate_all(self.receiving, items, self.network)
        return ReplayedBatch(tuple(outputs), tuple(negotiated))
