"""The network and policy a flow decides with, validated once at start.

Built from plain dicts (adapters read the TOML files) so a bad config fails before the
flow consumes a single event, with a message that names the field.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final


class ConfigError(ValueError):
    """A network or policy file is invalid; the message names the offending field."""


def _sales_profile(weights: Any, where: str) -> tuple[float, ...]:
    """24 hourly weights (any scale) as the running share at each hour's start."""
    if not isinstance(weights, list | tuple) or len(weights) != 24:
        raise ConfigError(f"{where}: expected 24 hourly weights (UTC hours 0-23)")
    values = [_number(w, f"{where}[{h}]") for h, w in enumerate(weights)]
    total = sum(values)
    if total <= 0:
        raise ConfigError(f"{where}: the weights must not all be 0")
    running = [0.0]
    for value in values:
        running.append(running[-1] + value / total)
    running[-1] = 1.0
    return tuple(running)


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    kind: str = "store"
    replenishment_lead_hours: float = 72.0
    # The site's sales volume relative to a typical site (e.g. its share of last year's
    # sales times the number of sites): scales the SKU's cross-site demand prior.
    demand_index: float = 1.0
    # Units the site can hold across all SKUs (on hand plus what is on its way); None: no
    # limit. Transfers into the site share what is left (see operators.lanes).
    storage_capacity: int | None = None
    # How a day's sales spread over its hours (24 weights, UTC hours), kept as the running
    # share at the start of each hour (25 values, 0 to 1). With it, a rise in demand can be
    # found before the day ends (operators.signals); None: days are judged whole.
    sales_profile: tuple[float, ...] | None = None
    # How late the site's supplier deliveries arrive against their ETAs, learned from
    # receipts (operators.leadtimes; never from the file): the planner counts a delivery
    # from its ETA plus this.
    supplier_delay_hours: float = 0.0

    def share_of_day(self, ts_ms: int) -> float:
        """The share of a day's sales expected by the end of `ts_ms`'s hour: a sale early in
        the hour is judged against the whole hour, which errs towards no alarm (and fits
        sales published as hourly totals)."""
        profile = self.sales_profile
        if profile is None:
            return 1.0
        return profile[ts_ms % 86_400_000 // 3_600_000 + 1]


@dataclass(frozen=True, slots=True)
class Lane:
    """A permitted transfer route; one-way unless the file says `bidirectional`."""

    from_site: str
    to_site: str
    lead_hours: float
    cost_per_unit: float
    fixed_cost: float
    # Units that may depart per day (None: no limit) and the hour of day (UTC) after which
    # a transfer leaves the next day.
    capacity_per_day: int | None = None
    cutoff_hour: float | None = None
    # The cost of one departure (a van, a truck) on the lane, shared by every SKU it carries
    # that day; 0: none. `fixed_cost` stays the cost of each SKU's transfer on it.
    trip_cost: float = 0.0
    # A trip leaves only when what it carries is worth this much beyond its cost.
    min_trip_value: float = 0.0

    @property
    def lane_id(self) -> str:
        return f"{self.from_site}->{self.to_site}"


@dataclass(frozen=True, slots=True)
class SkuParams:
    unit_cost: float = 10.0
    unit_margin: float = 5.0
    pack_size: int = 1
    min_transfer_qty: int = 1
    # Perishable: hours a unit can be sold after it is received from the supplier.
    shelf_life_hours: float | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits against hostile or broken input: what one producer may make the flow hold.

    Each is a ceiling past which input is refused (dead-lettered with a reason) or expired,
    so one bad producer can neither exhaust memory nor poison the decisions for others.
    """

    # The most units of one SKU a site can plausibly hold (a site's storage_capacity lowers
    # it further): a larger count, return or delivery is refused as implausible.
    max_units_per_sku_site: int = 1_000_000
    # Expected deliveries one SKU-site may have open at once; more are refused.
    max_inbound_per_sku_site: int = 64
    # An expected delivery that has not arrived this long after its ETA is forgotten.
    inbound_grace_hours: float = 168.0
    # Event time may run at most this far ahead of the time the message reached stockshift
    # (Kafka's own default for log.message.timestamp.after.max.ms is one hour).
    max_future_minutes: float = 60.0


@dataclass(frozen=True, slots=True)
class LeadTimeLearning:
    """How the planner learns each lane's lead time from the transfers it sees arrive, and
    each site's supplier delay from its deliveries (the network file's optional
    `[lead_times]` table; the same settings for both, a site's tolerance against 0 h late).

    Once `min_samples` transfers on a lane were received, the `quantile` of the last
    `window` dispatch-to-receipt times is the lane's learned lead; the planner uses it in
    place of the configured one when it is longer by more than `tolerance_hours` (scan times
    are not departure times; a lane faster than its configuration keeps the configured
    lead: the file is the lane's promise, a shorter plan would buy transfers on luck).
    """

    enabled: bool = True
    quantile: float = 0.9
    min_samples: int = 20
    window: int = 100
    tolerance_hours: float = 2.0


@dataclass(frozen=True, slots=True)
class Network:
    # Dicts, not Mappings: compiled, a dict's `get` is a native call, a Mapping's a method
    # looked up by name (the planner reads a site for every agent it builds).
    sites: dict[str, Site]
    lanes: dict[tuple[str, str], Lane]
    sku_defaults: SkuParams = SkuParams()
    sku_overrides: dict[str, SkuParams] = field(default_factory=dict)
    limits: Limits = Limits()
    lead_times: LeadTimeLearning = LeadTimeLearning()
    # Lanes by destination, filled on first use (the network never changes after start).
    _into: dict[str, list[Lane]] = field(default_factory=dict, compare=False, repr=False)
    _from: dict[str, list[Lane]] = field(default_factory=dict, compare=False, repr=False)

    def sku_params(self, sku: str) -> SkuParams:
        return self.sku_overrides.get(sku, self.sku_defaults)

    def unit_ceiling(self, site_id: str) -> int:
        """The most units of one SKU the site can plausibly hold."""
        site = self.sites.get(site_id)
        cap = self.limits.max_units_per_sku_site
        if site is not None and site.storage_capacity is not None:
            return min(cap, site.storage_capacity)
        return cap

    def unit_ceilings(self) -> dict[str, int]:
        return {site_id: self.unit_ceiling(site_id) for site_id in self.sites}

    def lanes_from(self, from_site: str) -> list[Lane]:
        """Lanes out of a site, in the network file's order."""
        found = self._from.get(from_site)
        if found is None:
            found = [lane for (src, _), lane in self.lanes.items() if src == from_site]
            self._from[from_site] = found
        return found

    def lanes_into(self, to_site: str) -> list[Lane]:
        """Lanes into a site, fastest (then by sender id) first."""
        found = self._into.get(to_site)
        if found is None:
            found = sorted(
                (lane for (_, dst), lane in self.lanes.items() if dst == to_site),
                key=lambda lane: (lane.lead_hours, lane.from_site),
            )
            self._into[to_site] = found
        return found


@dataclass(frozen=True, slots=True)
class Policy:
    """A versioned decision policy; every proposal and decision record carries `version`."""

    version: str
    description: str = ""
    service_level_z: float = 1.65
    review_hours: float = 24.0
    cover_hours: float = 24.0
    # A sender never ships below this many hours of its demand plus safety stock.
    sender_keep_hours: float = 24.0
    min_net_benefit: float = 1.0
    cooldown_hours: float = 48.0
    proposal_ttl_hours: float = 6.0
    approval_value_threshold: float = 5000.0
    demand_window_minutes: int = 60
    demand_halflife_hours: float = 96.0
    # The SKU's cross-site demand counts as this many hours of observation in each site's
    # estimate, against the site's own hours up to the half-life (0: each site on its own).
    demand_prior_hours: float = 72.0
    # Weigh that prior by how alike the SKU's sites are (empirical Bayes): the more their
    # own rates spread beyond chance, the fewer hours it counts (`demand_prior_hours` at
    # most). An item that sells at one store and barely anywhere else must not have that
    # store's rate pulled toward the others' (it would look able to give stock away).
    demand_prior_by_spread: bool = False
    warmup_hours: float = 24.0
    # Event ids are remembered for this long of a SKU's event time (a producer's retry is
    # recognised within it), at most `dedupe_capacity` per SKU (a hard cap per key).
    dedupe_horizon_hours: float = 72.0
    dedupe_capacity: int = 2048
    # Proposals that wait for a human keep their reservation this long.
    approval_ttl_hours: float = 24.0
    # A receiver whose demand was observed for less than this is "low confidence": its
    # proposals need approval.
    confidence_hours: float = 48.0
    # Signal health: run the detectors; what an open data-quality finding does to a
    # proposal ("approve": needs approval, "suppress": not proposed); how long it stays open.
    signal_checks: bool = True
    integrity_action: str = "approve"
    integrity_hold_hours: float = 24.0
    drift_buffer_hours: float = 72.0
    # Cost of a lost sale beyond the margin (goodwill, a customer who does not come back).
    lost_sale_penalty: float = 0.0
    # How demand over a horizon is priced: "normal" (the normal loss function), or "count"
    # (Poisson or negative binomial, for intermittent demand of a few units).
    demand_distribution: str = "normal"
    # Estimation risk: a transfer is priced with the receiver's demand rate this many
    # standard errors lower and the sender's this many higher (0: at the estimates).
    estimate_risk_z: float = 0.0
    # Thin evidence: a site without a forecast whose demand estimate rests on fewer than
    # `thin_evidence_units` units (its own sales and the SKU's prior, as the estimate weighs
    # them) is priced `thin_evidence_z` standard errors pessimistic instead (the larger of
    # the two z applies). The sites a transfer would go to are the ones that just sold more
    # than their estimate: on a slow mover's few units that is mostly noise. 0: off.
    thin_evidence_units: float = 0.0
    thin_evidence_z: float = 2.0
    # A receiver without a forecast whose own sales span less than this many hours is
    # priced at no higher a rate than the SKU's cross-site prior at its full weight gives it
    # (`demand_prior_hours`, not lowered for the sites' spread): a few days of a slow mover
    # with one big day say little yet about how the site differs from the others. 0: off.
    receiver_full_prior_hours: float = 0.0
    # A forecast event without its own `error_cv` is taken to be off by this share until
    # the SKU's sales show otherwise (`operators.demand.unstated_error_sq`).
    forecast_error_cv: float = 0.5


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """Everything a flow decides with, read and validated once at start (adapters.configfiles
    .load_config); the flow's builder takes it and reads no file itself."""

    network: Network
    policy: Policy
    # Every version `activate_policy` may switch to, the default one included.
    policies: Mapping[str, Policy]
    shadow_policy: Policy | None = None


def _require(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing required field `{key}`")
    return table[key]


def _number(value: Any, where: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        sign = ">" if strict else ">="
        raise ConfigError(f"{where}: must be {sign} {minimum}, got {value!r}")
    return float(value)


def _integer(value: Any, where: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def sku_params_from_dict(raw: Mapping[str, Any], where: str, base: SkuParams) -> SkuParams:
    known = {"unit_cost", "unit_margin", "pack_size", "min_transfer_qty", "shelf_life_hours"}
    reject_unknown(raw, known, where)
    return SkuParams(
        unit_cost=_number(raw.get("unit_cost", base.unit_cost), f"{where}.unit_cost"),
        unit_margin=_number(raw.get("unit_margin", base.unit_margin), f"{where}.unit_margin"),
        pack_size=_integer(raw.get("pack_size", base.pack_size), f"{where}.pack_size"),
        min_transfer_qty=_integer(
            raw.get("min_transfer_qty", base.min_transfer_qty), f"{where}.min_transfer_qty"
        ),
        shelf_life_hours=(
            _number(raw["shelf_life_hours"], f"{where}.shelf_life_hours", strict=True)
            if raw.get("shelf_life_hours") is not None
            else base.shelf_life_hours
        ),
    )


_NETWORK_KEYS: Final = frozenset({"sites", "lanes", "sku_defaults", "limits", "lead_times"})
_SITE_KEYS: Final = frozenset(
    {"id", "kind", "replenishment_lead_hours", "demand_index", "storage_capacity", "sales_profile"}
)
_LANE_KEYS: Final = frozenset(
    {
        "from",
        "to",
        "lead_hours",
        "cost_per_unit",
        "fixed_cost",
        "trip_cost",
        "min_trip_value",
        "capacity_per_day",
        "cutoff_hour",
        "bidirectional",
    }
)


def reject_unknown(table: Mapping[str, Any], known: Collection[str], where: str) -> None:
    """A misspelled key is an error that names it and the key it most likely meant: left
    alone, `storage_capcity` would silently mean "no storage limit"."""
    unknown = sorted(set(table) - set(known))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigError(f"{where}: unknown field(s) {', '.join(hints)}")


def network_from_dict(
    raw: Mapping[str, Any], sku_overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Network:
    """Validate a parsed network file. Lanes must join known sites; ids must be unique."""
    reject_unknown(raw, _NETWORK_KEYS, "network")
    sites: dict[str, Site] = {}
    for i, entry in enumerate(_require(raw, "sites", "network")):
        site = _site_from_dict(entry, f"network.sites[{i}]")
        if site.site_id in sites:
            raise ConfigError(f"network.sites[{i}].id: duplicate site id {site.site_id!r}")
        sites[site.site_id] = site
    if len(sites) < 2:
        raise ConfigError("network.sites: a network needs at least two sites")
    lanes: dict[tuple[str, str], Lane] = {}
    for i, entry in enumerate(raw.get("lanes", [])):
        for lane in _lanes_from_dict(entry, f"network.lanes[{i}]", sites):
            if (lane.from_site, lane.to_site) in lanes:
                raise ConfigError(
                    f"network.lanes[{i}]: duplicate lane {lane.from_site!r} -> {lane.to_site!r}"
                )
            lanes[(lane.from_site, lane.to_site)] = lane
    defaults = sku_params_from_dict(
        raw.get("sku_defaults", {}), "network.sku_defaults", SkuParams()
    )
    overrides = {
        sku: sku_params_from_dict(values, f"sku_overrides[{sku!r}]", defaults)
        for sku, values in (sku_overrides or {}).items()
    }
    return Network(
        sites=sites,
        lanes=lanes,
        sku_defaults=defaults,
        sku_overrides=overrides,
        limits=limits_from_dict(raw.get("limits", {})),
        lead_times=lead_times_from_dict(raw.get("lead_times", {})),
    )


def _site_from_dict(entry: Mapping[str, Any], where: str) -> Site:
    reject_unknown(entry, _SITE_KEYS, where)
    site_id = _require(entry, "id", where)
    if not isinstance(site_id, str) or not site_id or len(site_id) > 64:
        raise ConfigError(f"{where}.id: expected a 1-64 character string, got {site_id!r}")
    capacity, profile = entry.get("storage_capacity"), entry.get("sales_profile")
    return Site(
        site_id=site_id,
        kind=str(entry.get("kind", "store")),
        replenishment_lead_hours=_number(
            entry.get("replenishment_lead_hours", 72.0), f"{where}.replenishment_lead_hours"
        ),
        demand_index=_demand_index(entry.get("demand_index", 1.0), f"{where}.demand_index"),
        storage_capacity=(
            _integer(capacity, f"{where}.storage_capacity") if capacity is not None else None
        ),
        sales_profile=(
            _sales_profile(profile, f"{where}.sales_profile") if profile is not None else None
        ),
    )


# The `demand_index` a network file may give a site (its sales relative to the typical
# site's; `stockshift warmup` fits 0.05 up to the number of sites): 5e-324, a positive
# number, made the site's prior rate infinite and every decision at the SKU raise.
DEMAND_INDEX_ACCEPTED: Final = (0.001, 1_000_000.0)


def _demand_index(value: Any, where: str) -> float:
    index = _number(value, where, strict=True)
    low, high = DEMAND_INDEX_ACCEPTED
    if not low <= index <= high:
        raise ConfigError(
            f"{where}: must be within {low:g}-{high:,.0f} (a site's sales relative to the "
            f"typical site's), got {value!r}"
        )
    return index


def _lanes_from_dict(entry: Mapping[str, Any], where: str, sites: Mapping[str, Site]) -> list[Lane]:
    """One lane entry: one lane, or two when `bidirectional`."""
    reject_unknown(entry, _LANE_KEYS, where)
    src, dst = _require(entry, "from", where), _require(entry, "to", where)
    for end, name in ((src, "from"), (dst, "to")):
        if end not in sites:
            raise ConfigError(f"{where}.{name}: unknown site {end!r}")
    if src == dst:
        raise ConfigError(f"{where}: a lane cannot start and end at {src!r}")
    lead = _number(_require(entry, "lead_hours", where), f"{where}.lead_hours")
    per_unit = _number(entry.get("cost_per_unit", 0.0), f"{where}.cost_per_unit")
    fixed = _number(entry.get("fixed_cost", 0.0), f"{where}.fixed_cost")
    trip = _number(entry.get("trip_cost", 0.0), f"{where}.trip_cost")
    min_trip = _number(entry.get("min_trip_value", 0.0), f"{where}.min_trip_value")
    capacity = entry.get("capacity_per_day")
    if capacity is not None:
        capacity = _integer(capacity, f"{where}.capacity_per_day")
    cutoff = entry.get("cutoff_hour")
    if cutoff is not None:
        cutoff = _number(cutoff, f"{where}.cutoff_hour")
        if cutoff > 24:
            raise ConfigError(f"{where}.cutoff_hour: must be within 0-24, got {cutoff!r}")
    pairs = [(src, dst), (dst, src)] if entry.get("bidirectional", False) else [(src, dst)]
    return [Lane(a, b, lead, per_unit, fixed, capacity, cutoff, trip, min_trip) for a, b in pairs]


def lead_times_from_dict(raw: Mapping[str, Any]) -> LeadTimeLearning:
    """The network file's optional `[lead_times]` table; unknown keys are errors."""
    where = "network.lead_times"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table")
    reject_unknown(raw, {"enabled", "quantile", "min_samples", "window", "tolerance_hours"}, where)
    base = LeadTimeLearning()
    enabled = raw.get("enabled", base.enabled)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: expected true or false, got {enabled!r}")
    quantile = _number(raw.get("quantile", base.quantile), f"{where}.quantile", minimum=0.5)
    if quantile >= 1.0:
        raise ConfigError(f"{where}.quantile: must be < 1, got {quantile!r}")
    min_samples = _integer(raw.get("min_samples", base.min_samples), f"{where}.min_samples")
    window = _integer(raw.get("window", base.window), f"{where}.window", minimum=min_samples)
    if window > 10_000:
        raise ConfigError(f"{where}.window: at most 10000 transfers, got {window!r}")
    tolerance = _number(
        raw.get("tolerance_hours", base.tolerance_hours), f"{where}.tolerance_hours"
    )
    return LeadTimeLearning(enabled, quantile, min_samples, window, tolerance)


def limits_from_dict(raw: Mapping[str, Any]) -> Limits:
    """The network file's optional `[limits]` table; unknown keys are errors."""
    if not isinstance(raw, Mapping):
        raise ConfigError("network.limits: expected a table")
    known = {"max_units_per_sku_site", "max_inbound_per_sku_site"}
    floats = {"inbound_grace_hours", "max_future_minutes"}
    reject_unknown(raw, known | floats, "network.limits")
    values: dict[str, Any] = {}
    for key in known & set(raw):
        values[key] = _integer(raw[key], f"network.limits.{key}")
    for key in floats & set(raw):
        values[key] = _number(raw[key], f"network.limits.{key}", strict=True)
    return Limits(**values)


# A forecast's relative error, stated in its message or assumed by the policy.
MIN_FORECAST_CV: Final = 0.001
MAX_FORECAST_CV: Final = 10.0

_POLICY_FLOATS = {
    "service_level_z": 0.0,
    "review_hours": 0.0,
    "cover_hours": 0.0,
    "sender_keep_hours": 0.0,
    "demand_prior_hours": 0.0,
    "min_net_benefit": 0.0,
    "cooldown_hours": 0.0,
    "proposal_ttl_hours": 0.0,
    "approval_value_threshold": 0.0,
    "demand_halflife_hours": 0.0,
    "warmup_hours": 0.0,
    "lost_sale_penalty": 0.0,
    "integrity_hold_hours": 0.0,
    "drift_buffer_hours": 0.0,
    "approval_ttl_hours": 0.0,
    "confidence_hours": 0.0,
    "dedupe_horizon_hours": 0.0,
    "estimate_risk_z": 0.0,
    "thin_evidence_units": 0.0,
    "thin_evidence_z": 0.0,
    "receiver_full_prior_hours": 0.0,
    "forecast_error_cv": 0.0,
}
_POLICY_INTS = {"demand_window_minutes": 1, "dedupe_capacity": 1}


def policy_from_dict(raw: Mapping[str, Any]) -> Policy:
    """Validate a parsed policy file; unknown keys are errors so typos cannot go unnoticed."""
    version = _require(raw, "version", "policy")
    if not isinstance(version, str) or not version:
        raise ConfigError(f"policy.version: expected a non-empty string, got {version!r}")
    flags = {"signal_checks", "demand_prior_by_spread"}
    extra = {"version", "description", "integrity_action", "demand_distribution"} | flags
    reject_unknown(raw, set(_POLICY_FLOATS) | set(_POLICY_INTS) | extra, "policy")
    values: dict[str, Any] = {"version": version, "description": str(raw.get("description", ""))}
    values.update(_policy_numbers(raw))
    for flag in flags & set(raw):
        if not isinstance(raw[flag], bool):
            raise ConfigError(f"policy.{flag}: expected true or false")
        values[flag] = raw[flag]
    if "demand_distribution" in raw:
        if raw["demand_distribution"] not in ("normal", "count"):
            raise ConfigError("policy.demand_distribution: expected 'normal' or 'count'")
        values["demand_distribution"] = raw["demand_distribution"]
    if "integrity_action" in raw:
        if raw["integrity_action"] not in ("approve", "suppress"):
            raise ConfigError("policy.integrity_action: expected 'approve' or 'suppress'")
        values["integrity_action"] = raw["integrity_action"]
    for positive in ("demand_halflife_hours", "proposal_ttl_hours"):
        if values.get(positive, 1.0) <= 0:
            raise ConfigError(f"policy.{positive}: must be > 0")
    # As a forecast message's `error_cv` (operators/parse.py): its weight is 1 / error^2, so
    # an error of 1e300 weighs nothing and the SKU's forecast bias divides by zero.
    if not MIN_FORECAST_CV <= values.get("forecast_error_cv", 0.5) <= MAX_FORECAST_CV:
        raise ConfigError(
            f"policy.forecast_error_cv: must be within {MIN_FORECAST_CV:g}-{MAX_FORECAST_CV:g}"
        )
    return Policy(**values)


def _policy_numbers(raw: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, minimum in _POLICY_FLOATS.items():
        if key in raw:
            values[key] = _number(raw[key], f"policy.{key}", minimum=minimum)
    for key, int_minimum in _POLICY_INTS.items():
        if key in raw:
            values[key] = _integer(raw[key], f"policy.{key}", minimum=int_minimum)
    return values
