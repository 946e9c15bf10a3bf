"""Recovery snapshots written by an earlier version load in this one."""

from __future__ import annotations

import pickle

import pytest

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
    assert old.recent_event_ids == fresh.recent_event_ids


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
