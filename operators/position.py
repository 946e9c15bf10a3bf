"""Apply an event to a SKU's stock: on-hand, inbound, reservations.

Transfer events name the receiving site in `site` and the sender in `from_site`. A
proposal's reservation is released exactly once: on dispatch, rejection, failure or expiry.
"""

from __future__ import annotations

from typing import Final

from state.kinds import (
    ADJUSTMENT,
    INBOUND_EXPECTED,
    INBOUND_RECEIVED,
    RETURN,
    SALE,
    SNAPSHOT,
    TRANSFER_APPROVED,
    TRANSFER_DISPATCHED,
    TRANSFER_RECEIVED,
    TRANSFER_REJECTED,
)
from state.records import Event, ReleaseReason
from state.sku import Inbound, Reservation, SiteState, SkuState

TRANSFER_INBOUND_PREFIX: Final = "transfer:"


def in_count(site: SiteState, ts_ms: int) -> bool:
    """Whether a movement at `ts_ms` is already in the site's latest count: it came after
    the count (a lagging feed) and must not move on-hand a second time."""
    return ts_ms < site.counted_ms


def _take(site: SiteState, qty: int, ts_ms: int) -> None:
    if in_count(site, ts_ms):
        return
    site.on_hand = max(0, site.on_hand - qty)
    if site.on_hand == 0:
        site.stocked_out_in_window = True


def _add(site: SiteState, qty: int, ts_ms: int) -> None:
    if not in_count(site, ts_ms):
        site.on_hand += qty


def _count(site: SiteState, on_hand: int, ts_ms: int) -> None:
    """A count replaces on-hand, unless a later count already has (it came late: it is in
    that count too)."""
    if in_count(site, ts_ms):
        return
    site.on_hand = on_hand
    site.counted_ms = ts_ms
    site.disputed_qty = 0  # the count settles what an outlier sale took
    if on_hand == 0:
        site.stocked_out_in_window = True


def release(state: SkuState, proposal_id: str) -> Reservation | None:
    """Drop a proposal's reservation at both ends; None if it held nothing (already gone)."""
    reservation = state.reservations.pop(proposal_id, None)
    if reservation is None or reservation.dispatched:
        return reservation
    state.site(reservation.from_site).reserved_out -= reservation.qty
    state.site(reservation.to_site).reserved_in -= reservation.qty
    return reservation


def expire_reservations(state: SkuState, now_ms: int) -> list[tuple[str, Reservation]]:
    """Release reservations whose proposal was never dispatched before it expired."""
    expired = [
        (pid, r)
        for pid, r in state.reservations.items()
        if not r.dispatched and r.expires_at_ms <= now_ms
    ]
    for pid, _ in expired:
        release(state, pid)
    return expired


def reserve(state: SkuState, proposal_id: str, reservation: Reservation) -> None:
    state.reservations[proposal_id] = reservation
    state.site(reservation.from_site).reserved_out += reservation.qty
    state.site(reservation.to_site).reserved_in += reservation.qty


# A dispatch event later than this after its receipt is not waited for.
_EARLY_RECEIPT_MEMORY_MS: Final = 7 * 24 * 3_600_000


def _remember_early_receipt(state: SkuState, key: str, ts_ms: int) -> None:
    early = state.received_early
    if early is None:
        early = state.received_early = {}
    for old in [k for k, seen in early.items() if seen < ts_ms - _EARLY_RECEIPT_MEMORY_MS]:
        del early[old]
    early[key] = ts_ms


def apply_event(state: SkuState, event: Event) -> tuple[str, Reservation, ReleaseReason] | None:
    """Update stock for one event; returns the reservation it released, if any.

    A sale leaves the shelf here; whether it counts as demand, and in which window, is the
    engine's (`operators.demand.count_sale`). A movement older than the site's latest count
    is in that count already: it changes no stock (`in_count`).
    """
    site = state.site(event.site)
    kind = event.type
    ts_ms = event.ts_ms
    if kind is SALE:
        _take(site, event.qty, ts_ms)
    elif kind is RETURN:
        _add(site, event.qty, ts_ms)
    elif kind is SNAPSHOT:
        _count(site, event.qty, ts_ms)
    elif kind is ADJUSTMENT:
        if event.qty < 0:
            _take(site, -event.qty, ts_ms)
        else:
            _add(site, event.qty, ts_ms)
    elif kind is INBOUND_EXPECTED:
        assert event.shipment_id is not None and event.eta_ms is not None
        state.expect(site, event.shipment_id, Inbound(event.qty, event.eta_ms))
    elif kind is INBOUND_RECEIVED:
        _add(site, event.qty, ts_ms)
        if event.shipment_id is not None:
            site.take_inbound(event.shipment_id)
    else:
        return _apply_transfer(state, event, site)
    return None


Released = tuple[str, Reservation, ReleaseReason]


def _apply_transfer(state: SkuState, event: Event, receiver: SiteState) -> Released | None:
    assert event.from_site is not None
    sender = state.site(event.from_site)
    key = TRANSFER_INBOUND_PREFIX + (event.proposal_id or event.event_id)
    kind = event.type
    if kind is TRANSFER_APPROVED:
        return None  # an answer, not a movement: the engine extends the reservation
    if kind is TRANSFER_DISPATCHED:
        return _dispatched(state, event, sender, receiver, key)
    if kind is TRANSFER_RECEIVED:
        return _received(state, event, sender, receiver, key)
    return _not_done(state, event, sender, receiver, key)


def _dispatched(
    state: SkuState, event: Event, sender: SiteState, receiver: SiteState, key: str
) -> Released | None:
    """The goods leave the sender and are expected at the receiver after the lane's lead
    time; the proposal's reservation turns into that inbound."""
    if state.received_early is not None and key in state.received_early:
        # Received already: the receipt took the goods from the sender and put them on the
        # receiver's shelf; this late news moves nothing.
        del state.received_early[key]
        return None
    pid = event.proposal_id
    reservation = state.reservations.get(pid) if pid is not None else None
    lead_hours = 0.0
    released: Released | None = None
    if reservation is not None and pid is not None and not reservation.dispatched:
        release(state, pid)
        lead_hours = reservation.lead_hours
        reservation.dispatched = True
        state.reservations[pid] = reservation
        released = (pid, reservation, ReleaseReason.DISPATCHED)
    _take(sender, event.qty, event.ts_ms)
    eta_ms = event.ts_ms + int(lead_hours * 3_600_000)
    state.expect(receiver, key, Inbound(event.qty, eta_ms, sent_ms=event.ts_ms))
    return released


def _received(
    state: SkuState, event: Event, sender: SiteState, receiver: SiteState, key: str
) -> Released | None:
    pid = event.proposal_id
    reservation = state.reservations.get(pid) if pid is not None else None
    released: Released | None = None
    if not receiver.expects(key):
        # The dispatch event never reached us: the receipt proves the goods left the sender
        # (also when the proposal's reservation had already expired).
        _take(sender, event.qty, event.ts_ms)
        _remember_early_receipt(state, key, event.ts_ms)
        if reservation is not None and pid is not None and not reservation.dispatched:
            release(state, pid)
            released = (pid, reservation, ReleaseReason.DISPATCHED)
    receiver.take_inbound(key)
    _add(receiver, event.qty, event.ts_ms)
    receiver.last_transfer_in_ms = event.ts_ms
    if pid is not None:
        state.reservations.pop(pid, None)
    return released


def _not_done(
    state: SkuState, event: Event, sender: SiteState, receiver: SiteState, key: str
) -> Released | None:
    """Rejected or failed: an undispatched reservation is released; goods that failed in
    transit go back to the sender."""
    pid = event.proposal_id
    reservation = state.reservations.get(pid) if pid is not None else None
    if reservation is None or pid is None:
        return None
    if reservation.dispatched:
        if receiver.take_inbound(key) is not None:
            _add(sender, event.qty, event.ts_ms)
        state.reservations.pop(pid, None)
        return None
    release(state, pid)
    why = ReleaseReason.REJECTED if event.type is TRANSFER_REJECTED else ReleaseReason.FAILED
    return (pid, reservation, why)
