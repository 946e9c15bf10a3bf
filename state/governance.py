"""Governance: what operators have told the flow (pause, freezes, thresholds, policy)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    ACTIVATE_POLICY = "activate_policy"
    PAUSE = "pause"
    RESUME = "resume"
    FREEZE_SITE = "freeze_site"
    UNFREEZE_SITE = "unfreeze_site"
    FREEZE_SKU = "freeze_sku"
    UNFREEZE_SKU = "unfreeze_sku"
    SET_APPROVAL_THRESHOLD = "set_approval_threshold"


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """A verified command. `effective_at_ms` is event time: it applies to events at or after it."""

    nonce: str
    action: Action
    ts_ms: int
    effective_at_ms: int
    key_id: str
    target: str | None = None  # policy version, site or SKU, by action
    value: float | None = None  # approval threshold
    reason: str = ""
    actor: str = ""


@dataclass(frozen=True, slots=True)
class ControlRejection:
    """A control message that changed nothing, and why (audited and counted)."""

    reason: str
    detail: str
    key_id: str | None
    nonce: str | None
    received_at_ms: int
    offset: int | None


@dataclass(frozen=True, slots=True)
class Governance:
    """The operators' settings in force at one event time."""

    paused: bool = False
    frozen_sites: frozenset[str] = frozenset()
    frozen_skus: frozenset[str] = frozenset()
    approval_threshold: float | None = None  # None: the policy's own
    policy_version: str | None = None  # None: the configured default

    def frozen(self, sku: str, *sites: str) -> bool:
        return sku in self.frozen_skus or any(site in self.frozen_sites for site in sites)


DEFAULT_GOVERNANCE = Governance()
