"""Per-SKU state: every site's stock and demand, reservations and recent event ids.

The flow keys state by SKU so that one planner sees all sites of a SKU at once. Records
are slotted and hold only numbers and short strings: Bytewax copies each touched key's
state every epoch, and we aim for millions of SKU-site entries per process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class Demand:
    """An event-time demand estimate: a tumbling window plus exponentially smoothed moments.

    `rate` and `var` are per window (units per window); `weight` is the bias correction of
    the smoothing, so early estimates are not pulled towards zero.
    """

    window_start_ms: int = -1
    window_qty: int = 0
    rate: float = 0.0
    var: float = 0.0
    weight: float = 0.0
    windows_seen: int = 0


@dataclass(slots=True)
class Inbound:
    """Stock expected at a site: a supplier shipment or a dispatched transfer in transit."""

    qty: int
    eta_ms: int


@dataclass(slots=True)
class Signals:
    """Per SKU-site detector memory: a few numbers and one small River drift detector.

    Created only for sites that sell, so idle SKU-sites carry nothing.
    """

    sale_mean: float = 0.0
    sale_dev: float = 0.0
    sales_seen: int = 0
    day_start_ms: int = -1
    day_qty: int = 0
    day_short: bool = False  # the site sold out during the day being counted
    drift: Any = None  # operators.drift.PoissonCusum, created lazily
    drift_until_ms: int = -1
    # The last sale, or the last hourly check that found the site with nothing to sell.
    quiet_since_ms: int = -1
    silent: bool = False
    # The drift detector raised a rise during the day being counted (the day completes it).
    rise_found_today: bool = False


@dataclass(slots=True)
class SiteState:
    on_hand: int = 0
    reserved_in: int = 0
    reserved_out: int = 0
    # Expected deliveries by shipment or transfer key; None while there are none (most
    # SKU-sites most of the time: an empty dict would cost 64 bytes each).
    inbound: dict[str, Inbound] | None = None
    demand: Demand = field(default_factory=Demand)
    stocked_out_in_window: bool = False
    last_transfer_in_ms: int = -1
    last_event_ms: int = -1
    last_logged: str = ""
    # An open data-quality finding: proposals touching the site need approval until then.
    integrity_until_ms: int = -1
    integrity_reason: str = ""
    # Units an outlier sale took off the books that no count has confirmed yet, and until
    # when they stay in doubt (a mis-keyed quantity is not a reason to send stock).
    disputed_qty: int = 0
    disputed_until_ms: int = -1
    signals: Signals | None = None

    @property
    def inbound_qty(self) -> int:
        return sum(item.qty for item in self.inbound.values()) if self.inbound else 0

    def disputed(self, now_ms: int) -> int:
        return self.disputed_qty if self.disputed_until_ms >= now_ms else 0

    def inbound_items(self) -> Iterable[Inbound]:
        return self.inbound.values() if self.inbound else ()

    def expect(self, key: str, item: Inbound) -> None:
        if self.inbound is None:
            self.inbound = {}
        self.inbound[key] = item

    def expects(self, key: str) -> bool:
        return self.inbound is not None and key in self.inbound

    def take_inbound(self, key: str) -> Inbound | None:
        """The expected delivery under `key`, no longer expected; None if there was none."""
        if self.inbound is None:
            return None
        item = self.inbound.pop(key, None)
        if not self.inbound:
            self.inbound = None
        return item

    @property
    def position(self) -> int:
        """Inventory position: on-hand + inbound + reserved in - reserved out."""
        return self.on_hand + self.inbound_qty + self.reserved_in - self.reserved_out


@dataclass(slots=True)
class Reservation:
    """A proposal's quantity held at both ends until dispatched, rejected, failed or expired."""

    from_site: str
    to_site: str
    qty: int
    expires_at_ms: int
    lead_hours: float
    dispatched: bool = False
    approved: bool = False


@dataclass(slots=True)
class SkuState:
    sku: str
    sites: dict[str, SiteState] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    # The last `dedupe_capacity` event ids as 8-byte digests, a ring once full: 8 bytes an
    # id where a dict of the id strings took about 85 (a third of a SKU-site's memory).
    recent_events: bytearray = field(default_factory=bytearray)
    recent_next: int = 0
    clock_ms: int = -1
    # Transfers whose receipt came before their dispatch event (key -> receipt time), so the
    # late dispatch does not take the goods from the sender a second time. Rarely non-empty.
    received_early: dict[str, int] | None = None
    # The same SKU as a shadow policy sees it (decisions logged, never proposed).
    shadow: SkuState | None = None

    def seen_before(self, event_id: str, capacity: int) -> bool:
        """Whether the event id is among the last `capacity` seen; remembers it if not."""
        digest = event_digest(event_id)
        ring = self.recent_events
        at = ring.find(digest)
        while at >= 0:
            if at % DIGEST_BYTES == 0:
                return True
            at = ring.find(digest, at + 1)
        if len(ring) < capacity * DIGEST_BYTES:
            ring += digest
        else:
            start = self.recent_next * DIGEST_BYTES
            ring[start : start + DIGEST_BYTES] = digest
            self.recent_next = (self.recent_next + 1) % (len(ring) // DIGEST_BYTES)
        return False

    def site(self, site_id: str) -> SiteState:
        found = self.sites.get(site_id)
        if found is None:
            found = self.sites[site_id] = SiteState()
        return found


DIGEST_BYTES = 8


def event_digest(event_id: str) -> bytes:
    """8 bytes that stand for an event id: the same in every process and after a restart
    (unlike `hash`); two ids share one with probability 2^-64."""
    return hashlib.blake2b(event_id.encode(), digest_size=DIGEST_BYTES).digest()


def _recent_events_from_ids(values: dict[str, Any]) -> None:
    """Snapshots before 2026-11-26 kept the ids themselves, oldest first."""
    ids = values.pop("recent_event_ids", None)
    if ids is not None and "recent_events" not in values:
        values["recent_events"] = bytearray(b"".join(event_digest(e) for e in ids))
        values["recent_next"] = 0


class StateVersionError(ValueError):
    """A recovery snapshot lacks a field this version needs and cannot default."""


# Fields renamed since earlier versions, per record: old name -> new name.
_RENAMED: dict[type, dict[str, str]] = {Signals: {"last_sale_ms": "quiet_since_ms"}}
_FIELDS: dict[type, tuple[Field[Any], ...]] = {}


def _restore(record: Any, state: Any) -> None:
    """Load a pickled record written by this or an earlier version: fields added since take
    their defaults, renamed ones their new name, dropped ones are ignored. (Recovery
    snapshots outlive upgrades; without this, a new field would fail the first access and
    a dropped one the load itself.)"""
    cls = type(record)
    values: dict[str, Any] = {}
    for part in state if isinstance(state, tuple) else (state,):
        if part:
            values.update(part)
    for old, new in _RENAMED.get(cls, {}).items():
        if old in values and new not in values:
            values[new] = values.pop(old)
    if cls is SkuState:
        _recent_events_from_ids(values)
    known = _FIELDS.get(cls)
    if known is None:
        known = _FIELDS[cls] = fields(cls)
    for spec in known:
        if spec.name in values:
            value = values[spec.name]
        elif spec.default is not MISSING:
            value = spec.default
        elif spec.default_factory is not MISSING:
            value = spec.default_factory()
        else:
            raise StateVersionError(
                f"recovery snapshot: {cls.__name__}.{spec.name} is missing and has no default"
            )
        setattr(record, spec.name, value)


for _record in (Demand, Inbound, Signals, SiteState, Reservation, SkuState):
    setattr(_record, "__setstate__", _restore)  # noqa: B010 (a method added to each class)
