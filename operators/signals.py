"""Signal health: online checks that stop bad data from moving stock.

Per SKU-site and cheap (a few float updates per event, one drift update per closed day):
- `sale_outlier`: a sale far above the usual quantity per transaction (a bulk order, a
  mis-keyed number). It is kept in stock but left out of the demand estimate, and its
  units stay in doubt until a count (`dispute`). `return_outlier`: the same for a return;
  units that may not exist must not be sent, so it opens a hold.
- `demand_drift`: a lasting change of the daily demand level (a Poisson CUSUM on daily
  sales, `operators.drift`). The estimate then moves to the new level and forgets faster,
  and the safety buffer widens for `drift_buffer_hours`.
- `phantom_stock` / `shrink`: a count far above / below the on-hand the events imply.
- `negative_implied_stock`: a sale of more than the books hold.
- `adjustment_outlier`: an adjustment large against the stock it adjusts.
- `future_timestamp` / `late_event`: event time far after / before it reached Kafka.
- `silent_site`: a site that holds stock and normally sells has sold nothing for whole
  days worth `_SILENT_MISSED` units of its usual demand.
Integrity findings open a hold on the site: proposals touching it need approval (or are
suppressed, by policy) until the hold ends.
"""

from __future__ import annotations

import math
from typing import Final

from operators.demand import mean_per_hour
from operators.drift import PoissonCusum
from operators.position import in_count
from state.config import Policy
from state.kinds import ADJUSTMENT, RETURN, SALE, SNAPSHOT
from state.records import Event, Finding
from state.sku import Signals, SiteState, SkuState
from state.units import DAY_MS, HOUR_MS

_SALE_ALPHA: Final = 0.05
_OUTLIER_MIN_QTY: Final = 5
_OUTLIER_K: Final = 8.0
_OUTLIER_WARMUP: Final = 5
_SILENT_MISSED: Final = 8.0
_SILENT_REFERENCE_DAYS: Final = 7
_FUTURE_MS: Final = HOUR_MS
_LATE_MS: Final = 7 * DAY_MS
# A site's sales feed is taken to lag by at most this much: a feed a day behind is broken
# (its silence is a finding of its own), and a count's shortfall is judged by then. A
# message up to this late is still dated at its arrival (`engine.decision_time`).
MAX_FEED_LAG_MS: Final = DAY_MS
_INTEGRITY_KINDS: Final = frozenset(
    {
        "phantom_stock",
        "shrink",
        "negative_implied_stock",
        "adjustment_outlier",
        "silent_site",
        "return_outlier",
    }
)


def _signals(site: SiteState) -> Signals:
    if site.signals is None:
        site.signals = Signals()
    return site.signals


def _finding(
    kind: str, event: Event, site_id: str, score: float, detector: str, **evidence: float
) -> Finding:
    return Finding(
        kind=kind,
        sku=event.sku,
        site=site_id,
        ts_ms=event.ts_ms,
        score=round(score, 3),
        detector=detector,
        evidence=tuple((k, round(v, 3)) for k, v in evidence.items()),
        event_ids=(event.event_id,),
    )


def new_drift_detector() -> PoissonCusum:
    # Its defaults keep false alarms well under 1 per 1,000 SKU-site-days on Poisson demand
    # (tests/unit/test_drift.py; `stockshift signal-bench`).
    return PoissonCusum()


def sale_spread(usual_qty: float, deviation: float) -> float:
    """How far a sale's quantity may stray from the usual one by chance. Mean absolute
    deviation x 1.25 is a standard deviation for normal noise; a count's own noise is at
    least sqrt(mean) (Poisson), so one busy hour is not an outlier."""
    return max(1.25 * deviation, math.sqrt(max(usual_qty, 0.0)), 0.5)


def check_event(
    state: SkuState, site: SiteState, event: Event, policy: Policy
) -> tuple[list[Finding], bool]:
    """Findings the event raises before it is applied, and whether its demand counts."""
    findings = _clock_findings(event)
    counts_as_demand = True
    kind = event.type
    if kind in (SALE, RETURN):
        counts_as_demand = _check_sale(site, event, findings)
        # A return comes through the same point-of-sale feed: as late as its sales.
        _learn_feed_lag(_signals(site), state.clock_ms - event.ts_ms)
        if kind is SALE:
            _explain_shortfall(site, event, state.clock_ms, findings)
    elif kind is SNAPSHOT and site.last_event_ms >= 0 and not in_count(site, event.ts_ms):
        # (A count older than the latest says nothing new.)
        _judge_shortfall(site, event, findings)  # the new count ends the wait
        _check_count(site, event, findings)
    elif kind is ADJUSTMENT and abs(event.qty) > max(10, 0.5 * site.on_hand):
        findings.append(
            _finding("adjustment_outlier", event, event.site, abs(event.qty) / max(site.on_hand, 1),
                     "books", delta=event.qty, on_hand=site.on_hand)
        )  # fmt: skip
    return findings, counts_as_demand


def _clock_findings(event: Event) -> list[Finding]:
    """Event time far after, or far before, the message reached Kafka."""
    if event.ingested_ms is None:
        return []
    ahead = event.ts_ms - event.ingested_ms
    if ahead > _FUTURE_MS:
        hours = ahead / HOUR_MS
        return [_finding("future_timestamp", event, event.site, hours, "clock", hours_ahead=hours)]
    if -ahead > _LATE_MS:
        days = -ahead / DAY_MS
        return [_finding("late_event", event, event.site, days, "clock", days_late=days)]
    return []


def _check_sale(site: SiteState, event: Event, findings: list[Finding]) -> bool:
    """An outlier sale or return (its demand does not count), and a sale of more than the
    books hold; otherwise it teaches the usual quantity per transaction."""
    signals = _signals(site)
    spread = sale_spread(signals.sale_mean, signals.sale_dev)
    score = (event.qty - signals.sale_mean) / spread
    counts_as_demand = True
    if (
        signals.sales_seen >= _OUTLIER_WARMUP
        and event.qty >= _OUTLIER_MIN_QTY
        and score > _OUTLIER_K
    ):
        findings.append(
            _finding("sale_outlier" if event.type is SALE else "return_outlier",
                     event, event.site, score, "robust_ewma",
                     qty=event.qty, typical_qty=signals.sale_mean, spread=spread)
        )  # fmt: skip
        counts_as_demand = False
    else:
        signals.sales_seen += 1
        # A plain average over the first sales, then exponential forgetting: the early
        # estimate is not pulled towards zero, so a new site's huge order still shows.
        alpha = max(_SALE_ALPHA, 1.0 / signals.sales_seen)
        signals.sale_dev += alpha * (abs(event.qty - signals.sale_mean) - signals.sale_dev)
        signals.sale_mean += alpha * (event.qty - signals.sale_mean)
    if event.type is SALE:
        if not in_count(site, event.ts_ms):
            _check_books(site, event, signals, findings)
        signals.quiet_since_ms = max(signals.quiet_since_ms, event.ts_ms)
        signals.silent = False
    return counts_as_demand


def _check_books(site: SiteState, event: Event, signals: Signals, findings: list[Finding]) -> None:
    """A sale that empties the shelf, or takes more than the books hold. (Not asked of a
    sale already in the site's latest count: it left before the count, and the books
    after the count say nothing of the shelf it found.)"""
    if event.qty >= site.on_hand:
        signals.day_short = True  # sold out: today's count understates demand
    if event.qty > site.on_hand:
        findings.append(
            _finding("negative_implied_stock", event, event.site, event.qty - site.on_hand,
                     "books", qty=event.qty, on_hand=site.on_hand)
        )  # fmt: skip


def _learn_feed_lag(signals: Signals, late_ms: int) -> None:
    """How far behind the SKU's latest event a sale or return arrived: the site's feed lag
    is the largest lately seen, an eighth of it forgotten at each (a feed that catches up
    is trusted again within a few dozen sales)."""
    held = signals.feed_lag_ms - signals.feed_lag_ms // 8
    signals.feed_lag_ms = min(max(late_ms, held), MAX_FEED_LAG_MS)


def _explain_shortfall(site: SiteState, event: Event, now_ms: int, findings: list[Finding]) -> None:
    """A sale at a site whose latest count is waiting (`count_shortfall`): one from before
    the count explains that many of the missing units; one from after it says the feed has
    passed the count, and what is still missing is judged."""
    signals = site.signals
    if signals is None or signals.count_shortfall <= 0:
        return
    if in_count(site, event.ts_ms):
        signals.count_shortfall = max(signals.count_shortfall - event.qty, 0)
        if now_ms < site.counted_ms + MAX_FEED_LAG_MS:
            return
    _judge_shortfall(site, event, findings)


def _judge_shortfall(site: SiteState, event: Event, findings: list[Finding]) -> None:
    """What a waiting count still misses once its site's sales are in: shrink."""
    signals = site.signals
    if signals is None or signals.count_shortfall <= 0:
        return
    missing, signals.count_shortfall = signals.count_shortfall, 0
    findings.append(
        _finding("shrink", event, event.site, float(missing), "count_vs_books",
                 unexplained_after_late_sales=missing)
    )  # fmt: skip


def _check_count(site: SiteState, event: Event, findings: list[Finding]) -> None:
    """A count far above or below the on-hand the events imply. Units above it are
    unexplained: kept out of the site's storage while its hold is open. Below the books at a
    site whose sales arrive late, the count waits for them: the units beyond the tolerance
    are kept as `count_shortfall`, each late sale from before the count explains its units,
    and what is left once the feed passes the count (or at the next count, or a day on) is
    shrink; otherwise every count of a feed half a day behind would read as shrink."""
    implied, counted = site.on_hand, event.qty
    gap = counted - implied
    tolerance = max(3, 0.25 * max(implied, counted))
    off = abs(gap) > tolerance
    site.unexplained_qty = gap if off and gap > 0 else 0
    if off and gap < 0 and site.signals is not None and site.signals.feed_lag_ms > 0:
        site.signals.count_shortfall = -gap - math.floor(tolerance)
        return
    if off:
        findings.append(
            _finding("phantom_stock" if gap > 0 else "shrink", event, event.site,
                     gap / max(implied, 1), "count_vs_books", counted=counted, implied=implied)
        )  # fmt: skip


def close_days(site: SiteState, site_id: str, event: Event, policy: Policy) -> list[Finding]:
    """Feed each finished day's demand to the drift detector; on drift, adapt.

    Any event at the site closes the days before it (a restock after empty days must not
    make those days look like days of no demand); only sales are counted."""
    signals = site.signals
    if signals is None:
        return []
    day = event.ts_ms - event.ts_ms % DAY_MS
    if signals.day_start_ms < 0:
        signals.day_start_ms = day
        return []
    if site.on_hand <= 0:
        signals.day_short = True
    findings: list[Finding] = []
    while day > signals.day_start_ms:
        # A day the site sold out (or started empty) shows at least its sales' worth of
        # demand: evidence of a rise only, and none at all if it sold nothing. A site
        # reported silent is a feed problem, not a change in demand: skipped.
        if not signals.silent and not (signals.day_short and signals.day_qty == 0):
            if not isinstance(signals.drift, PoissonCusum):  # none yet, or an older version's
                signals.drift = new_drift_detector()
            drift = signals.drift
            reference = drift.reference_rate
            early = signals.rise_found_today
            drift.update(signals.day_qty, censored=signals.day_short, alarmed_within_day=early)
            if drift.drift_detected and not early:  # an early alarm was reported then
                ratio = drift.reference_rate / max(reference, 1e-9)
                findings.append(
                    _finding("demand_drift", event, site_id, ratio, "poisson_cusum",
                             day_qty=signals.day_qty, reference_per_day=reference,
                             new_level_per_day=drift.reference_rate)
                )  # fmt: skip
                _adapt(site, event.ts_ms, policy, drift.reference_rate)
        signals.day_start_ms += DAY_MS
        signals.day_qty = 0
        signals.day_short = site.on_hand <= 0
        signals.rise_found_today = False
        if day - signals.day_start_ms > 30 * DAY_MS:
            signals.day_start_ms = day
    return findings


def check_rise_within_day(
    site: SiteState, site_id: str, event: Event, policy: Policy, share: float
) -> list[Finding]:
    """After a sale at a site with a sales profile: would today's sales so far, against the
    `share` of a day's sales expected by now, already be a rise? (A fast mover's promotion
    then shows within hours; `close_days` still judges the whole day.)"""
    signals = site.signals
    if signals is None or signals.rise_found_today or signals.silent:
        return []
    drift = signals.drift
    if not isinstance(drift, PoissonCusum) or not drift.rises_within_day(signals.day_qty, share):
        return []
    signals.rise_found_today = True
    reference = drift.reference_rate
    level = (drift.pending_qty + signals.day_qty) / (drift.pending_days + share)
    _adapt(site, event.ts_ms, policy, level)
    return [
        _finding("demand_drift", event, site_id, level / max(reference, 1e-9),
                 "poisson_cusum_within_day", day_qty_so_far=signals.day_qty,
                 share_of_day=round(share, 3), reference_per_day=reference,
                 new_level_per_day=level)
    ]  # fmt: skip


def _per_window(level_per_day: float, policy: Policy) -> float:
    """A daily level in the demand estimate's unit (units per window)."""
    return level_per_day * policy.demand_window_minutes / (24 * 60)


def _adapt(site: SiteState, now_ms: int, policy: Policy, level_per_day: float) -> None:
    """Move the estimate to the level the detector found, and shorten its memory (past
    windows weigh a fifth of what they did) so that it keeps learning the new level fast."""
    demand = site.demand
    old_mean = demand.rate / demand.weight if demand.weight > 0 else 0.0
    new_mean = _per_window(level_per_day, policy)
    demand.weight *= 0.2
    # Variance scales with the level, as a count's does (Poisson when nothing is known).
    demand.var = (
        demand.var * 0.2 * new_mean / old_mean if old_mean > 0 else new_mean * demand.weight
    )
    demand.rate = new_mean * demand.weight
    assert site.signals is not None
    site.signals.drift_until_ms = now_ms + int(policy.drift_buffer_hours * HOUR_MS)


def count_demand(site: SiteState, qty: int) -> None:
    signals = site.signals
    if signals is not None:
        signals.day_qty += qty


def check_silence(state: SkuState, event: Event, policy: Policy) -> list[Finding]:
    """Sites of this SKU that normally sell, hold stock, and have sold nothing for so long
    that it is no longer chance: at least a day, and `_SILENT_MISSED` units of their usual
    demand (no sales is that likely by chance with probability e^-8, about 3 in 10,000).

    The usual rate is the drift detector's reference when it has one: the demand estimate
    itself learns the silence as zeros, and would talk itself out of the alarm."""
    findings = []
    for site_id, site in state.sites.items():
        signals = site.signals
        if signals is None or signals.silent or signals.quiet_since_ms < 0:
            continue
        if site.on_hand <= 0:
            # Nothing to sell is no silence: the clock starts again once it has stock.
            signals.quiet_since_ms = max(signals.quiet_since_ms, event.ts_ms)
            continue
        # A feed that lags may still owe the sales of its last `feed_lag_ms`.
        quiet_hours = (event.ts_ms - signals.quiet_since_ms - signals.feed_lag_ms) / HOUR_MS
        if quiet_hours < 24.0:
            continue
        per_day = mean_per_hour(site.demand, policy.demand_window_minutes) * 24
        drift = signals.drift
        if drift is not None and drift.reference_days >= _SILENT_REFERENCE_DAYS:
            per_day = max(per_day, drift.reference_rate)
        # Whole days only: sales follow the clock (nights are quiet), a full day is a full
        # day's demand whatever hour it starts.
        missed = per_day * (quiet_hours // 24)
        if missed >= _SILENT_MISSED:
            signals.silent = True
            _restore_level(site, per_day, policy)
            findings.append(
                _finding("silent_site", event, site_id, missed, "silence",
                         quiet_hours=quiet_hours, usual_per_day=per_day)
            )  # fmt: skip
    return findings


def _restore_level(site: SiteState, level_per_day: float, policy: Policy) -> None:
    """The quiet days before the alarm were learned as days without demand; the site still
    sold on them (only its feed was quiet), so the estimate goes back to the usual level."""
    demand = site.demand
    if demand.weight <= 0:
        return
    mean = demand.rate / demand.weight
    usual = _per_window(level_per_day, policy)
    if mean < usual:
        demand.rate = usual * demand.weight


def dispute(site: SiteState, taken: int, now_ms: int, policy: Policy) -> None:
    """An outlier sale's units stay in doubt until a count or the end of the hold."""
    if site.disputed_until_ms < now_ms:
        site.disputed_qty = 0
    site.disputed_qty += taken
    site.disputed_until_ms = now_ms + int(policy.integrity_hold_hours * HOUR_MS)


def hold(state: SkuState, findings: list[Finding], policy: Policy) -> None:
    """Integrity findings open a hold on their site."""
    for finding in findings:
        if finding.kind in _INTEGRITY_KINDS:
            site = state.site(finding.site)
            site.integrity_until_ms = max(
                site.integrity_until_ms, finding.ts_ms + int(policy.integrity_hold_hours * HOUR_MS)
            )
            site.integrity_reason = finding.kind


def extra_safety_z(site: SiteState, now_ms: int) -> float:
    """While a drift is being learned, plan with a wider buffer."""
    signals = site.signals
    return 1.0 if signals is not None and signals.drift_until_ms > now_ms else 0.0
