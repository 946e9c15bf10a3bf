"""Recovery snapshots as plain values (operators.snapshot): the same state back, snapshots
of earlier versions still load, and a schema change cannot go unrecorded."""

from __future__ import annotations

import pickle
from dataclasses import fields, is_dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import snapshot
from operators.drift import PoissonCusum
from operators.engine import DecisionContext, step
from state.records import Event, EventType, ForecastFigures
from state.sku import SkuState, StateVersionError
from tests.support.helpers import e2e_trigger, event, policy, two_store_network, warm_history

CTX = DecisionContext.build(
    two_store_network(),
    policy(signal_checks=True),
    shadow_policy=policy(version="shadow-1", cover_hours=72.0, signal_checks=True),
    shadow_share=1.0,
)


def _run(events: list[Event]) -> SkuState:
    state = None
    for e in events:
        state, _ = step(state, e, CTX)
    assert state is not None
    return state


def _rich_state() -> SkuState:
    """Every kind of record: sites with demand, signals and a drift detector (weeks of
    sales), a forecast, a supplier shipment on its way, a reservation, a shadow copy."""
    events = [
        event("snap-A", EventType.SNAPSHOT, 0, "A", 3000),
        event("snap-B", EventType.SNAPSHOT, 0, "B", 400),
        *(e for e in warm_history(hours=24 * 14) if e.type is EventType.SALE),
        event("fc-B", EventType.FORECAST, 336.1, "B", 0, forecast=ForecastFigures(20.0, 0.3)),
        event("ship-1", EventType.INBOUND_EXPECTED, 336.2, "A", 40, eta_ms=0, shipment_id="S1"),
        event("count-B", EventType.SNAPSHOT, 336.3, "B", 4),
        e2e_trigger("damage-B", 336.4),
    ]
    return _run(events)


def _view(value: Any) -> Any:
    """A record as nested plain values, the drift detector by its state (it has no `==`);
    fields kept out of snapshots (transient) left out."""
    if isinstance(value, PoissonCusum):
        return value.__getstate__()
    if is_dataclass(value):
        return {
            f.name: _view(getattr(value, f.name))
            for f in fields(value)
            if not f.metadata.get("transient")
        }
    if isinstance(value, dict):
        return {k: _view(v) for k, v in value.items()}
    return value


def _same(a: SkuState | None, b: SkuState | None) -> bool:
    return _view(a) == _view(b)


def _by_schema(record: str, value: Any) -> tuple[Any, ...]:
    """A record's snapshot tuple built from the schema by field name: what the encoder
    writes out field by field must be this."""
    nested = {
        "sites": lambda v: {k: _by_schema("SiteState", s) for k, s in v.items()},
        "reservations": lambda v: {k: _by_schema("Reservation", r) for k, r in v.items()},
        "shadow": lambda v: _by_schema("SkuState", v),
        "inbound": lambda v: {k: _by_schema("Inbound", i) for k, i in v.items()},
        "demand": lambda v: _by_schema("Demand", v),
        "signals": lambda v: _by_schema("Signals", v),
        "forecast": lambda v: _by_schema("SiteForecast", v),
        "drift": snapshot._detector,
    }
    names = dict(snapshot.current_schema())[record]
    values = [getattr(value, name) for name in names]
    return tuple(
        nested[name](v) if name in nested and v is not None else v
        for name, v in zip(names, values, strict=True)
    )


def test_the_snapshot_writes_each_record_in_its_schemas_field_order() -> None:
    state = _rich_state()
    assert snapshot._sku(state) == _by_schema("SkuState", state)


def test_a_rich_state_round_trips() -> None:
    state = _rich_state()
    site = state.sites["A"]
    assert site.signals is not None and site.signals.drift is not None
    assert state.sites["B"].forecast is not None and site.inbound and state.reservations
    assert state.shadow is not None
    assert _same(snapshot.decode(snapshot.encode(state)), state)


def test_the_snapshot_holds_plain_values_only() -> None:
    """No record object is left for pickle to write by class and field names."""

    def plain(value: Any) -> bool:
        if isinstance(value, tuple | list):
            return all(plain(v) for v in value)
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        return value is None or isinstance(value, bool | int | float | str | bytes | bytearray)

    data = snapshot.encode(_rich_state())
    assert data.startswith(snapshot.MAGIC)
    assert plain(pickle.loads(data[len(snapshot.MAGIC) + 8 :]))


def test_a_snapshot_pickled_whole_by_an_earlier_version_loads() -> None:
    state = _rich_state()
    assert _same(snapshot.decode(pickle.dumps(state)), state)
    assert snapshot.decode(snapshot.encode(None)) is None


def test_the_current_schema_is_recorded_so_its_snapshots_load_after_the_next_change() -> None:
    """Changing a record's fields changes the schema: add the new one to PAST_SCHEMAS and
    keep the old ones, or snapshots written today fail to load tomorrow."""
    assert snapshot.current_schema() in snapshot.PAST_SCHEMAS


def test_a_snapshot_under_an_older_schema_loads_by_field_name() -> None:
    """As if `Signals.quiet_since_ms` were still `last_sale_ms`, `SiteState` had no
    `unexplained_qty`, and `Demand` a field dropped since."""
    schema = dict(snapshot.current_schema())
    signals = tuple("last_sale_ms" if n == "quiet_since_ms" else n for n in schema["Signals"])
    site = tuple(n for n in schema["SiteState"] if n != "unexplained_qty")
    older = {**schema, "Signals": signals, "SiteState": site, "Demand": (*schema["Demand"], "old")}
    state = _rich_state()
    values = pickle.loads(snapshot.encode(state)[len(snapshot.MAGIC) + 8 :])
    sites = values[1]
    at = schema["SiteState"].index("unexplained_qty")
    for name, site_values in sites.items():
        trimmed = site_values[:at] + site_values[at + 1 :]
        demand_at = site.index("demand")
        sites[name] = (
            *trimmed[:demand_at],
            (*trimmed[demand_at], 99),
            *trimmed[demand_at + 1 :],
        )
    shadow_at = schema["SkuState"].index("shadow")  # left out: its sites would need the same
    loaded = snapshot._Reader(older).sku((*values[:1], sites, *values[2:shadow_at], None))
    for name, original in state.sites.items():
        assert loaded.sites[name].unexplained_qty == 0  # added since: its default
        assert loaded.sites[name].demand == original.demand
        if original.signals is not None:
            assert loaded.sites[name].signals is not None
            assert loaded.sites[name].signals.quiet_since_ms == original.signals.quiet_since_ms


def test_a_drift_detector_written_by_name_under_the_previous_schema_loads() -> None:
    """Until December 2026 the detector wrote its own dict; the schemas of then have no
    record for it, and such snapshots load to the same detector."""
    previous = snapshot._WITH_DETECTOR_DICT[-1]
    assert "PoissonCusum" not in dict(previous)
    schema = dict(previous)
    drift_at = schema["Signals"].index("drift")
    signals_at = schema["SiteState"].index("signals")
    shadow_at = schema["SkuState"].index("shadow")

    def as_previous(values: tuple[Any, ...], sku: SkuState) -> tuple[Any, ...]:
        for name, site_values in values[1].items():
            site = list(site_values[: len(schema["SiteState"])])  # no fields added since
            signals = sku.sites[name].signals
            if signals is not None:
                written = list(site_values[signals_at][: len(schema["Signals"])])
                if signals.drift is not None:
                    written[drift_at] = signals.drift.__getstate__()
                site[signals_at] = tuple(written)
            values[1][name] = tuple(site)
        if sku.shadow is not None:
            values = (*values[:shadow_at], as_previous(values[shadow_at], sku.shadow))
        return values

    state = _rich_state()
    assert state.shadow is not None and state.sites["A"].signals is not None
    values = pickle.loads(snapshot.encode(state)[len(snapshot.MAGIC) + 8 :])
    data = (
        snapshot.MAGIC + snapshot.fingerprint(previous) + pickle.dumps(as_previous(values, state))
    )
    for sku in (state, state.shadow):  # fields added since take their defaults
        for site in sku.sites.values():
            site.counted_ms = -1
            if site.signals is not None:
                site.signals.feed_lag_ms = site.signals.count_shortfall = 0
    assert _same(snapshot.decode(data), state)


def test_a_detector_with_its_own_settings_keeps_them() -> None:
    state = _rich_state()
    signals = state.sites["A"].signals
    assert signals is not None
    signals.drift = PoissonCusum(threshold=5.0, up=2.0)
    loaded = snapshot.decode(snapshot.encode(state))
    assert loaded is not None and loaded.sites["A"].signals is not None
    drift = loaded.sites["A"].signals.drift
    assert drift is not None and drift.params == signals.drift.params != PoissonCusum().params
    assert _same(loaded, state)


def test_an_unknown_schema_fails_clearly() -> None:
    data = snapshot.MAGIC + b"\x00" * 8 + pickle.dumps(())
    with pytest.raises(StateVersionError, match="schema"):
        snapshot.decode(data)


_EVENT = st.tuples(
    st.sampled_from([EventType.SALE, EventType.SNAPSHOT, EventType.ADJUSTMENT, EventType.RETURN]),
    st.sampled_from(["A", "B"]),
    st.integers(min_value=-20, max_value=60),
    st.floats(min_value=0, max_value=400),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_EVENT, max_size=40))
def test_any_state_the_engine_reaches_round_trips(draws: list[Any]) -> None:
    events = [*warm_history(hours=6)]
    for n, (kind, site, qty, hour) in enumerate(sorted(draws, key=lambda d: d[3])):
        qty = abs(qty) if kind is not EventType.ADJUSTMENT else qty
        events.append(event(f"x{n}", kind, 6 + hour, site, qty))
    state = _run(events)
    assert snapshot._sku(state) == _by_schema("SkuState", state)
    assert _same(snapshot.decode(snapshot.encode(state)), state)
    restored = snapshot.decode(snapshot.encode(state))
    after = event("next", EventType.SALE, 500.0, "A", 1)
    assert _same(step(restored, after, CTX)[0], step(state, after, CTX)[0])
