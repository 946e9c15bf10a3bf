"""Recovery snapshots written by an earlier version load in this one."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.engine import step
from state.records import EventType
from state.sku import (
    Signals,
    SiteForecast,
    SiteState,
    SkuState,
    StateVersionError,
    event_digest,
)
from tests.support.helpers import event, warm_history
from tests.unit.test_engine import CTX


def test_a_snapshot_round_trips_unchanged() -> None:
    state = None
    for e in warm_history():
        state, _ = step(state, e, CTX)
    assert state is not None
    assert pickle.loads(pickle.dumps(state)) == state


def test_an_older_signals_record_loads_with_renamed_added_and_dropped_fields() -> None:
    old = Signals.__new__(Signals)
    # As version 2026.11 pickled it: `last_sale_ms` (renamed since), no `day_short` (added
    # since), and a field this version no longer has.
    old.__setstate__((None, {"sale_mean": 1.5, "last_sale_ms": 42, "retired_field": 7}))
    assert old.sale_mean == 1.5 and old.quiet_since_ms == 42
    assert old.day_short is False and old.drift is None


def test_an_older_sku_state_gets_new_fields_defaulted() -> None:
    fresh = SkuState("SKU-1")
    fields_then = {"sku": "SKU-1", "sites": {"A": SiteState(on_hand=3)}, "clock_ms": 9}
    old = SkuState.__new__(SkuState)
    old.__setstate__((None, fields_then))
    assert old.received_early is None and old.reservations == {} and old.sites["A"].on_hand == 3
    assert old.recent_seen == fresh.recent_seen


def test_a_forecast_pickled_while_its_record_was_frozen_loads() -> None:
    """Until the compiled core, `SiteForecast` was a frozen dataclass, which pickles its
    field values as a list."""
    old = SiteForecast.__new__(SiteForecast)
    old.__setstate__([0.25, 0.4])
    assert old == SiteForecast(0.25, 0.4)
    assert pickle.loads(pickle.dumps(old)) == old


def test_a_snapshot_missing_a_required_field_fails_clearly() -> None:
    with pytest.raises(StateVersionError, match=r"SkuState\.sku"):
        SkuState.__new__(SkuState).__setstate__((None, {"clock_ms": 1}))


def test_the_engine_accepts_a_restored_state() -> None:
    state = None
    for e in warm_history():
        state, _ = step(state, e, CTX)
    restored = pickle.loads(pickle.dumps(state))
    restored, out = step(restored, event("next", EventType.SALE, 31.0, "A", 1), CTX)
    assert out.event_id == "next" and restored.sites["A"].on_hand == state.sites["A"].on_hand - 1


HORIZON = 72 * 3_600_000


def test_an_older_snapshots_event_ids_still_deduplicate() -> None:
    old = SkuState.__new__(SkuState)
    old.__setstate__((None, {"sku": "SKU-1", "recent_event_ids": {"e1": None, "e2": None}}))
    assert old.seen_before("e1", 0, HORIZON, 64) and old.seen_before("e2", 0, HORIZON, 64)
    assert not old.seen_before("e3", 0, HORIZON, 64)


def test_a_digest_ring_snapshot_is_remembered_for_one_more_horizon() -> None:
    """Snapshots of 2026-11-26..12-01 kept a ring of 8-byte digests, `recent_next` its
    oldest slot; they are taken as seen at the SKU's clock."""
    ring = bytearray(event_digest("e2") + event_digest("e1"))  # e1 is the oldest (slot 1)
    clock = 1_767_225_600_000
    old = SkuState.__new__(SkuState)
    old.__setstate__(
        (None, {"sku": "S", "recent_events": ring, "recent_next": 1, "clock_ms": clock})
    )
    assert old.recent_seen[:8] == event_digest("e1")
    assert old.seen_before("e2", clock + HORIZON - 60_000, HORIZON, 64)
    assert not old.seen_before("e1", clock + HORIZON + 120_000, HORIZON, 64)


@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 10)), max_size=300),
    st.integers(1, 12),
    st.integers(1, 6),
)
def test_event_ids_are_remembered_for_the_horizon_up_to_the_cap(
    ids: list[tuple[int, int]], capacity: int, horizon_h: int
) -> None:
    """The same answers as a list of (id, time seen) whose entries count within the
    horizon, that drops expired entries from its front and its oldest entry when full;
    never more than `capacity`."""
    _same_as_the_list(ids, capacity, horizon_h, 1_800_000)  # 0-5 h between events


@given(
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 3)), min_size=150, max_size=600),
    st.integers(100, 700),
    st.integers(4, 12),
)
def test_a_busy_sku_s_ids_are_remembered_as_a_quiet_one_s(
    ids: list[tuple[int, int]], capacity: int, horizon_h: int
) -> None:
    """As above with hundreds of ids held, where a filter rules most new ids out before the
    search (`SeenFilter`, from FILTER_FROM ids), and is rebuilt as ids come and go."""
    _same_as_the_list(ids, capacity, horizon_h, 60_000)  # 0-3 min between events


def _same_as_the_list(
    ids: list[tuple[int, int]], capacity: int, horizon_h: int, step_ms: int
) -> None:
    state = SkuState("SKU-1")
    model: list[tuple[str, int]] = []
    horizon = horizon_h * 3_600_000
    now = 1_767_225_600_000
    for n, steps in ids:
        now += steps * step_ms
        event_id = f"event-{n}"
        cutoff = now // 60_000 - horizon // 60_000
        expected = any(seen_id == event_id and at >= cutoff for seen_id, at in model)
        if not expected:
            while model and model[0][1] < cutoff:
                model.pop(0)
            if len(model) >= capacity:
                model = model[len(model) - capacity + 1 :]
            model.append((event_id, now // 60_000))
        assert state.seen_before(event_id, now, horizon, capacity) is expected
        assert len(state.recent_seen) == len(model) * 12 <= capacity * 12


def test_the_seen_filter_passes_every_id_held_and_few_others() -> None:
    """`SkuState.seen_filter` rules an id out of the search only when it is not held (else a
    retried event would count twice), and lets a new id through to the search about one
    time in twenty (a SKU at a thousand stores holds 2,000 ids: 24 KB to search)."""
    state = SkuState("SKU-1")
    start = 1_767_225_600_000
    for i in range(2000):
        assert not state.seen_before(f"held-{i}", start + i * 60_000, HORIZON, 2048)
    known = state.seen_filter
    assert known is not None
    assert all(known.may_hold(event_digest(f"held-{i}")) for i in range(2000))
    passed = sum(known.may_hold(event_digest(f"new-{i}")) for i in range(20_000))
    assert 0 < passed < 20_000 * 0.08
    later = start + 2000 * 60_000
    assert all(state.seen_before(f"held-{i}", later, HORIZON, 2048) for i in range(2000))


def test_an_older_negotiation_state_loads_without_trips() -> None:
    """Negotiation snapshots from before lanes had trip costs have no `trips`."""
    from operators.lanes import ReceivingState

    old = ReceivingState.__new__(ReceivingState)
    old.__setstate__((None, {"granted": {"A->B": {0: 5}}, "occupancy": {}, "occupied": 0}))
    assert old.trips == {} and old.granted == {"A->B": {0: 5}}
    assert pickle.loads(pickle.dumps(old)) == old
