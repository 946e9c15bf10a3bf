"""Records are frozen to the type checker (mypy runs on a copy where they are frozen
dataclasses, tests/support/typecheck.py) and plain slotted dataclasses at run time, native
classes when compiled: these tests hold both halves of that bargain."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import pickle
from pathlib import Path

import pytest
from mypy import api as mypy_api

from adapters.logs import JsonFormatter
from state import records, sku
from state.records import Event, EventType
from tests.support.typecheck import frozen_copy, house_errors


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


def _hand_built() -> list[type]:
    """Dataclasses of state/ with an `__init__` of their own (compiled, unlike the one a
    dataclass generates)."""
    return [
        cls
        for module in (records, sku)
        for cls in vars(module).values()
        if dataclasses.is_dataclass(cls)
        and isinstance(cls, type)
        and cls.__module__ == module.__name__
        and not cls.__dataclass_params__.init  # type: ignore[attr-defined]
    ]


def test_the_records_built_at_most_events_have_a_compiled_init() -> None:
    names = {cls.__name__ for cls in _hand_built()}
    assert names >= {"Event", "SourceRef", "StepOutput", "SitePosition", "Candidate", "Inbound"}


@pytest.mark.parametrize("cls", _hand_built(), ids=lambda cls: cls.__name__)
def test_a_hand_written_init_takes_every_field_in_order_with_its_default(cls: type) -> None:
    """A field added to the class but not to its `__init__` would be left unset."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    expected = [
        (f.name, inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(cls)
    ]
    assert [(p.name, p.default) for p in parameters] == expected
    built = cls(*[f"v{i}" for i in range(len(expected))])
    assert [getattr(built, name) for name, _ in expected] == [f"v{i}" for i in range(len(expected))]


def test_the_typecheck_leaves_out_only_a_records_own_init_assignments() -> None:
    source = (
        "class A:\n"  # 1
        "    def __init__(self, x: int) -> None:\n"  # 2
        "        self.x = x\n"  # 3
        "    def bump(self) -> None:\n"  # 4
        "        self.x = 2\n"  # 5
    )
    output = (
        'state/records.py:3: error: Property "x" defined in "A" is read-only  [misc]\n'
        'state/records.py:5: error: Property "x" defined in "A" is read-only  [misc]\n'
        'operators/engine.py:3: error: Property "x" defined in "A" is read-only  [misc]\n'
        "Found 3 errors in 2 files (checked 95 source files)\n"
    )
    assert house_errors(output, source) == output.splitlines()[1:3]


def test_a_log_line_writes_a_record_by_its_fields_and_anything_else_as_text() -> None:
    """Records reach orjson through `codec.record_fields` (its own dataclass reading crashed
    on compiled records)."""
    formatter = JsonFormatter()
    line = logging.LogRecord("stockshift", logging.INFO, "", 0, "seen", None, None)
    line.event = Event("e", EventType.SALE, 1, "S", "A", 2)
    line.where = Path("/x")
    body = json.loads(formatter.format(line))
    assert body["event"]["event_id"] == "e" and body["event"]["qty"] == 2
    assert body["where"] == "/x"
