"""Forecasts as a signal: the contract, the state they leave, and how the planner weighs
them against a site's own sales."""

from __future__ import annotations

import math

import orjson
from hypothesis import given
from hypothesis import strategies as st

from operators.codec import event_message
from operators.demand import observed_hours
from operators.engine import step
from operators.parse import parse_message, topic_kinds_for
from operators.planner import agent_for
from state.records import DeadLetter, Event, EventType, ForecastFigures, RawMessage
from state.sku import SiteForecast, SiteState
from tests.support.helpers import event, policy, warm_history
from tests.unit.test_engine import CTX, run

KINDS = topic_kinds_for("stockshift.")
SITES = frozenset({"A", "B", "C"})
BASE = {"event_id": "f1", "ts": 1767225600000, "sku": "SKU-1", "site": "B"}


def parsed(body: dict) -> Event | DeadLetter:
    raw = RawMessage("stockshift.forecasts", 0, 0, b"SKU-1", orjson.dumps(body), 0)
    return parse_message(raw, KINDS, SITES)


def forecast(hour: float, site: str, per_day: float, cv: float | None = 0.3) -> Event:
    figures = ForecastFigures(per_day, cv, "plan-7")
    return event(f"fc-{site}-{hour}", EventType.FORECAST, hour, site, 0, forecast=figures)


def test_a_forecast_parses_with_its_figures_and_round_trips_through_the_codec() -> None:
    e = parsed({**BASE, "mean_per_day": 2.5, "error_cv": 0.4, "forecast_version": "v9"})
    assert isinstance(e, Event) and e.type is EventType.FORECAST and e.qty == 0
    assert e.forecast == ForecastFigures(2.5, 0.4, "v9")
    kind, body = event_message(e)
    assert kind == "forecasts" and parsed(body) == e


def test_bad_forecasts_are_dead_letters_with_a_reason() -> None:
    cases = {
        "missing_field": {**BASE},
        "wrong_type": {**BASE, "mean_per_day": "3"},
        "out_of_range": {**BASE, "mean_per_day": -1},
    }
    for reason, body in cases.items():
        letter = parsed(body)
        assert isinstance(letter, DeadLetter) and letter.reason == reason, body
    for cv in (0, -0.1, 11):
        letter = parsed({**BASE, "mean_per_day": 1, "error_cv": cv})
        assert isinstance(letter, DeadLetter) and letter.reason == "out_of_range"
    wrong_topic = parsed({**BASE, "mean_per_day": 1, "type": "sale"})
    assert isinstance(wrong_topic, DeadLetter) and wrong_topic.reason == "unknown_type"


def test_a_forecast_is_kept_per_site_replaced_by_the_next_and_decides_nothing() -> None:
    state, out = step(None, forecast(0, "B", 12.0), CTX)
    assert not out.proposals and not out.decisions
    assert state.sites["B"].forecast == SiteForecast(0.5, 0.3)
    state, _ = step(state, forecast(1, "B", 24.0, cv=None), CTX)
    # No error given: the policy's.
    assert state.sites["B"].forecast == SiteForecast(1.0, CTX.policy.forecast_error_cv)


def test_a_site_with_a_forecast_acts_without_a_warm_up() -> None:
    # Ten hours of sales are too few to act on (test_engine's warm-up test); with forecasts
    # saying what the sites sell, the same short receiver gets its transfer.
    tail = [event("count-B", EventType.SNAPSHOT, 10.2, "B", 2)]
    _, without, _ = run([*warm_history(10), *tail])
    history = warm_history(10)  # the two opening counts, then the sales
    forecasts = [forecast(0, "A", 24.0), forecast(0, "B", 24.0)]
    _, with_forecasts, _ = run([*history[:2], *forecasts, *history[2:], *tail])
    assert without == [] and len(with_forecasts) == 1
    assert (with_forecasts[0].from_site, with_forecasts[0].to_site) == ("A", "B")


def site_that_sold(rate_per_hour: float, hours: int) -> SiteState:
    state = None
    for h in range(hours):
        e = event(f"s{h}", EventType.SALE, h + 0.5, "B", 1)
        state, _ = step(state, e, CTX) if (h * rate_per_hour) % 1 < rate_per_hour else (state, None)
    assert state is not None
    return state.sites["B"]


def test_the_estimate_is_the_gamma_posterior_mean_of_forecast_and_sales() -> None:
    p = policy()
    site = site_that_sold(1.0, 48)  # one unit an hour for two days
    own = agent_for("B", site, p)
    site.forecast = SiteForecast(0.25, 0.5)  # 6 a day, off by half: worth 16 hours of sales
    blended = agent_for("B", site, p, prior=5.0)  # a cross-site prior is not added to it
    hours = min(observed_hours(site.demand, p.demand_window_minutes), p.demand_halflife_hours)
    expected = (hours * own.mean + 16.0 * 0.25) / (hours + 16.0)
    assert math.isclose(blended.mean, expected, rel_tol=1e-9)
    assert blended.learned and blended.sd >= math.sqrt(blended.mean)


@given(
    per_day=st.floats(0.05, 200.0),
    cv=st.floats(0.05, 2.0),
    sold_hours=st.integers(0, 96),
)
def test_the_blend_lies_between_forecast_and_sales_and_slow_movers_keep_their_forecast(
    per_day: float, cv: float, sold_hours: int
) -> None:
    p = policy()
    site = site_that_sold(1.0, sold_hours) if sold_hours else SiteState()
    own = agent_for("B", site, p).mean
    site.forecast = SiteForecast(per_day / 24.0, cv)
    mean = agent_for("B", site, p).mean
    low, high = sorted((own if sold_hours else per_day / 24.0, per_day / 24.0))
    assert low - 1e-12 <= mean <= high + 1e-12
    # The forecast's weight in hours of sales: 1 / (cv^2 * rate).
    weight = 1.0 / (cv * cv * per_day / 24.0)
    evidence = min(observed_hours(site.demand, p.demand_window_minutes), p.demand_halflife_hours)
    share = weight / (weight + evidence)
    assert math.isclose(
        mean, share * per_day / 24.0 + (1 - share) * own, rel_tol=1e-6, abs_tol=1e-12
    )
