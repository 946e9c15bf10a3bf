"""The batch histogram exports what prometheus_client's own histogram would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from adapters.metrics import BatchHistogram

BOUNDS = (0.1, 0.5, 1, 5, 30, 86400, 7 * 86400)


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The sample lines, without the `_created` series only the stock histogram has."""
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


@given(
    st.lists(
        st.lists(
            st.one_of(
                st.sampled_from([0.0, *BOUNDS]),
                st.floats(min_value=0, max_value=1e7, allow_nan=False),
            ),
            max_size=20,
        ),
        max_size=5,
    )
)
def test_batches_export_as_the_same_values_observed_one_by_one(
    batches: list[list[float]],
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("lag_seconds", "doc", BOUNDS, registry=ours)
    stock = Histogram("lag_seconds", "doc", buckets=BOUNDS, registry=theirs)
    for batch in batches:
        batched.observe_many(batch)
        for value in batch:
            stock.observe(value)
    mine, expected = _exposition(ours), _exposition(theirs)
    assert [line for line in mine if "_sum" not in line] == [
        line for line in expected if "_sum" not in line
    ]
    # The same sum, added in another order: equal up to rounding.
    assert ours.get_sample_value("lag_seconds_sum") == pytest.approx(
        theirs.get_sample_value("lag_seconds_sum"), rel=1e-12, abs=1e-12
    )


def test_events_are_counted_by_topic_and_the_type_as_it_is_written() -> None:
    from adapters import metrics
    from state.records import Event, EventType, SourceRef

    def consumed(topic: str, kind: str) -> float:
        child = metrics.EVENTS_CONSUMED.labels(topic=topic, type=kind)
        return child._value.get()  # type: ignore[no-any-return]

    topic = "counting-test.sales"
    before = consumed(topic, "sale"), consumed(topic, "return"), consumed("memory", "sale")
    events = [
        Event(f"e{n}", kind, 0, "SKU", "S01", 1, source=SourceRef(topic, 0, n))
        for n, kind in enumerate([EventType.SALE, EventType.SALE, EventType.RETURN])
    ]
    events.append(Event("e9", EventType.SALE, 0, "SKU", "S01", 1))
    metrics.count_events(events)
    metrics.count_events(events[:1])
    after = consumed(topic, "sale"), consumed(topic, "return"), consumed("memory", "sale")
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1, 1]
