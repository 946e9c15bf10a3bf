"""The wall clock, in one place (decisions use event time; this is for housekeeping)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)
