"""W3C trace context (https://www.w3.org/TR/trace-context/): a proposal continues the trace
of the event that triggered it, so a trace id followed from a producer reaches the proposal,
its decision record and whatever executes it.

Headers come from outside: only a well-formed version-00 `traceparent` is taken.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

_TRACEPARENT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16


def valid_traceparent(value: bytes | str | None) -> str | None:
    """The header's value if it is a well-formed `traceparent`, else None."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if value is None or len(value) != 55:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None or match.group(1) == _ZERO_TRACE or match.group(2) == _ZERO_SPAN:
        return None
    return value


def continue_trace(traceparent: str | None, span_of: str) -> str | None:
    """The same trace, with a span id of its own derived from `span_of` (a proposal id), so
    a replay continues the trace the same way."""
    if traceparent is None:
        return None
    trace_id, flags = traceparent[3:35], traceparent[53:55]
    span = hashlib.blake2b(span_of.encode(), digest_size=8).hexdigest()
    return f"00-{trace_id}-{span if span != _ZERO_SPAN else '1'.zfill(16)}-{flags}"
