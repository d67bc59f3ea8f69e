"""The functions alert templates call, with Go's semantics and output: Prometheus' own (template/template.go:
humanize*, reReplaceAll, match, title, toUpper, ...) and text/template's builtins (and, or, not, eq..ge, len,
index, slice, print, printf, println, html, js, urlquery), including the part of Go's fmt they print through
(%v of each type, Printf's verbs, flags, width and precision).

Go values are modelled as: str (string), float (float64), int (int), bool (bool), dict (map[string]string),
TemplateData (the alert data struct) and None (nil). A function's Go `error` result is a FunctionError; the
executor reports it as "error calling <name>: ...", as text/template does.
"""

from __future__ import annotations

import ipaddress
import math
import re
import struct
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import quote_plus

from shared.matchers import go_quote, go_regex


class FunctionError(Exception):
    """The `error` a Go template function returns."""


# The alert data ---------------------------------------------------------------------------------------------
DATA_TYPE = (
    "struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; "
    "Value interface {} }"
)
MAP_TYPE = "map[string]string"
# Static types of the data's fields, for the load-time checks.
DATA_FIELDS = {"Labels": MAP_TYPE, "ExternalLabels": MAP_TYPE, "ExternalURL": "string", "Value": "float64"}


@dataclass(frozen=True)
class TemplateData:
    """What Prometheus passes to an alert template (template.AlertTemplateData), in its field order."""

    labels: dict[str, str]
    external_labels: dict[str, str]
    external_url: str
    value: float

    def field(self, name: str) -> Any:
        """The Go field `name` (one of DATA_FIELDS)."""
        return {
            "Labels": self.labels,
            "ExternalLabels": self.external_labels,
            "ExternalURL": self.external_url,
            "Value": self.value,
        }[name]


def go_type(value: Any) -> str:
    """Go's %T of a template value."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return MAP_TYPE
    return DATA_TYPE


def truth(value: Any) -> bool:
    """text/template's truth: false, 0, nil and empty strings and maps are false; a struct is true."""
    if value is None:
        return False
    if isinstance(value, str | dict):
        return len(value) > 0
    if isinstance(value, int | float):  # bool included
        return value != 0
    return True


# Numbers as Go prints and parses them -----------------------------------------------------------------------
def format_value(value: float) -> str:
    """A float as Go's `%v` prints it (strconv 'g', shortest): 3, 0.30000000000000004, 1e+06, NaN, +Inf."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, exponent = _shortest_digits(abs(value))
    sign = "-" if value < 0 else ""
    # strconv.FormatFloat(v, 'g', -1, 64): exponent form when exp < -4 or exp >= 6 (shortest precision).
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    point = exponent + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest round-tripping decimal digits of `value` (Python's repr is shortest too) and the decimal
    exponent of the first digit."""
    _, digit_tuple, exp = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    return digits, int(exp) + len(digits) - 1


def format_g4(value: float) -> str:
    """Go's `%.4g`, the format of every humanize function."""
    return _fmt_float(value, "g", _Spec(prec=4))


_DECIMAL_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_HEX_FLOAT = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F_]+\.?[0-9a-fA-F_]*|\.[0-9a-fA-F_]+)[pP][+-]?\d+")
_SPECIAL_FLOAT = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def parse_go_float(text: str) -> float:
    """strconv.ParseFloat(text, 64): Go's float syntax only (no spaces; `_` only after a base prefix)."""
    if _SPECIAL_FLOAT.fullmatch(text):
        return float(text)
    if _DECIMAL_FLOAT.fullmatch(text):
        value = float(text)
    elif _HEX_FLOAT.fullmatch(text):
        value = float.fromhex(text.replace("_", ""))
    else:
        raise FunctionError(f"strconv.ParseFloat: parsing {go_quote(text)}: invalid syntax")
    if math.isinf(value):
        raise FunctionError(f"strconv.ParseFloat: parsing {go_quote(text)}: value out of range")
    return value


def to_float(value: Any) -> float:
    """Prometheus' ConvertToFloat: float64, int and strings in Go's float syntax."""
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return parse_go_float(value)
    raise FunctionError(f"can't convert {go_type(value)} to float")


# Go's fmt ---------------------------------------------------------------------------------------------------
@dataclass
class _Spec:
    """One Printf directive's flags, width and precision (fmt.fmt's flags)."""

    minus: bool = False
    plus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    plus_v: bool = False  # %+v: field names
    sharp_v: bool = False  # %#v: Go syntax
    width: int | None = None
    prec: int | None = None


def _pad(text: str, spec: _Spec, zero: bool | None = None) -> str:
    if spec.width is None or len(text) >= spec.width:
        return text
    fill = spec.width - len(text)
    if spec.minus:
        return text + " " * fill
    use_zero = spec.zero if zero is None else zero
    return ("0" if use_zero else " ") * fill + text


def _can_backquote(text: str) -> bool:
    return not any((ch < " " and ch != "\t") or ch in "`\x7f\ufeff" for ch in text)


def _bad_verb(verb: str, arg: Any, spec: _Spec) -> str:
    if arg is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type(arg)}={_fmt_arg(arg, 'v', spec)})"


def _fmt_arg(arg: Any, verb: str, spec: _Spec) -> str:
    """fmt's printArg: one operand under one verb."""
    if arg is None:
        return _pad("<nil>", spec) if verb in "Tv" else _bad_verb(verb, arg, spec)
    if verb == "T":
        return _pad(go_type(arg), spec)
    if isinstance(arg, bool):
        return _pad("true" if arg else "false", spec) if verb in "tv" else _bad_verb(verb, arg, spec)
    if isinstance(arg, int):
        return _fmt_int(arg, verb, spec)
    if isinstance(arg, float):
        return _fmt_float(arg, verb, spec)
    if isinstance(arg, str):
        return _fmt_str(arg, verb, spec)
    if isinstance(arg, dict):
        if spec.sharp_v:
            inner = ", ".join(f"{go_quote(k)}:{go_quote(arg[k])}" for k in sorted(arg))
            return f"{MAP_TYPE}{{{inner}}}"
        return (
            "map["
            + " ".join(f"{_fmt_arg(k, verb, spec)}:{_fmt_arg(arg[k], verb, spec)}" for k in sorted(arg))
            + "]"
        )
    assert isinstance(arg, TemplateData)
    named = spec.plus_v or spec.sharp_v
    parts = [(f"{name}:" if named else "") + _fmt_arg(arg.field(name), verb, spec) for name in DATA_FIELDS]
    return (DATA_TYPE if spec.sharp_v else "") + "{" + (", " if spec.sharp_v else " ").join(parts) + "}"


def _fmt_str(text: str, verb: str, spec: _Spec) -> str:
    if spec.prec is not None:
        text = text[: spec.prec]
    if verb == "v" and spec.sharp_v:
        return _pad(go_quote(text), spec)
    if verb in "vs":
        return _pad(text, spec)
    if verb == "q":
        if spec.sharp and _can_backquote(text):
            return _pad(f"`{text}`", spec)
        return _pad(go_quote(text, ascii_only=spec.plus), spec)
    if verb in "xX":
        data = text.encode()
        hex_digits = [f"{b:02x}" if verb == "x" else f"{b:02X}" for b in data]
        prefix = "0" + verb if spec.sharp else ""
        if spec.space:
            return _pad(" ".join(prefix + h for h in hex_digits), spec)
        return _pad(prefix + "".join(hex_digits) if hex_digits else "", spec)
    return _bad_verb(verb, text, spec)


_BASES = {"d": 10, "v": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}


def _fmt_int(number: int, verb: str, spec: _Spec) -> str:
    if verb in _BASES:
        return _fmt_integer(number, _BASES[verb], verb, spec)
    if verb == "c":
        return _pad(chr(number) if 0 <= number <= 0x10FFFF else "\ufffd", spec)
    if verb == "q":
        return _pad(go_quote(chr(number) if 0 <= number <= 0x10FFFF else "\ufffd", spec.plus, "'"), spec)
    if verb == "U":
        text = f"U+{number:04X}" if number >= 0 else f"U+{number & 0xFFFFFFFFFFFFFFFF:04X}"
        if spec.sharp and 0 <= number <= 0x10FFFF and chr(number).isprintable():
            text += f" '{chr(number)}'"
        return _pad(text, spec, zero=False)
    return _bad_verb(verb, number, spec)


def _fmt_integer(number: int, base: int, verb: str, spec: _Spec) -> str:
    """fmt.fmtInteger: precision (or the 0 flag) pads the digits, then the base prefix and sign go on."""
    negative, magnitude = number < 0, abs(number)
    if spec.prec is not None:
        prec = spec.prec
        if prec == 0 and magnitude == 0:
            return " " * (spec.width or 0)
    elif spec.zero and not spec.minus and spec.width is not None:
        prec = spec.width - (1 if negative or spec.plus or spec.space else 0)
    else:
        prec = 0
    digits = {2: "b", 8: "o", 10: "d", 16: "X" if verb == "X" else "x"}[base]
    text = format(magnitude, digits).rjust(prec, "0")
    if spec.sharp:
        if base == 2:
            text = "0b" + text
        elif base == 8 and not text.startswith("0"):
            text = "0" + text
        elif base == 16:
            text = ("0X" if verb == "X" else "0x") + text
    if verb == "O":
        text = "0o" + text
    sign = "-" if negative else "+" if spec.plus else " " if spec.space else ""
    return _pad(sign + text, spec, zero=False)


def _fmt_float(value: float, verb: str, spec: _Spec) -> str:
    """fmt.fmtFloat: strconv's digits, then Go's sign, Inf/NaN and zero-padding rules."""
    if verb == "v":
        verb, prec = "g", -1
    elif verb in "bgGxX":
        prec = -1
    elif verb in "fFeE":
        prec = 6
    else:
        return _bad_verb(verb, value, spec)
    if spec.prec is not None:
        prec = spec.prec
    num = _strconv_float(value, "f" if verb == "F" else verb, prec, spec.sharp)
    if num[0] not in "+-":
        num = "+" + num
    if spec.space and num[0] == "+" and not spec.plus:
        num = " " + num[1:]
    if num[1:] in ("Inf", "NaN"):  # not numbers, so never zero-padded; NaN shows a sign only when asked
        if num[1] == "N" and not spec.space and not spec.plus:
            num = num[1:]
        return _pad(num, spec, zero=False)
    if spec.plus or num[0] != "+":
        if spec.zero and not spec.minus and spec.width is not None and spec.width > len(num):
            return num[0] + "0" * (spec.width - len(num)) + num[1:]
        return _pad(num, spec)
    return _pad(num[1:], spec)


def _strconv_float(value: float, verb: str, prec: int, sharp: bool) -> str:
    """strconv.FormatFloat's text (with "+Inf"/"-Inf"/"NaN"), with the # flag's alternate form."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if verb in "xX":
        return _hex_float(value, prec, upper=verb == "X")
    if verb == "b":
        bits = struct.unpack(">Q", struct.pack(">d", value))[0]
        exp_bits, mantissa = (bits >> 52) & 0x7FF, bits & ((1 << 52) - 1)
        exp = -1074 if exp_bits == 0 else exp_bits - 1075
        if exp_bits:
            mantissa |= 1 << 52
        return f"{'-' if bits >> 63 else ''}{mantissa}p{exp:+d}"
    if prec < 0 and not sharp:  # shortest
        text = format_value(value)
        return text.upper() if verb == "G" else text
    if prec < 0:
        prec = 6  # %#g: six significant digits, trailing zeros kept
    return f"%{'#' if sharp else ''}.{prec}{verb}" % value


def _hex_float(value: float, prec: int, upper: bool) -> str:
    """strconv's 'x' format: -0x1.8p+01 (shortest, or rounded to `prec` hex digits)."""
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    value = abs(value)
    if value == 0:
        lead, frac, exp = 0, 0, 0
    else:
        mantissa, exp2 = math.frexp(value)  # value = mantissa * 2**exp2, 0.5 <= mantissa < 1
        full, exp = int(mantissa * (1 << 53)), exp2 - 1  # 1.fff (52 fraction bits) * 2**exp
        lead, frac = 1, full & ((1 << 52) - 1)
    if 0 <= prec < 13:
        shift = (13 - prec) * 4
        rounded, rest = divmod((lead << 52) | frac, 1 << shift)
        half = 1 << (shift - 1)
        if rest > half or (rest == half and rounded & 1):
            rounded += 1
        if rounded >> (prec * 4) >= 2:  # rounding carried into the leading digit
            rounded >>= 1
            exp += 1
        lead, digits = (
            rounded >> (prec * 4),
            (f"{rounded & ((1 << (prec * 4)) - 1):0{prec}x}" if prec else ""),
        )
    else:
        digits = f"{frac:013x}"
        digits = digits.rstrip("0") if prec < 0 else digits.ljust(prec, "0")
    text = f"{sign}0x{lead}{'.' + digits if digits else ''}p{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return text.upper() if upper else text


def _parse_num(fmt: str, i: int) -> tuple[int | None, int]:
    """fmt's parsenum: a decimal number at fmt[i:], or None (absurdly large numbers are not numbers)."""
    j = i
    while j < len(fmt) and fmt[j].isdigit() and fmt[j].isascii():
        j += 1
    if j == i or j - i > 6:
        return None, j
    return int(fmt[i:j]), j


def _int_arg(args: Sequence[Any], index: int) -> tuple[int | None, int]:
    """fmt's intFromArg: the argument for a `*` width or precision."""
    if index >= len(args):
        return None, index
    arg = args[index]
    if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) <= 1_000_000:
        return arg, index + 1
    return None, index + 1


class _Printf:
    """fmt.Sprintf's directive loop (doPrintf), with explicit argument indexes ([n])."""

    def __init__(self, fmt: str, args: Sequence[Any]) -> None:
        self.fmt, self.args = fmt, args
        self.argn = 0
        self.reordered = False
        self.good_index = True

    def arg_number(self, i: int) -> tuple[int, bool]:
        """An explicit `[n]` at fmt[i:]: the position after it and whether there was one."""
        fmt = self.fmt
        if i >= len(fmt) or fmt[i] != "[":
            return i, False
        self.reordered = True
        close = fmt.find("]", i + 1)
        if close < 0:
            self.good_index = False
            return i + 1, False
        number, end = _parse_num(fmt, i + 1)
        if number is None or end != close or not 1 <= number <= len(self.args):
            self.good_index = False
            return close + 1, number is not None and end == close
        self.argn = number - 1
        return close + 1, True

    def directive(self, i: int, out: list[str]) -> int:
        """Format the directive after the `%` at fmt[i-1]; returns where the text resumes."""
        fmt, spec = self.fmt, _Spec()
        self.good_index = True
        while i < len(fmt) and fmt[i] in "#0+- ":
            setattr(spec, {"#": "sharp", "0": "zero", "+": "plus", "-": "minus", " ": "space"}[fmt[i]], True)
            i += 1
        i, after_index = self.arg_number(i)
        if i < len(fmt) and fmt[i] == "*":
            spec.width, self.argn = _int_arg(self.args, self.argn)
            if spec.width is None:
                out.append("%!(BADWIDTH)")
            elif spec.width < 0:
                spec.width, spec.minus = -spec.width, True
            i, after_index = i + 1, False
        else:
            spec.width, i = _parse_num(fmt, i)
            if after_index and spec.width is not None:
                self.good_index = False
        if i + 1 < len(fmt) and fmt[i] == ".":
            if after_index:
                self.good_index = False
            i, after_index = self.arg_number(i + 1)
            if i < len(fmt) and fmt[i] == "*":
                spec.prec, self.argn = _int_arg(self.args, self.argn)
                if spec.prec is not None and spec.prec < 0:
                    spec.prec = None
                if spec.prec is None:
                    out.append("%!(BADPREC)")
                i, after_index = i + 1, False
            else:
                prec, i = _parse_num(fmt, i)
                spec.prec = prec or 0
        if not after_index:
            i, after_index = self.arg_number(i)
        if i >= len(fmt):
            out.append("%!(NOVERB)")
            return i
        verb = fmt[i]
        if verb == "%":
            out.append("%")
        elif not self.good_index:
            out.append(f"%!{verb}(BADINDEX)")
        elif self.argn >= len(self.args):
            out.append(f"%!{verb}(MISSING)")
        else:
            if verb == "v":  # %+v and %#v are field names and Go syntax, not sign and alternate form
                spec.sharp_v, spec.sharp, spec.plus_v, spec.plus = spec.sharp, False, spec.plus, False
            out.append(_fmt_arg(self.args[self.argn], verb, spec))
            self.argn += 1
        return i + 1

    def run(self) -> str:
        out: list[str] = []
        i = 0
        while i < len(self.fmt):
            j = self.fmt.find("%", i)
            if j < 0:
                out.append(self.fmt[i:])
                break
            out.append(self.fmt[i:j])
            i = self.directive(j + 1, out)
        if not self.reordered and self.argn < len(self.args):
            extra = ", ".join(
                "<nil>" if a is None else f"{go_type(a)}={_fmt_arg(a, 'v', _Spec())}"
                for a in self.args[self.argn :]
            )
            out.append(f"%!(EXTRA {extra})")
        return "".join(out)


def go_sprintf(fmt: str, *args: Any) -> str:
    """fmt.Sprintf: Go's verbs (%v %s %q %d %b %o %O %x %X %c %U %e %E %f %F %g %G %t %T %%), flags
    (+ - # space 0), width, precision, `*` and [n] argument indexes, and Go's in-band errors
    (%!d(string=x), %!s(MISSING), %!(EXTRA ...))."""
    return _Printf(fmt, args).run()


def go_sprint(*args: Any) -> str:
    """fmt.Sprint: operands as %v, with a space between two operands when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_fmt_arg(arg, "v", _Spec()))
    return "".join(out)


def go_sprintln(*args: Any) -> str:
    """fmt.Sprintln: operands as %v separated by spaces, then a newline."""
    return " ".join(_fmt_arg(arg, "v", _Spec()) for arg in args) + "\n"


def print_value(value: Any) -> str:
    """What `{{ pipeline }}` prints: fmt's %v, or "<no value>" for a missing (nil) value."""
    return "<no value>" if value is None else _fmt_arg(value, "v", _Spec())


# Prometheus' functions --------------------------------------------------------------------------------------
def humanize(value: Any) -> str:
    """Metric prefixes: 1234567 -> 1.235M, 0.00123 -> 1.23m."""
    v = to_float(value)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return format_g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return format_g4(v) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return format_g4(v) + prefix


def humanize1024(value: Any) -> str:
    """Binary prefixes: 1048576 -> 1Mi."""
    v = to_float(value)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return format_g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return format_g4(v) + prefix


def humanize_duration(value: Any) -> str:
    """Seconds as `1d 2h 3m 4s`, `1.234s` or `500ms` (prometheus/common's HumanizeDuration)."""
    v = to_float(value)
    if math.isnan(v) or math.isinf(v):
        return format_g4(v)
    if v == 0:
        return format_g4(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        whole = int(v)
        seconds, minutes, hours, days = whole % 60, whole // 60 % 60, whole // 3600 % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{format_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{format_g4(v)}{prefix}s"


def humanize_percentage(value: Any) -> str:
    """A ratio as a percentage: 0.1234 -> 12.34%."""
    return format_g4(to_float(value) * 100) + "%"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def humanize_timestamp(value: Any) -> str:
    """Unix seconds as Go's time.Time.String() in UTC, at millisecond precision (model.Time), e.g.
    `2015-06-23 13:19:44.128 +0000 UTC`."""
    v = to_float(value)
    if math.isnan(v) or math.isinf(v):
        return format_g4(v)
    nanos = v * 1e9
    if not -(2.0**63) <= nanos < 2.0**63:
        raise FunctionError(
            f"{format_value(v)} cannot be represented as a nanoseconds timestamp since it overflows int64"
        )
    whole_nanos = int(nanos)  # Go's float-to-int conversion truncates, and so does model.TimeFromUnixNano
    millis = abs(whole_nanos) // 1_000_000 * (1 if whole_nanos >= 0 else -1)
    moment = _EPOCH + timedelta(milliseconds=millis)
    fraction = f".{millis % 1000:03d}".rstrip("0").rstrip(".")
    return f"{moment:%Y-%m-%d %H:%M:%S}{fraction} +0000 UTC"


def to_upper(text: str) -> str:
    """strings.ToUpper: per-character (simple) case mapping, so ß stays ß."""
    return "".join(u if len(u := ch.upper()) == 1 else ch for ch in text)


def to_lower(text: str) -> str:
    """strings.ToLower: per-character (simple) case mapping."""
    return "".join(lo if len(lo := ch.lower()) == 1 else ch for ch in text)


# Word-internal punctuation of Unicode word segmentation (MidLetter, MidNumLet, MidNum, Single_Quote).
_MID = set(
    "'.:,;·\u0387\u05f4\u2018\u2019\u2024\u2027\u2044\ufe10\ufe13\ufe14\ufe50\ufe52\ufe54\ufe55\uff07\uff0c\uff0e\uff1a\uff1b"
)


def _is_cased(ch: str) -> bool:
    return ch.islower() or ch.isupper() or unicodedata.category(ch) == "Lt"


def _is_word_break(ch: str) -> bool:
    return not (
        ch == "_" or ch in _MID or unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Cf"
    )


def title(text: str) -> str:
    """cases.Title(language.AmericanEnglish, cases.NoLower), as Prometheus 3 uses: the first cased letter
    after a word break is title-cased, the rest is kept. Digits and `_` do not break words ("3rd" -> "3Rd");
    one apostrophe or period inside a word does not either ("o'neil" -> "O'neil")."""
    out: list[str] = []
    mid_word = previous_mid = False
    for ch in text:
        is_mid = ch in _MID
        if previous_mid and is_mid:
            mid_word = False
        if _is_cased(ch):
            out.append(ch if mid_word else ch.title())
            mid_word = True
        else:
            out.append(ch)
            if _is_word_break(ch):
                mid_word = False
        previous_mid = is_mid
    return "".join(out)


@lru_cache(maxsize=256)
def compile_go_regexp(pattern: str) -> re.Pattern[str]:
    """A Go (RE2) regexp compiled for Python's re; FunctionError with Go's wording for a bad one."""
    try:
        return re.compile(go_regex(pattern))
    except re.error as exc:
        raise FunctionError(f"error parsing regexp: {exc.msg}: `{pattern}`") from None


def re_replace_all(pattern: str, replacement: str, text: str) -> str:
    """Regexp.ReplaceAllString: `$1`, `${1}`, `$name` expand as in Go (`$1x` is the group named "1x"), and an
    empty match right after a previous match is not replaced."""
    try:
        regex = compile_go_regexp(pattern)
    except FunctionError as exc:  # regexp.MustCompile panics; text/template reports the panic
        raise FunctionError(f"regexp: Compile({_go_backquote(pattern)}): {exc}") from None
    out: list[str] = []
    last = 0
    for m in regex.finditer(text):
        out.append(text[last : m.start()])
        if m.end() > last or m.start() == 0:
            out.append(go_expand(replacement, m))
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def go_expand(template: str, found: re.Match[str]) -> str:
    """Regexp.Expand: `$$` is `$`; `$name`/`${name}` takes the longest run of letters, digits and `_` as
    the name (so `$1x` is the group named "1x"); a number without a leading zero is a group number; an
    unknown or unmatched group is empty; a `$` not followed by a name is kept."""
    out: list[str] = []
    i = 0
    while (dollar := template.find("$", i)) >= 0:
        out.append(template[i:dollar])
        rest = template[dollar + 1 :]
        if rest.startswith("$"):
            out.append("$")
            i = dollar + 2
            continue
        brace = rest.startswith("{")
        end = start = int(brace)
        while end < len(rest) and (rest[end].isalpha() or rest[end].isdecimal() or rest[end] == "_"):
            end += 1
        name = rest[start:end]
        if not name or (brace and rest[end : end + 1] != "}"):
            out.append("$")  # malformed: the $ is text
            i = dollar + 1
            continue
        i = dollar + 1 + end + brace
        out.append(_group_text(found, name))
    out.append(template[i:])
    return "".join(out)


def _group_text(found: re.Match[str], name: str) -> str:
    if name.isascii() and name.isdigit() and len(name) < 9 and (name == "0" or name[0] != "0"):
        number = int(name)
        return (found.group(number) or "") if number <= found.re.groups else ""
    index = found.re.groupindex.get(name)
    return (found.group(index) or "") if index is not None else ""


def _go_backquote(text: str) -> str:
    return f"`{text}`" if _can_backquote(text) else go_quote(text)


def match(pattern: str, text: str) -> bool:
    """regexp.MatchString: whether the (unanchored) pattern matches anywhere in text."""
    return compile_go_regexp(pattern).search(text) is not None


def _split_host_port(host_port: str) -> tuple[str, str] | None:
    """net.SplitHostPort, or None where Go returns an error."""
    colon = host_port.rfind(":")
    if colon < 0:
        return None
    start, after_bracket = 0, 0
    if host_port.startswith("["):
        end = host_port.find("]")
        if end < 0 or end + 1 != colon:
            return None
        host, start, after_bracket = host_port[1:end], 1, end + 1
    else:
        host = host_port[:colon]
        if ":" in host:
            return None
    if "[" in host_port[start:] or "]" in host_port[after_bracket:]:
        return None
    return host, host_port[colon + 1 :]


def strip_port(host_port: str) -> str:
    """The host of host:port ([v6]:port too); the input when it has no port."""
    split = _split_host_port(host_port)
    return split[0] if split else host_port


def _is_ip(host: str) -> bool:
    """net.ParseIP accepts it (dotted IPv4 without leading zeros, or IPv6 without a zone)."""
    if "%" in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def strip_domain(host_port: str) -> str:
    """The first label of a host name, keeping a port; IP addresses are returned unchanged."""
    split = _split_host_port(host_port)
    host, port = split if split else (host_port, "")
    if _is_ip(host):
        return host_port
    host = host.split(".")[0]
    if not port:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _link(expr: str, tab: int) -> str:
    return f"/graph?g0.expr={quote_plus(expr, safe='')}&g0.tab={tab}"


_DURATION_UNITS = {  # model.ParseDuration: nanoseconds and the position units must appear in
    "y": (365 * 24 * 3600 * 10**9, 1),
    "w": (7 * 24 * 3600 * 10**9, 2),
    "d": (24 * 3600 * 10**9, 3),
    "h": (3600 * 10**9, 4),
    "m": (60 * 10**9, 5),
    "s": (10**9, 6),
    "ms": (10**6, 7),
}
_DURATION_PART = re.compile(r"(\d+)(\D+)")


def parse_duration(text: str) -> float:
    """Prometheus' duration syntax (1h30m, 5m, 100ms) in seconds (model.ParseDuration)."""
    if text == "0":
        return 0.0
    if not text:
        raise FunctionError("empty duration string")
    invalid = FunctionError(f"not a valid duration string: {go_quote(text)}")
    total, last, pos = 0, 0, 0
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if part is None:
            raise invalid
        number, unit = int(part.group(1)), part.group(2)
        if unit not in _DURATION_UNITS:
            raise FunctionError(f"unknown unit {go_quote(unit)} in duration {go_quote(text)}")
        nanos, order = _DURATION_UNITS[unit]
        if order <= last:  # units go from the biggest to the smallest, each once
            raise invalid
        last, pos = order, part.end()
        total += number * nanos
        if total >= 2**63:
            raise FunctionError("duration out of range")
    return total / 1e9


# Go's builtins ----------------------------------------------------------------------------------------------
_KINDS = {bool: "bool", int: "int", float: "float", str: "string"}


def _kind(value: Any) -> str:
    """reflect's basic kind for comparisons; "invalid" for anything else (maps, structs, nil)."""
    return _KINDS.get(type(value), "invalid")


def go_eq(first: Any, *others: Any) -> bool:
    """eq a b c...: a == b || a == c ...; values of different kinds are an error."""
    if not others:
        raise FunctionError("missing argument for comparison")
    k1 = _kind(first)
    for other in others:
        k2 = _kind(other)
        if k1 != k2:
            if first is not None and other is not None:
                raise FunctionError("incompatible types for comparison")
            continue
        if k1 == "invalid" and first is not None and other is not None:
            raise FunctionError(f"non-comparable type {go_type(first)}")
        if first == other:
            return True
    return False


def go_ne(a: Any, b: Any) -> bool:
    """ne a b: not eq."""
    return not go_eq(a, b)


def go_lt(a: Any, b: Any) -> bool:
    """lt a b: a < b, for two values of one kind among int, float64 and string."""
    k1, k2 = _kind(a), _kind(b)
    if "invalid" in (k1, k2):
        raise FunctionError("invalid type for comparison")
    if k1 != k2:
        raise FunctionError("incompatible types for comparison")
    if k1 == "bool":
        raise FunctionError("invalid type for comparison")
    return bool(a < b)


def go_le(a: Any, b: Any) -> bool:
    """le a b: lt or eq (so NaN compares as Go does)."""
    return go_lt(a, b) or go_eq(a, b)


def go_gt(a: Any, b: Any) -> bool:
    """gt a b: not le."""
    return not go_le(a, b)


def go_ge(a: Any, b: Any) -> bool:
    """ge a b: not lt."""
    return not go_lt(a, b)


def go_not(value: Any) -> bool:
    """not a: the negation of a's truth."""
    return not truth(value)


def go_len(value: Any) -> int:
    """len: bytes of a string, entries of a map."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, dict):
        return len(value)
    if value is None:
        raise FunctionError("len of nil pointer")
    raise FunctionError(f"len of type {go_type(value)}")


def _index_arg(index: Any, size: int) -> int:
    if index is None:
        raise FunctionError("cannot index slice/array with nil")
    if not isinstance(index, int) or isinstance(index, bool):
        raise FunctionError(f"cannot index slice/array with type {go_type(index)}")
    if not 0 <= index <= size:
        raise FunctionError(f"index out of range: {index}")
    return index


def go_index(item: Any, *indexes: Any) -> Any:
    """index m k: m[k] (the zero value "" for a missing key); index s i: the byte s[i]."""
    if item is None:
        raise FunctionError("index of untyped nil")
    for index in indexes:
        if isinstance(item, str):
            data = item.encode()
            position = _index_arg(index, len(data))
            if position == len(data):
                raise FunctionError(f"index out of range: {position}")
            item = data[position]
        elif isinstance(item, dict):
            if index is None:
                raise FunctionError("value is nil; should be of type string")
            if not isinstance(index, str):
                raise FunctionError(f"value has type {go_type(index)}; should be string")
            item = item.get(index, "")
        else:
            raise FunctionError(f"can't index item of type {go_type(item)}")
    return item


def go_slice(item: Any, *indexes: Any) -> Any:
    """slice s i j: the bytes s[i:j] of a string."""
    if item is None:
        raise FunctionError("slice of untyped nil")
    if len(indexes) > 3:
        raise FunctionError(f"too many slice indexes: {len(indexes)}")
    if not isinstance(item, str):
        raise FunctionError(f"can't slice item of type {go_type(item)}")
    if len(indexes) == 3:
        raise FunctionError("cannot 3-index slice a string")
    data = item.encode()
    bounds = [0, len(data)]
    for i, index in enumerate(indexes):
        bounds[i] = _index_arg(index, len(data))
    if bounds[0] > bounds[1]:
        raise FunctionError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    return data[bounds[0] : bounds[1]].decode(errors="replace")


def _eval_args(args: Sequence[Any]) -> str:
    """text/template's evalArgs: a lone string as is, otherwise fmt.Sprint with nil as "<no value>"."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return go_sprint(*("<no value>" if a is None else a for a in args))


_HTML = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\0": "\ufffd"}
_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D"}


def html_escaper(*args: Any) -> str:
    """html: the text with " ' & < > escaped as Go's HTMLEscapeString does."""
    return "".join(_HTML.get(ch, ch) for ch in _eval_args(args))


def js_escaper(*args: Any) -> str:
    """js: the text escaped for a JavaScript string, as Go's JSEscapeString does."""
    out: list[str] = []
    for ch in _eval_args(args):
        if ch in _JS:
            out.append(_JS[ch])
        elif ch < " " or (ord(ch) >= 0x80 and not ch.isprintable()):
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def url_query_escaper(*args: Any) -> str:
    """urlquery: url.QueryEscape of the text (space as +)."""
    return quote_plus(_eval_args(args), safe="")


# The function table -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Function:
    """A template function: Go parameter kinds ("any" is interface{}; "string"; "value" is reflect.Value,
    which a nil literal cannot be), the kind of its variadic tail (or None), the static type of its result
    ("any" when unknown) and the implementation (None for and/or, which the executor short-circuits)."""

    params: tuple[str, ...]
    variadic: str | None
    result: str
    impl: Callable[..., Any] | None


_STRING_TO_STRING = ("string",), None, "string"
FUNCTIONS: dict[str, Function] = {
    # Prometheus (template/template.go)
    "humanize": Function(("any",), None, "string", humanize),
    "humanize1024": Function(("any",), None, "string", humanize1024),
    "humanizeDuration": Function(("any",), None, "string", humanize_duration),
    "humanizePercentage": Function(("any",), None, "string", humanize_percentage),
    "humanizeTimestamp": Function(("any",), None, "string", humanize_timestamp),
    "toUpper": Function(*_STRING_TO_STRING, to_upper),
    "toLower": Function(*_STRING_TO_STRING, to_lower),
    "title": Function(*_STRING_TO_STRING, title),
    "stripPort": Function(*_STRING_TO_STRING, strip_port),
    "stripDomain": Function(*_STRING_TO_STRING, strip_domain),
    "safeHtml": Function(*_STRING_TO_STRING, lambda text: text),
    "graphLink": Function(*_STRING_TO_STRING, lambda expr: _link(expr, 0)),
    "tableLink": Function(*_STRING_TO_STRING, lambda expr: _link(expr, 1)),
    "reReplaceAll": Function(("string", "string", "string"), None, "string", re_replace_all),
    "match": Function(("string", "string"), None, "bool", match),
    "parseDuration": Function(("string",), None, "float64", parse_duration),
    # text/template's builtins
    "and": Function(("value",), "value", "any", None),
    "or": Function(("value",), "value", "any", None),
    "not": Function(("value",), None, "bool", go_not),
    "eq": Function(("value",), "value", "bool", go_eq),
    "ne": Function(("value", "value"), None, "bool", go_ne),
    "lt": Function(("value", "value"), None, "bool", go_lt),
    "le": Function(("value", "value"), None, "bool", go_le),
    "gt": Function(("value", "value"), None, "bool", go_gt),
    "ge": Function(("value", "value"), None, "bool", go_ge),
    "len": Function(("value",), None, "int", go_len),
    "index": Function(("value",), "value", "any", go_index),
    "slice": Function(("value",), "value", "any", go_slice),
    "print": Function((), "any", "string", go_sprint),
    "printf": Function(("string",), "any", "string", go_sprintf),
    "println": Function((), "any", "string", go_sprintln),
    "html": Function((), "any", "string", html_escaper),
    "js": Function((), "any", "string", js_escaper),
    "urlquery": Function((), "any", "string", url_query_escaper),
}

# Functions Prometheus defines that tripwire refuses when the rule file loads, and why.
_QUERY_RESULTS = "it works on `query` results, and tripwire templates do not query"
REFUSED = {
    "query": "tripwire templates do not run PromQL queries; put what you need in the alert's expression",
    "first": _QUERY_RESULTS,
    "label": _QUERY_RESULTS,
    "value": _QUERY_RESULTS,
    "strvalue": _QUERY_RESULTS,
    "sortByLabel": _QUERY_RESULTS,
    "args": "it only serves {{ template }} calls, which alert templates cannot make",
    "tmpl": "it only exists in console templates",
    "pathPrefix": "tripwire has no external URL to take the path from",
    "externalURL": "tripwire has no external URL ($externalURL is empty)",
    "toTime": "it returns a Go time.Time, whose methods tripwire does not emulate",
    "toDuration": "it returns a Go time.Duration, whose methods tripwire does not emulate",
    "now": "templates are rendered without the evaluation timestamp",
    "call": "templates have no function values to call",
}


# Load-time checks -------------------------------------------------------------------------------------------
_UNKNOWN = ("any", "<nil>")
_BASIC = {"bool": "bool", "int": "int", "float64": "float", "string": "string"}
UNKNOWN_LITERAL = object()  # an argument whose value is not a literal


def _static_kind(static_type: str) -> str | None:
    return None if static_type in _UNKNOWN else _BASIC.get(static_type, "invalid")


def _comparison_problem(name: str, types: Sequence[str]) -> str | None:
    kinds = [_static_kind(t) for t in types]
    if name in ("eq", "ne"):
        pairs = [(kinds[0], k, types[0], t) for k, t in zip(kinds[1:], types[1:], strict=True)]
        for k1, k2, t1, t2 in pairs:
            if k1 is None or k2 is None:
                continue
            if k1 != k2:
                return f"incompatible types for comparison ({t1} and {t2}{_number_hint(t1, t2)})"
            if k1 == "invalid":
                return f"non-comparable type {t1}"
        return None
    if "invalid" in kinds:
        return "invalid type for comparison"
    if None in kinds:
        return None
    if kinds[0] != kinds[1]:
        return f"incompatible types for comparison ({types[0]} and {types[1]}{_number_hint(*types)})"
    return "invalid type for comparison" if kinds[0] == "bool" else None


def _number_hint(t1: str, t2: str) -> str:
    if {t1, t2} == {"int", "float64"}:
        return "; write the number with a decimal point, e.g. 80.0, to make it a float64"
    return ""


def _index_problem(name: str, types: Sequence[str]) -> str | None:
    item = types[0]
    if name == "slice":
        if item in _UNKNOWN:
            return None
        if item != "string":
            return f"can't slice item of type {item}"
        if len(types) > 3:
            return "cannot 3-index slice a string"
        bad = [t for t in types[1:] if t not in _UNKNOWN and t != "int"]
        return f"cannot index slice/array with type {bad[0]}" if bad else None
    for index in types[1:]:
        if item in _UNKNOWN:
            return None
        if item == MAP_TYPE:
            if index not in _UNKNOWN and index != "string":
                return f"value has type {index}; should be string"
            item = "string"
        elif item == "string":
            if index not in _UNKNOWN and index != "int":
                return f"cannot index slice/array with type {index}"
            item = "uint8"
        else:
            return f"can't index item of type {item}"
    return None


def static_problem(name: str, types: Sequence[str], literals: Sequence[Any]) -> str | None:
    """What calling `name` with arguments of these static types (Go type names, "any" when unknown) and
    literal values (UNKNOWN_LITERAL when not a literal) would always fail with, in text/template's words;
    None when it may succeed."""
    if name in ("eq", "ne", "lt", "le", "gt", "ge"):
        problem = _comparison_problem(name, types)
    elif name in ("index", "slice"):
        problem = _index_problem(name, types)
    elif name == "len":
        problem = None if types[0] in (*_UNKNOWN, "string", MAP_TYPE) else f"len of type {types[0]}"
    elif name.startswith("humanize"):
        problem = (
            None
            if types[0] in (*_UNKNOWN, "string", "int", "float64")
            else f"can't convert {types[0]} to float"
        )
    else:
        problem = None
    if problem is None:
        problem = _literal_problem(name, literals)
    return f"error calling {name}: {problem}" if problem else None


def _literal_problem(name: str, literals: Sequence[Any]) -> str | None:
    """Run the parts of a call that depend only on its literal arguments (patterns, numbers, durations)."""
    first = literals[0] if literals else UNKNOWN_LITERAL
    try:
        if name.startswith("humanize") and isinstance(first, str):
            FUNCTIONS[name].impl(first)  # type: ignore[misc]
        elif name == "parseDuration" and isinstance(first, str):
            parse_duration(first)
        elif name == "match" and isinstance(first, str):
            compile_go_regexp(first)
        elif name == "reReplaceAll" and isinstance(first, str):
            re_replace_all(first, "", "")
    except FunctionError as exc:
        return str(exc)
    return None


def static_result(name: str, types: Sequence[str]) -> str:
    """The static type of a call's result (Go type name, or "any")."""
    if name in ("and", "or"):
        return types[0] if types and all(t == types[0] for t in types) else "any"
    if name == "index" and types:
        item = types[0]
        for _ in types[1:]:
            item = {MAP_TYPE: "string", "string": "uint8"}.get(item, "any")
        return "int" if item == "uint8" else item
    if name == "slice":
        return "string" if types and types[0] == "string" else "any"
    return FUNCTIONS[name].result
