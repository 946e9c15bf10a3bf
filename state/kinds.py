"""The input events' types and the planner's suppression reasons as module constants, for
the decision core's hot path.

On Python 3.11 every read of an enum member through its class (`EventType.SALE`) passes
the enum metaclass's `__getattr__` hook, and CPython builds a method-wrapper object for
each such read before it finds the member: 8.5 % of the compiled engine's time on the
bench stream, and more work for the garbage collector. A `Final` name of a compiled module
is a C static (mypyc), a dictionary read in the pure core. Each is the member itself, so
`event.type is SALE` and `event.type is EventType.SALE` agree.
"""

from __future__ import annotations

from typing import Final

from state.records import EventType, SuppressReason

SALE: Final = EventType.SALE
RETURN: Final = EventType.RETURN
SALE_HISTORY: Final = EventType.SALE_HISTORY
SNAPSHOT: Final = EventType.SNAPSHOT
ADJUSTMENT: Final = EventType.ADJUSTMENT
INBOUND_EXPECTED: Final = EventType.INBOUND_EXPECTED
INBOUND_RECEIVED: Final = EventType.INBOUND_RECEIVED
TRANSFER_APPROVED: Final = EventType.TRANSFER_APPROVED
TRANSFER_DISPATCHED: Final = EventType.TRANSFER_DISPATCHED
TRANSFER_RECEIVED: Final = EventType.TRANSFER_RECEIVED
TRANSFER_REJECTED: Final = EventType.TRANSFER_REJECTED
TRANSFER_FAILED: Final = EventType.TRANSFER_FAILED
FORECAST: Final = EventType.FORECAST

# The planner's reasons for no proposal, and their texts as decision records carry them (a
# member's `.value` is a Python-level property on 3.11).
NO_SENDER_WITH_SURPLUS: Final = SuppressReason.NO_SENDER_WITH_SURPLUS
NO_ALLOWED_LANE: Final = SuppressReason.NO_ALLOWED_LANE
BELOW_MIN_QTY: Final = SuppressReason.BELOW_MIN_QTY
SHELF_LIFE: Final = SuppressReason.SHELF_LIFE
NO_NET_BENEFIT: Final = SuppressReason.NO_NET_BENEFIT
COOLDOWN: Final = SuppressReason.COOLDOWN
RESERVATION_OUTSTANDING: Final = SuppressReason.RESERVATION_OUTSTANDING
WARMING_UP: Final = SuppressReason.WARMING_UP
REASON_TEXT: Final[dict[SuppressReason, str]] = {r: r.value for r in SuppressReason}
