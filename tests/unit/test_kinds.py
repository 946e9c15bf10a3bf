"""`state.kinds` names the members the decision core compares by identity: each name must be
the member itself, and every event type must have one, or a hot-path `is` test would
silently never match."""

from __future__ import annotations

import state.kinds as kinds
from state.records import EventType, SuppressReason


def test_every_event_type_has_its_constant_and_it_is_the_member_itself() -> None:
    for member in EventType:
        assert getattr(kinds, member.name) is member


def test_the_reasons_constants_are_their_members_and_their_texts_the_values() -> None:
    named = [n for n in dir(kinds) if n.isupper() and isinstance(getattr(kinds, n), SuppressReason)]
    assert named, "no suppression reason constants"
    for name in named:
        assert getattr(kinds, name) is SuppressReason[name]
    assert kinds.REASON_TEXT == {r: r.value for r in SuppressReason}
    assert all(type(text) is str for text in kinds.REASON_TEXT.values())
