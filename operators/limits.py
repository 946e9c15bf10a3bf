"""Hard limits on what one SKU's input may make the flow hold or believe.

Parsing already refuses what a single message cannot be (operators.parse); these checks
need the SKU's state: an expected delivery past the per-SKU-site cap, stock that would rise
above what a site can hold, deliveries that never came. A refused event becomes a dead
letter with a reason (nothing is lost, and `stockshift dlq` shows it to a person); an
expired delivery a finding.
"""

from __future__ import annotations

import threading
from typing import Final

import orjson

from operators.codec import event_message
from operators.position import TRANSFER_INBOUND_PREFIX
from state.config import Network
from state.kinds import ADJUSTMENT, INBOUND_EXPECTED, INBOUND_RECEIVED, RETURN, TRANSFER_RECEIVED
from state.records import DeadLetter, Event, Finding
from state.sku import SiteState, SkuState

_EMPTY: Final = SiteState()  # read only: a site the SKU has not seen yet

# Events that raise a site's on-hand, and so must keep it under the site's ceiling.
_RAISES_ON_HAND: Final = frozenset({RETURN, INBOUND_RECEIVED, TRANSFER_RECEIVED})


def refusal(state: SkuState, event: Event, network: Network) -> tuple[str, str] | None:
    """Why the SKU's state cannot take this event (reason code, sentence), or None."""
    site = state.sites.get(event.site) or _EMPTY
    kind = event.type
    if kind is INBOUND_EXPECTED and event.shipment_id is not None:
        if site.expects(event.shipment_id):
            return None  # an update of a delivery already expected
        cap = network.limits.max_inbound_per_sku_site
        expected = len(site.inbound) if site.inbound else 0
        if expected >= cap:
            return (
                "inbound_limit",
                f"{event.site} already expects {expected} deliveries (max {cap})",
            )
        total = site.on_hand + site.inbound_qty + event.qty
        ceiling = network.unit_ceiling(event.site)
        return _too_much(event, total, ceiling) if total > ceiling else None
    if not (kind in _RAISES_ON_HAND or (kind is ADJUSTMENT and event.qty > 0)):
        return None  # most events: a sale or a count takes no site over its ceiling
    ceiling = network.unit_ceiling(event.site)
    if site.on_hand + event.qty > ceiling:
        return _too_much(event, site.on_hand + event.qty, ceiling)
    return None


def _too_much(event: Event, total: int, ceiling: int) -> tuple[str, str]:
    return (
        "implausible_quantity",
        f"{event.type.value} would take {event.sku} at {event.site} to {total} units, "
        f"more than the site can hold ({ceiling})",
    )


def refused_letter(event: Event, reason: str, detail: str, received_at_ms: int) -> DeadLetter:
    """A dead letter for an event refused after parsing: the event as the contract's JSON
    (what a producer would re-send) and where it was read from."""
    kind, body = event_message(event)
    source = event.source
    return DeadLetter(
        source_topic=source.topic if source is not None else kind,
        partition=source.partition if source is not None else None,
        offset=source.offset if source is not None else None,
        key=event.sku.encode(),
        payload=orjson.dumps(body),
        error=detail,
        reason=reason,
        received_at_ms=received_at_ms,
        timestamp_ms=event.ingested_ms,
    )


def expire_inbound(state: SkuState, now_ms: int, grace_ms: int) -> list[Finding]:
    """Forget deliveries still expected `grace_ms` after their ETA (a supplier notice whose
    goods never came, a transfer lost in transit); each is reported once as a finding. A
    transfer's dispatched reservation goes with it."""
    findings: list[Finding] = []
    due = now_ms - grace_ms  # an item expected before this is overdue
    for site_id, site in state.sites.items():
        if site.inbound is None:
            continue
        if all(item.eta_ms >= due for item in site.inbound.values()):
            continue  # most hours at most sites: no list built
        overdue = [k for k, item in site.inbound.items() if item.eta_ms < due]
        for key in overdue:
            item = site.take_inbound(key)
            assert item is not None
            if key.startswith(TRANSFER_INBOUND_PREFIX):
                state.reservations.pop(key[len(TRANSFER_INBOUND_PREFIX) :], None)
            findings.append(_overdue(state.sku, site_id, key, item.qty, item.eta_ms, now_ms))
    return findings


def _overdue(sku: str, site: str, key: str, qty: int, eta_ms: int, now_ms: int) -> Finding:
    days = (now_ms - eta_ms) / 86_400_000
    return Finding(
        kind="inbound_overdue",
        sku=sku,
        site=site,
        ts_ms=now_ms,
        score=round(days, 3),
        detector="clock",
        evidence=(("qty", float(qty)), ("days_overdue", round(days, 3))),
        event_ids=(key,),
    )


class KeyBudget:
    """How many SKUs one process may hold in state: a hard cap against a flood of made-up
    SKUs (each held SKU costs memory until idle eviction). Shared by the process's workers;
    a lock, because Bytewax runs each worker in its own thread."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Claim room for one more SKU; False when the process is full."""
        with self._lock:
            if self.held >= self.capacity:
                return False
            self.held += 1
            return True

    def restored(self) -> None:
        """A SKU restored from a recovery snapshot: it was admitted before, so it counts
        even past the cap (the cap only turns new SKUs away)."""
        with self._lock:
            self.held += 1

    def give_back(self) -> None:
        with self._lock:
            self.held = max(self.held - 1, 0)


def over_budget_letter(event: Event, capacity: int) -> DeadLetter:
    detail = f"this process holds its maximum of {capacity} SKUs; {event.sku!r} is not admitted"
    return refused_letter(event, "sku_limit", detail, event.received_ms or event.ts_ms)
