"""Go's float parsing and formatting (strconv), as Prometheus reads and writes numbers: shared by the
evaluator (PromQL, its API) and the collector (label values Prometheus normalizes when it scrapes)."""

from __future__ import annotations

import math
import re
from decimal import Decimal


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
        return ("-" if math.copysign(1.0, value) < 0 else "") + "0e+00"  # Go keeps the sign of -0
    _, digit_tuple, exp = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    exponent = int(exp) + len(digits) - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sign = "-" if value < 0 else ""
    return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def format_go_exponent_upper(value: float) -> str:
    """strconv.FormatFloat(v, 'E', -1, 64), as promtool prints values: `1E+00`, `9.21888E+09`."""
    text = format_go_exponent(value)
    return text.upper() if math.isfinite(value) else text


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
