"""Site agents and the per-SKU planner.

Each site agent states its need against the policy: a receiver is short when its projected
position over the lane lead time plus the review period falls below its reorder point
(expected demand + z * sigma * sqrt(time)); a sender may ship the physical stock it holds
above its near-term protection (`sender_keep_hours` of demand plus safety). The planner
matches a short receiver with the sender that gives the best net benefit: expected lost
sales avoided at the receiver, minus those the transfer causes at the sender over the
sender's whole replenishment horizon, times the value of a sale, minus the transfer's fixed
and per-unit cost. Pricing the sender's loss instead of fencing off its whole reorder point
is what lets an overstocked site feed a short one while keeping transfers that merely move
a shortage from one site to another unprofitable (so no ping-pong).

A site's demand estimate is shrunk toward the SKU's average across sites (empirical Bayes),
which weighs as `demand_prior_hours` of observation (fewer, with `demand_prior_by_spread`,
where the SKU's sites differ beyond chance) against the site's own hours, capped at
the smoothing half-life (the estimate's memory): a slow mover or a site that has
sold little yet otherwise looks like it needs nothing, never gets stock and never shows
demand.

The planner's values (agents, needs, surpluses, plans) are built once and never assigned to
afterwards (a changed one is a new one, through `replace`), but they are plain slotted
dataclasses, not frozen ones: compiled with mypyc, a frozen dataclass's __init__ runs as
interpreted Python setting each field through `object.__setattr__`, which was a fifth of the
compiled engine's time on the bench stream (45.6 / 42.7 us an event frozen, 35.7 / 33.8
plain; issue #23). Those built on every event also write their own __init__ (the dataclass
gives them eq and repr only): mypyc compiles a class's own __init__, while a dataclass's
generated one still runs interpreted.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from types import EllipsisType
from typing import Final

from operators.demand import (
    forecast_bias,
    forecast_error_sq,
    mean_per_hour,
    observed_hours,
    sd_per_hour,
    unstated_error_sq,
)
from operators.rounding import rounded
from state.config import Lane, Network, Policy, SkuParams
from state.kinds import (
    BELOW_MIN_QTY,
    COOLDOWN,
    NO_ALLOWED_LANE,
    NO_NET_BENEFIT,
    NO_SENDER_WITH_SURPLUS,
    REASON_TEXT,
    RESERVATION_OUTSTANDING,
    SHELF_LIFE,
    WARMING_UP,
)
from state.records import Candidate, SiteView, SuppressReason
from state.sku import Inbound, SiteForecast, SiteState, SkuState
from state.units import HOUR_MS

_SQRT2: Final = math.sqrt(2.0)
_INV_SQRT_2PI: Final = 1.0 / math.sqrt(2.0 * math.pi)


# Bound once: compiled, `math.erfc` is looked up on the module at every call (mypyc has
# `math.exp` built in, not `erfc`), and this is called for every checkpoint priced.
_erfc: Final = math.erfc


def expected_shortfall(mean: float, sd: float, stock: float) -> float:
    """E[(D - stock)+] for D ~ Normal(mean, sd): the normal loss function."""
    if sd <= 1e-9:
        return max(mean - stock, 0.0)
    z = (stock - mean) / sd
    pdf = _INV_SQRT_2PI * math.exp(-0.5 * z * z)
    tail = 0.5 * _erfc(z / _SQRT2)
    return sd * (pdf - z * tail)


# Above this many units of mean demand a count's loss is the normal one to within noise.
_COUNT_LIMIT: Final = 30.0


def count_shortfall(mean: float, sd: float, stock: float) -> float:
    """E[(D - stock)+] for D a count of units with this mean and deviation: negative
    binomial when overdispersed (variance above the mean), Poisson otherwise.

    Retail demand over a lead time is mostly a handful of units with many zero days; there
    the normal loss function misprices a unit (it puts mass below zero and treats stock as
    continuous). Above `_COUNT_LIMIT` units the two agree and the normal one is used."""
    if mean > _COUNT_LIMIT:
        return expected_shortfall(mean, sd, stock)
    if stock <= 0 or mean <= 0:
        return max(mean - stock, 0.0)
    count = _Count(mean, max(sd * sd, mean))
    units = math.ceil(stock)
    if units > mean + 4 * math.sqrt(count.var) + 5:
        return count.tail_beyond(units)  # far out: sum the few units above the stock
    return max(mean - units + count.left_over(units), 0.0)


class _Count:
    """A Poisson or negative binomial count by its mean and variance, summed term by term:
    P(k)/P(k-1) is mean/k (Poisson) or (k - 1 + r)/k * (1 - p) (negative binomial)."""

    __slots__ = ("mean", "p", "r", "var")

    def __init__(self, mean: float, var: float) -> None:
        self.mean, self.var = mean, var
        self.p = mean / var
        self.r = mean * self.p / (1 - self.p) if var > mean * (1 + 1e-9) else 0.0

    def _log_pmf(self, k: int) -> float:
        if not self.r:
            return k * math.log(self.mean) - self.mean - math.lgamma(k + 1)
        return (
            math.lgamma(k + self.r) - math.lgamma(k + 1) - math.lgamma(self.r)
            + self.r * math.log(self.p) + k * math.log(1 - self.p)
        )  # fmt: skip

    def _ratio(self, k: int) -> float:
        return (k - 1 + self.r) / k * (1 - self.p) if self.r else self.mean / k

    def left_over(self, units: int) -> float:
        """E[(units - D)+]."""
        prob, left = math.exp(self._log_pmf(0)), 0.0
        for k in range(units):
            left += (units - k) * prob
            prob *= self._ratio(k + 1)
        return left

    def tail_beyond(self, units: int) -> float:
        """E[(D - units)+] from the terms above `units`, until they no longer count."""
        k = units + 1
        prob, total = math.exp(self._log_pmf(k)), 0.0
        while prob > 1e-18 or k < units + 3:
            total += (k - units) * prob
            k += 1
            prob *= self._ratio(k)
        return total


def counts_demand(policy: Policy) -> bool:
    """Whether the policy prices stock with the count loss (else the normal one)."""
    return policy.demand_distribution == "count"


def shortfall(count: bool, mean: float, sd: float, stock: float) -> float:
    """Expected units short by the policy's loss (`counts_demand`). A flag, not a function
    passed around: compiled, a call through a variable goes the generic way, this one is
    native."""
    return count_shortfall(mean, sd, stock) if count else expected_shortfall(mean, sd, stock)


@dataclass(slots=True, init=False)
class Agent:
    """A site's demand and position as its agent sees them at one moment."""

    site_id: str
    state: SiteState
    mean: float
    sd: float
    learned: bool
    # Standard error of `mean`: how far the estimate itself may be off.
    se: float = 0.0
    # The site has a forecast its sales have not discredited (its record shows no larger
    # error than it states): evidence enough without thin-evidence pricing.
    forecast_trusted: bool = False
    # How late its supplier deliveries arrive against their ETAs (learned; 0: on time).
    supplier_delay_ms: int = 0
    # Its forecast as the estimate used it (corrected by the SKU's bias); None without one.
    forecast_per_hour: float | None = None

    def __init__(
        self,
        site_id: str,
        state: SiteState,
        mean: float,
        sd: float,
        learned: bool,
        se: float = 0.0,
        forecast_trusted: bool = False,
        supplier_delay_ms: int = 0,
        forecast_per_hour: float | None = None,
    ) -> None:
        self.site_id = site_id
        self.state = state
        self.mean = mean
        self.sd = sd
        self.learned = learned
        self.se = se
        self.forecast_trusted = forecast_trusted
        self.supplier_delay_ms = supplier_delay_ms
        self.forecast_per_hour = forecast_per_hour

    def shifted(self, errors: float) -> Agent:
        """The same agent with its rate moved by `errors` standard errors (never below 0)."""
        if not errors or not self.se:
            return self
        return self.with_mean(max(self.mean + errors * self.se, 0.0))

    def with_mean(self, mean: float) -> Agent:
        """The same agent at another rate (its spread and evidence as they are)."""
        return Agent(
            self.site_id,
            self.state,
            mean,
            self.sd,
            self.learned,
            self.se,
            self.forecast_trusted,
            self.supplier_delay_ms,
            self.forecast_per_hour,
        )

    def position_by(self, horizon_ms: int, now_ms: int) -> int:
        """Position counting only inbound stock due within the horizon."""
        due = now_ms + horizon_ms
        delay = self.supplier_delay_ms
        inbound = sum(
            item.qty for item in self.state.inbound_items() if arrival(item, delay) <= due
        )
        return self.state.on_hand + inbound + self.state.reserved_in - self.state.reserved_out

    def reorder_point(self, hours: float, z: float) -> float:
        return self.mean * hours + z * self.sd * math.sqrt(hours)


# An exponentially smoothed mean weighs as many observations as (2 - a) / a, about 2.9
# half-lives' worth.
_EFFECTIVE_PER_HALFLIFE: Final = 2.0 / math.log(2.0)


@dataclass(slots=True, init=False)
class DemandPrior:
    """The SKU's demand per hour at a site of demand index 1, from all its sites, and how far
    its sites' own rates spread around it beyond what chance explains (per hour squared; 0
    when they agree, or when the policy does not weigh the prior by the spread)."""

    per_hour: float
    spread: float = 0.0

    def __init__(
        self,
        per_hour: float,
        spread: float = 0.0,
    ) -> None:
        self.per_hour = per_hour
        self.spread = spread

    def hours(self, index: float, most: float) -> float:
        """What the prior is worth at a site of this index, in hours of its own sales: a
        gamma prior of mean m = index x per_hour and variance index^2 x spread weighs as
        m / variance hours; never more than `most` (the policy's `demand_prior_hours`)."""
        variance = index * self.spread  # a tiny spread can underflow to 0 here
        if variance <= 0 or self.per_hour <= 0:
            return most
        return min(most, self.per_hour / variance)


def demand_prior(sku_state: SkuState, policy: Policy, network: Network) -> DemandPrior | None:
    """The SKU's demand per hour at a site of demand index 1, across its sites weighted by
    how long each was observed; None until some site has been observed for the warm-up."""
    minutes = policy.demand_window_minutes
    cap = policy.demand_halflife_hours
    total = weight = 0.0
    longest = 0.0
    for site_id, site in sku_state.sites.items():
        hours = observed_hours(site.demand, minutes)
        if hours <= 0:
            continue
        longest = max(longest, hours)
        evidence = min(hours, cap)
        total += evidence * mean_per_hour(site.demand, minutes) / demand_index(network, site_id)
        weight += evidence
    if longest < policy.warmup_hours or weight <= 0:
        return None
    per_hour = total / weight
    if not policy.demand_prior_by_spread:
        return DemandPrior(per_hour)
    return DemandPrior(per_hour, _spread(sku_state, policy, network, per_hour, weight))


def _spread(
    sku_state: SkuState, policy: Policy, network: Network, per_hour: float, weight: float
) -> float:
    """Empirical Bayes: the variance of the sites' index-1 rates around the SKU's, weighted
    as the prior weighs them, less the part their own estimates' noise explains (each
    site's standard error squared, as `agent_for` reckons it). Sites whose rates differ no
    more than chance get the full prior; an item that sells at one store and barely
    anywhere else gets almost none, so that store's rate is not pulled toward the others'."""
    minutes = policy.demand_window_minutes
    cap = policy.demand_halflife_hours
    memory = cap * _EFFECTIVE_PER_HALFLIFE
    between = noise = 0.0
    for site_id, site in sku_state.sites.items():
        hours = observed_hours(site.demand, minutes)
        if hours <= 0:
            continue
        index = demand_index(network, site_id)
        evidence = min(hours, cap)
        gap = mean_per_hour(site.demand, minutes) / index - per_hour
        sd = sd_per_hour(site.demand, minutes) / index
        between += evidence * gap * gap
        noise += evidence * sd * sd / min(hours, memory)
    return max((between - noise) / weight, 0.0)


def demand_index(network: Network, site_id: str) -> float:
    found = network.sites.get(site_id)
    return found.demand_index if found is not None else 1.0


def usable_forecast(site: SiteState) -> SiteForecast | None:
    """The site's forecast where it stands in for the SKU's cross-site prior: one of a
    positive rate (a forecast of 0 units leaves the site to the prior)."""
    forecast = site.forecast
    return forecast if forecast is not None and forecast.per_hour > 0 else None


def agent_for(
    site_id: str,
    site: SiteState,
    policy: Policy,
    prior: DemandPrior | None = None,
    index: float = 1.0,
    bias: float = 1.0,
    unstated_sq: float | None = None,
) -> Agent:
    """The site's rate from what it sold (weighing the hours observed, capped at the
    smoothing half-life) and a prior: its own forecast when it has one, else the SKU's rate
    across sites (weighing `demand_prior_hours`). A forecast of m units an hour off by a
    share c is a gamma prior on the rate worth 1 / (c^2 m) hours of sales, so a slow
    mover's sales take weeks to outweigh its forecast and a fast mover's a day. The forecast
    is first corrected by the SKU's `bias` (`operators.demand.forecast_bias`), and c is its
    stated error (where its source states none, `unstated_sq`, the error learned across the
    SKU's sites, or else the policy's `forecast_error_cv`) unless the site's sales show it
    missing by more. A forecast is the site's own; the SKU's average across sites, a cruder
    prior, is not added to it (measured on M5: fill 0.9109 with both, 0.9139 with the
    forecast alone). With a prior a site acts at once."""
    minutes = policy.demand_window_minutes
    mean = mean_per_hour(site.demand, minutes)
    sd = sd_per_hour(site.demand, minutes)
    hours = observed_hours(site.demand, minutes)
    learned = hours >= policy.warmup_hours
    windows = min(hours, policy.demand_halflife_hours * _EFFECTIVE_PER_HALFLIFE)
    evidence = min(hours, policy.demand_halflife_hours)
    total, weight = evidence * mean, evidence
    forecast = usable_forecast(site)
    trusted = False
    per_hour: float | None = None
    if forecast is not None:
        dispersion = sd * sd / mean if mean > 0 else 1.0
        if forecast.error_cv > 0:
            stated = forecast.error_cv * forecast.error_cv
        elif unstated_sq is not None:
            stated = unstated_sq
        else:
            stated = policy.forecast_error_cv * policy.forecast_error_cv
        error_sq = forecast_error_sq(forecast, bias, dispersion, stated)
        trusted = error_sq <= stated
        per_hour = forecast.per_hour * bias
        strength = 1.0 / (error_sq * per_hour)
        total += strength * per_hour
        weight += strength
        windows += strength
    elif prior is not None and policy.demand_prior_hours > 0:
        strength = prior.hours(index, policy.demand_prior_hours)
        total += strength * prior.per_hour * index
        weight += strength
        windows += strength
    if weight > evidence:
        mean = total / weight
        sd = max(sd, math.sqrt(mean))  # never below Poisson
        learned = True
    se = sd / math.sqrt(windows) if windows > 0 else sd
    return Agent(site_id, site, mean, sd, learned, se, trusted, forecast_per_hour=per_hour)


class ForecastSkill:
    """How the SKU's forecasts have done across its sites: the bias factor for all of them,
    and the learned error of those that state none (squared)."""

    __slots__ = ("bias", "unstated_sq")

    def __init__(self, bias: float, unstated_sq: float) -> None:
        self.bias = bias
        self.unstated_sq = unstated_sq


def forecast_skill(sku_state: SkuState, policy: Policy) -> ForecastSkill:
    assumed = policy.forecast_error_cv
    bias = forecast_bias(sku_state.sites.values(), assumed)
    return ForecastSkill(bias, unstated_error_sq(sku_state.sites.values(), bias, assumed))


class Agents:
    """Agents already built for one decision, by site id, and the SKU's forecast skill. An
    agent depends on its site's demand, forecast and the SKU's prior, none of which change
    while one event's receivers are judged (only reservations do, which agents read live):
    a receiver and its seven senders are built once per event, not once per receiver they
    meet, and the skill, a pass over all the SKU's sites, once, not once per agent."""

    __slots__ = ("by_site", "skill")

    def __init__(self) -> None:
        self.by_site: dict[str, Agent] = {}
        self.skill: ForecastSkill | None = None


def _skill(sku_state: SkuState, policy: Policy, agents: Agents | None) -> ForecastSkill:
    """The SKU's forecast skill, from `agents` when this decision has it already."""
    skill = agents.skill if agents is not None else None
    if skill is None:
        skill = forecast_skill(sku_state, policy)
        if agents is not None:
            agents.skill = skill
    return skill


def agent_at(
    sku_state: SkuState,
    site_id: str,
    network: Network,
    policy: Policy,
    prior: DemandPrior | None,
    agents: Agents | None,
) -> Agent:
    """The site's agent, from `agents` when one was built for this decision already."""
    found = agents.by_site.get(site_id) if agents is not None else None
    if found is None:
        site = sku_state.site(site_id)
        bias, unstated_sq = 1.0, None
        if site.forecast is not None:
            skill = _skill(sku_state, policy, agents)
            bias = skill.bias
            if site.forecast.error_cv <= 0:
                unstated_sq = skill.unstated_sq
        index = demand_index(network, site_id)
        found = agent_for(site_id, site, policy, prior, index, bias, unstated_sq)
        configured = network.sites.get(site_id)
        if configured is not None and configured.supplier_delay_hours > 0:
            delay_ms = int(configured.supplier_delay_hours * HOUR_MS)
            found = replace(found, supplier_delay_ms=delay_ms)
        if agents is not None:
            agents.by_site[site_id] = found
    return found


@dataclass(slots=True, init=False)
class Need:
    """A receiver's deficit for a given lane lead time."""

    qty: int
    position: int
    reorder_point: float
    target: float
    horizon_hours: float

    def __init__(
        self,
        qty: int,
        position: int,
        reorder_point: float,
        target: float,
        horizon_hours: float,
    ) -> None:
        self.qty = qty
        self.position = position
        self.reorder_point = reorder_point
        self.target = target
        self.horizon_hours = horizon_hours


def receiver_need(agent: Agent, lead_hours: float, policy: Policy, now_ms: int) -> Need:
    """Short when, at some moment after a transfer could arrive and before lead + review,
    the stock it can sell from by then is under the reorder point for that long."""
    horizon = lead_hours + policy.review_hours
    rop = agent.reorder_point(horizon, policy.service_level_z)
    target = rop + agent.mean * policy.cover_hours
    site = agent.state
    if site.inbound is None:
        # Nothing on its way (most SKU-sites): one checkpoint, at the horizon, where the
        # reorder point is highest. The common case, so it is spared the general walk.
        position = site.on_hand + site.reserved_in - site.reserved_out
        stock = position + site.disputed(now_ms)
        qty = math.ceil(target - stock) if stock < rop and horizon > lead_hours else 0
        return Need(qty, position, rop, target, horizon)
    position = agent.position_by(int(horizon * HOUR_MS), now_ms)
    qty = 0
    checkpoints = stock_checkpoints(
        agent.state, now_ms, horizon, receiving=True, delay_ms=agent.supplier_delay_ms
    )
    for hours, stock in checkpoints:
        if hours > lead_hours:
            reorder_point = agent.reorder_point(hours, policy.service_level_z)
            if stock < reorder_point:
                qty = max(qty, math.ceil(reorder_point + agent.mean * policy.cover_hours - stock))
    return Need(qty, position, rop, target, horizon)


@dataclass(slots=True, init=False)
class Surplus:
    qty: int
    keep: float
    reorder_point: float
    horizon_hours: float

    def __init__(
        self,
        qty: int,
        keep: float,
        reorder_point: float,
        horizon_hours: float,
    ) -> None:
        self.qty = qty
        self.keep = keep
        self.reorder_point = reorder_point
        self.horizon_hours = horizon_hours


def sender_surplus(agent: Agent, replenishment_hours: float, policy: Policy) -> Surplus:
    """Physical units a sender can ship and still cover its next `sender_keep_hours`.

    What giving them up costs the sender later (until its own replenishment can make up for
    it) is not a fence here but a price in `economics`.
    """
    horizon = replenishment_hours + policy.review_hours
    keep = agent.reorder_point(policy.sender_keep_hours, policy.service_level_z)
    state = agent.state
    physical = state.on_hand - state.reserved_out
    return Surplus(
        max(math.floor(physical - keep), 0),
        keep,
        agent.reorder_point(horizon, policy.service_level_z),
        horizon,
    )


def site_view(agent: Agent, position: int, reorder_point: float, target: float) -> SiteView:
    state = agent.state
    forecast = agent.forecast_per_hour
    return SiteView(
        agent.site_id, state.on_hand, state.inbound_qty, state.reserved_in, state.reserved_out,
        position, rounded(agent.mean, 4), rounded(agent.sd, 4), rounded(reorder_point, 2),
        rounded(target, 2), None if forecast is None else rounded(forecast, 4),
        agent.supplier_delay_ms / HOUR_MS,
    )  # fmt: skip


@dataclass(slots=True, init=False)
class Economics:
    qty: int
    saved: float
    lost_at_sender: float
    cost: float
    net_benefit: float

    def __init__(
        self,
        qty: int,
        saved: float,
        lost_at_sender: float,
        cost: float,
        net_benefit: float,
    ) -> None:
        self.qty = qty
        self.saved = saved
        self.lost_at_sender = lost_at_sender
        self.cost = cost
        self.net_benefit = net_benefit


# (hours from now, units the site can sell from until then)
Checkpoint = tuple[float, int]


def stock_checkpoints(
    state: SiteState,
    now_ms: int,
    horizon_hours: float,
    receiving: bool = False,
    delay_ms: int = 0,
) -> tuple[Checkpoint, ...]:
    """What a site can sell from just before each inbound arrival within the horizon, and
    at its end.

    Counting inbound stock only from its ETA is what shows a shortfall that a later
    delivery cannot prevent: a site with nothing on hand and a large delivery due in three
    days will lose sales for three days, although its position looks fine.

    As a receiver, a site still counts the units an unconfirmed outlier sale took off its
    books; as a sender it does not: doubtful data moves no stock either way.
    """
    stock = state.on_hand + state.reserved_in - state.reserved_out
    if receiving:
        stock += state.disputed(now_ms)
    end_ms = now_ms + int(horizon_hours * HOUR_MS)
    arrivals: list[tuple[int, int]] = []
    for item in state.inbound_items():
        eta_ms = arrival(item, delay_ms)
        if eta_ms <= now_ms:
            stock += item.qty
        elif eta_ms <= end_ms:
            arrivals.append((eta_ms, item.qty))
    arrivals.sort()
    points: list[Checkpoint] = []
    for eta_ms, qty in arrivals:
        points.append(((eta_ms - now_ms) / HOUR_MS, stock))
        stock += qty
    points.append((horizon_hours, stock))
    return tuple(points)


def arrival(item: Inbound, delay_ms: int) -> int:
    """When an expected delivery is counted on: a supplier's at its ETA plus the site's
    learned delay, a transfer's at its ETA (its lane's learned lead is in it already)."""
    return item.eta_ms + delay_ms if item.sent_ms < 0 else item.eta_ms


def stock_at(points: tuple[Checkpoint, ...], hours: float) -> int:
    """What a site can sell from just after `hours`: the first checkpoint past it."""
    return next((stock for at, stock in points if at > hours), points[-1][1])


# Demand until a checkpoint (mean, sd) and the stock there is to meet it.
Exposure = tuple[float, float, int]
# Beyond this many standard deviations of stock above demand, the expected shortfall is
# below 1e-15 of a unit: such a checkpoint cannot change a decision, so it is not evaluated.
_NEGLIGIBLE_SD: Final = 8.0


def exposure(agent: Agent, hours: float, stock: int) -> Exposure:
    return agent.mean * hours, agent.sd * math.sqrt(hours), stock


def _relevant(exposures: list[Exposure], spare: int) -> tuple[Exposure, ...]:
    """Those that `spare` fewer units could leave short."""
    return tuple(e for e in exposures if e[2] - spare <= e[0] + _NEGLIGIBLE_SD * e[1])


class ReceiverOutlook:
    """What more stock arriving after `lead_hours` is worth to a receiver.

    `saved(qty)` is the largest cut in expected shortfall at any checkpoint after the
    arrival, less the cut the units would make before it (they are not there yet to make it).
    """

    __slots__ = ("_after", "_before", "_count")

    def __init__(
        self,
        agent: Agent,
        points: tuple[Checkpoint, ...],
        lead_hours: float,
        count: bool = False,
    ) -> None:
        after = [exposure(agent, h, s) for h, s in points if h > lead_hours]
        self._after = _relevant(after, 0)
        self._before = _relevant([exposure(agent, lead_hours, stock_at(points, lead_hours))], 0)
        self._count = count

    def saved(self, qty: int) -> float:
        best = self.saved_at_most(qty)
        count = self._count
        for mean, sd, stock in self._before:
            best -= shortfall(count, mean, sd, stock) - shortfall(count, mean, sd, stock + qty)
        return max(best, 0.0)

    def saved_at_most(self, qty: int) -> float:
        """A bound on `saved` of any quantity up to `qty`: each checkpoint's cut grows with
        the quantity, and the cut before arrival only takes away."""
        best, count = 0.0, self._count
        for mean, sd, stock in self._after:
            cut = shortfall(count, mean, sd, stock) - shortfall(count, mean, sd, stock + qty)
            best = max(best, cut)
        return best


class SenderOutlook:
    """What giving units up now costs a sender: `lost(qty)` is the largest rise in expected
    shortfall at any of its checkpoints up to its replenishment horizon."""

    __slots__ = ("_count", "_exposures")

    def __init__(
        self,
        agent: Agent,
        points: tuple[Checkpoint, ...],
        most: int,
        count: bool = False,
    ) -> None:
        self._exposures = _relevant([exposure(agent, h, s) for h, s in points], most)
        self._count = count

    def lost(self, qty: int) -> float:
        worst, count = 0.0, self._count
        for mean, sd, stock in self._exposures:
            rise = shortfall(count, mean, sd, stock - qty) - shortfall(count, mean, sd, stock)
            worst = max(worst, rise)
        return worst


def sellable_before_expiry(
    receiver: Agent,
    receiver_points: tuple[Checkpoint, ...],
    sender: Agent,
    lane: Lane,
    shelf_life_hours: float,
) -> int:
    """Most units the receiver can sell before they expire, selling first in, first out.

    Events carry no lot dates, so the units shipped are taken to be as old as the sender's
    oldest: what it holds divided by what it sells an hour (its FIFO turnover). A sender
    that does not sell is taken to hold stock at the end of its life. The receiver first
    sells what it will hold when they arrive.
    """
    if sender.mean <= 0 or receiver.mean <= 0:
        return 0
    remaining = shelf_life_hours - sender.state.on_hand / sender.mean - lane.lead_hours
    if remaining <= 0:
        return 0
    at_arrival = stock_at(receiver_points, lane.lead_hours)
    ahead = max(at_arrival - receiver.mean * lane.lead_hours, 0.0)
    return max(math.floor(receiver.mean * remaining - ahead), 0)


def economics(
    qty: int,
    receiver: ReceiverOutlook,
    lane: Lane,
    sender: SenderOutlook,
    params: SkuParams,
    policy: Policy,
) -> Economics:
    """Net benefit of moving `qty` now: the value of the sales it saves at the receiver
    (over lane lead time + cover) less those it costs the sender (over the sender's
    replenishment horizon), minus the transfer's cost."""
    saved = receiver.saved(qty)
    lost = sender.lost(qty)
    cost = lane.fixed_cost + lane.cost_per_unit * qty
    net = (params.unit_margin + policy.lost_sale_penalty) * (saved - lost) - cost
    return Economics(qty, saved, lost, cost, net)


def best_quantity(low: int, high: int, pack: int, evaluate: EconomicsFn) -> Economics:
    """Maximise net benefit over pack multiples in [low, high]; net benefit is concave in qty."""
    lo, hi = low // pack, high // pack
    while hi - lo > 2:
        m1 = lo + (hi - lo) // 3
        m2 = hi - (hi - lo) // 3
        if evaluate.at(m1 * pack).net_benefit < evaluate.at(m2 * pack).net_benefit:
            lo = m1 + 1
        else:
            hi = m2 - 1
    best = evaluate.at(lo * pack)
    for k in range(lo + 1, hi + 1):  # the first of equals wins, as max() would pick it
        found = evaluate.at(k * pack)
        if found.net_benefit > best.net_benefit:
            best = found
    return best


class EconomicsFn:
    """A memoised economics evaluation for one receiver-sender pair.

    Its inputs are fields, not a tuple of arguments, and it is asked through a method, not
    `__call__`: compiled, both calls are then native, where a call through `*args` or of
    an object goes the generic way."""

    __slots__ = ("_cache", "_lane", "_params", "_policy", "_receiver", "_sender")

    def __init__(
        self,
        receiver: ReceiverOutlook,
        lane: Lane,
        sender: SenderOutlook,
        params: SkuParams,
        policy: Policy,
    ) -> None:
        self._receiver = receiver
        self._lane = lane
        self._sender = sender
        self._params = params
        self._policy = policy
        self._cache: dict[int, Economics] = {}

    def at(self, qty: int) -> Economics:
        found = self._cache.get(qty)
        if found is None:
            found = self._cache[qty] = economics(
                qty, self._receiver, self._lane, self._sender, self._params, self._policy
            )
        return found


@dataclass(slots=True, init=False)
class Plan:
    """The planner's answer for one receiver: a chosen transfer or the reason there is none.

    The receiver's view (`receiver`, its numbers for the record) is built when first read:
    most plans end in nothing logged and need none. It reads the receiver's site as it is
    then, so it is read before anything changes the site (the engine reads it first)."""

    receiver_agent: Agent
    need: Need
    chosen: Candidate | None
    lane: Lane | None
    sender: SiteView | None
    # The other senders weighed; their records (`alternatives`) are built when first read.
    others: tuple[ScoredSender, ...]
    suppress_reason: SuppressReason | None
    # Some alternatives were screened out by a bound on their net benefit: their numbers
    # were not computed (see `plan_for_receiver`).
    screened: bool
    _receiver_view: SiteView | None
    _alternatives: tuple[Candidate, ...] | None
    # The rate (units an hour) the receiver was priced at where `priced_receiver` put it
    # below its estimate; None where it was priced at its estimate.
    priced_per_hour: float | None

    def __init__(
        self,
        receiver_agent: Agent,
        need: Need,
        chosen: Candidate | None,
        lane: Lane | None,
        sender: SiteView | None,
        others: tuple[ScoredSender, ...],
        suppress_reason: SuppressReason | None,
        screened: bool = False,
    ) -> None:
        self.receiver_agent = receiver_agent
        self.need = need
        self.chosen = chosen
        self.lane = lane
        self.sender = sender
        self.others = others
        self.suppress_reason = suppress_reason
        self.screened = screened
        self._receiver_view = None
        self._alternatives = None
        self.priced_per_hour = None

    @property
    def alternatives(self) -> tuple[Candidate, ...]:
        """The other senders weighed, as the decision record lists them."""
        if self._alternatives is None:
            self._alternatives = tuple(other.candidate for other in self.others)
        return self._alternatives

    @property
    def receiver(self) -> SiteView:
        if self._receiver_view is None:
            need = self.need
            self._receiver_view = site_view(
                self.receiver_agent, need.position, need.reorder_point, need.target
            )
        return self._receiver_view


def plan_for_receiver(
    sku_state: SkuState,
    receiver_id: str,
    network: Network,
    policy: Policy,
    now_ms: int,
    prior: DemandPrior | EllipsisType | None = ...,
    screen: bool = False,
    agents: Agents | None = None,
    sender: str | None = None,
) -> Plan | None:
    """Find the best sender for a receiver, or why none qualifies; None when no need.

    `prior` is the SKU's `demand_prior` when the caller has it (one per event serves every
    receiver the event touches); left out, it is computed here.

    `screen=True` rejects a sender without pricing each quantity when even the most the
    transfer could save, at the cheapest quantity, is below `min_net_benefit`. The outcome
    (the chosen sender and quantity, or the reason for none) is the same; only a screened
    alternative's numbers are left out. A receiver short for days is planned at each of its
    events with the same answer, which nobody reads twice: the engine screens, and plans in
    full only when the answer is to be logged.

    `sender`: weigh only the lane from that site (whether its new stock pays for a transfer
    to this receiver at all; see `engine._decide`).
    """
    if prior is ...:
        prior = demand_prior(sku_state, policy, network) if policy.demand_prior_hours > 0 else None
    if _needs_nothing(sku_state, receiver_id, network, policy, prior, now_ms, agents):
        return None
    receiver = agent_at(sku_state, receiver_id, network, policy, prior, agents)
    lanes = network.lanes_into(receiver_id)  # fastest first
    shortest = lanes[0].lead_hours if lanes else 0.0
    need = receiver_need(receiver, shortest, policy, now_ms)
    if need.qty <= 0:
        return None

    # (No nested helper for these: compiled, a closure builds its environment at every call
    # of the function that holds it, and this one runs for most events.)
    if not receiver.learned:
        return Plan(receiver, need, None, None, None, (), WARMING_UP, False)
    if not lanes:
        return Plan(receiver, need, None, None, None, (), NO_ALLOWED_LANE, False)
    if any(r.to_site == receiver_id and not r.dispatched for r in sku_state.reservations.values()):
        reason = RESERVATION_OUTSTANDING
        return Plan(receiver, need, None, None, None, (), reason, False)
    params = network.sku_params(sku_state.sku)
    hopeless = screen and _no_lane_can_pay(receiver, lanes, params, policy, now_ms)
    inputs = _PlanInputs(
        sku_state, receiver, params, network, policy, now_ms, prior, screen, agents, hopeless,
        priced_receiver(receiver, policy, network, prior),
    )  # fmt: skip
    candidates: list[ScoredSender] = []
    for lane in lanes:  # fastest first
        if sender is not None and lane.from_site != sender:
            continue
        scored = _candidate(inputs, lane)
        if scored is None:
            continue
        candidates.append(scored)
        if hopeless and scored.reason is NO_NET_BENEFIT:
            # No sender can pay, and one got as far as pricing: the plan's reason is settled
            # (`no_net_benefit`, the first of `_REASON_ORDER`), whatever the other lanes hold.
            break
    if not candidates:
        reason = NO_SENDER_WITH_SURPLUS
        return Plan(receiver, need, None, None, None, (), reason, False)
    plan = _choose(receiver, need, candidates)
    if inputs.priced is not receiver:
        plan.priced_per_hour = inputs.priced.mean
    return plan


# Room left for floating-point rounding when a bound stands in for the exact figure.
_BOUND_SLACK: Final = 1e-9


def _needs_nothing(
    sku_state: SkuState,
    receiver_id: str,
    network: Network,
    policy: Policy,
    prior: DemandPrior | None,
    now_ms: int,
    agents: Agents | None = None,
) -> bool:
    """True only when the receiver surely has no need, shown without building its agent:
    most judgements find their receiver stocked (on the bench stream, 86 % of them).

    The agent's rate is a blend of the site's own and its prior's (`agent_for`: its forecast
    times the SKU's forecast bias, or else the SKU's cross-site prior), so it is at most the
    larger of the two, and its deviation at most the larger of the site's own and Poisson's
    at that rate; the reorder point those give at the horizon is above the real one at every
    checkpoint of `receiver_need`, and the stock without its inbound is below the stock at
    each (an inbound item holds at least a unit)."""
    site = sku_state.sites.get(receiver_id)
    if site is None:
        return False
    minutes = policy.demand_window_minutes
    mean = mean_per_hour(site.demand, minutes)
    sd = sd_per_hour(site.demand, minutes)
    forecast = usable_forecast(site)
    if forecast is not None:
        mean = max(mean, forecast.per_hour * _skill(sku_state, policy, agents).bias)
        sd = max(sd, math.sqrt(mean))
    elif prior is not None and policy.demand_prior_hours > 0:
        mean = max(mean, prior.per_hour * demand_index(network, receiver_id))
        sd = max(sd, math.sqrt(mean))
    lanes = network.lanes_into(receiver_id)
    hours = (lanes[0].lead_hours if lanes else 0.0) + policy.review_hours
    ceiling = mean * hours + policy.service_level_z * sd * math.sqrt(hours)
    stock = site.on_hand + site.reserved_in - site.reserved_out + site.disputed(now_ms)
    return stock > ceiling * (1.0 + _BOUND_SLACK) + _BOUND_SLACK


# When no sender is viable, the reason the plan gives: the first of these its senders hit.
_REASON_ORDER: Final = (
    NO_NET_BENEFIT,
    BELOW_MIN_QTY,
    SHELF_LIFE,
    COOLDOWN,
)
# A plan whose senders no lane can pay stops at the first one priced (`plan_for_receiver`).
assert _REASON_ORDER[0] is NO_NET_BENEFIT


def _choose(receiver: Agent, need: Need, candidates: list[ScoredSender]) -> Plan:
    """The best viable sender (net benefit, then the faster lane, then the sender's id), the
    others as alternatives; or why none qualifies."""
    screened = any(c.screened for c in candidates)
    viable = [c.priced for c in candidates if c.priced is not None and c.reason is None]
    if not viable:
        reasons = {c.reason for c in candidates}
        reason = next((r for r in _REASON_ORDER if r in reasons), NO_SENDER_WITH_SURPLUS)
        return Plan(receiver, need, None, None, None, tuple(candidates), reason, screened)
    chosen = min(viable, key=lambda c: (-c.net_benefit, c.lead_hours, c.from_site))
    best = next(c for c in candidates if c.priced is chosen)
    sender, surplus = best.sender, best.surplus
    # Only the chosen sender's view goes into the evidence: built for it alone.
    sender_view = site_view(sender, sender.state.position, surplus.reorder_point, surplus.keep)
    others = tuple(c for c in candidates if c is not best)
    return Plan(receiver, need, chosen, best.lane, sender_view, others, None, screened)


@dataclass(slots=True, init=False)
class ScoredSender:
    """A sender considered: its lane, agent and surplus; priced (`priced`, its record), or
    left out (`reason`, with the quantity it got to and whether it was screened out, its
    numbers not computed). A left-out sender's record is built only when read
    (`candidate`): most plans end with nothing logged."""

    lane: Lane
    sender: Agent
    surplus: Surplus
    priced: Candidate | None
    # Why it cannot be the transfer: left out, or priced below `min_net_benefit`.
    reason: SuppressReason | None
    qty: int
    screened: bool

    def __init__(
        self,
        lane: Lane,
        sender: Agent,
        surplus: Surplus,
        priced: Candidate | None,
        reason: SuppressReason | None,
        qty: int = 0,
        screened: bool = False,
    ) -> None:
        self.lane = lane
        self.sender = sender
        self.surplus = surplus
        self.priced = priced
        self.reason = reason
        self.qty = qty
        self.screened = screened

    @property
    def candidate(self) -> Candidate:
        """The sender as the decision record lists it."""
        if self.priced is not None:
            return self.priced
        assert self.reason is not None
        lane = self.lane
        return Candidate(
            lane.from_site, self.qty, lane.lead_hours, 0.0, 0.0, 0.0, 0.0,
            REASON_TEXT[self.reason],
        )  # fmt: skip


@dataclass(slots=True, init=False)
class _PlanInputs:
    """What pricing every sender of one receiver shares."""

    sku_state: SkuState
    receiver: Agent
    params: SkuParams
    network: Network
    policy: Policy
    now_ms: int
    prior: DemandPrior | None
    screen: bool
    agents: Agents | None
    # Screening found that no sender on any lane can pay (`_no_lane_can_pay`).
    hopeless: bool
    # The receiver as a transfer to it is priced (`priced_receiver`).
    priced: Agent

    def __init__(
        self,
        sku_state: SkuState,
        receiver: Agent,
        params: SkuParams,
        network: Network,
        policy: Policy,
        now_ms: int,
        prior: DemandPrior | None,
        screen: bool,
        agents: Agents | None,
        hopeless: bool,
        priced: Agent,
    ) -> None:
        self.sku_state = sku_state
        self.receiver = receiver
        self.params = params
        self.network = network
        self.policy = policy
        self.now_ms = now_ms
        self.prior = prior
        self.screen = screen
        self.agents = agents
        self.hopeless = hopeless
        self.priced = priced


# Screen only below the threshold by more than floating-point noise in the bound.
_SCREEN_MARGIN: Final = 1e-9


def _candidate(inputs: _PlanInputs, lane: Lane) -> ScoredSender | None:
    """The sender at the lane's far end, priced; None when it has nothing to give."""
    sender_state = inputs.sku_state.sites.get(lane.from_site)
    if sender_state is None:
        return None
    network, policy = inputs.network, inputs.policy
    sender = agent_at(
        inputs.sku_state, lane.from_site, network, policy, inputs.prior, inputs.agents
    )
    if not sender.learned:
        return None
    replenishment = network.sites[lane.from_site].replenishment_lead_hours
    surplus = sender_surplus(sender, replenishment, policy)
    if surplus.qty <= 0:
        return None

    if _cooling_down(inputs, lane, sender_state):
        return _rejected(lane, sender, surplus, COOLDOWN)
    need = receiver_need(inputs.receiver, lane.lead_hours, policy, inputs.now_ms)
    pack = inputs.params.pack_size
    high = min(need.qty, surplus.qty) // pack * pack
    smallest = max(math.ceil(inputs.params.min_transfer_qty / pack) * pack, pack)
    if need.qty <= 0 or high < smallest:
        return _rejected(lane, sender, surplus, BELOW_MIN_QTY, max(high, 0))
    horizon = lane.lead_hours + policy.cover_hours
    receiver_points: tuple[Checkpoint, ...] | None = None
    if inputs.params.shelf_life_hours is not None:
        receiver_points = stock_checkpoints(
            inputs.receiver.state,
            inputs.now_ms,
            horizon,
            receiving=True,
            delay_ms=inputs.receiver.supplier_delay_ms,
        )
        sellable = sellable_before_expiry(
            inputs.receiver, receiver_points, sender, lane, inputs.params.shelf_life_hours
        )
        high = min(high, sellable // pack * pack)
        if high < smallest:
            return _rejected(lane, sender, surplus, SHELF_LIFE, max(high, 0))
    if inputs.hopeless:
        return _rejected(lane, sender, surplus, NO_NET_BENEFIT, high, True)
    if receiver_points is None:
        receiver_points = stock_checkpoints(
            inputs.receiver.state,
            inputs.now_ms,
            horizon,
            receiving=True,
            delay_ms=inputs.receiver.supplier_delay_ms,
        )
    count = counts_demand(policy)
    # Estimation risk: the receiver's rate a little lower, the sender's a little higher.
    pessimistic = inputs.priced.shifted(-estimate_risk(inputs.priced, policy))
    outlook = ReceiverOutlook(pessimistic, receiver_points, lane.lead_hours, count)
    if inputs.screen and _ruled_out(inputs, lane, outlook, smallest, high):
        return _rejected(lane, sender, surplus, NO_NET_BENEFIT, high, True)
    sender_points = stock_checkpoints(
        sender_state, inputs.now_ms, surplus.horizon_hours, delay_ms=sender.supplier_delay_ms
    )
    sender_outlook = SenderOutlook(
        sender.shifted(estimate_risk(sender, policy)), sender_points, high, count
    )
    evaluate = EconomicsFn(outlook, lane, sender_outlook, inputs.params, policy)
    best = best_quantity(smallest, high, pack, evaluate)
    viable = best.net_benefit >= policy.min_net_benefit
    reason = None if viable else NO_NET_BENEFIT
    return ScoredSender(lane, sender, surplus, _priced(lane, best, reason), reason)


def _rejected(
    lane: Lane, sender: Agent, surplus: Surplus, reason: SuppressReason, qty: int = 0,
    screened: bool = False,
) -> ScoredSender:  # fmt: skip
    """A sender left out, and why. A module function, not a closure in `_candidate`: a
    compiled closure builds its environment on every call of the function that holds it."""
    return ScoredSender(lane, sender, surplus, None, reason, qty, screened)


def priced_receiver(
    receiver: Agent, policy: Policy, network: Network, prior: DemandPrior | None
) -> Agent:
    """The receiver as a transfer to it is priced: its agent, but where its own sales span
    less than `receiver_full_prior_hours` and no forecast stands in for the prior (it has
    none, or one of 0 units: `usable_forecast`), at no higher a rate than the SKU's
    cross-site prior at its full weight gives it. The prior counts for less where
    the SKU's sites differ beyond chance (`_spread`); a new site's one big day is itself
    such a difference, and it is the site a transfer would go to. On the M5 sample (fourth
    100 items, no forecasts, per trip, one-for-one) a receiver at 10.9 a day after a 20-unit
    day, which went on to sell 1.6, drew 16 units from the store that sold 24 a day. Its
    need, and the receiver-wide bound screening starts from, keep the agent's own rate,
    never the lower."""
    hours = policy.receiver_full_prior_hours
    if hours <= 0 or prior is None or prior.spread <= 0:
        return receiver
    if usable_forecast(receiver.state) is not None:
        return receiver
    if observed_hours(receiver.state.demand, policy.demand_window_minutes) >= hours:
        return receiver
    index = demand_index(network, receiver.site_id)
    full = agent_for(receiver.site_id, receiver.state, policy, DemandPrior(prior.per_hour), index)
    return receiver if full.mean >= receiver.mean else receiver.with_mean(full.mean)


def estimate_risk(agent: Agent, policy: Policy) -> float:
    """How many standard errors a site's rate is moved against a transfer: the policy's
    `estimate_risk_z`, or its `thin_evidence_z` for a site without a trusted forecast whose
    estimate rests on fewer than `thin_evidence_units` units (mean x the hours it weighs,
    which is (sd / se)^2). A forecast its sales discredit no longer vouches for the site."""
    risk = policy.estimate_risk_z
    if policy.thin_evidence_units <= 0 or agent.se <= 0 or agent.forecast_trusted:
        return risk
    units = agent.mean * (agent.sd / agent.se) ** 2
    return max(risk, policy.thin_evidence_z) if units < policy.thin_evidence_units else risk


def _cooling_down(inputs: _PlanInputs, lane: Lane, sender_state: SiteState) -> bool:
    """A sender that received a transfer lately, or one the receiver is sending to now,
    does not send (stock must not ping-pong)."""
    cooling = inputs.policy.cooldown_hours * HOUR_MS
    received = sender_state.last_transfer_in_ms
    if received >= 0 and inputs.now_ms - received < cooling:
        return True
    return any(
        r.from_site == inputs.receiver.site_id and r.to_site == lane.from_site
        for r in inputs.sku_state.reservations.values()
    )


def _ruled_out(
    inputs: _PlanInputs, lane: Lane, outlook: ReceiverOutlook, smallest: int, high: int
) -> bool:
    """Screening: net benefit is at most the value of the most any quantity could save (a
    sender loses nothing) less the cost of the cheapest quantity. (Counting the sender's
    least loss too screens a sixth more senders but costs more than it saves: building the
    sender's outlook for every screened one.)"""
    value = inputs.params.unit_margin + inputs.policy.lost_sale_penalty
    cheapest = lane.fixed_cost + min(lane.cost_per_unit * smallest, lane.cost_per_unit * high)
    ceiling = value * outlook.saved_at_most(high) - cheapest
    return value >= 0 and ceiling < inputs.policy.min_net_benefit - _SCREEN_MARGIN


def _no_lane_can_pay(
    receiver: Agent, lanes: list[Lane], params: SkuParams, policy: Policy, now_ms: int
) -> bool:
    """Screening for every lane at once: what any quantity saves on a lane is at most the
    receiver's expected shortfall at one of that lane's checkpoints, and each of those is at
    most the shortfall at the slowest lane's horizon with the stock the site has before any
    delivery on the way arrives (the normal loss grows with the demand's mean and spread,
    and falls with stock; deliveries only add to it). Below `min_net_benefit` once the
    cheapest lane's fixed cost is paid, every sender that gets as far as pricing is screened
    out, the receiver's outlook is built for none of them, and the plan needs no sender
    after the first (`plan_for_receiver`). (The normal loss only: the count loss turns
    normal past `_COUNT_LIMIT` units, and the two need not order across that switch.)"""
    state = receiver.state
    value = params.unit_margin + policy.lost_sale_penalty
    if value < 0 or counts_demand(policy) or any(lane.cost_per_unit < 0 for lane in lanes):
        return False
    stock = state.on_hand + state.reserved_in - state.reserved_out + state.disputed(now_ms)
    hours = max(lane.lead_hours for lane in lanes) + policy.cover_hours
    mean, sd, _ = exposure(receiver.shifted(-estimate_risk(receiver, policy)), hours, stock)
    most = expected_shortfall(mean, sd, stock)
    cheapest = min(lane.fixed_cost for lane in lanes)
    return value * most - cheapest < policy.min_net_benefit - _SCREEN_MARGIN


def _priced(lane: Lane, best: Economics, reason: SuppressReason | None) -> Candidate:
    # Positional, in the record's field order: keywords cost a dict per call (a priced
    # sender is built for most plans).
    return Candidate(
        lane.from_site, best.qty, lane.lead_hours, rounded(best.cost, 4), rounded(best.saved, 4),
        rounded(best.lost_at_sender, 4), rounded(best.net_benefit, 4),
        None if reason is None else REASON_TEXT[reason],
    )  # fmt: skip


def proposal_id(
    sku: str, from_site: str, to_site: str, qty: int, trigger: str, version: str
) -> str:
    """Deterministic from the decision's inputs, so a replay yields the same id."""
    material = "\x1f".join((sku, from_site, to_site, str(qty), trigger, version)).encode()
    return hashlib.blake2b(material, digest_size=16).hexdigest()
