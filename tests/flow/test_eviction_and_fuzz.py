"""Idle SKUs leave memory; arbitrary input through the real flow is always accounted for."""

from __future__ import annotations

import time
from dataclasses import replace

import orjson
import pytest
from bytewax.testing import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import metrics
from adapters.lab.memory import ListSink, PullSource
from adapters.settings import Settings
from flows import pipeline
from flows.pipeline import Sinks, build
from state.records import EventType, ForecastFigures, Outcome, RawMessage, StepOutput
from tests.support.helpers import event, policy, raw_of, run_raw, two_store_network, warm_history


def sinks() -> Sinks:
    return Sinks(ListSink(), ListSink(), ListSink(), ListSink())


def _outputs_by_event(idle_s: float, source: PullSource) -> dict[str, StepOutput]:
    """Each event's output from the flow on the two-store network, SKUs idle after `idle_s`."""
    out = sinks()
    settings = replace(Settings(), idle_eviction_s=idle_s)
    run_main(
        build(settings, source=source, sinks=out, network=two_store_network(), policy=policy())
    )
    return {o.event_id: o for _, o in out.step_outputs.items}  # type: ignore[union-attr]


def test_an_idle_sku_is_evicted_and_one_with_a_reservation_is_kept() -> None:
    # SKU-1 ends with an open proposal (a reservation); SKU-2 is plain history.
    first = [
        raw_of(e, i)
        for i, e in enumerate(
            [*warm_history(), event("count-B", EventType.SNAPSHOT, 30.2, "B", 20)]
        )
    ]
    first += [raw_of(e, 1000 + i) for i, e in enumerate(warm_history(5, sku="SKU-2"))]
    later = [
        raw_of(event("late-1", EventType.SALE, 31, "A", 1), 5000),
        raw_of(event("late-2", EventType.SALE, 31, "A", 1, sku="SKU-2"), 5001),
    ]
    batches = [first, later]
    resume_at = [0.0]

    def pull() -> list[RawMessage] | None:
        if not batches:
            return None
        if len(batches) == 2:
            resume_at[0] = time.monotonic() + 0.6  # then stay quiet past the idle timeout
            return batches.pop(0)
        if time.monotonic() < resume_at[0]:
            time.sleep(0.01)
            return []
        return batches.pop(0)

    outputs = _outputs_by_event(0.2, PullSource(pull))
    assert outputs["late-2"].new_key  # SKU-2 was evicted and starts afresh
    assert not outputs["late-1"].new_key  # SKU-1 still held its reservation


def _timed_pull(plan: list[tuple[float, list[RawMessage]]]) -> PullSource:
    """Hands over each batch once its second (from the first pull) has come."""
    plan = list(plan)
    started: list[float] = []

    def pull() -> list[RawMessage] | None:
        if not plan:
            return None
        started[:] = started or [time.monotonic()]
        if time.monotonic() - started[0] < plan[0][0]:
            time.sleep(0.01)
            return []
        return plan.pop(0)[1]

    return PullSource(pull)


def test_a_sku_is_idle_from_its_last_event_not_its_first() -> None:
    """Idle 1 s: touched at 0 and 0.6 s, still held at 1.3 s; after 1.5 s quiet it has
    left (a given source carries no clock: the sweeps ride on the arriving batches, and
    the one at 1.3 s found it busy, the one at 2.8 s idle)."""
    sales = [event(f"s{i}", EventType.SALE, 31 + i, "A", 1, sku="SKU-2") for i in range(4)]
    plan = [
        (0.0, [raw_of(e, i) for i, e in enumerate(warm_history(5, sku="SKU-2"))]),
        (0.6, [raw_of(sales[0], 100)]),
        (1.3, [raw_of(sales[1], 101)]),
        (2.8, [raw_of(sales[2], 102)]),
    ]
    outputs = _outputs_by_event(1.0, _timed_pull(plan))
    assert not outputs["s0"].new_key and not outputs["s1"].new_key  # held past 1 s
    assert outputs["s2"].new_key  # 1.5 s after its last event it was evicted


junk = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda d: orjson.dumps(d),
        st.dictionaries(
            st.sampled_from(["event_id", "ts", "sku", "site", "qty", "type", "on_hand", "delta"]),
            st.one_of(
                st.integers(-(10**12), 10**13),
                st.text(max_size=12),
                st.none(),
                st.floats(allow_nan=False, allow_infinity=False),
            ),
            max_size=8,
        ),
    ),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.sampled_from(range(60)).map(lambda i: ("ok", i)), junk.map(lambda b: ("junk", b))
        ),
        max_size=120,
    )
)
def test_any_mix_of_valid_and_broken_input_is_accounted_for(items) -> None:
    valid = [*warm_history(5), event("count-B", EventType.SNAPSHOT, 5.2, "B", 2)]
    stream = []
    for n, (kind, value) in enumerate(items):
        if kind == "ok":
            stream.append(raw_of(valid[value % len(valid)], n))
        else:
            stream.append(RawMessage("stockshift.pos", 0, n, b"k", value, 0))
    out = run_raw(stream, two_store_network(), policy(signal_checks=True), sinks())
    # Every message ends up processed (one StepOutput) or dead-lettered, never both, never lost.
    assert len(out.step_outputs.items) + len(out.dead_letters.items) == len(stream)  # type: ignore[union-attr]
    for letter in out.dead_letters.items:
        assert letter.reason and letter.error
    for proposal in out.proposals.items:
        assert proposal.qty >= 1 and proposal.evidence.net_benefit >= 0


def test_an_event_whose_step_raises_is_a_dead_letter_and_the_flow_goes_on() -> None:
    """A policy built past its loader (which refuses a forecast error of 0) makes the step
    divide by zero when it weighs SKU-1's forecast: a defect, found in the flow as any would
    be. Each of SKU-1's events from then on is a `step_failed` letter naming the error;
    SKU-2, the same events but no forecast, is decided as before and proposes."""
    forecast = ForecastFigures(24.0, None, None)
    events = [
        *warm_history(),
        *warm_history(sku="SKU-2"),
        event("forecast-B", EventType.FORECAST, 30.1, "B", 0, forecast=forecast),
        event("sale-1", EventType.SALE, 30.2, "B", 1),
        event("count-1", EventType.SNAPSHOT, 30.3, "B", 20),
        event("count-2", EventType.SNAPSHOT, 30.3, "B", 20, sku="SKU-2"),
    ]
    stream = [raw_of(e, i) for i, e in enumerate(events)]
    out = run_raw(stream, two_store_network(), policy(forecast_error_cv=0.0), sinks())
    letters = {orjson.loads(d.payload)["event_id"]: d for d in out.dead_letters.items}  # type: ignore[union-attr]
    assert sorted(letters) == ["count-1", "sale-1"]
    for letter in letters.values():
        assert letter.reason == "step_failed"
        assert letter.error.startswith("the decision step raised ZeroDivisionError")
    outputs = [o for _, o in out.step_outputs.items]  # type: ignore[union-attr]
    assert len(outputs) == len(stream)  # one each, the letters' events included
    assert [o.event_id for o in outputs if o.refused is not None] == ["sale-1", "count-1"]
    assert [p.sku for p in out.proposals.items] == ["SKU-2"]  # type: ignore[union-attr]


def test_a_proposal_whose_negotiation_raises_is_dropped_with_the_reason_and_the_flow_goes_on() -> (
    None
):
    """A lane built past its loader (a cut-off hour of a type the loader refuses) makes
    negotiation raise on every proposal that lane carries: each is answered by a
    `negotiation_failed` record, counted, and not published; events after it are decided."""
    network = two_store_network(capacity_per_day=30)
    lanes = {pair: replace(lane, cutoff_hour=1j) for pair, lane in network.lanes.items()}
    network = replace(network, lanes=lanes)
    events = [
        *warm_history(),
        *warm_history(sku="SKU-2"),
        event("count-1", EventType.SNAPSHOT, 30.2, "B", 20),
        event("count-2", EventType.SNAPSHOT, 30.2, "B", 20, sku="SKU-2"),
        event("sale-after", EventType.SALE, 30.4, "A", 1),
    ]
    stream = [raw_of(e, i) for i, e in enumerate(events)]
    failures = metrics.NEGOTIATION_FAILURES.labels(item="proposal")
    before = failures._value.get()
    out = run_raw(stream, network, policy(), sinks())
    assert out.proposals.items == []  # type: ignore[union-attr]
    failed = [d for d in out.decisions.items if d.reason == "negotiation_failed"]  # type: ignore[union-attr]
    assert sorted(d.sku for d in failed) == ["SKU-1", "SKU-2"]
    for record in failed:
        assert record.outcome is Outcome.SUPPRESSED
        assert "negotiation raised TypeError" in record.detail
    assert failures._value.get() - before == 2
    assert len(out.step_outputs.items) == len(stream)  # type: ignore[union-attr]
    assert out.dead_letters.items == []  # type: ignore[union-attr]


def test_a_failed_batch_order_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """The flow's handler told no item (ordering the batch raised): counted as
    `batch_order`, logged once with its traceback however often it recurs."""
    failures = metrics.NEGOTIATION_FAILURES.labels(item="batch_order")
    before = failures._value.get()
    failure = TypeError("unsupported operand type(s) for /: 'str' and 'int'")
    with caplog.at_level("ERROR"):
        for _ in range(3):
            pipeline._negotiation_failed(None, failure)
    assert failures._value.get() - before == 3
    logged = [r for r in caplog.records if "arrival order" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert logged[0].item == "batch_order"  # type: ignore[attr-defined]
