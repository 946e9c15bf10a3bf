"""operators.tally: a batch of step outputs counted for the metrics in one pass."""

from __future__ import annotations

from operators.tally import tally_outputs
from state.records import DecisionRecord, Finding, Outcome, StepOutput


def _decision(outcome: Outcome, reason: str, shadow: bool = False) -> DecisionRecord:
    return DecisionRecord("SKU", "A", 0, outcome, reason, "", "v1", "e", shadow=shadow)


def _finding(kind: str) -> Finding:
    return Finding(kind, "SKU", "A", 0, 1.0, "test", (), ("e",))


def test_a_batch_is_counted_as_its_outputs_one_by_one() -> None:
    suppressed = _decision(Outcome.SUPPRESSED, "no_net_benefit")
    released = _decision(Outcome.RESERVATION_RELEASED, "expired")
    outputs = [
        ("SKU", StepOutput("e1", event_ts_ms=10_000, new_key=True)),
        ("SKU", StepOutput("e1", duplicate=True, event_ts_ms=10_000, findings=(_finding("x"),))),
        ("SKU", StepOutput("e2", late=True, event_ts_ms=20_000, decisions=(suppressed,))),
        (
            "SKU",
            StepOutput(
                "e3",
                event_ts_ms=99_000,
                decisions=(suppressed, released, _decision(Outcome.SUPPRESSED, "x", True)),
                findings=(_finding("silent_site"), _finding("silent_site")),
            ),
        ),
    ]
    tally = tally_outputs(outputs, now_s=30.0)
    assert (tally.duplicates, tally.new_keys, tally.late, tally.released) == (1, 1, 1, 1)
    assert tally.decisions == {
        (Outcome.SUPPRESSED, "no_net_benefit"): 2,
        (Outcome.RESERVATION_RELEASED, "expired"): 1,
    }  # the shadow record left out
    assert tally.findings == {"silent_site": 2}  # a duplicate's output counts as one only
    assert tally.lags_s == [20.0, 10.0, 0.0]  # never below zero; none for the duplicate
    assert tally.reserved == 0
