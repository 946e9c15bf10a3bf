"""What a batch of step outputs adds to the flow's metrics, tallied in one pass.

The metrics adapter increments each Prometheus child once per batch by the batch's total:
an increment takes the child's lock, and counting output by output (a function call and a
few locks per event) took 0.69 us an event on the bench stream, more than all the flow's
other stateless steps together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from state.records import Outcome, StepOutput


@dataclass(slots=True)
class OutputTally:
    """A batch's counts; an output of a duplicate event counts as a duplicate only."""

    duplicates: int = 0
    new_keys: int = 0
    late: int = 0
    # Reservations made (one a proposal) and released by the batch's events.
    reserved: int = 0
    released: int = 0
    # Decision records (shadow ones left out) by outcome and reason.
    decisions: dict[tuple[Outcome, str], int] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)
    # Wall clock minus event time, seconds (never below 0), one per output counted.
    lags_s: list[float] = field(default_factory=list)


def tally_outputs(outputs: list[tuple[str, StepOutput]], now_s: float) -> OutputTally:
    """The counts of a batch of keyed step outputs, at wall-clock time `now_s`."""
    tally = OutputTally()
    decisions, findings, lags = tally.decisions, tally.findings, tally.lags_s
    for _, output in outputs:
        if output.duplicate:
            tally.duplicates += 1
            continue
        lags.append(max(now_s - output.event_ts_ms / 1000, 0.0))
        if output.new_key:
            tally.new_keys += 1
        if output.late:
            tally.late += 1
        tally.reserved += len(output.proposals)
        for decision in output.decisions:
            if decision.shadow:
                continue
            key = (decision.outcome, decision.reason)
            decisions[key] = decisions.get(key, 0) + 1
            if decision.outcome == Outcome.RESERVATION_RELEASED:
                tally.released += 1
        for finding in output.findings:
            findings[finding.kind] = findings.get(finding.kind, 0) + 1
    return tally
