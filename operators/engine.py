"""The decision core: one event in, the SKU's new state and everything it caused out.

The Bytewax flow (via `flows.pipeline.SkuLogic`), the simulator and the tests (via
`operators.replay`) all call `step`; there is no second decision path. It is deterministic:
the same events in the same order, under the same governance timeline, give the same
proposals, ids included, because time comes only from event timestamps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from operators import signals
from operators.demand import (
    advance,
    count_sale,
    mean_per_hour,
    observed_hours,
    smoothing_alpha,
    track_forecast,
)
from operators.leadtimes import LeadTimeBoard
from operators.limits import expire_inbound, refusal, refused_letter
from operators.planner import (
    Agents,
    DemandPrior,
    Plan,
    agent_at,
    demand_prior,
    plan_for_receiver,
    proposal_id,
    sender_surplus,
    usable_forecast,
)
from operators.position import (
    TRANSFER_INBOUND_PREFIX,
    apply_event,
    expire_reservations,
    reserve,
)
from operators.rounding import rounded
from operators.trace import continue_trace
from state.config import ConfigError, Network, Policy, SkuParams
from state.governance import DEFAULT_GOVERNANCE, Governance
from state.kinds import (
    ADJUSTMENT,
    FORECAST,
    INBOUND_EXPECTED,
    INBOUND_RECEIVED,
    REASON_TEXT,
    RETURN,
    SALE,
    SALE_HISTORY,
    SNAPSHOT,
    TRANSFER_APPROVED,
    TRANSFER_FAILED,
    TRANSFER_RECEIVED,
    TRANSFER_REJECTED,
)
from state.records import (
    DecisionRecord,
    Event,
    Evidence,
    Finding,
    LeadTime,
    Outcome,
    Proposal,
    ProposalStatus,
    ReleaseReason,
    SiteOccupancy,
    SitePosition,
    StepOutput,
    SupplierDelay,
    SuppressReason,
)
from state.sku import Reservation, SiteForecast, SiteState, SkuState
from state.units import HOUR_MS

# Events after which the touched site may have stock to give to others.
_RECOUNTS: Final = frozenset({SNAPSHOT, ADJUSTMENT})
_ADDS_STOCK: Final = frozenset(
    {
        RETURN,
        SNAPSHOT,
        ADJUSTMENT,
        INBOUND_RECEIVED,
        INBOUND_EXPECTED,
        TRANSFER_REJECTED,
        TRANSFER_FAILED,
    }
)


def _static_governance(_ts_ms: int) -> Governance:
    return DEFAULT_GOVERNANCE


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What every decision needs besides state and event; built once per flow.

    `governance_at` answers the operators' settings at an event time (pause, freezes,
    threshold, active policy version). `policies` are the versions that may be activated;
    `shadow` runs a second policy on a share of SKUs, logged and never proposed.
    """

    network: Network
    policy: Policy
    window_ms: int
    alpha: float
    policies: Mapping[str, Policy] = field(default_factory=dict)
    governance_at: Callable[[int], Governance] = _static_governance
    shadow: DecisionContext | None = None
    shadow_share: float = 0.0
    # Live positions in each StepOutput: only worth building when something stores them.
    emit_positions: bool = True
    # Sites with a storage capacity: their occupancy goes to negotiation after each event.
    storage_sites: frozenset[str] = frozenset()
    # How long an event id is remembered; how long past its ETA a delivery is expected.
    dedupe_horizon_ms: int = 72 * 3_600_000
    inbound_grace_ms: int = 168 * 3_600_000
    # Lanes' lead times learned from received transfers (None: the network file's only).
    # Folded after each batch by the replay loop or the flow's sink, read by the planner.
    lead_times: LeadTimeBoard | None = None

    @classmethod
    def build(
        cls,
        network: Network,
        policy: Policy,
        *,
        policies: Mapping[str, Policy] | None = None,
        governance_at: Callable[[int], Governance] = _static_governance,
        shadow_policy: Policy | None = None,
        shadow_share: float = 0.0,
        emit_positions: bool = True,
    ) -> DecisionContext:
        versions = {policy.version: policy, **(policies or {})}
        for other in versions.values():
            if (other.demand_window_minutes, other.demand_halflife_hours) != (
                policy.demand_window_minutes,
                policy.demand_halflife_hours,
            ):
                raise ConfigError(
                    f"policy {other.version}: demand_window_minutes and demand_halflife_hours "
                    "must match the default policy (they shape state all versions share)"
                )
        board = LeadTimeBoard(network) if network.lead_times.enabled else None
        shadow = None
        if shadow_policy is not None:
            shadow = cls.build(network, shadow_policy, governance_at=governance_at)
            shadow = replace(shadow, lead_times=board)  # one board: the lanes are the same
        return cls(
            network=network,
            policy=policy,
            window_ms=policy.demand_window_minutes * 60_000,
            alpha=smoothing_alpha(policy.demand_halflife_hours, policy.demand_window_minutes),
            policies=versions,
            governance_at=governance_at,
            shadow=shadow,
            shadow_share=shadow_share,
            emit_positions=emit_positions,
            storage_sites=frozenset(
                s for s, site in network.sites.items() if site.storage_capacity is not None
            ),
            dedupe_horizon_ms=int(policy.dedupe_horizon_hours * 3_600_000),
            inbound_grace_ms=int(network.limits.inbound_grace_hours * 3_600_000),
            lead_times=board,
        )

    def planning_network(self) -> Network:
        """The network with the lanes' learned lead times in, where they are learned."""
        return self.lead_times.network if self.lead_times is not None else self.network

    def policy_for(self, governance: Governance) -> Policy:
        if governance.policy_version is None:
            return self.policy
        return self.policies.get(governance.policy_version, self.policy)


def in_shadow_share(sku: str, share: float) -> bool:
    """Stable across processes and restarts (not Python's salted hash)."""
    digest = hashlib.blake2b(sku.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


@dataclass(slots=True, init=False)
class _Step:
    """What one event does to its SKU, gathered as the step goes: the governance and policy
    in force at its time, the SKU's clock, and every output so far.

    A class with its own __init__ (the dataclass gives it eq and repr only): compiled, it
    is built natively; a dataclass's generated __init__ runs as interpreted Python."""

    event: Event
    policy: Policy
    governance: Governance
    now: int
    # When the decision is made (`decision_time`): proposals and records are dated by it
    # and reservations expire by it; the state's own arithmetic keeps `now`.
    decided: int
    new_hour: bool
    touched: set[str]
    decisions: list[DecisionRecord]
    findings: list[Finding]
    # A receipt closes at most one transfer or delivery: no list to allocate per event.
    lead_times: tuple[LeadTime, ...]
    supplier_delays: tuple[SupplierDelay, ...]
    proposals: list[Proposal]

    def __init__(
        self,
        event: Event,
        policy: Policy,
        governance: Governance,
        now: int,
        new_hour: bool,
        touched: set[str],
    ) -> None:
        self.event = event
        self.policy = policy
        self.governance = governance
        self.now = now
        self.decided = decision_time(event, now)
        self.new_hour = new_hour
        self.touched = touched
        self.decisions = []
        self.findings = []
        self.lead_times = ()
        self.supplier_delays = ()
        self.proposals = []


def decision_time(event: Event, now: int) -> int:
    """When the decision an event causes is made, as the input log dates it: the later of
    the SKU's clock and the time the event's message reached Kafka (`Event.ingested_ms`;
    where producers stamp event time, the input's stream time when it came), where that is
    within `signals.MAX_FEED_LAG_MS` after the event's own time. A sale from a store that
    uploads its sales every few hours is decided when it arrives, so its proposal's life
    (`expires_at`) runs from then, as the clocks of the services that carry it out do; with
    the SKU's clock it could expire before it was made. A message published longer after
    its event (a backfill, a replay of history, a wrong clock) keeps event time, as does an
    event without a message time (the simulator's, but for the sales it holds back)."""
    arrived = event.ingested_ms
    if arrived is None or not 0 < arrived - event.ts_ms <= signals.MAX_FEED_LAG_MS:
        return now
    return max(now, arrived)


def step(state: SkuState | None, event: Event, ctx: DecisionContext) -> tuple[SkuState, StepOutput]:
    """Apply one event to its SKU's state and decide: the SKU's state after, and everything
    the event caused."""
    new_key = state is None
    state = state if state is not None else SkuState(event.sku)
    turned_away = _admit(state, event, ctx, new_key)
    if turned_away is not None:
        return state, turned_away
    if event.type is SALE_HISTORY:
        return state, _learn_history(state, event, ctx, new_key)
    if event.type is FORECAST:
        return state, _learn_forecast(state, event, ctx, new_key)
    governance = ctx.governance_at(event.ts_ms)
    site = state.site(event.site)
    late = 0 <= event.ts_ms < site.demand.window_start_ms
    run = _Step(
        event,
        ctx.policy_for(governance),
        governance,
        now=max(state.clock_ms, event.ts_ms),
        new_hour=event.ts_ms // HOUR_MS > state.clock_ms // HOUR_MS,
        touched={event.site},
    )
    state.clock_ms = run.now
    _expire(state, run, ctx)
    _observe_demand(site, event, ctx)
    counts_as_demand = _check_signals(state, site, run, ctx) if run.policy.signal_checks else True
    if site.forecast is not None:
        # A sale that empties the shelf may have met less than the demand: its hours are
        # left out of the score. (That leaves out where demand ran high, so the score reads
        # sales a few per cent low; counting them, the sale as a lower bound, is the less
        # biased estimate but decided no better: docs/benchmarks.md.)
        sold = event.qty if event.type is SALE and counts_as_demand else 0
        censored = event.type is SALE and event.qty >= site.on_hand
        track_forecast(site.forecast, event.ts_ms, _sells(site) and not censored, sold)
    site.last_event_ms = max(site.last_event_ms, event.ts_ms)
    rejudge_neighbours = _apply(state, site, run, counts_as_demand)
    if counts_as_demand and event.type is SALE:
        count_sale(site.demand, event.ts_ms, event.qty, ctx.window_ms, ctx.alpha)
    _decide(state, run, ctx, rejudge_neighbours)
    _shadow(state, run, ctx)
    return state, _output(state, run, ctx, new_key, late)


def _admit(state: SkuState, event: Event, ctx: DecisionContext, new_key: bool) -> StepOutput | None:
    """The output for an event that changes nothing (refused by a limit, or a duplicate);
    None for one the step takes."""
    refused = refusal(state, event, ctx.network)
    if refused is not None:
        letter = refused_letter(event, *refused, event.received_ms or event.ts_ms)
        return StepOutput(event.event_id, event_ts_ms=event.ts_ms, new_key=new_key, refused=letter)
    now = max(state.clock_ms, event.ts_ms)
    if state.seen_before(event.event_id, now, ctx.dedupe_horizon_ms, ctx.policy.dedupe_capacity):
        return StepOutput(event.event_id, duplicate=True, event_ts_ms=event.ts_ms)
    return None


def _learn_history(
    state: SkuState, event: Event, ctx: DecisionContext, new_key: bool
) -> StepOutput:
    """A sale from before stockshift watched: it counts as demand in its window, as a sale
    at a shelf that never ran empty would, and does nothing else (no stock, no signals, no
    decision; the site's first count is still its first). A warm start from history thus
    gives the demand state a flow that had watched those sales would have."""
    site = state.site(event.site)
    advance(site.demand, event.ts_ms, ctx.window_ms, ctx.alpha, stocked_out=False, out_now=False)
    count_sale(site.demand, event.ts_ms, event.qty, ctx.window_ms, ctx.alpha)
    state.clock_ms = max(state.clock_ms, event.ts_ms)
    return StepOutput(event.event_id, event_ts_ms=event.ts_ms, new_key=new_key)


def _learn_forecast(
    state: SkuState, event: Event, ctx: DecisionContext, new_key: bool
) -> StepOutput:
    """The site's latest forecast replaces the one before; it moves no stock and decides
    nothing by itself (the next event at the SKU is judged with it)."""
    figures = event.forecast
    assert figures is not None  # parse gives every forecast event its figures
    # 0.0: the source states no error; the planner learns one (and starts from the policy's).
    error_cv = figures.error_cv if figures.error_cv is not None else 0.0
    site = state.site(event.site)
    new = SiteForecast(figures.mean_per_day / 24.0, error_cv, scored_to_ms=event.ts_ms)
    before = site.forecast
    if before is not None:  # the new forecast takes over the source's record
        track_forecast(before, event.ts_ms, _sells(site), 0)
        new.expected_units, new.sold_units = before.expected_units, before.sold_units
        new.scored_to_ms = before.scored_to_ms
    site.forecast = new
    state.clock_ms = max(state.clock_ms, event.ts_ms)
    return StepOutput(event.event_id, event_ts_ms=event.ts_ms, new_key=new_key)


def _sells(site: SiteState) -> bool:
    """Whether the site's sales since its last event showed demand: it had stock and its
    sales feed was not silent."""
    return site.on_hand > 0 and not (site.signals is not None and site.signals.silent)


def _expire(state: SkuState, run: _Step, ctx: DecisionContext) -> None:
    """Deliveries long overdue (once per SKU per hour is enough) and reservations whose
    proposal was never dispatched."""
    if run.new_hour:
        run.findings += expire_inbound(state, run.now, ctx.inbound_grace_ms)
    for pid, reservation in expire_reservations(state, run.decided):
        run.decisions.append(_released(state, run.event, pid, reservation, ReleaseReason.EXPIRED))
        run.touched.update((reservation.from_site, reservation.to_site))


def _observe_demand(site: SiteState, event: Event, ctx: DecisionContext) -> None:
    """Close the demand windows the event's time has passed. A site whose sales feed has
    gone silent still sells: like a stockout, its empty windows say nothing about demand
    and must not pull the estimate down."""
    silent = site.signals is not None and site.signals.silent
    if advance(
        site.demand,
        event.ts_ms,
        ctx.window_ms,
        ctx.alpha,
        stocked_out=site.stocked_out_in_window or silent,
        out_now=site.on_hand <= 0 or silent,
    ):
        site.stocked_out_in_window = site.on_hand <= 0


def _check_signals(state: SkuState, site: SiteState, run: _Step, ctx: DecisionContext) -> bool:
    """Signal health before the event is applied; whether its sale counts as demand."""
    event, policy = run.event, run.policy
    checked, counts_as_demand = signals.check_event(state, site, event, policy)
    run.findings += checked
    run.findings += signals.close_days(site, event.site, event, policy)
    if counts_as_demand and event.type is SALE:
        signals.count_demand(site, event.qty)
        profiled = ctx.network.sites.get(event.site)
        if profiled is not None and profiled.sales_profile is not None:
            run.findings += signals.check_rise_within_day(
                site, event.site, event, policy, profiled.share_of_day(event.ts_ms)
            )
    if run.new_hour:  # silence is judged in hours: once per SKU per hour is enough
        run.findings += signals.check_silence(state, event, policy)
    signals.hold(state, run.findings, policy)
    return counts_as_demand


def _apply(state: SkuState, site: SiteState, run: _Step, counts_as_demand: bool) -> bool:
    """Move the stock; whether the site's neighbours may now have a new sender in it."""
    event = run.event
    if event.type is TRANSFER_APPROVED:
        run.decisions.extend(_approve(state, event, run.policy, run.decided))
    on_hand_before = site.on_hand
    sent_ms = _sent_ms(site, event)
    promised_ms = _promised_ms(site, event)
    released = apply_event(state, event)
    if promised_ms >= 0:
        run.supplier_delays = (SupplierDelay(event.site, (event.ts_ms - promised_ms) / HOUR_MS),)
    if not counts_as_demand and event.type is SALE:
        signals.dispute(site, on_hand_before - site.on_hand, event.ts_ms, run.policy)
    if released is not None:
        run.decisions.append(_released(state, event, *released))
        run.touched.update((released[1].from_site, released[1].to_site))
    if event.type is TRANSFER_RECEIVED:
        run.decisions.append(_received(state, event))
        if 0 <= sent_ms <= event.ts_ms and event.from_site is not None:
            hours = (event.ts_ms - sent_ms) / HOUR_MS
            run.lead_times = (LeadTime(event.from_site, event.site, hours),)
    if event.from_site is not None:
        run.touched.add(event.from_site)
    # A count or an adjustment that did not raise the site's stock gives no neighbour a new
    # sender (each neighbour is judged on its own events anyway).
    gained = event.type in _ADDS_STOCK and (
        event.type not in _RECOUNTS or site.on_hand > on_hand_before
    )
    return gained or released is not None


def _sent_ms(site: SiteState, event: Event) -> int:
    """When the transfer a receipt closes was dispatched, as the receiver's inbound says; -1
    when not a receipt or its dispatch was never seen."""
    if event.type is not TRANSFER_RECEIVED or site.inbound is None:
        return -1
    found = site.inbound.get(TRANSFER_INBOUND_PREFIX + (event.proposal_id or event.event_id))
    return found.sent_ms if found is not None else -1


def _promised_ms(site: SiteState, event: Event) -> int:
    """The ETA a supplier delivery this receipt closes was announced with; -1 when not such
    a receipt (or the delivery was never announced)."""
    if event.type is not INBOUND_RECEIVED or event.shipment_id is None:
        return -1
    found = site.inbound.get(event.shipment_id) if site.inbound is not None else None
    return found.eta_ms if found is not None and found.sent_ms < 0 else -1


def _decide(state: SkuState, run: _Step, ctx: DecisionContext, rejudge_neighbours: bool) -> None:
    """Judge the event's site as a receiver and, when it may now have stock to give, its
    neighbours as receivers of that stock (the event that changes a site is what evaluates
    it: no batch timer)."""
    policy = run.policy
    site_id = run.event.site
    prior = None
    if policy.demand_prior_hours > 0 and _prior_may_count(state, site_id):
        prior = demand_prior(state, policy, ctx.network)
    agents = Agents()
    receivers: list[tuple[str, str | None]] = [(site_id, None)]
    lanes = ctx.network.lanes_from(site_id) if rejudge_neighbours else []
    if lanes and _may_give(state, site_id, ctx, policy, prior, agents):
        receivers.extend((lane.to_site, site_id) for lane in lanes if lane.to_site in state.sites)
    for receiver_id, via in receivers:
        proposal = _decide_receiver(state, run, receiver_id, ctx, prior, agents, via)
        if proposal is not None:
            run.proposals.append(proposal)
            run.touched.update((proposal.from_site, proposal.to_site))


def _prior_may_count(state: SkuState, site_id: str) -> bool:
    """Whether a site this event may judge lacks a forecast of its own. The SKU's cross-site
    prior stands in only for a missing one (`agent_for`, `_needs_nothing`, `priced_receiver`
    read it only for a site without a forecast of a positive rate), and it is a pass over
    all the SKU's sites: on M5 items with forecasts for every store, computed for every
    event and never read, it was 18 % of the pure core's time. The event's own site may be
    new here (created without a forecast when judged)."""
    if site_id not in state.sites:
        return True
    return any(usable_forecast(site) is None for site in state.sites.values())


def _may_give(
    state: SkuState,
    site_id: str,
    ctx: DecisionContext,
    policy: Policy,
    prior: DemandPrior | None,
    agents: Agents,
) -> bool:
    """Whether the site (one with lanes out, so a network site) has units to ship at all (a
    receiver's wider buffer while a drift is learned only lowers what a sender may ship, so
    the policy's own is an upper bound)."""
    sender = agent_at(state, site_id, ctx.network, policy, prior, agents)
    replenishment = ctx.network.sites[site_id].replenishment_lead_hours
    return sender.learned and sender_surplus(sender, replenishment, policy).qty > 0


def _shadow(state: SkuState, run: _Step, ctx: DecisionContext) -> None:
    """The same event as the shadow policy sees it: logged (flagged), never proposed."""
    if ctx.shadow is None or not in_shadow_share(run.event.sku, ctx.shadow_share):
        return
    state.shadow, shadow_output = step(state.shadow, run.event, ctx.shadow)
    run.decisions.extend(_as_shadow(d) for d in shadow_output.decisions)
    # A shadow proposal is never negotiated or published: its record is logged here.
    run.decisions.extend(_as_shadow(p.record) for p in shadow_output.proposals if p.record)


def _output(
    state: SkuState, run: _Step, ctx: DecisionContext, new_key: bool, late: bool
) -> StepOutput:
    touched = sorted(s for s in run.touched if s in state.sites)
    positions = (
        tuple(_position(state, s, run.policy) for s in touched) if ctx.emit_positions else ()
    )
    occupancy = (
        tuple(
            SiteOccupancy(state.sku, s, _occupancy(state.sites[s], run.now), run.now)
            for s in touched
            if s in ctx.storage_sites
        )
        if ctx.storage_sites  # most networks give no site a storage capacity
        else ()
    )
    # Positional, in the record's field order: keywords cost a dict per call, and the record
    # is built for every event (0.3 us of an interpreted dataclass's 0.56).
    event = run.event
    return StepOutput(
        event.event_id, False, late, event.ts_ms, new_key, tuple(run.proposals),
        tuple(run.decisions), positions, tuple(run.findings), occupancy, run.lead_times,
        run.supplier_delays,
    )  # fmt: skip


def _occupancy(site: SiteState, now_ms: int) -> int:
    """What counts against a site's storage: on hand, inbound and transfers reserved in;
    units a count added against the books stay out while the site's hold is open."""
    on_hand = max(site.on_hand, 0)
    if site.unexplained_qty and site.integrity_until_ms >= now_ms:
        on_hand = max(on_hand - site.unexplained_qty, 0)
    return on_hand + site.inbound_qty + site.reserved_in


def _decide_receiver(
    state: SkuState,
    run: _Step,
    receiver_id: str,
    ctx: DecisionContext,
    prior: DemandPrior | None,
    agents: Agents,
    via: str | None = None,
) -> Proposal | None:
    """A proposal into the receiver, or None; a suppression is logged when its reason
    changes, not on every event that finds the same answer.

    `via`: the receiver is judged because that neighbour may now have stock to give; unless
    a transfer from it would pay, the receiver is left as it was (its own events judge it
    against every sender, and log why none pays)."""
    event, policy, governance, now = run.event, run.policy, run.governance, run.now
    receiver = state.site(receiver_id)
    widen = signals.extra_safety_z(receiver, now)
    planning = replace(policy, service_level_z=policy.service_level_z + widen) if widen else policy
    network = ctx.planning_network()
    if via is not None:
        offer = plan_for_receiver(
            state, receiver_id, network, planning, now, prior, screen=True, agents=agents,
            sender=via,
        )  # fmt: skip
        if offer is None or offer.chosen is None:
            return None
    # Screening pays only where the answer may repeat the reason last logged: a receiver
    # with none logged (its last judgement found no need, or proposed) logs or proposes
    # whatever it finds now, with every alternative priced, so it is planned in full at once.
    screen = bool(receiver.last_logged)
    plan = plan_for_receiver(
        state, receiver_id, network, planning, now, prior, screen=screen, agents=agents
    )
    if plan is None:
        receiver.last_logged = ""
        return None
    reason = _suppress_reason(state, plan, receiver_id, policy, governance, now)
    if plan.screened and not (reason and receiver.last_logged == reason):
        # To be logged or proposed: every alternative's numbers go on the record.
        plan = plan_for_receiver(state, receiver_id, network, planning, now, prior, agents=agents)
        assert plan is not None, "screening changed whether the receiver has a need"
        reason = _suppress_reason(state, plan, receiver_id, policy, governance, now)
    if reason:
        # Logged when the reason changes, not on every event that finds the same answer.
        if receiver.last_logged != reason:
            receiver.last_logged = reason
            run.decisions.append(
                _suppressed(state, event, receiver_id, plan, reason, policy, run.decided)
            )
        return None
    receiver.last_logged = ""
    return _propose(state, run, plan, ctx)


def _suppress_reason(
    state: SkuState,
    plan: Plan,
    receiver_id: str,
    policy: Policy,
    governance: Governance,
    now: int,
) -> str:
    """Why the plan becomes no proposal ('' when it becomes one)."""
    reason = REASON_TEXT[plan.suppress_reason] if plan.suppress_reason else ""
    if plan.chosen is not None and governance.paused:
        reason = SuppressReason.PAUSED.value
    elif plan.chosen is not None and policy.integrity_action == "suppress":
        if _integrity_hold(state, (plan.chosen.from_site, receiver_id), now):
            reason = SuppressReason.DATA_QUALITY.value
    return reason


def _approval_reasons(
    state: SkuState, proposal: Proposal, ctx: DecisionContext, run: _Step
) -> tuple[str, ...]:
    """Why a human must look first: value, a frozen SKU or site, or thin demand evidence."""
    policy, governance = run.policy, run.governance
    reasons = []
    threshold = (
        governance.approval_threshold
        if governance.approval_threshold is not None
        else policy.approval_value_threshold
    )
    value = proposal.qty * ctx.network.sku_params(state.sku).unit_cost
    if value > threshold:
        reasons.append(f"value {value:.2f} is above the approval threshold {threshold:.2f}")
    if governance.frozen(state.sku, proposal.from_site, proposal.to_site):
        reasons.append("the SKU or a site is frozen")
    receiver = state.site(proposal.to_site).demand
    if observed_hours(receiver, policy.demand_window_minutes) < policy.confidence_hours:
        reasons.append("low confidence: the receiver's demand has been observed only briefly")
    held = _integrity_hold(state, (proposal.from_site, proposal.to_site), run.now)
    if held:
        reasons.append(f"open data-quality finding: {held}")
    return tuple(reasons)


def _integrity_hold(state: SkuState, sites: tuple[str, ...], now: int) -> str:
    """The open integrity findings at these sites, as text ('' when none)."""
    return ", ".join(
        f"{site_id} {state.sites[site_id].integrity_reason}"
        for site_id in sites
        if site_id in state.sites and state.sites[site_id].integrity_until_ms >= now
    )


def _propose(state: SkuState, run: _Step, plan: Plan, ctx: DecisionContext) -> Proposal:
    """The plan as a proposal: its evidence, its status (a person must look first, or not),
    its reservation at both ends, and its decision record, all computed once. It is dated
    by the decision time."""
    event, policy, decided = run.event, run.policy, run.decided
    chosen, lane = plan.chosen, plan.lane
    assert chosen is not None and lane is not None
    receiver_id = plan.receiver.site
    pid = proposal_id(
        state.sku, chosen.from_site, receiver_id, chosen.qty, event.event_id, policy.version
    )
    evidence = _evidence(plan, ctx.network.sku_params(state.sku))
    reason = _reason_text(plan)
    draft = Proposal(
        pid, state.sku, chosen.from_site, receiver_id, chosen.qty, decided, decided,
        policy.version, ProposalStatus.PROPOSED, reason, evidence, (event.event_id,),
    )  # fmt: skip
    approvals = _approval_reasons(state, draft, ctx, run)
    status = ProposalStatus.NEEDS_APPROVAL if approvals else ProposalStatus.PROPOSED
    ttl = policy.approval_ttl_hours if approvals else policy.proposal_ttl_hours
    expires = decided + int(ttl * HOUR_MS)
    if approvals:
        reason += " Needs approval: " + "; ".join(approvals) + "."
    reserve(
        state, pid, Reservation(chosen.from_site, receiver_id, chosen.qty, expires, lane.lead_hours)
    )
    record = DecisionRecord(
        sku=state.sku,
        site=receiver_id,
        ts_ms=decided,
        outcome=Outcome(status.value),
        reason=status.value,
        detail=reason,
        policy_version=policy.version,
        trigger_event_id=event.event_id,
        trigger_source=event.source,
        proposal_id=pid,
        receiver=plan.receiver,
        alternatives=plan.alternatives,
        evidence=evidence,
        approval_reasons=approvals,
    )
    traceparent = continue_trace(event.traceparent, pid)
    record = replace(record, traceparent=traceparent) if traceparent else record
    return replace(draft, expires_at_ms=expires, status=status, reason=reason,
                   trigger_received_ms=event.received_ms, record=record,
                   traceparent=traceparent)  # fmt: skip


def _evidence(plan: Plan, params: SkuParams) -> Evidence:
    """The numbers a planner checks: both sites, the lane, and what the transfer is worth."""
    chosen, lane, sender = plan.chosen, plan.lane, plan.sender
    assert chosen is not None and lane is not None and sender is not None
    return Evidence(
        receiver=plan.receiver,
        sender=sender,
        lead_hours=lane.lead_hours,
        cost_per_unit=lane.cost_per_unit,
        fixed_cost=lane.fixed_cost,
        transfer_cost=chosen.transfer_cost,
        unit_margin=params.unit_margin,
        expected_units_saved=chosen.expected_units_saved,
        expected_units_lost_at_sender=chosen.expected_units_lost_at_sender,
        net_benefit=chosen.net_benefit,
        alternatives=plan.alternatives,
        value=rounded(chosen.qty * params.unit_cost, 2),
    )


def _reason_text(plan: Plan) -> str:
    chosen = plan.chosen
    assert chosen is not None
    text = (
        f"{plan.receiver.site} holds {plan.receiver.position} units against a reorder point of "
        f"{plan.receiver.reorder_point:.0f} over the next {plan.need.horizon_hours:.0f} h, "
        f"while {chosen.from_site} holds more than it needs; moving {chosen.qty} units is "
        f"expected to save {chosen.expected_units_saved:.1f} lost sales for a transfer cost "
        f"of {chosen.transfer_cost:.2f} (net benefit {chosen.net_benefit:.2f})."
    )
    if plan.priced_per_hour is None:
        return text
    # The record's demand is the receiver's estimate; say where the saving was priced lower.
    return (
        f"{text} Its own sales are only a few days old: the saving is priced at "
        f"{plan.priced_per_hour * 24:.1f} a day, with the SKU's rate across sites at full "
        f"weight, not at its estimate of {plan.receiver_agent.mean * 24:.1f}."
    )


def _approve(state: SkuState, event: Event, policy: Policy, now: int) -> list[DecisionRecord]:
    """An approval restarts the reservation's clock: execution now has a normal TTL to ship."""
    pid = event.proposal_id
    reservation = state.reservations.get(pid) if pid is not None else None
    if reservation is None or reservation.dispatched:
        return []
    reservation.approved = True
    reservation.expires_at_ms = max(
        reservation.expires_at_ms, now + int(policy.proposal_ttl_hours * HOUR_MS)
    )
    return [
        DecisionRecord(
            sku=state.sku,
            site=reservation.to_site,
            ts_ms=now,
            outcome=Outcome.APPROVED,
            reason="approved",
            detail=f"approved by execution; reservation held until {reservation.expires_at_ms}.",
            policy_version=policy.version,
            trigger_event_id=event.event_id,
            trigger_source=event.source,
            proposal_id=pid,
        )
    ]


def _received(state: SkuState, event: Event) -> DecisionRecord:
    return DecisionRecord(
        sku=state.sku,
        site=event.site,
        ts_ms=state.clock_ms,
        outcome=Outcome.TRANSFER_RECEIVED,
        reason="received",
        detail=f"{event.qty} units from {event.from_site} received at {event.site}.",
        policy_version="",
        trigger_event_id=event.event_id,
        trigger_source=event.source,
        proposal_id=event.proposal_id,
    )


def _position(state: SkuState, site_id: str, policy: Policy) -> SitePosition:
    site = state.sites[site_id]
    demand = rounded(mean_per_hour(site.demand, policy.demand_window_minutes), 4)
    inbound = site.inbound_qty  # summed once: `site.position` would sum it again
    position = site.on_hand + inbound + site.reserved_in - site.reserved_out
    # Positional, in the record's field order (see `_output`): one per site an event touches.
    return SitePosition(
        state.sku, site_id, site.on_hand, inbound, site.reserved_in, site.reserved_out,
        position, demand, site.last_event_ms,
    )  # fmt: skip


def _as_shadow(record: DecisionRecord) -> DecisionRecord:
    return DecisionRecord(
        record.sku, record.site, record.ts_ms, record.outcome, record.reason, record.detail,
        record.policy_version, record.trigger_event_id, record.trigger_source,
        record.proposal_id, record.receiver, record.alternatives, record.evidence,
        record.approval_reasons, shadow=True,
    )  # fmt: skip


def _suppressed(
    state: SkuState,
    event: Event,
    receiver_id: str,
    plan: Plan,
    reason: str,
    policy: Policy,
    now: int,
) -> DecisionRecord:
    return DecisionRecord(
        sku=state.sku,
        site=receiver_id,
        ts_ms=now,
        outcome=Outcome.SUPPRESSED,
        reason=reason,
        detail=(
            f"{receiver_id} is short by {plan.need.qty} units "
            f"(position {plan.receiver.position}, reorder point "
            f"{plan.receiver.reorder_point:.0f}) but no transfer was proposed: {reason}."
        ),
        policy_version=policy.version,
        trigger_event_id=event.event_id,
        trigger_source=event.source,
        receiver=plan.receiver,
        alternatives=plan.alternatives,
    )


def _released(
    state: SkuState, event: Event, pid: str, reservation: Reservation, why: ReleaseReason
) -> DecisionRecord:
    return DecisionRecord(
        sku=state.sku,
        site=reservation.to_site,
        ts_ms=state.clock_ms,
        outcome=Outcome.RESERVATION_RELEASED,
        reason=why.value,
        detail=(
            f"reservation of {reservation.qty} units {reservation.from_site} -> "
            f"{reservation.to_site} released: {why.value}."
        ),
        policy_version="",
        trigger_event_id=event.event_id,
        trigger_source=event.source,
        proposal_id=pid,
    )
