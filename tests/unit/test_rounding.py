"""`operators.rounding.rounded` is Python's `round(x, digits)`, bit for bit."""

from __future__ import annotations

import math
import struct

from hypothesis import example, given
from hypothesis import strategies as st

from operators.rounding import rounded


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


@given(st.floats(), st.integers(min_value=0, max_value=6))
@example(2.675, 2)  # stored just below the half: rounds down
@example(0.125, 2)  # an exact half: to even
@example(0.375, 2)
@example(-0.00001, 4)  # rounds to zero, keeps its sign
@example(-0.0, 3)
@example(999_999.99995, 4)  # scaled just above the fast range
@example(math.inf, 2)
@example(math.nan, 2)
def test_rounded_is_round_bit_for_bit(x: float, digits: int) -> None:
    assert _bits(rounded(x, digits)) == _bits(round(x, digits))


@given(
    st.integers(min_value=-(10**9), max_value=10**9),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=-3, max_value=3),
)
def test_values_next_to_halves_round_as_round_does(whole: int, digits: int, ulps: int) -> None:
    """Around each half (k + 0.5) / 10^digits, a few floats either side: where scaling
    could round the wrong way."""
    x = (whole + 0.5) / 10**digits
    for _ in range(abs(ulps)):
        x = math.nextafter(x, math.copysign(math.inf, ulps))
    assert _bits(rounded(x, digits)) == _bits(round(x, digits))
