"""A warm start from history: the demand state a flow that had watched the same sales would
have, and nothing else."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.history import (
    check_events,
    read_forecasts,
    read_history,
    read_site_map,
    whole_units,
)
from operators.engine import DecisionContext, step
from operators.history import HistoryRow, history_events, hourly_split, id_within_limit
from operators.parse import MAX_ID_LEN, parse_object
from state.config import ConfigError
from state.records import Event, EventType, ForecastFigures
from tests.support.helpers import HOUR, T0, event, policy, two_store_network

NETWORK = two_store_network()
CTX = DecisionContext.build(NETWORK, policy())


def test_history_teaches_demand_as_watched_sales_would_and_nothing_else() -> None:
    """Sales at shelves that never ran empty, against the same units as history: the same
    demand estimate at every site; history moves no stock, raises no decision, and the
    site's first count stays its first."""
    sales = [event(f"s{h}{s}", EventType.SALE, h + 0.5, s, 1 + h % 3) for h in range(60)
             for s in ("A", "B")]  # fmt: skip
    watched = None
    for e in [event("cA", EventType.SNAPSHOT, 0, "A", 10_000),
              event("cB", EventType.SNAPSHOT, 0, "B", 10_000), *sales]:  # fmt: skip
        watched, _ = step(watched, e, CTX)
    warmed = None
    for e in sales:
        warmed, out = step(warmed, replace(e, type=EventType.SALE_HISTORY), CTX)
        assert not out.proposals and not out.decisions and not out.positions
    assert watched is not None and warmed is not None
    for site in ("A", "B"):
        assert warmed.sites[site].demand == watched.sites[site].demand
        assert warmed.sites[site].on_hand == 0 and warmed.sites[site].last_event_ms == -1


def test_a_warm_start_acts_on_its_first_day() -> None:
    """Cold, a count that leaves B short proposes nothing (warming up); after 60 hours of
    history, the same count proposes at once."""
    history = [event(f"h{h}{s}", EventType.SALE_HISTORY, h + 0.5, s, 1) for h in range(60)
               for s in ("A", "B")]  # fmt: skip
    counts = [event("cA", EventType.SNAPSHOT, 60.2, "A", 300),
              event("cB", EventType.SNAPSHOT, 60.3, "B", 5)]  # fmt: skip
    cold = warm = None
    cold_proposals, warm_proposals = [], []
    for e in counts:
        cold, out = step(cold, e, CTX)
        cold_proposals += out.proposals
    for e in [*history, *counts]:
        warm, out = step(warm, e, CTX)
        warm_proposals += out.proposals
    assert not cold_proposals
    assert [(p.from_site, p.to_site) for p in warm_proposals] == [("A", "B")]


@given(st.integers(0, 500), st.lists(st.floats(0, 10), min_size=24, max_size=24))
def test_a_daily_total_is_split_in_whole_units_that_add_up(qty: int, weights: list[float]) -> None:
    split = hourly_split(qty, weights)
    assert sum(split) == qty and min(split) >= 0 and len(split) == 24


def test_history_events_are_sale_history_on_the_pos_topic_in_time_order() -> None:
    rows = [HistoryRow("S", "B", T0 + 2 * HOUR, 3, daily=False),
            HistoryRow("S", "A", T0, 48, daily=True)]  # fmt: skip
    events = history_events(rows, NETWORK)
    assert sum(int(str(e["qty"])) for e in events) == 51
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    parsed = [parse_object("pos", e, frozenset(NETWORK.sites)) for e in events]
    assert all(isinstance(p, Event) and p.type is EventType.SALE_HISTORY for p in parsed)


def test_a_history_naming_sites_the_network_lacks_fails_listing_them(tmp_path: Path) -> None:
    path = tmp_path / "sales.csv"
    path.write_text("date,sku,site,qty\n2026-01-01,S,A,2\n2026-01-01,S,CA_1,4\n")
    with pytest.raises(ConfigError, match=r"1 sites not in the network: CA_1"):
        read_history(path, NETWORK)
    path.write_text("date,sku,site,qty\n2026-01-01,S,A,2\n")
    (row,) = read_history(path, NETWORK)
    assert (row.site, row.qty, row.daily, row.start_ms) == ("A", 2, True, T0)


def test_a_site_map_lets_a_file_with_store_ids_warm_the_network(tmp_path: Path) -> None:

    path = tmp_path / "sales.csv"
    path.write_text("date,sku,site,qty\n2026-01-01,SKU-1,CA_1,3\n")
    with pytest.raises(ConfigError, match="sites not in the network: CA_1"):
        read_history(path, NETWORK)
    stores = tmp_path / "stores.csv"
    stores.write_text("store,site\nCA_1,A\n")
    (row,) = read_history(path, NETWORK, read_site_map(stores))
    assert (row.site, row.qty) == ("A", 3)


def test_a_forecast_file_becomes_contract_events_with_stable_ids(tmp_path: Path) -> None:
    path = tmp_path / "forecasts.csv"
    path.write_text(
        "sku,site,mean_per_day,error_cv,forecast_version\nSKU-1,A,2.5,0.3,w49\nSKU-1,B,0,,w49\n"
    )
    network = two_store_network()
    bodies = read_forecasts(path, network, issued_ms=T0)
    sites = frozenset(network.sites)
    events = [parse_object("forecasts", body, sites) for body in bodies]
    assert [(e.site, e.ts_ms, e.forecast) for e in events] == [
        ("A", T0, ForecastFigures(2.5, 0.3, "w49")),
        ("B", T0, ForecastFigures(0.0, None, "w49")),
    ]
    # The same file again: the same ids, so the flow ignores it as duplicates.
    assert [b["event_id"] for b in read_forecasts(path, network, issued_ms=T0 + 1)] == [
        b["event_id"] for b in bodies
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("sku,site,mean\nS,A,1\n", "needs columns"),
        ("sku,site,mean_per_day\nS,Z,1\n", "not in the network"),
        ("sku,site,mean_per_day\nS,A,-1\n", "mean_per_day"),
        ("sku,site,mean_per_day,error_cv\nS,A,1,0\n", "error_cv"),
    ],
)
def test_a_bad_forecast_file_is_refused_naming_what_is_wrong(
    tmp_path: Path, rows: str, message: str
) -> None:
    path = tmp_path / "forecasts.csv"
    path.write_text(rows)
    with pytest.raises(ConfigError, match=message):
        read_forecasts(path, two_store_network(), issued_ms=T0)


@pytest.mark.parametrize(
    ("qty", "message"),
    [("nan", "qty 'nan'"), ("1.5", "qty 1.5"), ("-3", "qty -3"), ("", "qty None")],
)
def test_a_history_row_that_is_not_a_whole_count_is_refused_naming_the_row(
    tmp_path: Path, qty: str, message: str
) -> None:
    path = tmp_path / "sales.csv"
    path.write_text(f"date,sku,site,qty\n2026-01-01,S,A,2\n2026-01-02,S,A,{qty}\n")
    with pytest.raises(ConfigError, match=rf"row 2 \(S@A, {message}\) needs"):
        read_history(path, NETWORK)


def test_a_history_row_without_a_sku_is_refused_not_read_as_a_sku_called_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sales.csv"
    path.write_text("date,sku,site,qty\n2026-01-01,,A,2\n")
    with pytest.raises(ConfigError, match=r"row 1 \(None@A, qty 2\) needs"):
        read_history(path, NETWORK)


@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=8), st.booleans()))
def test_whole_units_are_whole_and_never_negative(value: object) -> None:
    units = whole_units(value)
    assert units is None or (isinstance(units, int) and units >= 0)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        assert units == value


def test_events_the_flow_would_refuse_are_an_error_before_publishing(tmp_path: Path) -> None:
    rows = [HistoryRow("S", "A", T0, 2, daily=False),
            HistoryRow("S", "A", 253_370_764_800_000, 2, daily=False),  # the year 9999
            HistoryRow("X" * 65, "B", T0, 2, daily=False)]  # fmt: skip
    events = history_events(rows, NETWORK)
    with pytest.raises(ConfigError, match=r"would refuse 2 of 3 events: ") as refused:
        check_events(tmp_path / "sales.csv", "pos", events, NETWORK)
    assert "field `ts` is outside" in str(refused.value)
    assert "field `sku` must be 1-64" in str(refused.value)
    check_events(tmp_path / "sales.csv", "pos", events[:1], NETWORK)  # a good one passes


def test_ids_too_long_for_the_contract_are_cut_and_made_unique_by_a_digest() -> None:
    longest = [HistoryRow("K" * 64, "A", T0 + n * HOUR, 1, daily=False) for n in range(3)]
    events = history_events(longest, NETWORK)
    ids = [str(e["event_id"]) for e in events]
    assert len(set(ids)) == 3 and all(len(i) <= MAX_ID_LEN for i in ids)
    assert ids == [str(e["event_id"]) for e in history_events(longest, NETWORK)]  # stable
    check_events(Path("sales.csv"), "pos", events, NETWORK)
    assert id_within_limit("history-A-1-S") == "history-A-1-S"  # short ones unchanged


def test_a_site_map_with_an_empty_cell_is_refused(tmp_path: Path) -> None:
    stores = tmp_path / "stores.csv"
    stores.write_text("store,site\nCA_1,\nCA_2,B\n")
    with pytest.raises(ConfigError, match="empty store or site"):
        read_site_map(stores)
