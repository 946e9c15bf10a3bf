"""The decision core: one event in, the SKU's new state and everything it caused out.

The Bytewax flow (via `stateful_map`), the simulator and the tests all call `step`; there is
no second decision path. It is deterministic: the same events in the same order give the
same proposals, ids included, because time comes only from event timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass

from operators.demand import advance, smoothing_alpha
from operators.planner import HOUR_MS, Plan, plan_for_receiver, proposal_id
from operators.position import apply_event, expire_reservations, reserve
from state.config import Network, Policy
from state.records import (
    DecisionRecord,
    Event,
    EventType,
    Evidence,
    Outcome,
    Proposal,
    ProposalStatus,
    ReleaseReason,
    StepOutput,
)
from state.sku import Reservation, SkuState

# Events after which the touched site may have stock to give to others.
_ADDS_STOCK = frozenset(
    {
        EventType.RETURN,
        EventType.SNAPSHOT,
        EventType.ADJUSTMENT,
        EventType.INBOUND_RECEIVED,
        EventType.INBOUND_EXPECTED,
        EventType.TRANSFER_REJECTED,
        EventType.TRANSFER_FAILED,
    }
)


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What every decision needs besides state and event; built once per flow."""

    network: Network
    policy: Policy
    window_ms: int
    alpha: float

    @classmethod
    def build(cls, network: Network, policy: Policy) -> DecisionContext:
        return cls(
            network=network,
            policy=policy,
            window_ms=policy.demand_window_minutes * 60_000,
            alpha=smoothing_alpha(policy.demand_halflife_hours, policy.demand_window_minutes),
        )


def _seen_before(state: SkuState, event_id: str, capacity: int) -> bool:
    seen = state.recent_event_ids
    if event_id in seen:
        return True
    seen[event_id] = None
    if len(seen) > capacity:
        del seen[next(iter(seen))]
    return False


def step(state: SkuState | None, event: Event, ctx: DecisionContext) -> tuple[SkuState, StepOutput]:
    """Apply one event to its SKU's state and decide; the shape `stateful_map` expects."""
    if state is None:
        state = SkuState(event.sku)
    policy = ctx.policy
    if _seen_before(state, event.event_id, policy.dedupe_capacity):
        return state, StepOutput(event.event_id, duplicate=True)
    site = state.site(event.site)
    late = 0 <= event.ts_ms < site.demand.window_start_ms
    now = max(state.clock_ms, event.ts_ms)
    state.clock_ms = now
    decisions: list[DecisionRecord] = []
    for pid, reservation in expire_reservations(state, now):
        decisions.append(_released(state, event, pid, reservation, ReleaseReason.EXPIRED))
    if advance(
        site.demand,
        event.ts_ms,
        ctx.window_ms,
        ctx.alpha,
        stocked_out=site.stocked_out_in_window,
        out_now=site.on_hand <= 0,
    ):
        site.stocked_out_in_window = site.on_hand <= 0
    site.last_event_ms = max(site.last_event_ms, event.ts_ms)
    released = apply_event(state, event)
    if released is not None:
        decisions.append(_released(state, event, *released))
    receivers = [event.site]
    if event.type in _ADDS_STOCK or released is not None:
        receivers.extend(
            lane.to_site
            for (src, _), lane in ctx.network.lanes.items()
            if src == event.site and lane.to_site in state.sites
        )
    proposals: list[Proposal] = []
    for receiver_id in receivers:
        plan = plan_for_receiver(state, receiver_id, ctx.network, policy, now)
        receiver = state.site(receiver_id)
        if plan is None:
            receiver.last_logged = ""
            continue
        if plan.chosen is None:
            reason = plan.suppress_reason.value if plan.suppress_reason else "unknown"
            if receiver.last_logged != reason:
                receiver.last_logged = reason
                decisions.append(_suppressed(state, event, receiver_id, plan, reason, policy, now))
            continue
        proposal = _propose(state, event, plan, ctx, now)
        receiver.last_logged = ""
        proposals.append(proposal)
        decisions.append(
            DecisionRecord(
                sku=state.sku,
                site=receiver_id,
                ts_ms=now,
                outcome=Outcome(proposal.status.value),
                reason=proposal.status.value,
                detail=proposal.reason,
                policy_version=policy.version,
                trigger_event_id=event.event_id,
                trigger_source=event.source,
                proposal_id=proposal.proposal_id,
                receiver=plan.receiver,
                alternatives=plan.alternatives,
            )
        )
    return state, StepOutput(
        event.event_id, late=late, proposals=tuple(proposals), decisions=tuple(decisions)
    )


def _propose(state: SkuState, event: Event, plan: Plan, ctx: DecisionContext, now: int) -> Proposal:
    chosen, lane, sender = plan.chosen, plan.lane, plan.sender
    assert chosen is not None and lane is not None and sender is not None
    policy = ctx.policy
    params = ctx.network.sku_params(state.sku)
    receiver_id = plan.receiver.site
    pid = proposal_id(
        state.sku, chosen.from_site, receiver_id, chosen.qty, event.event_id, policy.version
    )
    expires = now + int(policy.proposal_ttl_hours * HOUR_MS)
    reserve(
        state, pid, Reservation(chosen.from_site, receiver_id, chosen.qty, expires, lane.lead_hours)
    )
    value = chosen.qty * params.unit_cost
    status = (
        ProposalStatus.NEEDS_APPROVAL
        if value > policy.approval_value_threshold
        else ProposalStatus.PROPOSED
    )
    reason = (
        f"{receiver_id} holds {plan.receiver.position} units against a reorder point of "
        f"{plan.receiver.reorder_point:.0f} over the next {plan.need.horizon_hours:.0f} h, "
        f"while {chosen.from_site} holds more than it needs; moving {chosen.qty} units is "
        f"expected to save {chosen.expected_units_saved:.1f} lost sales for a transfer cost "
        f"of {chosen.transfer_cost:.2f} (net benefit {chosen.net_benefit:.2f})."
    )
    if status is ProposalStatus.NEEDS_APPROVAL:
        reason += f" Its value {value:.2f} is above the approval threshold."
    evidence = Evidence(
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
    )
    return Proposal(
        proposal_id=pid,
        sku=state.sku,
        from_site=chosen.from_site,
        to_site=receiver_id,
        qty=chosen.qty,
        created_at_ms=now,
        expires_at_ms=expires,
        policy_version=policy.version,
        status=status,
        reason=reason,
        evidence=evidence,
        trigger_event_ids=(event.event_id,),
    )


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
