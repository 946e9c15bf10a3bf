"""Forecasts as a signal: the contract, the state they leave, and how the planner weighs
them against a site's own sales."""

from __future__ import annotations

import math
from dataclasses import replace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.codec import event_message
from operators.demand import (
    FORECAST_ERROR_HALFLIFE_HOURS,
    FORECAST_MISS_Z_SQ,
    MIN_LEARNED_ERROR_SQ,
    UNSTATED_ERROR_PRIOR,
    forecast_bias,
    forecast_error_sq,
    observed_hours,
    track_forecast,
    unstated_error_sq,
)
from operators.engine import step
from operators.parse import parse_message, topic_kinds_for
from operators.planner import Agents, DemandPrior, agent_at, agent_for
from state.records import DeadLetter, Event, EventType, ForecastFigures, RawMessage
from state.sku import SiteForecast, SiteState, SkuState
from tests.support.helpers import HOUR, T0, event, policy, warm_history
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
    for cv in (0, -0.1, 11, 1e-200, 0.0009):
        letter = parsed({**BASE, "mean_per_day": 1, "error_cv": cv})
        assert isinstance(letter, DeadLetter) and letter.reason == "out_of_range"
    # A rate too small to weigh (its weight, 1 / (error^2 x rate) hours, overflowed).
    for mean in (2.2e-313, 1e-9, 9.9e-7):
        letter = parsed({**BASE, "mean_per_day": mean})
        assert isinstance(letter, DeadLetter) and letter.reason == "out_of_range", mean
    for mean, cv in ((1e-6, 0.001), (0, 0.001)):
        assert isinstance(parsed({**BASE, "mean_per_day": mean, "error_cv": cv}), Event)
    wrong_topic = parsed({**BASE, "mean_per_day": 1, "type": "sale"})
    assert isinstance(wrong_topic, DeadLetter) and wrong_topic.reason == "unknown_type"


def test_a_forecast_is_kept_per_site_replaced_by_the_next_and_decides_nothing() -> None:
    state, out = step(None, forecast(0, "B", 12.0), CTX)
    assert not out.proposals and not out.decisions
    assert figures(state.sites["B"].forecast) == (0.5, 0.3)
    state, _ = step(state, forecast(1, "B", 24.0, cv=None), CTX)
    # No error given: kept as none stated (the planner learns one, from the policy's).
    assert figures(state.sites["B"].forecast) == (1.0, 0.0)


def figures(found: SiteForecast | None) -> tuple[float, float]:
    assert found is not None
    return found.per_hour, found.error_cv


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
    blended = agent_for(
        "B", site, p, prior=DemandPrior(5.0)
    )  # a cross-site prior is not added to it
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


# Forecasts scored against sales: a source that keeps missing loses weight.


def test_a_forecast_is_scored_only_over_hours_the_site_had_stock_and_the_score_fades() -> None:
    fc = SiteForecast(2.0, 0.3)
    track_forecast(fc, 0, in_stock=True, sold=0)  # the score starts
    track_forecast(fc, 10 * HOUR, in_stock=True, sold=3)
    assert (fc.expected_units, fc.sold_units, fc.scored_to_ms) == (20.0, 3.0, 10 * HOUR)
    track_forecast(fc, 15 * HOUR, in_stock=False, sold=4)  # sold out: nothing either side
    fade = 0.5 ** (5 / FORECAST_ERROR_HALFLIFE_HOURS)
    assert math.isclose(fc.expected_units, 20.0 * fade) and math.isclose(fc.sold_units, 3 * fade)
    track_forecast(fc, 12 * HOUR, in_stock=True, sold=1)  # late: a sale, no hours
    assert math.isclose(fc.sold_units, 3 * fade + 1) and fc.scored_to_ms == 15 * HOUR


@given(
    cv=st.floats(0.05, 2.0),
    expected=st.floats(0.0, 1e4),
    sold=st.floats(0.0, 1e4),
    bias=st.floats(0.01, 10.0),
    dispersion=st.floats(0.0, 20.0),
)
def test_a_forecast_is_never_weighed_above_its_stated_error_nor_below_it_by_chance(
    cv: float, expected: float, sold: float, bias: float, dispersion: float
) -> None:
    fc = SiteForecast(1.0, cv, expected_units=expected, sold_units=sold)
    error = forecast_error_sq(fc, bias, dispersion, cv * cv)
    assert error >= cv * cv
    # A miss within 2 sd of chance plus the stated error leaves the stated error.
    corrected = expected * bias
    allowed = FORECAST_MISS_Z_SQ * (max(dispersion, 1) * corrected + cv * cv * corrected**2)
    if (sold - corrected) ** 2 <= allowed or corrected < 1:
        assert error == cv * cv


def test_a_forecast_four_times_the_sales_shows_its_miss_and_the_bias_forgives_it() -> None:
    fc = SiteForecast(2.0, 0.2, expected_units=400.0, sold_units=100.0)
    assert math.isclose(forecast_error_sq(fc, 1.0, 1.0, 0.2 * 0.2), (300**2 - 400) / 400**2)
    # The SKU's forecasts all run four times high: corrected, this one is right.
    assert forecast_error_sq(fc, 0.25, 1.0, 0.2 * 0.2) == 0.2 * 0.2
    assert forecast_error_sq(SiteForecast(2.0, 0.2, 400.0, 390.0), 1.0, 1.0, 0.2 * 0.2) == 0.2 * 0.2


def with_forecast(expected: float, sold: float, cv: float = 0.3) -> SiteState:
    return SiteState(forecast=SiteForecast(1.0, cv, expected_units=expected, sold_units=sold))


@given(
    scores=st.lists(
        st.tuples(st.floats(0.0, 1e4), st.floats(0.0, 1e4), st.floats(0.05, 2.0)),
        max_size=10,
    )
)
def test_the_skus_bias_lies_between_1_and_what_its_sites_sold_over_what_was_expected(
    scores: list[tuple[float, float, float]],
) -> None:
    bias = forecast_bias([with_forecast(e, s, cv) for e, s, cv in scores] + [SiteState()], 0.5)
    expected, sold = sum(e for e, _, _ in scores), sum(s for _, s, _ in scores)
    ratio = sold / expected if expected > 0 else (math.inf if sold > 0 else 1.0)
    low, high = sorted((1.0, ratio))
    assert low - 1e-9 <= bias <= high + 1e-9
    if not scores:
        assert bias == 1.0


def test_the_bias_weighs_the_sites_together_against_the_stated_error() -> None:
    sites = [with_forecast(100.0, 50.0) for _ in range(3)]
    prior = 1 / 0.3**2  # worth 11 units
    assert math.isclose(forecast_bias(sites, 0.5), (150 + prior) / (300 + prior))
    assert forecast_bias(sites[:1], 0.5) > forecast_bias(sites, 0.5)  # one site: less evidence
    # Forecasts stating no error are weighed with the error assumed for them.
    unstated = [with_forecast(100.0, 50.0, cv=0.0) for _ in range(3)]
    assert math.isclose(forecast_bias(unstated, 0.3), (150 + prior) / (300 + prior))


# Forecasts that state no error: the error is learned across the SKU's sites.


def test_an_unstated_error_starts_from_the_assumed_one_and_ignores_stated_forecasts() -> None:
    assert unstated_error_sq([SiteState()], 1.0, 0.5) == 0.25
    # Stated forecasts say nothing about the unstated ones, however far they miss.
    stated = [with_forecast(100.0, 10.0, cv=0.3) for _ in range(5)]
    assert unstated_error_sq(stated, 1.0, 0.5) == 0.25
    # Less than a unit expected: any miss is chance.
    assert unstated_error_sq([with_forecast(0.9, 30.0, cv=0.0)], 1.0, 0.5) == 0.25


def test_forecasts_that_keep_hitting_lose_their_assumed_error_and_missing_ones_keep_it() -> None:
    # Ten sites each expected 20 units and sold 20 +- 3: a miss within chance (variance 20).
    hitting = [with_forecast(20.0, 20.0 + (3 if i % 2 else -3), cv=0.0) for i in range(10)]
    weight = 10 * 20.0**2
    learned = unstated_error_sq(hitting, 1.0, 0.5)
    assert math.isclose(
        learned,
        (UNSTATED_ERROR_PRIOR * 0.25 + weight * MIN_LEARNED_ERROR_SQ)
        / (UNSTATED_ERROR_PRIOR + weight),
    )
    assert learned < 0.1  # from 50 % to the floor, 30 %
    # Sold half or one and a half times what was expected: of the miss (10 units, squared
    # 100) chance explains 20, the rest (80 of 400 expected squared) is the forecast's error.
    missing = [with_forecast(20.0, 10.0 if i % 2 else 30.0, cv=0.0) for i in range(10)]
    measured = 80.0 / 400.0
    assert math.isclose(
        unstated_error_sq(missing, 1.0, 0.5),
        (UNSTATED_ERROR_PRIOR * 0.25 + weight * measured) / (UNSTATED_ERROR_PRIOR + weight),
    )
    # The SKU's bias is taken out first: all ran twice high, corrected they hit.
    doubled = [with_forecast(40.0, 20.0, cv=0.0) for _ in range(10)]
    assert unstated_error_sq(doubled, 0.5, 0.5) < 0.1


@given(
    scores=st.lists(st.tuples(st.floats(0.0, 1e4), st.floats(0.0, 1e4)), max_size=10),
    assumed=st.floats(0.05, 2.0),
)
def test_a_learned_error_lies_between_the_floor_and_the_larger_of_assumed_and_measured(
    scores: list[tuple[float, float]], assumed: float
) -> None:
    sites = [with_forecast(e, s, cv=0.0) for e, s in scores]
    learned = unstated_error_sq(sites, 1.0, assumed)
    counted = [(e, s) for e, s in scores if e >= 1.0]
    weight = sum(e * e for e, _ in counted)
    measured = sum((s - e) ** 2 - e for e, s in counted) / weight if weight else assumed**2
    low = min(assumed**2, max(measured, MIN_LEARNED_ERROR_SQ))
    high = max(assumed**2, measured, MIN_LEARNED_ERROR_SQ)
    assert low * (1 - 1e-9) <= learned <= high * (1 + 1e-9)


def test_the_planner_trusts_a_forecast_the_sales_bear_out_more_than_an_assumed_one() -> None:
    p = policy()
    site = site_that_sold(1.0, 48)
    site.forecast = SiteForecast(0.25, 0.0)
    assumed = agent_for("B", site, p)  # no error learned yet: the policy's
    site.forecast = SiteForecast(0.25, p.forecast_error_cv)
    assert math.isclose(assumed.mean, agent_for("B", site, p).mean, rel_tol=1e-12)
    site.forecast = SiteForecast(0.25, 0.0)
    learned = agent_for("B", site, p, unstated_sq=0.01)  # 10 %: worth 25 times the hours
    assert abs(learned.mean - 0.25) < abs(assumed.mean - 0.25)


def sku_under_forecast(per_day: float, hours: int) -> SkuState:
    """B holds stock, is told it sells `per_day` a day, and sells one unit every 4 hours."""
    state, _ = step(None, event("count-B", EventType.SNAPSHOT, 0, "B", 500), CTX)
    state, _ = step(state, forecast(0, "B", per_day, cv=0.2), CTX)
    for h in range(0, hours, 4):
        state, _ = step(state, event(f"s{h}", EventType.SALE, h + 0.5, "B", 1), CTX)
    return state


def site_under_forecast(per_day: float, hours: int) -> SiteState:
    return sku_under_forecast(per_day, hours).sites["B"]


def test_a_biased_forecast_is_corrected_and_a_right_one_kept() -> None:
    p = policy()

    def mean_at_b(state: SkuState) -> float:
        return agent_at(state, "B", CTX.network, p, None, None).mean

    biased = sku_under_forecast(24.0, 96)  # forecast 1 an hour, sells 0.25
    forecast_ = biased.sites["B"].forecast
    assert forecast_ is not None and 80 < forecast_.expected_units < 96
    scored = mean_at_b(biased)
    forecast_.expected_units = forecast_.sold_units = 0.0  # as if unscored: trusted as stated
    trusting = mean_at_b(biased)
    assert scored < trusting - 0.05 and abs(scored - 0.25) < abs(trusting - 0.25) / 2
    right = sku_under_forecast(6.0, 96)  # forecast 0.25 an hour: right
    kept = mean_at_b(right)
    assert right.sites["B"].forecast is not None
    right.sites["B"].forecast.expected_units = right.sites["B"].forecast.sold_units = 0.0
    assert abs(kept - mean_at_b(right)) < 0.02


def test_agents_built_for_one_decision_share_the_skus_forecast_skill_and_match_fresh_ones() -> None:
    state = sku_under_forecast(24.0, 96)
    state, _ = step(state, forecast(96, "A", 2.0, cv=None), CTX)  # unstated: learned
    state, _ = step(state, event("count-A", EventType.SNAPSHOT, 96.5, "A", 40), CTX)
    p = policy()
    agents = Agents()
    shared = [agent_at(state, s, CTX.network, p, None, agents) for s in ("A", "B")]
    assert agents.skill is not None and set(agents.by_site) == {"A", "B"}
    fresh = [agent_at(state, s, CTX.network, p, None, None) for s in ("A", "B")]
    assert [(a.mean, a.sd, a.forecast_trusted) for a in shared] == [
        (a.mean, a.sd, a.forecast_trusted) for a in fresh
    ]
    assert agent_at(state, "A", CTX.network, p, None, agents) is shared[0]


def test_the_next_forecast_takes_over_the_sources_record() -> None:
    state = sku_under_forecast(24.0, 48)
    before = state.sites["B"].forecast
    assert before is not None
    before = replace(before)
    state, _ = step(state, forecast(50, "B", 12.0), CTX)
    after = state.sites["B"].forecast
    assert after is not None and after.per_hour == 0.5
    # The old forecast's last 5.5 hours counted at its rate; the record faded, not reset.
    fade = 0.5 ** (5.5 / FORECAST_ERROR_HALFLIFE_HOURS)
    assert math.isclose(after.expected_units, before.expected_units * fade + 5.5)
    assert math.isclose(after.sold_units, before.sold_units * fade)


def test_a_sale_that_empties_the_shelf_is_left_out_of_the_score() -> None:
    """It may have met less than the demand: counting its hours would read every sell-out
    as a forecast too high."""
    state, _ = step(None, event("count-B", EventType.SNAPSHOT, 0, "B", 3), CTX)
    state, _ = step(state, forecast(0, "B", 24.0), CTX)
    state, _ = step(state, event("s1", EventType.SALE, 2, "B", 1), CTX)  # 2 left
    scored = state.sites["B"].forecast
    assert scored is not None and (scored.expected_units, scored.sold_units) == (2.0, 1.0)
    state, _ = step(state, event("s2", EventType.SALE, 6, "B", 2), CTX)  # sold out
    fade = 0.5 ** (4 / FORECAST_ERROR_HALFLIFE_HOURS)
    assert math.isclose(scored.expected_units, 2.0 * fade)
    assert math.isclose(scored.sold_units, 1.0 * fade) and scored.scored_to_ms == T0 + 6 * HOUR


def test_with_a_forecast_at_every_site_the_cross_site_prior_is_left_uncomputed_and_unmissed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine skips the SKU's cross-site prior while every site it may judge has a
    forecast of its own (the prior stands in only for a missing one). A simulated world
    that publishes forecasts, with those of one site left out for half its SKUs, replayed
    with the prior skipped where it may be and with it computed for every event: the same
    outputs, step by step; it was skipped for the other SKUs, and it counts for those
    SKUs (left out for them too, the outputs differ)."""
    from adapters.lab.simulator import Scenario, make_network
    from flows.lab.simulate import run_stockshift
    from operators import engine
    from operators.engine import DecisionContext
    from operators.parse import parse_object

    world = Scenario(name="forecasts", n_sites=4, n_skus=6, days=6, seed=3,
                     publish_forecasts=True, mean_daily_demand=2.0)  # fmt: skip
    network = make_network(world)
    stream: list[tuple[str, dict]] = []
    run_stockshift(world, network, policy(), record=stream)
    ctx = DecisionContext.build(network, policy())
    parsed = [parse_object(kind, body, frozenset(network.sites)) for kind, body in stream]
    skus, unforecast = sorted({e.sku for e in parsed}), min(network.sites)
    half = set(skus[: len(skus) // 2])
    events = [
        e
        for e in parsed
        if not (e.type is EventType.FORECAST and e.sku in half and e.site == unforecast)
    ]

    def replay() -> tuple[list[object], int]:
        calls = 0
        computed = engine.demand_prior

        def counted(*args: object) -> object:
            nonlocal calls
            calls += 1
            return computed(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(engine, "demand_prior", counted)
        states: dict[str, SkuState] = {}
        outputs: list[object] = []
        for e in events:
            assert isinstance(e, Event)
            states[e.sku], out = step(states.get(e.sku), e, ctx)
            outputs.append(out)
        monkeypatch.setattr(engine, "demand_prior", computed)
        return outputs, calls

    skipped, calls_skipping = replay()
    monkeypatch.setattr(engine, "_prior_may_count", lambda state, site_id: True)
    computed, calls_always = replay()
    assert skipped == computed
    assert sum(len(o.proposals) for o in skipped) > 0  # type: ignore[attr-defined]
    assert 0 < calls_skipping < calls_always * 0.75
    monkeypatch.setattr(engine, "_prior_may_count", lambda state, site_id: False)
    assert replay()[0] != computed


def test_the_prior_may_count_for_a_site_without_a_forecast_of_a_positive_rate() -> None:
    """A forecast of zero units stands in for nothing (`agent_for` falls back on the prior),
    and the event's own site may not be in the state yet."""
    from operators.engine import _prior_may_count

    def sku(*rates: float | None) -> SkuState:
        state = SkuState("SKU-1")
        for n, rate in enumerate(rates):
            forecast = None if rate is None else SiteForecast(rate, 0.3)
            state.sites[f"S{n}"] = SiteState(forecast=forecast)
        return state

    assert not _prior_may_count(sku(0.5, 0.2), "S0")
    assert _prior_may_count(sku(0.5, 0.2), "S9")
    assert _prior_may_count(sku(0.5, None), "S0")
    assert _prior_may_count(sku(0.5, 0.0), "S0")
