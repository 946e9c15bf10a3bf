"""Records of the planners' console: who is signed in, and a proposal waiting for a person."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    VIEWER = "viewer"  # sees everything, changes nothing
    PLANNER = "planner"  # answers proposals for the sites they own
    ADMIN = "admin"  # answers any proposal, pauses and freezes

    @property
    def answers(self) -> bool:
        return self in (Role.PLANNER, Role.ADMIN)


ALL_SITES = "*"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    sites: frozenset[str] = frozenset({ALL_SITES})

    def owns(self, site: str) -> bool:
        return ALL_SITES in self.sites or site in self.sites

    def may_answer(self, from_site: str, to_site: str) -> bool:
        """A planner answers a transfer that leaves or reaches one of their sites."""
        if not self.role.answers:
            return False
        return self.role is Role.ADMIN or self.owns(from_site) or self.owns(to_site)


@dataclass(slots=True)
class Waiting:
    """A `needs_approval` proposal as the console shows it, and what became of it."""

    proposal_id: str
    sku: str
    from_site: str
    to_site: str
    qty: int
    created_ms: int
    expires_ms: int
    value: float = 0.0
    net_benefit: float = 0.0
    reason: str = ""
    approval_reasons: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)
    # approved, rejected, dispatched, expired, ... (None while it waits), by whom, with what note
    answer: str | None = None
    answered_by: str | None = None
    note: str = ""
