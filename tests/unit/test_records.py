"""Records are frozen to the type checker (mypy runs on a copy where they are frozen
dataclasses, tests/support/typecheck.py) and plain slotted dataclasses at run time, native
classes when compiled: these tests hold both halves of that bargain."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from mypy import api as mypy_api

from state.records import Event, EventType
from tests.support.typecheck import frozen_copy


def test_assigning_to_a_records_field_is_a_type_error(tmp_path: Path) -> None:
    """As the house's mypy run sees the code (`make lint`, test_code_health)."""
    assert frozen_copy(tmp_path) >= 15  # every record of state/records.py
    (tmp_path / "assign.py").write_text(
        "from state.records import Event, EventType\n"
        "e = Event('e', EventType.SALE, 0, 'S', 'A', 1)\n"
        "e.qty = 3\n"
    )
    out, err, status = mypy_api.run(
        [str(tmp_path / "assign.py"), "--strict", "--no-incremental", "--cache-dir", os.devnull]
    )
    assert status == 1, out + err
    assert 'Property "qty" defined in "Event" is read-only' in out


def test_records_compare_and_hash_by_their_fields() -> None:
    a = Event("e", EventType.SALE, 0, "S", "A", 1)
    b = Event("e", EventType.SALE, 0, "S", "A", 1)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Event("e", EventType.SALE, 0, "S", "A", 2)
    assert not hasattr(a, "__dict__")  # slotted


# An Event pickled by the release before records stopped being frozen at run time (aacbca8):
# Event("e", EventType.SALE, 1, "S", "A", 2). Negotiation's snapshots hold records pickled so.
_FROZEN_EVENT_PICKLE = bytes.fromhex(
    "80049557000000000000008c0d73746174652e7265636f726473948c054576656e74949394298194"
    "5d94288c01659468008c094576656e74547970659493948c0473616c6594859452944b018c015394"
    "8c0141944b024e4e4e4e4e4e4e4e4e65622e"
)


def test_records_pickled_by_the_frozen_release_load_and_pickle_the_same_way() -> None:
    event = Event("e", EventType.SALE, 1, "S", "A", 2)
    assert pickle.loads(_FROZEN_EVENT_PICKLE) == event
    assert pickle.dumps(event) == _FROZEN_EVENT_PICKLE  # a rollback reads today's snapshots
