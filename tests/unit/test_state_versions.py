"""Recovery snapshots written by an earlier version load in this one."""

from __future__ import annotations

import pickle
from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.engine import step
from state.records import EventType
from state.sku import Signals, SiteState, SkuState, StateVersionError
from tests.helpers import event, warm_history
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
    assert old.recent_events == fresh.recent_events


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


def test_an_older_snapshots_event_ids_still_deduplicate() -> None:
    old = SkuState.__new__(SkuState)
    old.__setstate__((None, {"sku": "SKU-1", "recent_event_ids": {"e1": None, "e2": None}}))
    assert old.seen_before("e1", 64) and old.seen_before("e2", 64)
    assert not old.seen_before("e3", 64)


@given(st.lists(st.integers(0, 30), max_size=300), st.integers(1, 12))
def test_the_digest_ring_remembers_exactly_the_last_ids(ids: list[int], capacity: int) -> None:
    """The same answers as keeping the last `capacity` new ids themselves, oldest out."""
    state = SkuState("SKU-1")
    model: OrderedDict[str, None] = OrderedDict()
    for n in ids:
        event_id = f"event-{n}"
        expected = event_id in model
        if not expected:
            model[event_id] = None
            if len(model) > capacity:
                model.popitem(last=False)
        assert state.seen_before(event_id, capacity) is expected
    assert len(state.recent_events) <= capacity * 8
