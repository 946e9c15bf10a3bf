"""W3C trace context: only well-formed headers are taken; a proposal continues its trigger's
trace with a span of its own."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.trace import continue_trace, valid_traceparent

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    "value",
    [
        GOOD.upper(),
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # another version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        GOOD + "x",
        "é" * 55,
        b"\xff" * 55,
        None,
    ],
)
def test_a_malformed_traceparent_is_not_taken(value: str | bytes | None) -> None:
    assert valid_traceparent(value) is None


def test_a_well_formed_one_is_taken_as_bytes_or_text() -> None:
    assert valid_traceparent(GOOD) == GOOD == valid_traceparent(GOOD.encode())


@given(st.text(max_size=40))
def test_the_trace_id_and_flags_carry_on_with_a_span_of_the_proposal(proposal_id: str) -> None:
    continued = continue_trace(GOOD, proposal_id)
    assert continued is not None and valid_traceparent(continued) == continued
    assert continued[3:35] == GOOD[3:35] and continued[-2:] == GOOD[-2:]
    assert continued == continue_trace(GOOD, proposal_id)  # a replay continues it the same way
    assert continue_trace(None, proposal_id) is None
