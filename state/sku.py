"""Per-SKU state: every site's stock and demand, reservations and recent event ids.

The flow keys state by SKU so that one planner sees all sites of a SKU at once. Records
are slotted and hold only numbers and short strings: Bytewax copies each touched key's
state every epoch, and we aim for millions of SKU-site entries per process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Final, Self, TypeVar


class Restorable:
    """A record kept in recovery snapshots. It pickles as Python pickles a slotted object,
    `(None, {field: value})`, written out here so that the compiled core (mypyc, whose
    classes have no such default) and the pure one read each other's snapshots; it loads
    through `_restore`, so a snapshot written by an earlier version loads too."""

    __slots__ = ()

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        return None, {spec.name: getattr(self, spec.name) for spec in _fields_of(type(self))}

    def __setstate__(self, state: Any) -> None:
        _restore(self, state)


@dataclass(slots=True)
class Demand(Restorable):
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


class _OwnInit(Restorable):
    """A restorable record that writes out its `__init__`: compiled, mypyc's default
    `__new__` would call it, and `restored` and pickle call `__new__` alone (as
    state/records.py's `_OwnInit`, which has another base)."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        return super().__new__(cls)


@dataclass(slots=True, init=False)
class Inbound(_OwnInit):
    """Stock expected at a site: a supplier shipment or a dispatched transfer in transit."""

    qty: int
    eta_ms: int
    # When a transfer was dispatched (its receipt then says what the lane took); -1 for a
    # supplier shipment.
    sent_ms: int = -1

    # Written out: a dataclass's generated `__init__` is interpreted even in the compiled
    # core, this one is compiled (one in four events builds an Inbound).
    def __init__(self, qty: int, eta_ms: int, sent_ms: int = -1) -> None:
        self.qty = qty
        self.eta_ms = eta_ms
        self.sent_ms = sent_ms


@dataclass(slots=True)
class Signals(Restorable):
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
    # How far behind the SKU's other events the site's sales arrive (a POS feed that uploads
    # late): a count then finds the books still holding the sales not yet in.
    feed_lag_ms: int = 0
    # Units the latest count found missing beyond chance, waiting for the late sales that
    # may explain them (operators.signals._check_count).
    count_shortfall: int = 0


@dataclass(slots=True)
class SiteForecast(Restorable):
    """A forecast as the planner uses it: units an hour, the rate's stated relative error,
    and the forecast scored against the site's sales (`operators.demand.track_forecast`):
    a forecast source that keeps missing at a SKU-site loses weight there, whatever error it
    states. The score outlives each forecast (the next one takes it over): it measures the
    source, not one number."""

    per_hour: float
    # The relative error its source states; 0.0 where it states none (the planner then
    # learns it from the SKU's sales: `operators.demand.unstated_error_sq`).
    error_cv: float
    # Units the forecasts expected over the hours the site had stock to sell, and the units
    # it sold in those hours; both decay with `FORECAST_ERROR_HALFLIFE_HOURS`.
    expected_units: float = 0.0
    sold_units: float = 0.0
    # The time both sums run to; -1 until the first event scores the forecast.
    scored_to_ms: int = -1


@dataclass(slots=True)
class SiteState(Restorable):
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
    # Units a count added that the site's books cannot explain (a phantom_stock finding):
    # under the hold they do not count against the site's storage, so one bad count cannot
    # block every transfer into the site.
    unexplained_qty: int = 0
    signals: Signals | None = None
    # The latest demand forecast for the site (a `forecast` event); None: none received.
    forecast: SiteForecast | None = None
    # The time of the site's latest count (a `snapshot`); -1: never counted. A movement
    # older than it is in the count already and leaves on-hand alone when it comes late.
    counted_ms: int = -1

    @property
    def inbound_qty(self) -> int:
        return sum(item.qty for item in self.inbound.values()) if self.inbound else 0

    def disputed(self, now_ms: int) -> int:
        return self.disputed_qty if self.disputed_until_ms >= now_ms else 0

    def inbound_items(self) -> Iterable[Inbound]:
        return self.inbound.values() if self.inbound else ()

    def expect(self, key: str, item: Inbound) -> None:
        """Call `SkuState.expect` instead: it keeps the SKU's ETA floor."""
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
class Reservation(Restorable):
    """A proposal's quantity held at both ends until dispatched, rejected, failed or expired."""

    from_site: str
    to_site: str
    qty: int
    expires_at_ms: int
    lead_hours: float
    dispatched: bool = False
    approved: bool = False


# A field kept out of recovery snapshots: derived from the rest, and recomputed after a
# restore (`operators.snapshot.current_schema` leaves it out).
TRANSIENT: Final = {"transient": True}
# `SkuState.inbound_eta_floor_ms` before any look: below every time, so the look walks.
ETA_FLOOR_UNKNOWN: Final = -(1 << 60)
# ... and where no site expects anything: after every time.
NO_INBOUND_DUE: Final = 1 << 60


@dataclass(slots=True)
class SkuState(Restorable):
    sku: str
    sites: dict[str, SiteState] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    # Event ids seen in the last `dedupe_horizon` of the SKU's event time (at most
    # `dedupe_capacity` of them), oldest first: 12 bytes each, an 8-byte digest of the id and
    # the SKU's clock in minutes when it was seen. Sized by time, not by a count, so a
    # retried event is recognised however busy the SKU was in between.
    recent_seen: bytearray = field(default_factory=bytearray)
    clock_ms: int = -1
    # Transfers whose receipt came before their dispatch event (key -> receipt time), so the
    # late dispatch does not take the goods from the sender a second time. Rarely non-empty.
    received_early: dict[str, int] | None = None
    # The same SKU as a shadow policy sees it (decisions logged, never proposed).
    shadow: SkuState | None = None
    # No delivery any of its sites expects is due before this (`expect` keeps it a lower
    # bound), so the hourly look for overdue ones (`operators.limits.expire_inbound`) walks
    # the sites only when one may be. Not in snapshots (TRANSIENT): restored, it is unknown
    # and the first look walks.
    inbound_eta_floor_ms: int = field(
        default=ETA_FLOOR_UNKNOWN, compare=False, repr=False, metadata=TRANSIENT
    )
    # Bits for the digests in `recent_seen` (SeenFilter), so most new ids are known new
    # without searching it: a SKU sold at a thousand stores holds up to `dedupe_capacity`
    # ids, 24 KB to search per event. None while it holds fewer than FILTER_FROM. Not in
    # snapshots (TRANSIENT): built when first needed.
    seen_filter: SeenFilter | None = field(
        default=None, compare=False, repr=False, metadata=TRANSIENT
    )

    def expect(self, site: SiteState, key: str, item: Inbound) -> None:
        """`site`, one of this SKU's, expects `item` under `key` (through here, not the
        site's own `expect`, so the SKU's ETA floor holds)."""
        site.expect(key, item)
        if item.eta_ms < self.inbound_eta_floor_ms:
            self.inbound_eta_floor_ms = item.eta_ms

    def seen_before(self, event_id: str, now_ms: int, horizon_ms: int, capacity: int) -> bool:
        """Whether the event id was seen within the horizon; remembers it if not."""
        digest = event_digest(event_id)
        seen = self.recent_seen
        now_min = max(now_ms, 0) // 60_000
        cutoff = now_min - horizon_ms // 60_000
        known = self.seen_filter
        if known is not None and known.full():
            known = self.seen_filter = None  # rebuilt below, or gone where few ids are left
        if known is None and len(seen) >= FILTER_FROM:
            known = self.seen_filter = SeenFilter.of(seen)
        if known is None or known.may_hold(digest):
            at = seen.find(digest)
            while at >= 0:
                if at % SEEN_BYTES == 0 and _stamp(seen, at) >= cutoff:
                    return True
                at = seen.find(digest, at + 1)
        drop = 0
        while drop < len(seen) and _stamp(seen, drop) < cutoff:
            drop += SEEN_BYTES
        if len(seen) - drop >= capacity * SEEN_BYTES:
            drop = len(seen) - (capacity - 1) * SEEN_BYTES
        if drop:
            del seen[:drop]
        if known is not None:
            known.add(digest)
        seen += digest + now_min.to_bytes(4, "little")
        return False

    def site(self, site_id: str) -> SiteState:
        found = self.sites.get(site_id)
        if found is None:
            found = self.sites[site_id] = SiteState()
        return found


DIGEST_BYTES: Final = 8
SEEN_BYTES: Final = DIGEST_BYTES + 4
# A SKU holding fewer ids searches them without a filter: most SKUs do, and a search of
# fewer than 128 costs at most 0.6 us (the filter answers in 0.07); built from 32 ids up,
# the filter left the bench stream's engine no faster (rebuilds cost what it saved) and
# would cost every such SKU its memory. Timed compiled, docs/benchmarks.md (fifteenth).
FILTER_FROM: Final = 128 * SEEN_BYTES


# Two bytes of a digest address a slot: a larger filter could not be filled. Past 4,096 ids
# held (`dedupe_capacity` is 2,048 by default) it is rebuilt more often, and passes more.
_MAX_SLOTS: Final = 1 << 16


class SeenFilter:
    """A Bloom filter over the digests in `recent_seen`, two bits a digest (slots: its
    first two and next two bytes, modulo the size): a clear bit proves a digest absent.
    Digests that leave `recent_seen` keep their bits until the filter is rebuilt, which
    `seen_before` does once as many digests have been added as an eighth of its bits (a new
    id then passes with probability under (1 - e^-0.25)^2, 5 %); each rebuild sizes it at
    sixteen bits a digest held, at least 256, so rebuilds cost a constant per event."""

    __slots__ = ("bits", "load", "mask")

    def __init__(self, slots: int) -> None:
        self.bits = bytearray(slots // 8)
        self.mask = slots - 1
        self.load = 0

    @staticmethod
    def of(seen: bytearray) -> SeenFilter:
        held = len(seen) // SEEN_BYTES
        slots = 256
        while slots < 16 * held and slots < _MAX_SLOTS:
            slots *= 2
        built = SeenFilter(slots)
        for at in range(0, held * SEEN_BYTES, SEEN_BYTES):
            built.add_at(seen, at)
        return built

    def full(self) -> bool:
        return self.load * 8 > self.mask + 1

    def may_hold(self, digest: bytes) -> bool:
        bits, mask = self.bits, self.mask
        first = (digest[0] | digest[1] << 8) & mask
        if not bits[first >> 3] & (1 << (first & 7)):
            return False
        second = (digest[2] | digest[3] << 8) & mask
        return bool(bits[second >> 3] & (1 << (second & 7)))

    def add(self, digest: bytes) -> None:
        self._set(digest[0] | digest[1] << 8, digest[2] | digest[3] << 8)

    def add_at(self, seen: bytearray, at: int) -> None:
        """Add the digest that starts at `at` in `seen`."""
        self._set(seen[at] | seen[at + 1] << 8, seen[at + 2] | seen[at + 3] << 8)

    def _set(self, first: int, second: int) -> None:
        bits, mask = self.bits, self.mask
        first &= mask
        second &= mask
        bits[first >> 3] |= 1 << (first & 7)
        bits[second >> 3] |= 1 << (second & 7)
        self.load += 1


def _stamp(seen: bytearray, at: int) -> int:
    """The minute stored after the digest at `at` (4 bytes, little-endian), read byte by byte:
    compiled, indexing is native where a slice builds a new bytearray."""
    at += DIGEST_BYTES
    return seen[at] | seen[at + 1] << 8 | seen[at + 2] << 16 | seen[at + 3] << 24


# An empty 8-byte BLAKE2b, copied per id: cheaper than building one with its parameters
# (0.25 against 0.37 us), the same digest.
_DIGEST_SEED: Final = hashlib.blake2b(digest_size=DIGEST_BYTES)


def event_digest(event_id: str) -> bytes:
    """8 bytes that stand for an event id: the same in every process and after a restart
    (unlike `hash`); two ids share one with probability 2^-64."""
    hasher = _DIGEST_SEED.copy()
    hasher.update(event_id.encode())
    return hasher.digest()


def _recent_seen_from_older(values: dict[str, Any]) -> None:
    """Snapshots before 2026-11-26 kept the last ids themselves, oldest first; those before
    2026-12-02 a ring of 8-byte digests with no time. Both are taken as seen at the SKU's
    clock, so they are remembered for one more horizon."""
    ids = values.pop("recent_event_ids", None)
    ring = values.pop("recent_events", None)
    start = values.pop("recent_next", 0)
    if "recent_seen" in values:
        return
    if ring is None and ids is not None:
        ring, start = bytearray(b"".join(event_digest(e) for e in ids)), 0
    if ring is None:
        return
    oldest_first = ring[start * DIGEST_BYTES :] + ring[: start * DIGEST_BYTES]
    stamp = (max(values.get("clock_ms", 0), 0) // 60_000).to_bytes(4, "little")
    values["recent_seen"] = bytearray(
        b"".join(
            bytes(oldest_first[i : i + DIGEST_BYTES]) + stamp
            for i in range(0, len(oldest_first), DIGEST_BYTES)
        )
    )


R = TypeVar("R", bound=Restorable)


class StateVersionError(ValueError):
    """A recovery snapshot lacks a field this version needs and cannot default."""


# Fields renamed since earlier versions, per record: old name -> new name.
_RENAMED: dict[type, dict[str, str]] = {Signals: {"last_sale_ms": "quiet_since_ms"}}
_FIELDS: dict[type, tuple[Field[Any], ...]] = {}


def restored(cls: type[R], values: dict[str, Any]) -> R:
    """A record from its field values by name, written by this version or an earlier one
    (as `_restore` reads them)."""
    record = cls.__new__(cls)
    _restore(record, values)
    return record


def _restore(record: Any, state: Any) -> None:
    """Load a pickled record written by this or an earlier version: fields added since take
    their defaults, renamed ones their new name, dropped ones are ignored. (Recovery
    snapshots outlive upgrades; without this, a new field would fail the first access and
    a dropped one the load itself.)"""
    cls = type(record)
    values: dict[str, Any] = {}
    if isinstance(state, list):  # a frozen record's field values, in order (SiteForecast)
        state = dict(zip((spec.name for spec in _fields_of(cls)), state, strict=False))
    for part in state if isinstance(state, tuple) else (state,):
        if part:
            values.update(part)
    for old, new in _RENAMED.get(cls, {}).items():
        if old in values and new not in values:
            values[new] = values.pop(old)
    if cls is SkuState:
        _recent_seen_from_older(values)
    for spec in _fields_of(cls):
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


def _fields_of(cls: type) -> tuple[Field[Any], ...]:
    known = _FIELDS.get(cls)
    if known is None:
        known = _FIELDS[cls] = fields(cls)
    return known
