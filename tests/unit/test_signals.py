"""Each signal-health detector, and what the decision makes of its findings."""

from __future__ import annotations

import pickle

import pytest

from operators.demand import mean_per_hour
from operators.engine import DecisionContext, step
from state.config import ConfigError, network_from_dict
from state.records import Event, EventType, Finding, ProposalStatus
from state.sku import SkuState
from tests.support.helpers import HOUR, T0, event, policy, two_store_network, warm_history

CHECKED = policy(signal_checks=True)


def run(events: list[Event], pol=CHECKED, state: SkuState | None = None):
    ctx = DecisionContext.build(two_store_network(), pol)
    findings: list[Finding] = []
    proposals = []
    for e in events:
        state, out = step(state, e, ctx)
        findings.extend(out.findings)
        proposals.extend(out.proposals)
    return state, findings, proposals


def kinds(findings: list[Finding]) -> list[str]:
    return [f.kind for f in findings]


def test_clean_history_raises_nothing() -> None:
    _, findings, _ = run(warm_history(50, b_stock=91))
    assert findings == []


def test_a_bulk_sale_is_flagged_and_kept_out_of_demand() -> None:
    state, _, _ = run(warm_history(40, b_stock=200))
    state, findings, _ = run([event("bulk", EventType.SALE, 40.3, "B", 60)], state=state)
    assert kinds(findings) == ["sale_outlier"]
    assert findings[0].evidence and findings[0].event_ids == ("bulk",)
    assert state.sites["B"].demand.window_qty == 0  # the hour's only sale: not demand
    assert state.sites["B"].on_hand == 200 - 40 - 60  # but it did leave the shelf


def test_a_huge_return_holds_the_site_whose_stock_it_raised() -> None:
    state, findings, _ = run(
        [*warm_history(50, b_stock=91), event("ret", EventType.RETURN, 50.1, "A", 500)]
    )
    assert kinds(findings) == ["return_outlier"]
    # A's 500 returned units may not exist: a proposal that would send them needs a human.
    _, _, proposals = run([event("dmg", EventType.ADJUSTMENT, 50.2, "B", -15)], state=state)
    assert proposals and proposals[0].from_site == "A"
    assert proposals[0].status is ProposalStatus.NEEDS_APPROVAL
    assert "return_outlier" in proposals[0].reason


def test_count_far_from_books_is_phantom_stock_and_holds_the_site() -> None:
    state, findings, _ = run(
        [*warm_history(50, b_stock=91), event("count", EventType.SNAPSHOT, 50.1, "A", 600)]
    )
    assert kinds(findings) == ["phantom_stock"]
    assert state.sites["A"].integrity_until_ms >= T0 + 50 * HOUR
    # A proposal from the held site now needs approval, with the reason.
    _, _, proposals = run([event("dmg", EventType.ADJUSTMENT, 50.2, "B", -15)], state=state)
    assert proposals and proposals[0].status is ProposalStatus.NEEDS_APPROVAL
    assert "data-quality" in proposals[0].reason and "phantom_stock" in proposals[0].reason


def test_integrity_action_suppress_blocks_the_proposal() -> None:
    pol = policy(signal_checks=True, integrity_action="suppress")
    events = [*warm_history(50, b_stock=91), event("count", EventType.SNAPSHOT, 50.1, "A", 600)]
    events.append(event("dmg", EventType.ADJUSTMENT, 50.2, "B", -15))
    ctx = DecisionContext.build(two_store_network(), pol)
    state, reasons = None, []
    for e in events:
        state, out = step(state, e, ctx)
        reasons += [d.reason for d in out.decisions]
        assert not out.proposals
    assert "data_quality" in reasons


def test_selling_more_than_the_books_hold_and_big_adjustments() -> None:
    _, findings, _ = run(
        [
            event("s0", EventType.SNAPSHOT, 0, "A", 5),
            event("s1", EventType.SALE, 1, "A", 7),
            event("s2", EventType.SNAPSHOT, 2, "B", 100),
            event("adj", EventType.ADJUSTMENT, 3, "B", -80),
        ]
    )
    assert kinds(findings) == ["negative_implied_stock", "adjustment_outlier"]


def test_clock_checks_use_the_ingestion_time() -> None:
    ahead = Event("f", EventType.SALE, T0 + 5 * HOUR, "SKU-1", "A", 1, ingested_ms=T0)
    late = Event("l", EventType.SALE, T0, "SKU-1", "A", 1, ingested_ms=T0 + 10 * 24 * HOUR)
    _, findings, _ = run([event("stock", EventType.SNAPSHOT, 0, "A", 10), ahead, late])
    assert kinds(findings) == ["future_timestamp", "late_event"]


def test_a_site_that_stops_selling_is_reported_once() -> None:
    history = []
    for h in range(72):
        history.append(event(f"a{h}", EventType.SALE, h + 0.5, "A", 2))
    history.insert(0, event("sa", EventType.SNAPSHOT, 0, "A", 1000))
    # A goes quiet; B keeps publishing.
    later = [event(f"b{h}", EventType.SALE, 72 + h, "B", 1) for h in range(40)]
    _, findings, _ = run([*history, event("sb", EventType.SNAPSHOT, 0.1, "B", 500), *later])
    assert kinds(findings) == ["silent_site"]
    assert findings[0].site == "A"


def test_demand_drift_is_detected_after_a_lasting_level_shift() -> None:
    events = [event("sa", EventType.SNAPSHOT, 0, "A", 100_000)]
    for day in range(30):
        per_hour = 2 if day < 15 else 4  # doubles from day 15
        for h in range(24):
            events.append(event(f"d{day}-{h}", EventType.SALE, day * 24 + h + 0.5, "A", per_hour))
    state, findings, _ = run(events)
    drift = [f for f in findings if f.kind == "demand_drift"]
    assert drift, kinds(findings)
    first_day = (drift[0].ts_ms - T0) / (24 * HOUR)
    assert 15 <= first_day <= 17
    assert state.sites["A"].signals is not None
    # Right after the alarm the estimate stands at the new level (4 an hour, not the old 2).
    state, alarm_at = (
        None,
        next(i for i, e in enumerate(events) if e.event_id == drift[0].event_ids[0]),
    )
    state, _, _ = run(events[: alarm_at + 1])
    assert mean_per_hour(state.sites["A"].demand, 60) == pytest.approx(4.0, rel=0.1)


def test_detector_state_is_small() -> None:
    events = [event("sa", EventType.SNAPSHOT, 0, "A", 1000)]
    events += [event(f"d{h}", EventType.SALE, h + 0.5, "A", 1 + h % 3) for h in range(24 * 10)]
    state, _, _ = run(events)
    assert len(pickle.dumps(state.sites["A"].signals)) <= 1024


def test_a_huge_order_at_a_site_with_few_sales_is_still_an_outlier() -> None:
    events = [event("sb", EventType.SNAPSHOT, 0, "B", 500)]
    events += [event(f"s{h}", EventType.SALE, h + 0.5, "B", 1) for h in range(6)]
    events.append(event("bulk", EventType.SALE, 7.5, "B", 40))
    _, findings, _ = run(events)
    assert kinds(findings) == ["sale_outlier"]


def test_a_busy_hour_is_not_an_outlier() -> None:
    # Hours of 8-12 units: a 20-unit hour is about 3 Poisson spreads above, not 8.
    events = [event("sb", EventType.SNAPSHOT, 0, "B", 5000)]
    events += [event(f"s{h}", EventType.SALE, h + 0.5, "B", 8 + h % 5) for h in range(40)]
    events.append(event("busy", EventType.SALE, 40.5, "B", 20))
    _, findings, _ = run(events)
    assert findings == []


def test_silence_is_not_counted_while_the_site_has_nothing_to_sell() -> None:
    # A sells 2 an hour until it runs out at hour 24; restocked at hour 90, it sells again
    # from hour 100. Quiet for 76 hours, but empty for 66 of them: no silence.
    events = [event("sa", EventType.SNAPSHOT, 0, "A", 48)]
    events += [event(f"a{h}", EventType.SALE, h + 0.5, "A", 2) for h in range(24)]
    events += [event(f"b{h}", EventType.SALE, 24 + h, "B", 1) for h in range(80)]
    events.insert(1, event("sb", EventType.SNAPSHOT, 0.1, "B", 500))
    events.append(event("restock", EventType.SNAPSHOT, 90.2, "A", 100))
    events += [event(f"b{h}", EventType.SALE, 104 + h, "B", 1) for h in range(0, 8)]
    _, findings, _ = run(events)
    assert "silent_site" not in kinds(findings)


def test_an_outlier_sale_alone_calls_for_no_stock_until_a_count_confirms_it() -> None:
    # B sells one an hour and holds 80 at hour 40; a sale of 75 is flagged as an outlier.
    state, _, _ = run(warm_history(40, b_stock=120))
    state, findings, proposals = run([event("bulk", EventType.SALE, 40.3, "B", 75)], state=state)
    assert kinds(findings) == ["sale_outlier"]
    assert state.sites["B"].on_hand == 5  # the books take it
    assert proposals == []  # but no stock moves on a quantity nobody has confirmed
    # A count that finds the shelf as low as the books say settles it: now B gets stock.
    state, _, proposals = run([event("count", EventType.SNAPSHOT, 41, "B", 4)], state=state)
    assert [(p.from_site, p.to_site) for p in proposals] == [("A", "B")]


def test_a_silent_site_keeps_its_usual_demand() -> None:
    events = [event("sa", EventType.SNAPSHOT, 0, "A", 1000)]
    events += [event(f"a{h}", EventType.SALE, h + 0.5, "A", 2) for h in range(72)]
    events.insert(1, event("sb", EventType.SNAPSHOT, 0.1, "B", 500))
    # A's POS feed goes quiet for four days (it still sells, as its daily counts show); B
    # keeps publishing.
    events += [event(f"b{h}", EventType.SALE, 72 + h, "B", 1) for h in range(96)]
    counts = [
        event(f"c{d}", EventType.SNAPSHOT, 72 + 24 * d, "A", 856 - 48 * d) for d in (1, 2, 3, 4)
    ]
    events = sorted([*events, *counts], key=lambda e: e.ts_ms)
    state, findings, _ = run(events)
    assert kinds(findings) == ["silent_site"]
    # Silent days are not days without demand: A is not taken for a site that sells nothing
    # (which would make its stock look like surplus to send away).
    assert mean_per_hour(state.sites["A"].demand, 60) > 1.5


def test_a_busy_site_with_a_sales_profile_shows_a_rise_within_the_day() -> None:
    # 4 an hour around the clock for 14 days, then 6 an hour: the day's pace is judged
    # hourly against the profile (flat here), so the rise shows hours into its first day.
    flat = [1.0] * 24
    network = network_from_dict(
        {
            "sites": [
                {"id": "A", "replenishment_lead_hours": 96, "sales_profile": flat},
                {"id": "B", "replenishment_lead_hours": 96},
            ],
            "lanes": [{"from": "A", "to": "B", "lead_hours": 6, "bidirectional": True}],
        }
    )
    ctx = DecisionContext.build(network, CHECKED)
    events = [event("sa", EventType.SNAPSHOT, 0, "A", 100_000)]
    events += [
        event(f"s{h}", EventType.SALE, h + 0.5, "A", 4 if h < 14 * 24 else 6)
        for h in range(17 * 24)
    ]
    state, found = None, []
    for e in events:
        state, out = step(state, e, ctx)
        found += [(f, e.ts_ms) for f in out.findings if f.kind == "demand_drift"]
    assert len(found) == 1  # reported once: the day's end does not report it again
    finding, at_ms = found[0]
    assert finding.detector == "poisson_cusum_within_day"
    assert T0 + 14 * 24 * HOUR < at_ms < T0 + 15 * 24 * HOUR  # within the first day of it
    assert state is not None
    assert mean_per_hour(state.sites["A"].demand, 60) > 5.0  # the estimate moved to it


def test_a_sales_profile_must_have_24_hours() -> None:
    bad = {"id": "A", "sales_profile": [1.0] * 23}
    with pytest.raises(ConfigError, match="24 hourly weights"):
        network_from_dict({"sites": [bad, {"id": "B"}], "lanes": []})


def lagging_feed(hours: int, lag: int) -> tuple[list[Event], list[Event]]:
    """A sells one an hour in time; B sells three an hour, its sales reaching us `lag`
    hours late (behind A's). The events up to `hours`, and B's sales still owed then."""
    events = [
        event("sa", EventType.SNAPSHOT, 0, "A", 1000),
        event("sb", EventType.SNAPSHOT, 0, "B", 160),
    ]
    b_sales = [event(f"b{h}", EventType.SALE, h + 0.5, "B", 3) for h in range(hours)]
    for h in range(hours):
        events.append(event(f"a{h}", EventType.SALE, h + 0.5, "A", 1))
        if h >= lag:
            events.append(b_sales[h - lag])
    return events, b_sales[hours - lag :]


def test_a_late_return_teaches_its_site_s_feed_lag_as_a_late_sale_does() -> None:
    """A return comes through the same point-of-sale feed as the sales: one that reaches
    us five hours behind A's sales teaches B's feed lag (what a count waits for)."""
    events, _ = lagging_feed(10, 0)
    state, _, _ = run(events)
    assert state.sites["B"].signals is not None and state.sites["B"].signals.feed_lag_ms == 0
    late_return = event("r-b", EventType.RETURN, 4.5, "B", 1)
    state, _, _ = run([late_return], state=state)
    assert state.sites["B"].signals.feed_lag_ms == 5 * HOUR


def test_a_count_ahead_of_a_lagging_feeds_sales_waits_for_them() -> None:
    """B's count at hour 48 finds 16 (160 less 48 hours of 3); its books, six hours of
    sales behind, say 34. Judged at once that is shrink at every count; B's feed has been
    seen lagging, so the count waits, the late sales explain the gap, and nothing is
    raised."""
    events, owed = lagging_feed(48, 6)
    count = event("count-b", EventType.SNAPSHOT, 48.0, "B", 16)
    after = event("b-after", EventType.SALE, 48.5, "B", 3)
    state, findings, _ = run([*events, count, *owed, after])
    assert findings == []
    assert state.sites["B"].on_hand == 13  # the count, less the one sale after it


def test_real_shrink_at_a_lagging_site_is_found_once_its_sales_are_in() -> None:
    """The same count 12 units lower (stolen): once B's late sales are in, 4 units are
    still missing beyond the tolerance (25 % of the 34 books: 8), raised at the first sale
    after the count."""
    events, owed = lagging_feed(48, 6)
    count = event("count-b", EventType.SNAPSHOT, 48.0, "B", 4)
    after = event("b-after", EventType.SALE, 48.5, "B", 1)
    _, before, _ = run([*events, count, *owed])
    assert "shrink" not in kinds(before)
    state, findings, _ = run([*events, count, *owed, after])
    shrink = [f for f in findings if f.kind == "shrink"]
    assert len(shrink) == 1 and shrink[0].event_ids == ("b-after",)
    assert dict(shrink[0].evidence) == {"unexplained_after_late_sales": 4.0}
    assert state.sites["B"].integrity_until_ms > after.ts_ms  # the site is held


def test_a_count_at_a_site_whose_sales_come_in_time_is_judged_at_once() -> None:
    events, owed = lagging_feed(48, 0)
    assert owed == []
    _, findings, _ = run([*events, event("count-b", EventType.SNAPSHOT, 48.0, "B", 4)])
    assert kinds(findings) == ["shrink"] and findings[0].event_ids == ("count-b",)


def test_a_lagging_feed_is_silent_only_beyond_its_lag() -> None:
    """B sells until hour 47 and its sales reach us 20 hours late. At hour 71.5 it has
    sold nothing for 24 hours, but its feed, 20 hours behind, has shown only the last 4 of
    them: no alarm. The same site with its sales in time is reported then."""
    events, owed = lagging_feed(48, 20)
    later: list[Event] = []
    for h in range(24):
        later.append(event(f"a-late{h}", EventType.SALE, 48 + h + 0.5, "A", 1))
        later.extend(owed[h : h + 1])
    _, findings, _ = run([*events, *later])
    assert "silent_site" not in kinds(findings)
    in_time, _ = lagging_feed(48, 0)
    quiet = [e for e in later if e.site == "A"]
    _, findings, _ = run([*in_time, *quiet])
    assert [f.site for f in findings if f.kind == "silent_site"] == ["B"]
