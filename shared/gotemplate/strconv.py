"""Go's strconv as templates need it: float formatting and parsing, quoted literals, numeric constants."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from decimal import Decimal

from shared.gotemplate.errors import CallError
from shared.matchers import go_quote

__all__ = [
    "can_backquote",
    "format_float",
    "go_quote",
    "number_value",
    "parse_float",
    "rune_repr",
    "unquote",
]


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of abs(value) (non-zero, finite; repr is shortest too) and the decimal
    point: 0.DIGITS x 10^point."""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)
    return digits.rstrip("0"), point


def format_float(value: float, verb: str = "g", prec: int = -1) -> str:
    """strconv.FormatFloat for verbs e, f and g; prec -1 is the shortest representation that round-trips
    (so `format_float(v)` is fmt's %v of a float64: 3, 0.30000000000000004, 1e+06, NaN, +Inf, -0)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if prec >= 0:
        # With an explicit precision, C's rules (Python's %) are Go's.
        return f"%.{prec}{verb}" % value
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    digits, point = ("0", 1) if value == 0 else _shortest_digits(value)
    exp = point - 1
    # Shortest %g switches to an exponent outside [1e-4, 1e21) in JSON but [1e-4, 1e6) here, as Go's 'g' says.
    if verb == "e" or (verb == "g" and (exp < -4 or exp >= 6)):
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


_DECIMAL_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_HEX_FLOAT = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F_]+\.?[0-9a-fA-F_]*|\.[0-9a-fA-F_]+)[pP][+-]?\d+")
_SPECIAL_FLOAT = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def parse_float(text: str) -> float:
    """strconv.ParseFloat(text, 64): Go's float syntax only (no spaces; `_` only after a base prefix)."""
    if _SPECIAL_FLOAT.fullmatch(text):
        return float(text)
    if _DECIMAL_FLOAT.fullmatch(text):
        value = float(text)
    elif _HEX_FLOAT.fullmatch(text):
        value = float.fromhex(text.replace("_", ""))
    else:
        raise CallError(f"strconv.ParseFloat: parsing {go_quote(text)}: invalid syntax")
    if math.isinf(value):
        raise CallError(f"strconv.ParseFloat: parsing {go_quote(text)}: value out of range")
    return value


def can_backquote(text: str) -> bool:
    """strconv.CanBackquote: whether text can be a `raw` literal."""
    return not any((ch < " " and ch != "\t") or ch in "`\x7f\ufeff" for ch in text)


def rune_repr(char: str) -> str:
    """Go's %#U: U+00A0, or U+002D '-' for a printable rune."""
    return f"U+{ord(char):04X}" + (f" '{char}'" if char.isprintable() else "")


# Literals ----------------------------------------------------------------------------
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}


def unquote(text: str) -> str:
    """strconv.Unquote of a "..." or `...` literal; ValueError for an invalid one."""
    if text[0] == "`":
        return text[1:-1].replace("\r", "")
    out = bytearray()
    for code, is_byte in _escaped(text[1:-1], text[0]):
        out += bytes([code]) if is_byte else chr(code).encode()
    return out.decode(errors="replace")


def _escaped(body: str, quote: str) -> Iterator[tuple[int, bool]]:
    """The code points of a quoted literal's body, and whether each is a raw byte (\\x, \\ooo)."""
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == quote:
            raise ValueError("invalid syntax")
        if ch != "\\":
            yield ord(ch), False
            i += 1
            continue
        esc = body[i + 1]
        if esc in _SIMPLE_ESCAPES or esc == quote:
            yield _SIMPLE_ESCAPES.get(esc, ord(quote)), False
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError("invalid syntax")
            code = int(digits, 16)
            if esc != "x" and (code > 0x10FFFF or 0xD800 <= code < 0xE000):
                raise ValueError("invalid syntax")
            yield code, esc == "x"
            i += 2 + width
        elif esc in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits) or int(digits, 8) > 255:
                raise ValueError("invalid syntax")
            yield int(digits, 8), True
            i += 4
        else:
            raise ValueError("invalid syntax")


def _go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64) without the range check: 0x, 0o, 0b and leading-0 octal, `_`."""
    sign, digits = (text[0], text[1:]) if text[:1] in ("+", "-") else ("", text)
    if len(digits) > 1 and digits[0] == "0" and digits[1] in "01234567_":
        digits = "0o" + digits[1:]
    try:
        value = int(digits, 0)
    except ValueError:
        return None
    return -value if sign == "-" else value


def _underscores_ok(text: str) -> bool:
    """Go's underscoreOK: each `_` of a number literal stands between digits (or after a base prefix)."""
    body = text.lstrip("+-")
    if body[:2].lower() in ("0x", "0b", "0o"):
        body = "0" + body[2:]
    return (
        re.fullmatch(r"[0-9a-fA-F.pP+-]*(?:(?<=[0-9a-fA-F])_(?=[0-9a-fA-F])[0-9a-fA-F.pP+-]*)*", body)
        is not None
    )


def number_value(text: str, is_char: bool) -> int | float:
    """A numeric constant as text/template types it when the context does not: int for integer syntax,
    float64 when the text has . e or p (not hex digits), a rune's code for 'x'. ValueError, in Go's words,
    when invalid."""
    if is_char:
        codes = list(_escaped(text[1:-1], "'"))
        if len(codes) != 1:
            raise ValueError(f"malformed character constant: {text}")
        return codes[0][0]
    value = _go_int(text)
    is_hex_int = text.lstrip("+-")[:2] in ("0x", "0X") and not any(c in text for c in "pP")
    if value is None:
        try:
            value_f = parse_float(text.replace("_", "") if _underscores_ok(text) else text)
        except CallError:
            raise ValueError(f"illegal number syntax: {go_quote(text)}") from None
        if not any(c in text for c in ".eEpP"):
            raise ValueError(f"integer overflow: {go_quote(text)}")
        return value_f
    if not is_hex_int and any(c in text for c in ".eEpP"):
        return float(value)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{text} overflows int")
    return value
