"""Records are frozen to the type checker and plain slotted dataclasses at run time
(`state.records.record`): these tests hold both halves of that bargain."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api as mypy_api

from state.records import Event, EventType

ROOT = Path(__file__).resolve().parents[2]


def test_assigning_to_a_records_field_is_a_type_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snippet = tmp_path / "assign.py"
    snippet.write_text(
        "from state.records import Event, EventType\n"
        "e = Event('e', EventType.SALE, 0, 'S', 'A', 1)\n"
        "e.qty = 3\n"
    )
    monkeypatch.setenv("MYPYPATH", str(ROOT))
    out, err, status = mypy_api.run([str(snippet), "--strict", "--no-incremental"])
    assert status == 1, out + err
    assert 'Property "qty" defined in "Event" is read-only' in out


def test_records_compare_and_hash_by_their_fields() -> None:
    a = Event("e", EventType.SALE, 0, "S", "A", 1)
    b = Event("e", EventType.SALE, 0, "S", "A", 1)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Event("e", EventType.SALE, 0, "S", "A", 2)
    assert not hasattr(a, "__dict__")  # slotted
