"""Go's strconv float formatting, as Prometheus and promtool print numbers."""

from __future__ import annotations

import math

import pytest

from shared.gofloat import format_go_exponent, format_go_exponent_upper


@pytest.mark.parametrize(
    ("value", "lower", "upper"),
    [
        (1.0, "1e+00", "1E+00"),
        (9218880000.0, "9.21888e+09", "9.21888E+09"),
        (0.05, "5e-02", "5E-02"),
        (-1.5e300, "-1.5e+300", "-1.5E+300"),
        (0.0, "0e+00", "0E+00"),
        (-0.0, "-0e+00", "-0E+00"),  # Go keeps the sign of negative zero
        (math.inf, "+Inf", "+Inf"),
        (math.nan, "NaN", "NaN"),  # not NAN
    ],
)
def test_e_and_upper_e_formats(value: float, lower: str, upper: str):
    assert (format_go_exponent(value), format_go_exponent_upper(value)) == (lower, upper)
