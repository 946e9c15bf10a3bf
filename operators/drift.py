"""A drift detector for daily demand counts: a two-sided Poisson CUSUM with a reference
rate learned outside excursions.

River's drift detectors (PageHinkley, ADWIN) watch the mean of a real-valued stream against
its own running mean. Demand at a SKU-site is a few units a day, a Poisson count: the
log-likelihood-ratio CUSUM on counts is the optimal detector for a rate change of a given
size (Lorden; Moustakides), and its reference must not learn from the days being tested,
or a shift is absorbed before it is found. Measured on `stockshift signal-bench` (24
SKU-sites shifted +50%): PageHinkley on standardised daily totals found none. The class
has River's `DriftDetector` interface (`update`, `drift_detected`), so it is used (and
swapped) like River's own, but it does not inherit River's base class: that base has no
`__slots__`, and a per-instance `__dict__` made one detector per selling SKU-site the
largest part of the flow's memory (docs/deploy.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Final


def _binomial_llr(hits: float, total: float, share: float, expected: float) -> float:
    def term(count: float, p: float, q: float) -> float:
        return count * math.log(p / q) if count > 0 else 0.0

    return term(hits, share, expected) + term(total - hits, 1 - share, 1 - expected)


@dataclass(frozen=True, slots=True)
class CusumParams:
    """A detector's settings; one shared object for all detectors with the defaults."""

    threshold: float = 8.0
    up: float = 1.5
    down: float = 0.5
    min_reference_days: int = 10
    confirm: float = 5.0

    def __reduce__(self) -> tuple[type[CusumParams], tuple[float, float, float, int, float]]:
        """Pickled as its settings, rebuilt through `__init__`: a compiled frozen dataclass
        does not unpickle the default way (docs/development.md)."""
        return CusumParams, (
            self.threshold, self.up, self.down, self.min_reference_days, self.confirm
        )  # fmt: skip


DEFAULT_PARAMS: Final = CusumParams()
_DEFAULT_SETTINGS: Final = tuple(getattr(DEFAULT_PARAMS, f.name) for f in fields(CusumParams))
# The detector's state, as it pickles itself and as recovery snapshots write it.
DETECTOR_STATE: Final = (
    "reference_qty",
    "reference_days",
    "pending_qty",
    "pending_days",
    "score_up",
    "score_down",
    "_drift_detected",
)


class PoissonCusum:
    """Alarms when daily counts move to `up`× or `down`× the reference rate.

    The downward alternative is the larger change (half, against +50 % upward): a drop is
    also what stockouts and a quiet POS feed look like, so only a clear one is reported.

    The reference is the mean of the days on which neither CUSUM was running (an excursion's
    days join it only if the excursion ends without an alarm). After an alarm the days of the
    excursion become the new reference, so the detector follows the new level.
    """

    __slots__ = ("params", *DETECTOR_STATE)

    def __init__(
        self,
        threshold: float = 8.0,
        up: float = 1.5,
        down: float = 0.5,
        min_reference_days: int = 10,
        confirm: float = 5.0,
    ) -> None:
        settings = (threshold, up, down, min_reference_days, confirm)
        # Most detectors take the defaults: the shared object, without building a new one.
        self.params = DEFAULT_PARAMS if settings == _DEFAULT_SETTINGS else CusumParams(*settings)
        self.reference_qty = 0.0
        self.reference_days = 0
        self.pending_qty = 0.0
        self.pending_days = 0
        self.score_up = 0.0
        self.score_down = 0.0
        self._drift_detected = False

    @property
    def drift_detected(self) -> bool:
        """Whether the last `update` found a drift (River's interface)."""
        return self._drift_detected

    @property
    def threshold(self) -> float:
        return self.params.threshold

    @property
    def up(self) -> float:
        return self.params.up

    @property
    def down(self) -> float:
        return self.params.down

    @property
    def min_reference_days(self) -> int:
        return self.params.min_reference_days

    @property
    def confirm(self) -> float:
        return self.params.confirm

    def __getstate__(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in DETECTOR_STATE}
        if self.params is not DEFAULT_PARAMS:  # equal settings are always that one object
            state["params"] = self.params
        return state

    def __setstate__(self, state: Any) -> None:
        """This version's state, or an older one: a River-based detector pickled its
        `__dict__`, settings included (recovery snapshots outlive upgrades)."""
        values: dict[str, Any] = {}
        for part in state if isinstance(state, tuple) else (state,):
            if part:
                values.update(part)
        params = values.get("params")
        if not isinstance(params, CusumParams):
            names = (f.name for f in fields(CusumParams))
            params = CusumParams(**{k: values[k] for k in names if k in values})
        self.params = DEFAULT_PARAMS if params == DEFAULT_PARAMS else params
        fresh = PoissonCusum()
        for name in DETECTOR_STATE:
            setattr(self, name, values.get(name, getattr(fresh, name)))

    @property
    def reference_rate(self) -> float:
        return self.reference_qty / self.reference_days if self.reference_days else 0.0

    def rises_within_day(self, x: int | float, share: float) -> bool:
        """Would the upward CUSUM alarm if the day ended now? `x`: the day's units so far;
        `share`: the share of a day's demand expected by now (from the site's sales
        profile). The Poisson likelihood ratio of a partial day is the same test on a
        shorter interval, so a fast mover's rise shows hours into its first day instead of
        at its end. Changes nothing: the day still goes to `update` when it ends."""
        if self.reference_days < self.min_reference_days or share <= 0.0:
            return False
        rate = max(self.reference_rate, 0.5 / self.reference_days)
        score = max(0.0, self.score_up + x * math.log(self.up) - (self.up - 1) * rate * share)
        return score > self.threshold and self._confirmed(x, share)

    def update(
        self, x: int | float, censored: bool = False, alarmed_within_day: bool = False
    ) -> None:
        """`censored`: the day sold out, so `x` is only a lower bound of its demand. Such a
        day can still show a rise (its sales understate it: the evidence errs low), never a
        fall, and it does not join the reference. `alarmed_within_day`: `rises_within_day`
        raised the alarm during this day already; the day completes it."""
        self._drift_detected = False
        if alarmed_within_day and self.reference_days >= self.min_reference_days:
            self.pending_qty += x
            self.pending_days += 1
            self._alarm()
            return
        if self.reference_days < self.min_reference_days:
            if not censored:
                self.reference_qty += x
                self.reference_days += 1
            return
        # Floor: a site that sold nothing in its reference still has some rate to move from.
        rate = max(self.reference_rate, 0.5 / self.reference_days)
        self.score_up = max(0.0, self.score_up + x * math.log(self.up) - (self.up - 1) * rate)
        if censored:
            if self.score_down == 0.0 and self.score_up > 0.0:
                self.pending_qty += x
                self.pending_days += 1
                if self.score_up > self.threshold and self._confirmed():
                    self._alarm()
            return
        self.score_down = max(
            0.0, self.score_down + x * math.log(self.down) - (self.down - 1) * rate
        )
        self.pending_qty += x
        self.pending_days += 1
        if max(self.score_up, self.score_down) > self.threshold and self._confirmed():
            self._alarm()
        elif self.score_up == 0.0 and self.score_down == 0.0:
            self.reference_qty += self.pending_qty
            self.reference_days += self.pending_days
            self._end_excursion()

    def _alarm(self) -> None:
        self._drift_detected = True
        self.reference_qty, self.reference_days = self.pending_qty, self.pending_days
        self._end_excursion()

    def _confirmed(self, extra_qty: float = 0.0, extra_days: float = 0.0) -> bool:
        """The excursion's days against the reference's as two samples: given all their
        units, are the excursion's share of them this far from its share of the days?
        (A binomial likelihood-ratio test; it accounts for the reference's own noise, which
        the CUSUM takes as exact, so a reference that came out high or low by chance does
        not raise an alarm.)"""
        n2, n1 = self.pending_qty + extra_qty, self.reference_qty
        total = n1 + n2
        if total <= 0:
            return False
        days = self.pending_days + extra_days
        expected = days / (days + self.reference_days)
        share = n2 / total
        return _binomial_llr(n2, total, share, expected) > self.confirm

    def _end_excursion(self) -> None:
        self.pending_qty = 0.0
        self.pending_days = 0
        self.score_up = 0.0
        self.score_down = 0.0
