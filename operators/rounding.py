"""`rounded(x, digits)`: the same float as `round(x, digits)`, at a fraction of its cost.

CPython rounds a float to decimal digits exactly: it prints the value's decimal digits
(`_Py_dg_dtoa`), formats them into a string and parses that back (`_Py_dg_strtod`), and
sets the x87 control word around each: 5 % of the compiled engine's time for the two
rounds an event makes on average (a position's rate, the sites a decision record shows).
Scaling by a power of ten lands within 1e-7 of the exact scaled value while it is below
1e9, so the nearest integer is the exact one unless the scaled value is within 1e-6 of a
half; there, and for anything large, infinite or NaN, Python's `round` decides. The integer
divided by the power of ten is the double nearest their exact quotient, which is what
`round` returns (tests/unit/test_rounding.py holds the two equal over all floats).
"""

from __future__ import annotations

import math
from typing import Final

# Typed as a tuple of any length: mypyc leaves a Final tuple of floats inferred as fixed
# length unset at run time ("value for final name was not set", mypy 2.4.1).
_SCALES: Final[tuple[float, ...]] = (1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1e6)
_FAST_BELOW: Final = 1e9
_TIE_MARGIN: Final = 1e-6


def rounded(x: float, digits: int) -> float:
    """`round(x, digits)` for 0 <= digits <= 6 (half to even, on the float's exact value)."""
    scale = _SCALES[digits]
    y = x * scale
    if not -_FAST_BELOW < y < _FAST_BELOW:
        return round(x, digits)
    floor = float(int(y))
    if floor > y:
        floor -= 1.0
    fraction = y - floor
    if -_TIE_MARGIN < fraction - 0.5 < _TIE_MARGIN:
        return round(x, digits)
    whole = floor + 1.0 if fraction > 0.5 else floor
    if whole == 0.0:
        return math.copysign(0.0, x)  # round keeps the sign of a value that rounds to zero
    return whole / scale
