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
from state.sku import NO_INBOUND_DUE, SiteState, SkuState

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
    if state.inbound_eta_floor_ms >= due:
        return findings  # most hours: nothing expected can be overdue yet
    floor = NO_INBOUND_DUE
    for site_id, site in state.sites.items():
        if site.inbound is None:
            continue
        earliest = min(item.eta_ms for item in site.inbound.values())
        if earliest >= due:
            floor = min(floor, earliest)
            continue  # most sites: no list built
        overdue = [k for k, item in site.inbound.items() if item.eta_ms < due]
        for key in overdue:
            item = site.take_inbound(key)
            assert item is not None
            if key.startswith(TRANSFER_INBOUND_PREFIX):
                state.reservations.pop(key[len(TRANSFER_INBOUND_PREFIX) :], None)
            findings.append(_overdue(state.sku, site_id, key, item.qty, item.eta_ms, now_ms))
        if site.inbound is not None:
            floor = min(floor, min(item.eta_ms for item in site.inbound.values()))
    state.inbound_eta_floor_ms = floor
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


class IdleCheck:
    """An item for one SKU's stateful step, meaning "evict yourself if you are idle"
    (`IdleSweep`); it carries nothing, the SKU is its key."""

    __slots__ = ()


IDLE_CHECK: Final = IdleCheck()

# What an `IdleCheck` does to a SKU (`IdleSweep.check`).
STAY: Final = "stay"
HOLD: Final = "hold"
LEAVE: Final = "leave"

# The longest a sweep waits: an idle SKU leaves within this of its idle time.
_LONGEST_SWEEP_S: Final = 3600.0


class IdleSweep:
    """When each SKU this process holds was last touched, and which have been idle long
    enough to leave memory.

    Not a deadline per SKU handed to Bytewax: its scheduler walks every held key's
    deadline at each activation of the step, which cost the flow 16 us an event at
    100,000 SKUs held and 5 at 2,000 (docs/benchmarks.md). A sweep walks them once per
    `every_s` (an eighth of the idle time, at most an hour), on the worker thread of
    whichever worker asks first; the SKUs it finds are sent an `IdleCheck`. The walk is
    over a copy of the table (one C call, so no other worker's write can interleave)."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.every_s = min(idle_s / 8, _LONGEST_SWEEP_S)
        self.touched: dict[str, float] = {}
        self._next_s = 0.0

    def touch(self, sku: str, now_s: float) -> None:
        self.touched[sku] = now_s

    def forget(self, sku: str) -> None:
        self.touched.pop(sku, None)

    def idle(self, sku: str, now_s: float) -> bool:
        """Whether the SKU has not been touched for the idle time (a SKU not in the table
        was never admitted, or has left)."""
        return now_s - self.touched.get(sku, now_s) >= self.idle_s

    def check(self, state: SkuState, now_s: float, held_once: bool, hold_s: float) -> str:
        """What an `IdleCheck` does to a held SKU: `STAY` when an event came since the sweep
        listed it; `HOLD`, once, while a proposal of its is unanswered (its clock moved on so
        it stays `hold_s` more, as long as a reservation can live); else `LEAVE` (it leaves
        the table too). Nothing a producer sends (deliveries that never come, reservations
        no one answers) can pin a SKU in memory for good."""
        if not self.idle(state.sku, now_s):
            return STAY
        if not held_once and any(not r.dispatched for r in state.reservations.values()):
            self.touch(state.sku, now_s + hold_s - self.idle_s)
            return HOLD
        self.forget(state.sku)
        return LEAVE

    def due(self, now_s: float) -> list[str]:
        """The SKUs idle at `now_s`, when a sweep is due; else none."""
        if now_s < self._next_s:
            return []
        self._next_s = now_s + self.every_s
        cutoff = now_s - self.idle_s
        return [sku for sku, at in self.touched.copy().items() if at <= cutoff]


# The longest error text a failed step's letter carries: the exception's own message can
# quote state of any size, and the letter's headers must stay small.
MAX_FAILURE_TEXT: Final = 300


def step_failed_letter(event: Event, failure: Exception) -> DeadLetter:
    """A dead letter for an event whose decision step raised: a defect in stockshift, not in
    the event, but the flow must go on (at a restart it would meet the same event again and
    stop again). It names the exception; the flow's log holds the traceback."""
    text = failure_text("the decision step", failure)
    return refused_letter(event, "step_failed", text, event.received_ms or event.ts_ms)


def failure_text(what: str, failure: Exception) -> str:
    """What raised and the exception, in at most `MAX_FAILURE_TEXT` characters (a dead
    letter's error, a decision record's detail); the flow's log holds the traceback."""
    text = f"{what} raised {type(failure).__name__}: {failure}"
    if len(text) > MAX_FAILURE_TEXT:
        text = text[: MAX_FAILURE_TEXT - 3] + "..."
    return text


def over_budget_letter(event: Event, capacity: int) -> DeadLetter:
    detail = f"this process holds its maximum of {capacity} SKUs; {event.sku!r} is not admitted"
    return refused_letter(event, "sku_limit", detail, event.received_ms or event.ts_ms)
