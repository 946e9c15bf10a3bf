"""Negotiation: the second stage of the flow, keyed by receiving site.

Proposals for different SKUs compete for two shared resources: a lane's daily capacity and
the receiving site's storage. Both meet at the receiving site (every lane into it ends
there), so the stage is keyed by receiving site and holds each incoming lane's granted units
per departure day and, for a site that declares `storage_capacity`, the units it holds or
has coming per SKU (the engine sends a `SiteOccupancy` whenever an event touches the
site). A proposal is granted in full while both last; otherwise it gets what is left if
that still meets the SKU's minimum quantity, or waits for the next departure (lane), or is
dropped with the reason in the decision log. A departure after the lane's cut-off hour
counts against the next day.

Occupancy counts a proposal's units from the moment the engine reserves them, so the room
a proposal is checked against already includes it; a proposal this stage cuts or drops
keeps occupying its units until the engine's reservation expires (`proposal_ttl_hours`),
which errs on the side of never overfilling the site.

The stage takes what arrives together as one batch, in a set order (`in_negotiation_order`):
by the SKUs' event-time clocks; at one moment, stock reports that come with no request
first, then each SKU's requests by expected net benefit per unit, highest first. So when
several SKUs ask for the same truck or the same back room at once, the most valuable units
get it, and the outcome does not depend on how the dataflow grouped the batch by SKU (its
stateful steps hand on a batch key by key, not in event order): the flow and the simulator
(`negotiate_all`, one simulated hour a batch) grant the same units.

Across moments, arrival order stands: proposals are made the moment a need appears, and
holding them back to rank them against later ones would delay every transfer.
Bid-price control (the upper half of a departure open only to proposals worth more per unit
than the lane's running mean, scaled by how full it would be) was tried and measured worse
in the simulator (service-first policy, lanes capped at 4 units a day: small-symmetric fill
0.9583 vs 0.9647 in arrival order; shock-promo at 6 a day 0.9444 vs 0.9452): the benefit
estimates are too noisy to be worth leaving capacity unused, and a deferred transfer comes
a day late.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from operators.limits import failure_text
from state.config import Lane, Network
from state.records import (
    DecisionRecord,
    Outcome,
    Proposal,
    SiteOccupancy,
    StepOutput,
    SuppressReason,
)
from state.sku import Restorable
from state.units import DAY_MS

ReceivingItem = Proposal | SiteOccupancy


@dataclass(slots=True)
class ReceivingState(Restorable):
    """One receiving site: units granted per incoming lane and departure day (old days
    dropped) and, when the site declares storage capacity, its occupancy per SKU."""

    granted: dict[str, dict[int, int]] = field(default_factory=dict)
    occupancy: dict[str, int] = field(default_factory=dict)
    occupied: int = 0
    # Lanes with a trip cost: each incoming lane's trips by departure day.
    trips: dict[str, dict[int, Trip]] = field(default_factory=dict)


@dataclass(slots=True)
class Trip(Restorable):
    """One departure on a lane with a trip cost: open once the proposals for it are worth
    its cost together; until then they wait here."""

    opened: bool = False
    value: float = 0.0
    waiting: list[Proposal] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NegotiationOutcome:
    """The proposal as granted (maybe fewer units, maybe deferred) or none, and a decision
    record when negotiation changed or refused it. Occupancy updates give neither."""

    proposal: Proposal | None
    decision: DecisionRecord | None
    # The outcome of a proposal that waited for its trip: it was answered once already
    # (`waiting_for_trip`), so whoever counts one answer per proposal skips this one.
    later: bool = False


_NOTHING = NegotiationOutcome(None, None)


def receiving_items(output: StepOutput) -> tuple[ReceivingItem, ...]:
    """What one engine step sends to negotiation: occupancy first, so a proposal is checked
    against numbers that include its own reservation."""
    return (*output.occupancy, *output.proposals)


def receiving_site(item: ReceivingItem) -> str:
    return item.to_site if isinstance(item, Proposal) else item.site


def _clock(item: ReceivingItem) -> int:
    return item.created_at_ms if isinstance(item, Proposal) else item.clock_ms


def in_negotiation_order(items: Iterable[ReceivingItem]) -> list[ReceivingItem]:
    """One receiving site's batch in the order it is negotiated.

    Items are grouped by (clock, SKU): one SKU's items keep their order (a later stock report
    must not be overtaken by an earlier one), and its clock never runs back, so sorting
    groups by clock keeps every SKU's order. At one clock, groups without a request go
    first (they only report stock), then groups by their best request's net benefit per
    unit, highest first; the SKU breaks ties.
    """
    groups: dict[tuple[int, str], list[ReceivingItem]] = {}
    for item in items:
        groups.setdefault((_clock(item), item.sku), []).append(item)
    if len(groups) < 2:
        return [item for members in groups.values() for item in members]

    def rank(group: tuple[tuple[int, str], list[ReceivingItem]]) -> tuple[int, bool, float, str]:
        (clock, sku), members = group
        best = max(
            (
                item.evidence.net_benefit / item.qty
                for item in members
                if isinstance(item, Proposal) and item.qty > 0
            ),
            default=None,
        )
        return clock, best is not None, -(best or 0.0), sku

    return [item for _, members in sorted(groups.items(), key=rank) for item in members]


def departure_day(lane: Lane, created_ms: int) -> int:
    day = created_ms - created_ms % DAY_MS
    if lane.cutoff_hour is not None and (created_ms - day) >= lane.cutoff_hour * 3_600_000:
        day += DAY_MS
    return day


def negotiate(
    state: ReceivingState | None, item: ReceivingItem, network: Network
) -> tuple[ReceivingState, NegotiationOutcome]:
    """One item for a receiving site: its state after, and the item's outcome."""
    state = state or ReceivingState()
    if isinstance(item, SiteOccupancy):
        state.occupied += item.units - state.occupancy.get(item.sku, 0)
        if item.units:
            state.occupancy[item.sku] = item.units
        else:
            state.occupancy.pop(item.sku, None)
        return state, _NOTHING
    proposal = item
    lane = network.lanes[(proposal.from_site, proposal.to_site)]
    params = network.sku_params(proposal.sku)
    minimum = max(params.min_transfer_qty, params.pack_size)
    qty = proposal.qty
    notes: list[str] = []
    capacity = network.sites[proposal.to_site].storage_capacity
    if capacity is not None and state.occupied > capacity:
        room = max(proposal.qty - (state.occupied - capacity), 0)
        qty = room // params.pack_size * params.pack_size
        if qty < minimum:
            return state, NegotiationOutcome(
                None,
                _record(
                    proposal,
                    SuppressReason.STORAGE_CAPACITY,
                    f"{proposal.to_site} would hold {state.occupied} units with this transfer, "
                    f"above its storage capacity of {capacity}",
                ),
            )
        notes.append(f"{proposal.to_site} had storage for {qty} of {proposal.qty} units")
    if lane.capacity_per_day is not None:
        granted = state.granted.setdefault(lane.lane_id, {})
        day = _book(granted, lane, lane.capacity_per_day, proposal, qty, minimum, params.pack_size)
        if day is None:
            return state, NegotiationOutcome(
                None,
                _record(
                    proposal,
                    SuppressReason.LANE_CAPACITY,
                    f"lane {lane.lane_id} is full today and at the next departure "
                    f"({lane.capacity_per_day} units a day)",
                ),
            )
        booked, deferred = day
        if booked < qty:
            notes.append(f"lane {lane.lane_id} had room for {booked} of {proposal.qty} units")
        if deferred:
            notes.append(f"deferred to the next departure on lane {lane.lane_id}")
        qty = booked
    if not notes:
        return state, NegotiationOutcome(proposal, proposal.record)
    return state, _granted_in_part(proposal, qty, "; ".join(notes), params.unit_cost)


def _granted_in_part(
    proposal: Proposal, qty: int, detail: str, unit_cost: float
) -> NegotiationOutcome:
    """The proposal with the units granted, and its one decision record saying so."""
    reason = f"{proposal.reason} {detail}."
    # The working capital it moves, for the units granted.
    evidence = replace(proposal.evidence, value=round(qty * unit_cost, 2))
    record = (
        replace(proposal.record, reason="granted in part", detail=reason, evidence=evidence)
        if proposal.record is not None
        else None
    )
    changed = replace(proposal, qty=qty, reason=reason, evidence=evidence, record=record)
    return NegotiationOutcome(changed, record or _record(changed, None, detail))


def _book(
    granted: dict[int, int],
    lane: Lane,
    capacity: int,
    proposal: Proposal,
    qty: int,
    minimum: int,
    pack_size: int,
) -> tuple[int, bool] | None:
    """Units booked on the first departure with room for the minimum, and whether that was
    the next day's; None when neither has room."""
    first = departure_day(lane, proposal.created_at_ms)
    for day in list(granted):
        if day < first - DAY_MS:
            del granted[day]
    for day in (first, first + DAY_MS):
        room = capacity - granted.get(day, 0)
        booked = min(qty, room // pack_size * pack_size)
        if booked >= minimum:
            granted[day] = granted.get(day, 0) + booked
            return booked, day > first
    return None


def negotiate_all(
    states: dict[str, ReceivingState], items: Iterable[ReceivingItem], network: Network
) -> list[NegotiationOutcome]:
    """The stage outside a dataflow (simulator, reference runs): the items of one batch,
    each receiving site's in the same order as in the flow."""
    by_site: dict[str, list[ReceivingItem]] = {}
    for item in items:
        by_site.setdefault(receiving_site(item), []).append(item)
    outcomes: list[NegotiationOutcome] = []
    for site, batch in by_site.items():
        states[site], negotiated = negotiate_batch(states.get(site), batch, network)
        # An occupancy report's outcome is empty; a proposal's never is.
        outcomes.extend(o for o in negotiated if o.proposal is not None or o.decision is not None)
    return outcomes


def negotiate_batch(
    state: ReceivingState | None,
    items: Iterable[ReceivingItem],
    network: Network,
    on_failure: OnFailure | None = None,
) -> tuple[ReceivingState, list[NegotiationOutcome]]:
    """One receiving site's batch, in `in_negotiation_order`: an outcome per item (an
    occupancy report's is empty).

    With `on_failure` (the flow's), an item whose negotiation raises is told to it and
    answered by `failed_outcome`, and the batch goes on: a defect here would otherwise stop
    the flow, and a restart replaying the batch would stop it again. The same holds for
    each proposal a trip releases (the others still go) and for the ordering itself (the
    batch is then negotiated in arrival order). Without it (simulator, tests) the exception
    propagates, so a defect surfaces where it can be fixed."""
    state = state or ReceivingState()
    outcomes: list[NegotiationOutcome] = []
    for item in _ordered(list(items), on_failure):
        try:
            done, released = _negotiate_next(state, item, network)
        except Exception as failure:  # any defect: see the docstring
            outcomes.append(_answer_failure(item, failure, on_failure))
            continue
        outcomes.extend(done)
        outcomes.extend(_release(state, released, item, network, on_failure))
    return state, outcomes


OnFailure = Callable[[ReceivingItem | None, Exception], None]
"""Told each failing item, or None when ordering the batch failed."""


def _ordered(batch: list[ReceivingItem], on_failure: OnFailure | None) -> list[ReceivingItem]:
    try:
        return in_negotiation_order(batch)
    except Exception as failure:  # any defect: arrival order still answers every item
        if on_failure is None:
            raise
        on_failure(None, failure)
        return batch


def _answer_failure(
    item: ReceivingItem, failure: Exception, on_failure: OnFailure | None
) -> NegotiationOutcome:
    if on_failure is None:
        raise failure
    on_failure(item, failure)
    return failed_outcome(item, failure)


def _negotiate_next(
    state: ReceivingState, item: ReceivingItem, network: Network
) -> tuple[list[NegotiationOutcome], list[Proposal]]:
    """One item of a batch, after the trips it leaves behind (`negotiate` changes `state`
    in place and returns it), and the proposals a trip it opened releases, which
    `_release` negotiates one by one."""
    outcomes = _unfilled_trips(state, _clock(item)) if state.trips else []
    if isinstance(item, Proposal) and _trip_cost(item, network) > 0:
        waiting, released = _through_trip(state, item, network)
        return [*outcomes, *waiting], released
    outcomes.append(negotiate(state, item, network)[1])
    return outcomes, []


def _release(
    state: ReceivingState,
    released: list[Proposal],
    opener: ReceivingItem,
    network: Network,
    on_failure: OnFailure | None,
) -> list[NegotiationOutcome]:
    """The proposals an opened trip lets go, in arrival order, through the lane's and
    site's limits; each but the one that opened it answers `later`."""
    outcomes = []
    for waited in released:
        try:
            outcome = negotiate(state, waited, network)[1]
        except Exception as failure:  # any defect: see `negotiate_batch`
            outcome = _answer_failure(waited, failure, on_failure)
        outcomes.append(replace(outcome, later=waited is not opener))
    return outcomes


def failed_outcome(item: ReceivingItem, failure: Exception) -> NegotiationOutcome:
    """A proposal whose negotiation raised is not published (its lane and the receiver's
    room were not checked) and says why in its decision record (`negotiation_failed`); its
    units stay reserved at the sender until the reservation expires. An occupancy report
    has no answer: the site's count for the SKU waits for the SKU's next report."""
    if not isinstance(item, Proposal):
        return _NOTHING
    text = failure_text("negotiation", failure)
    return NegotiationOutcome(None, _record(item, SuppressReason.NEGOTIATION_FAILED, text))


def _trip_cost(proposal: Proposal, network: Network) -> float:
    lane = network.lanes[(proposal.from_site, proposal.to_site)]
    return lane.trip_cost + lane.min_trip_value


def _through_trip(
    state: ReceivingState, proposal: Proposal, network: Network
) -> tuple[list[NegotiationOutcome], list[Proposal]]:
    """A proposal on a lane with a trip cost rides its day's trip once one is open; else it
    waits, adding its net benefit (the planner prices each SKU's own costs, not the trip's)
    to the trip's value, and when that reaches the trip cost the trip opens. Returns the
    proposal's waiting answer, or the proposals the trip now lets go in arrival order (this
    one included), for `_release` to negotiate."""
    lane = network.lanes[(proposal.from_site, proposal.to_site)]
    day = departure_day(lane, proposal.created_at_ms)
    trip = state.trips.setdefault(lane.lane_id, {}).setdefault(day, Trip())
    if trip.opened:
        return [], [proposal]
    trip.waiting.append(proposal)
    trip.value += proposal.evidence.net_benefit
    needed = lane.trip_cost + lane.min_trip_value
    if trip.value < needed:
        detail = (
            f"waits for lane {lane.lane_id}'s trip, worth {trip.value:.2f} of the "
            f"{needed:.2f} it needs so far"
        )
        return [NegotiationOutcome(None, _waiting(proposal, detail))], []
    trip.opened = True
    released, trip.waiting = trip.waiting, []
    return [], released


def _unfilled_trips(state: ReceivingState, clock_ms: int) -> list[NegotiationOutcome]:
    """Proposals whose trip did not fill before they expired, or whose departure day has
    passed, are dropped with the reason; days long gone are forgotten."""
    outcomes: list[NegotiationOutcome] = []
    for lane_id, days in state.trips.items():
        for day, trip in list(days.items()):
            gone = clock_ms >= day + DAY_MS
            keep: list[Proposal] = []
            dropped_ones: list[Proposal] = []
            for waiting in trip.waiting:
                fits = not gone and clock_ms < waiting.expires_at_ms
                (keep if fits else dropped_ones).append(waiting)
            for dropped in dropped_ones:
                detail = (
                    f"lane {lane_id}'s trip gathered {trip.value:.2f} of its cost before "
                    "the proposal expired or the day's departure passed"
                )
                record = _record(dropped, SuppressReason.TRIP_NOT_FILLED, detail)
                outcomes.append(NegotiationOutcome(None, record, later=True))
            trip.waiting = keep
            if gone and day < clock_ms - 2 * DAY_MS:
                del days[day]
    return outcomes


def _waiting(proposal: Proposal, detail: str) -> DecisionRecord:
    return replace(
        _record(proposal, None, detail), outcome=Outcome.WAITING_FOR_TRIP, reason="waiting_for_trip"
    )


def _record(proposal: Proposal, dropped: SuppressReason | None, detail: str) -> DecisionRecord:
    return DecisionRecord(
        sku=proposal.sku,
        site=proposal.to_site,
        ts_ms=proposal.created_at_ms,
        outcome=Outcome.SUPPRESSED if dropped else Outcome(proposal.status.value),
        reason=dropped.value if dropped else "granted in part",
        detail=f"proposal {proposal.proposal_id} ({proposal.qty} units): {detail}.",
        policy_version=proposal.policy_version,
        trigger_event_id=proposal.trigger_event_ids[0],
        proposal_id=proposal.proposal_id,
    )
