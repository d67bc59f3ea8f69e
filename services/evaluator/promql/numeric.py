"""Numeric building blocks shared by functions and aggregations, matching Prometheus' float behaviour:
Kahan-Neumaier summation, the quantile interpolation, linear regression and Go's float formatting."""

from __future__ import annotations

import math
import re
from decimal import Decimal


def kahan_add(inc: float, total: float, c: float) -> tuple[float, float]:
    """One step of Kahan-Neumaier summation (Prometheus' kahanSumInc): returns (new sum, new compensation)."""
    t = total + inc
    if math.isinf(t):
        c = 0.0
    elif abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


def quantile(q: float, values: list[float]) -> float:
    """The q-quantile of `values` with linear interpolation between ranks (NaN sorts first, as in Go)."""
    if not values or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values, key=lambda v: (0, 0.0) if math.isnan(v) else (1, v))
    n = len(ordered)
    rank = q * (n - 1)
    lower = max(0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def linear_regression(times_ms: list[int], values: list[float], intercept_ms: int) -> tuple[float, float]:
    """Least-squares (slope per second, intercept at `intercept_ms`), as Prometheus' linearRegression."""
    n = 0.0
    sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
    init_y = values[0]
    const_y = True
    for i, (t, y) in enumerate(zip(times_ms, values, strict=True)):
        if const_y and i > 0 and y != init_y:
            const_y = False
        n += 1.0
        x = (t - intercept_ms) / 1e3
        sum_x, c_x = kahan_add(x, sum_x, c_x)
        sum_y, c_y = kahan_add(y, sum_y, c_y)
        sum_xy, c_xy = kahan_add(x * y, sum_xy, c_xy)
        sum_x2, c_x2 = kahan_add(x * x, sum_x2, c_x2)
    if const_y:
        if math.isinf(init_y):
            return math.nan, math.nan
        return 0.0, init_y
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = cov_xy / var_x if var_x != 0 else (math.nan if cov_xy == 0 else math.copysign(math.inf, cov_xy))
    intercept = sum_y / n - slope * sum_x / n
    return slope, intercept


def format_go_float(value: float) -> str:
    """strconv.FormatFloat(v, 'f', -1, 64): shortest round-trip digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") and value == 0 and math.copysign(1, value) > 0 else text


def format_go_exponent(value: float) -> str:
    """strconv.FormatFloat(v, 'e', -1, 64), as Prometheus' API prints alert values: `5e-02`, `1.5e+06`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0e+00"
    _, digit_tuple, exp = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    exponent = int(exp) + len(digits) - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sign = "-" if value < 0 else ""
    return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


_GO_DECIMAL = re.compile(r"[+-]?(?:[0-9_]+\.?[0-9_]*|\.[0-9_]+)(?:[eE][+-]?[0-9][0-9_]*)?")
_GO_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F_]+\.?[0-9a-fA-F_]*|\.[0-9a-fA-F_]+)[pP][+-]?[0-9][0-9_]*")
_GO_SPECIAL = re.compile(r"([+-]?)(inf|infinity)|(nan)", re.IGNORECASE)


def go_parse_float(text: str) -> float:
    """Go's strconv.ParseFloat(text, 64): decimal or hexadecimal (which needs a `p` exponent) literals with
    Go's digit-separating underscores, `Inf`/`Infinity` (signed) and `NaN`, case-insensitively. Raises
    ValueError for what Go refuses, including a finite literal beyond the float64 range (Go's ErrRange)."""
    special = _GO_SPECIAL.fullmatch(text)
    if special:
        if special.group(3):
            return math.nan
        return -math.inf if special.group(1) == "-" else math.inf
    hexadecimal = _GO_HEX.fullmatch(text)
    if not (hexadecimal or _GO_DECIMAL.fullmatch(text)) or not _go_underscores_ok(text):
        raise ValueError(f"invalid syntax: {text!r}")
    plain = text.replace("_", "")
    try:
        value = float.fromhex(plain) if hexadecimal else float(plain)
    except OverflowError:
        raise ValueError(f"value out of range: {text!r}") from None
    if math.isinf(value):
        raise ValueError(f"value out of range: {text!r}")
    return value


def _go_underscores_ok(text: str) -> bool:
    """strconv's underscoreOK: an underscore only between digits (a base prefix counts as a digit)."""
    if "_" not in text:
        return True
    s = text[1:] if text[:1] in "+-" else text
    saw, i, hexadecimal = "^", 0, False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexadecimal = 2, "0", s[1].lower() == "x"
    for ch in s[i:]:
        if ch.isascii() and (ch.isdigit() or (hexadecimal and ch.lower() in "abcdef")):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def go_div(a: float, b: float) -> float:
    """Go's float division: x/0 is ±Inf (NaN for 0/0 or NaN/0) instead of ZeroDivisionError."""
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b
