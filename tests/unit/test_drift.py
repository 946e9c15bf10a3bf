"""The Poisson CUSUM drift detector on daily demand counts."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.drift import PoissonCusum


def feed(detector: PoissonCusum, counts: list[int]) -> list[int]:
    """Days (0-based) on which the detector alarmed."""
    alarms = []
    for day, count in enumerate(counts):
        detector.update(count)
        if detector.drift_detected:
            alarms.append(day)
    return alarms


@given(st.floats(0.5, 50.0), st.integers(20, 200))
def test_a_steady_level_never_alarms(rate: float, days: int) -> None:
    """Counts at their mean (rounded as a site would sell them) are no drift at any rate."""
    whole = np.floor(np.arange(1, days + 1) * rate) - np.floor(np.arange(days) * rate)
    assert feed(PoissonCusum(), [int(c) for c in whole]) == []


def test_a_fifty_percent_rise_at_a_busy_site_is_found_within_days() -> None:
    counts = [30] * 20 + [45] * 10
    alarms = feed(PoissonCusum(), counts)
    assert alarms and 20 <= alarms[0] <= 22


def test_a_halving_is_found_and_the_new_level_becomes_the_reference() -> None:
    detector = PoissonCusum()
    alarms = feed(detector, [20] * 15 + [8] * 10)
    assert alarms and 15 <= alarms[0] <= 18
    assert detector.reference_rate == 8


def test_the_reference_learns_only_outside_excursions() -> None:
    detector = PoissonCusum()
    feed(detector, [10] * 12)
    assert detector.reference_rate == 10 and detector.reference_days == 12
    detector.update(14)  # a high day starts an excursion: held back from the reference
    assert detector.reference_days == 12 and detector.pending_days == 1
    feed(detector, [10] * 5)  # back to normal: the excursion ends, its days join
    assert detector.pending_days == 0 and detector.reference_days == 18


def test_poisson_noise_at_the_benchmark_rates_rarely_alarms() -> None:
    """Seeded: 1,000 SKU-site runs of 180 days at 1-8 units a day, no change (0.29 per
    1,000 SKU-site-days measured; the budget for all detectors together is 1)."""
    rng = np.random.default_rng(5)
    alarms = 0
    for rate in rng.uniform(1, 8, size=1000):
        alarms += len(feed(PoissonCusum(), [int(c) for c in rng.poisson(rate, size=180)]))
    assert alarms / (1000 * 180) * 1000 <= 0.5  # per 1,000 SKU-site-days


@settings(max_examples=30)
@given(st.integers(0, 10_000))
def test_state_stays_a_handful_of_numbers(seed: int) -> None:
    detector = PoissonCusum()
    feed(detector, [int(c) for c in np.random.default_rng(seed).poisson(4, size=100)])
    assert detector.reference_days + detector.pending_days <= 100
    assert detector.score_up >= 0 and detector.score_down >= 0


def censored(detector: PoissonCusum, counts: list[int]) -> list[int]:
    alarms = []
    for day, count in enumerate(counts):
        detector.update(count, censored=True)
        if detector.drift_detected:
            alarms.append(day)
    return alarms


def test_sold_out_days_can_show_a_rise_but_never_a_fall() -> None:
    # Sold out every day: the sales are only a lower bound of demand.
    rising = PoissonCusum()
    feed(rising, [10] * 12)
    assert censored(rising, [16] * 10)  # even understated, this is a rise
    falling = PoissonCusum()
    feed(falling, [10] * 12)
    assert censored(falling, [3] * 20) == []  # selling out early is no drop in demand
    assert falling.reference_days == 12  # and such days never join the reference


def test_within_a_day_the_usual_pace_never_alarms_and_a_fast_one_does() -> None:
    detector = PoissonCusum()
    feed(detector, [100] * 14)
    shares = [(hour + 1) / 24 for hour in range(24)]
    assert not any(detector.rises_within_day(round(100 * s), s) for s in shares)
    first = next(h for h, s in enumerate(shares) if detector.rises_within_day(200 * s, s))
    assert first < 23  # twice the pace shows before the day ends
    # Checking changes nothing: the day still ends through `update`.
    assert detector.pending_days == 0 and detector.score_up == 0.0


def test_a_detector_pickled_by_the_river_based_version_loads() -> None:
    """Recovery snapshots hold detectors pickled with their `__dict__` (settings included)."""
    import pickle

    fresh = PoissonCusum()
    for count in [6] * 12:
        fresh.update(count)
    old = PoissonCusum.__new__(PoissonCusum)
    old.__setstate__(
        {"threshold": 8.0, "up": 1.5, "down": 0.5, "min_reference_days": 10, "confirm": 5.0,
         "reference_qty": 72.0, "reference_days": 12, "pending_qty": 0.0, "pending_days": 0,
         "score_up": 0.0, "score_down": 0.0, "_drift_detected": False}
    )  # fmt: skip
    assert pickle.dumps(old) == pickle.dumps(fresh)
    custom = PoissonCusum(threshold=4.0)
    restored = pickle.loads(pickle.dumps(custom))
    assert restored.threshold == 4.0 and restored.params is not fresh.params
    assert not hasattr(fresh, "__dict__")  # slotted: no per-instance dict
