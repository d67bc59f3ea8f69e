"""Alertmanager notification templates: a faithful, safe subset of Go's text/template.

Alertmanager evaluates receiver fields such as slack `title`/`text` or pagerduty `description` as Go
text/template strings against its notification data (`.Status`, `.Alerts`, `.CommonLabels`...). This module
lexes, parses and interprets the same syntax in pure Python (no eval/exec), over a parse tree shaped like Go's
text/template/parse, so messages and corner cases follow Go's. Alertmanager executes with
`missingkey=zero`: a missing label renders as "".

Supported: text and actions with `{{-`/`-}}` trim markers and `{{/* comments */}}`; pipelines; fields,
variables (`:=`, `=`) and field chains on `.`, `$x` and `(...)`; `if`/`else if`/`else`, `with`/`else with`/
`else`, `range` over lists, maps (in key order) and integers with `break`/`continue`/`else`,
`define`/`template`/`block`; string ("..." with Go escapes, `raw`), rune, number (decimal, hex, octal,
binary, float), bool and nil literals; parenthesised pipelines. Go's builtins `and or not len index slice
print printf println eq ne lt le gt ge html js urlquery`, Alertmanager's `toUpper toLower title trimSpace
join match reReplaceAll safeHtml safeUrl urlUnescape stringSlice date tz since humanizeDuration toJson`, the
KV methods `SortedPairs Names Values Remove String`, `.Alerts.Firing`/`.Resolved`, and a few time.Time and
time.Duration methods (`Format Unix UTC Sub`..., `Seconds Round`...).

Deliberately not supported: `call` (the data holds no functions), complex numbers, custom delimiters,
html/template's contextual escaping, and Alertmanager's own named templates (`template
"slack.default.title"`) or `templates:` files: a template may only use what its own text defines.

Limits, because label values may come from outside: output is capped at MAX_OUTPUT characters, and so is
every intermediate string; range iterations per render at MAX_RANGE_ITERATIONS; `template` nesting at
MAX_TEMPLATE_DEPTH; parse nesting at MAX_PARSE_DEPTH.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import NamedTuple, NoReturn, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "MAX_OUTPUT",
    "MAX_PARSE_DEPTH",
    "MAX_RANGE_ITERATIONS",
    "MAX_TEMPLATE_DEPTH",
    "AlertData",
    "Template",
    "TemplateData",
    "TemplateError",
    "is_template",
    "render",
]

MAX_OUTPUT = 1 << 20
MAX_RANGE_ITERATIONS = 100_000
# Go allows 100000 nested template calls; Python frames are dearer and real templates nest a few levels.
MAX_TEMPLATE_DEPTH = 50
MAX_PARSE_DEPTH = 100


class TemplateError(ValueError):
    """A template that does not parse or fails to execute; the message names the position, Go-style."""


@dataclass(frozen=True)
class AlertData:
    """One alert as Alertmanager's templates see it (`.Alerts` elements)."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    generator_url: str
    fingerprint: str


@dataclass(frozen=True)
class TemplateData:
    """Alertmanager's notification data, the dot of a receiver template."""

    receiver: str
    status: str
    alerts: list[AlertData]
    group_labels: dict[str, str]
    common_labels: dict[str, str]
    common_annotations: dict[str, str]
    external_url: str


def is_template(text: str) -> bool:
    """Whether text contains an action at all (plain strings need no rendering)."""
    return "{{" in text


def render(text: str, data: TemplateData) -> str:
    """Parse (through a small cache) and render text against data; "" stays "" as in Alertmanager."""
    if not text:
        return ""
    return _parsed(text).render(data)


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> Template:
    return Template.parse(text)


# ---------------------------------------------------------------------------------------------------------
# Values: Python stand-ins for Alertmanager's Go types, so methods, printing and type errors can follow Go.


class _KV(dict[str, str]):
    """Alertmanager's template.KV: a label or annotation set."""

    def sorted_pairs(self) -> _Pairs:
        names = sorted(self)
        # Alertmanager lists alertname first, the rest by name.
        if "alertname" in self:
            names.remove("alertname")
            names.insert(0, "alertname")
        return _Pairs(_Pair(name, self[name]) for name in names)


@dataclass(frozen=True, slots=True)
class _Pair:
    Name: str
    Value: str


class _Pairs(list[_Pair]):
    """template.Pairs, what `.SortedPairs` returns."""


class _Alerts(list[AlertData]):
    """template.Alerts, the type of `.Alerts` (it has `.Firing` and `.Resolved`)."""


class _Duration(int):
    """time.Duration in nanoseconds: an int to Go's comparisons, printed as "1h2m3s"."""


_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_DURATION = (1 << 63) - 1


class _Missing:
    """No pipeline value yet (Go's missingVal): distinct from nil, which is a value."""


_MISSING = _Missing()
_ABSENT = object()


class _CallError(Exception):
    """A function's error; the executor reports it as `error calling NAME: ...`."""


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _struct_field(value: object, name: str) -> object:
    if isinstance(value, TemplateData):
        match name:
            case "Receiver":
                return value.receiver
            case "Status":
                return value.status
            case "Alerts":
                return _Alerts(value.alerts)
            case "GroupLabels":
                return _KV(value.group_labels)
            case "CommonLabels":
                return _KV(value.common_labels)
            case "CommonAnnotations":
                return _KV(value.common_annotations)
            case "ExternalURL":
                return value.external_url
    elif isinstance(value, AlertData):
        match name:
            case "Status":
                return value.status
            case "Labels":
                return _KV(value.labels)
            case "Annotations":
                return _KV(value.annotations)
            case "StartsAt":
                return _aware(value.starts_at)
            case "EndsAt":
                return _aware(value.ends_at)
            case "GeneratorURL":
                return value.generator_url
            case "Fingerprint":
                return value.fingerprint
    elif isinstance(value, _Pair) and name in ("Name", "Value"):
        return getattr(value, name)
    return _ABSENT


def _struct_fields(value: object) -> list[tuple[str, object]] | None:
    """A struct's fields in declaration order, with their JSON names; None if value is no struct."""
    if isinstance(value, TemplateData):
        names = _DATA_FIELDS
    elif isinstance(value, AlertData):
        names = _ALERT_FIELDS
    elif isinstance(value, _Pair):
        names = ("Name", "Value")
    else:
        return None
    # JSON names are Alertmanager's json tags: the Go name with a lower-case initial.
    return [
        (name if isinstance(value, _Pair) else name[0].lower() + name[1:], _struct_field(value, name))
        for name in names
    ]


_DATA_FIELDS = (
    "Receiver",
    "Status",
    "Alerts",
    "GroupLabels",
    "CommonLabels",
    "CommonAnnotations",
    "ExternalURL",
)
_ALERT_FIELDS = ("Status", "Labels", "Annotations", "StartsAt", "EndsAt", "GeneratorURL", "Fingerprint")


def _type_name(value: object) -> str:
    """The Go type a value stands for, as %T and Go's error messages print it."""
    match value:
        case None:
            return "<nil>"
        case bool():
            return "bool"
        case _Duration():
            return "time.Duration"
        case int():
            return "int"
        case float():
            return "float64"
        case str():
            return "string"
        case datetime():
            return "time.Time"
        case _KV():
            return "template.KV"
        case _Pairs():
            return "template.Pairs"
        case _Pair():
            return "template.Pair"
        case _Alerts():
            return "template.Alerts"
        case AlertData():
            return "template.Alert"
        case TemplateData():
            return "*template.Data"
        case list() | tuple():
            kinds = {_type_name(item) for item in value}
            return f"[]{kinds.pop()}" if len(kinds) == 1 else "[]interface {}"
        case dict():
            kinds = {_type_name(item) for item in value.values()}
            return f"map[string]{kinds.pop()}" if len(kinds) == 1 else "map[string]interface {}"
    return type(value).__name__


def _truth(value: object) -> bool:
    """Go's template truth: false, 0, nil and empty strings, lists and maps are false; structs are true."""
    match value:
        case None:
            return False
        case bool():
            return value
        case int() | float():
            return value != 0
        case str() | list() | tuple() | dict():
            return len(value) > 0
    return True


def _sorted_keys(mapping: dict[object, object]) -> list[object]:
    try:
        return sorted(mapping)  # type: ignore[type-var]
    except TypeError:
        return sorted(mapping, key=lambda k: (type(k).__name__, str(k)))


def _bounded(parts: Iterable[str], sep: str = "") -> str:
    """Join parts, failing once the result would exceed MAX_OUTPUT: intermediate strings are capped too."""
    out: list[str] = []
    size = 0
    for part in parts:
        size += len(part) + (len(sep) if out else 0)
        if size > MAX_OUTPUT:
            raise _CallError(f"result exceeds {MAX_OUTPUT} characters")
        out.append(part)
    return sep.join(out)


# ---------------------------------------------------------------------------------------------------------
# Go's fmt: %v printing, Sprint, Sprintf, strconv quoting, floats.


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of abs(value) (non-zero, finite) and the decimal point: 0.DIGITS × 10^dp."""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)
    return digits.rstrip("0"), point


def _format_float(value: float, verb: str = "g", prec: int = -1) -> str:
    """strconv.FormatFloat for verbs e, f, g; prec -1 is the shortest representation that round-trips."""
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
    # Shortest %g switches to an exponent outside [1e-4, 1e6), as Go's (not C's, not JSON's) rule says.
    if verb == "e" or (verb == "g" and (exp < -4 or exp >= 6)):
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _escaped_rune(char: str, quote: str, ascii_only: bool = False) -> str:
    code = ord(char)
    if char in (quote, "\\"):
        return "\\" + char
    if char.isprintable() and not (ascii_only and code >= 0x80):
        return char
    if char in _ESCAPES:
        return _ESCAPES[char]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:
        code = 0xFFFD
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _quote(text: str, ascii_only: bool = False) -> str:
    """strconv.Quote: a Go double-quoted string literal."""
    return '"' + "".join(_escaped_rune(c, '"', ascii_only) for c in text) + '"'


def _quote_rune(code: int) -> str:
    char = chr(code) if 0 <= code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
    return "'" + _escaped_rune(char, "'") + "'"


def _time_string(t: datetime) -> str:
    return _format_time(t, "2006-01-02 15:04:05.999999999 -0700 MST")


def _frac_digits(frac: int, prec: int) -> str:
    return "." + f"{frac:0{prec}d}".rstrip("0") if frac else ""


def _duration_string(ns: int) -> str:
    """time.Duration.String: "1h2m3.5s", "1.5ms", "0s"."""
    if ns == 0:
        return "0s"
    u = abs(ns)
    if u < 1_000:
        text = f"{u}ns"
    elif u < 1_000_000:
        text = f"{u // 1_000}{_frac_digits(u % 1_000, 3)}µs"
    elif u < 1_000_000_000:
        text = f"{u // 1_000_000}{_frac_digits(u % 1_000_000, 6)}ms"
    else:
        seconds, frac = divmod(u, 1_000_000_000)
        text = f"{seconds % 60}{_frac_digits(frac, 9)}s"
        minutes = seconds // 60
        if minutes:
            text = f"{minutes % 60}m{text}"
            if minutes // 60:
                text = f"{minutes // 60}h{text}"
    return "-" + text if ns < 0 else text


def _kv_string(pairs: Iterable[_Pair]) -> str:
    return _bounded((f"{p.Name}={p.Value}" for p in pairs), ", ")


def _stringer(value: object) -> str | None:
    """The String() of types with one, which fmt prints instead of their structure."""
    match value:
        case _Duration():
            return _duration_string(value)
        case datetime():
            return _time_string(value)
        case _KV():
            return _kv_string(value.sorted_pairs())
        case _Pairs():
            return _kv_string(value)
    return None


def _pad(text: str, width: int | None, flags: str) -> str:
    if width is None or len(text) >= width:
        return text
    fill = " " * (width - len(text))
    return text + fill if "-" in flags else fill + text


def _bad_verb(value: object, verb: str) -> str:
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_type_name(value)}={_format_value(value)})"


def _format_number(body: str, negative: bool, flags: str, width: int | None, zero_ok: bool) -> str:
    sign = "-" if negative else "+" if "+" in flags else " " if " " in flags else ""
    if zero_ok and width is not None and "0" in flags and "-" not in flags:
        # Zeros go between the sign (and any 0x prefix, which the caller put in body) and the digits.
        body = body.rjust(width - len(sign), "0")
    return _pad(sign + body, width, flags)


def _format_int(value: int, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    if verb == "c":
        return _pad(chr(value) if 0 <= value <= 0x10FFFF else "\ufffd", width, flags)
    if verb == "q":
        return _pad(_quote_rune(value), width, flags)
    if verb == "U":
        text = f"U+{value:04X}"
        if "#" in flags and 0 <= value <= 0x10FFFF and chr(value).isprintable():
            text += f" '{chr(value)}'"
        return _pad(text, width, flags)
    magnitude = abs(value)
    prefix = ""
    match verb:
        case "d" | "v":
            digits = str(magnitude)
        case "b":
            digits, prefix = f"{magnitude:b}", "0b" if "#" in flags else ""
        case "o":
            digits, prefix = f"{magnitude:o}", "0" if "#" in flags else ""
        case "O":
            digits, prefix = f"{magnitude:o}", "0o"
        case "x":
            digits, prefix = f"{magnitude:x}", "0x" if "#" in flags else ""
        case "X":
            digits, prefix = f"{magnitude:X}", "0X" if "#" in flags else ""
        case _:
            return _bad_verb(value, verb)
    if prec is not None:
        digits = "" if prec == 0 and magnitude == 0 else digits.zfill(prec)
    if prec is None and width is not None and "0" in flags and "-" not in flags:
        sign_width = 1 if value < 0 or "+" in flags or " " in flags else 0
        digits = digits.rjust(width - sign_width - len(prefix), "0")
    return _format_number(prefix + digits, value < 0, flags, width, zero_ok=False)


def _format_float_verb(value: float, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    if verb not in "eEfFgGv":
        return _bad_verb(value, verb)
    if math.isnan(value) or math.isinf(value):
        return _pad(_format_float(value), width, flags)
    lower = "g" if verb == "v" else verb.lower()
    default = 6 if lower in "ef" else -1
    body = _format_float(abs(value), lower, default if prec is None else prec)
    if verb in "EG":
        body = body.upper()
    negative = math.copysign(1.0, value) < 0
    return _format_number(body, negative, flags, width, zero_ok=True)


def _format_string(text: str, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    if prec is not None:
        text = text[:prec]
    match verb:
        case "s":
            pass
        case "v":
            if "#" in flags:
                text = _quote(text)
        case "q":
            can_backquote = "`" not in text and all(c == "\t" or c.isprintable() for c in text)
            text = f"`{text}`" if "#" in flags and can_backquote else _quote(text, ascii_only="+" in flags)
        case "x" | "X":
            hexed = [f"{b:02x}" if verb == "x" else f"{b:02X}" for b in text.encode()]
            lead = ("0x" if verb == "x" else "0X") if "#" in flags else ""
            # "% x" separates the bytes (each with its own 0x under #); otherwise one prefix for all.
            text = " ".join(lead + h for h in hexed) if " " in flags else lead + "".join(hexed)
        case _:
            return f"%!{verb}(string={text})"
    return _pad(text, width, flags)


def _format_arg(
    value: object, verb: str, flags: str = "", width: int | None = None, prec: int | None = None
) -> str:
    """One operand of fmt: %v and friends, recursively for lists, maps and structs."""
    if verb == "T":
        return _pad(_type_name(value), width, flags)
    if value is None:
        return _pad("<nil>", width, flags) if verb == "v" else _bad_verb(None, verb)
    if isinstance(value, bool):
        return _pad("true" if value else "false", width, flags) if verb in "tv" else _bad_verb(value, verb)
    stringer = _stringer(value) if verb in "vsqxX" else None
    if stringer is not None:
        return _format_string(stringer, "s" if verb == "v" else verb, flags, width, prec)
    match value:
        case int():
            return _format_int(value, verb, flags, width, prec)
        case float():
            return _format_float_verb(value, verb, flags, width, prec)
        case str():
            return _format_string(value, verb, flags, width, prec)
        case list() | tuple():
            return "[" + _bounded((_format_arg(v, verb, flags, width, prec) for v in value), " ") + "]"
        case dict():
            items = (
                _format_arg(k, verb, flags, width, prec)
                + ":"
                + _format_arg(value[k], verb, flags, width, prec)
                for k in _sorted_keys(value)
            )
            return "map[" + _bounded(items, " ") + "]"
    fields = _struct_fields(value)
    if fields is None:
        return _bad_verb(value, verb) if verb != "v" else _pad(str(value), width, flags)
    body = "{" + _bounded((_format_arg(v, verb, flags, width, prec) for _, v in fields), " ") + "}"
    # The data is a *Data in Alertmanager, which fmt prints as &{...}.
    return "&" + body if isinstance(value, TemplateData) else body


def _format_value(value: object) -> str:
    """fmt's %v."""
    return _format_arg(value, "v")


def _sprint(args: Sequence[object]) -> str:
    """fmt.Sprint: operands in %v, a space between two operands when neither is a string."""

    def pieces() -> Iterator[str]:
        for i, arg in enumerate(args):
            if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
                yield " "
            yield _format_value(arg)

    return _bounded(pieces())


class _Printf:
    """fmt.Sprintf, with Go's error notes: %!d(string=x), %!v(MISSING), %!(EXTRA int=1), %!(NOVERB)."""

    def __init__(self, fmt: str, args: Sequence[object]) -> None:
        self.fmt = fmt
        self.args = args
        self.i = 0
        self.argi = 0
        self.reordered = False
        self.out: list[str] = []
        self.size = 0

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise _CallError(f"result exceeds {MAX_OUTPUT} characters")
        self.out.append(text)

    def at(self, chars: str) -> bool:
        return self.i < len(self.fmt) and self.fmt[self.i] in chars

    def number(self) -> int | None:
        start = self.i
        while self.at("0123456789"):
            self.i += 1
        if self.i == start:
            return None
        value = int(self.fmt[start : self.i])
        if value > MAX_OUTPUT:
            raise _CallError(f"width or precision exceeds {MAX_OUTPUT}")
        return value

    def arg_index(self) -> None:
        """An explicit argument index, %[2]d."""
        if self.at("["):
            close = self.fmt.find("]", self.i)
            if close > self.i + 1 and self.fmt[self.i + 1 : close].isdigit():
                self.argi = int(self.fmt[self.i + 1 : close]) - 1
                self.reordered = True
                self.i = close + 1

    def star(self, what: str) -> int | None:
        """A width or precision taken from the arguments, %*d."""
        self.i += 1
        value = self.args[self.argi] if 0 <= self.argi < len(self.args) else None
        self.argi += 1
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_OUTPUT:
            return value
        self.emit(f"%!(BAD{what})")
        return None

    def directive(self) -> None:
        """One %... directive; self.i is just past the %."""
        flags = ""
        while self.at("+-# 0"):
            flags += self.fmt[self.i]
            self.i += 1
        self.arg_index()
        width = self.star("WIDTH") if self.at("*") else self.number()
        if width is not None and width < 0:
            flags, width = flags + "-", -width
        prec: int | None = None
        if self.at("."):
            self.i += 1
            self.arg_index()
            prec = self.star("PREC") if self.at("*") else self.number() or 0
            if prec is not None and prec < 0:
                prec = None
        self.arg_index()
        if self.i >= len(self.fmt):
            self.emit("%!(NOVERB)")
            return
        verb = self.fmt[self.i]
        self.i += 1
        if verb == "%":
            self.emit("%")
        elif not 0 <= self.argi < len(self.args):
            self.emit(f"%!{verb}(MISSING)")
        else:
            self.emit(_format_arg(self.args[self.argi], verb, flags, width, prec))
            self.argi += 1

    def run(self) -> str:
        while self.i < len(self.fmt):
            j = self.fmt.find("%", self.i)
            if j < 0:
                self.emit(self.fmt[self.i :])
                break
            self.emit(self.fmt[self.i : j])
            self.i = j + 1
            self.directive()
        if not self.reordered and self.argi < len(self.args):
            extra = (
                f"{_type_name(a)}={_format_value(a)}" if a is not None else "<nil>"
                for a in self.args[self.argi :]
            )
            self.emit(f"%!(EXTRA {', '.join(extra)})")
        return "".join(self.out)


def _sprintf(fmt: str, args: Sequence[object]) -> str:
    return _Printf(fmt, args).run()


def _html_escape(text: str) -> str:
    """template.HTMLEscapeString."""
    table = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\0": "\ufffd"}
    return "".join(table.get(c, c) for c in text)


def _js_escape(text: str) -> str:
    """template.JSEscapeString."""
    table = {
        "\\": "\\\\",
        "'": "\\'",
        '"': '\\"',
        "<": "\\u003C",
        ">": "\\u003E",
        "&": "\\u0026",
        "=": "\\u003D",
    }

    def one(c: str) -> str:
        if c in table:
            return table[c]
        if ord(c) < 0x20:
            return f"\\u{ord(c):04X}"
        if ord(c) >= 0x80 and not c.isprintable():
            return f"\\u{ord(c):04X}"
        return c

    return "".join(one(c) for c in text)


def _builtin_text(args: Sequence[object]) -> str:
    """The string that html, js and urlquery escape: a lone string as is, else fmt.Sprint of all."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    # Go passes these through printableValue first, which turns nil into the string "<no value>".
    return _sprint(["<no value>" if arg is None else arg for arg in args])


# ---------------------------------------------------------------------------------------------------------
# time.Time.Format with Go's reference layout ("2006-01-02 15:04:05").

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_ZONE_LAYOUTS = ("070000", "07:00:00", "0700", "07:00", "07")


def _layout_chunk(layout: str, i: int) -> str | None:
    """The layout element starting at i (Go's nextStdChunk), or None for a literal character."""
    rest = layout[i:]

    def lower_follows(k: int) -> bool:
        return len(rest) > k and "a" <= rest[k] <= "z"

    match rest[0]:
        case "J" if rest.startswith("Jan"):
            if rest.startswith("January"):
                return "January"
            if not lower_follows(3):
                return "Jan"
        case "M" if rest.startswith("Mon"):
            if rest.startswith("Monday"):
                return "Monday"
            if not lower_follows(3):
                return "Mon"
        case "M" if rest.startswith("MST"):
            return "MST"
        case "0" if len(rest) >= 2 and "1" <= rest[1] <= "6":
            return rest[:2]
        case "0" if rest.startswith("002"):
            return "002"
        case "1":
            return "15" if rest.startswith("15") else "1"
        case "2":
            return "2006" if rest.startswith("2006") else "2"
        # "_2006" is a literal "_" before the year.
        case "_" if rest.startswith("_2") and not rest.startswith("_2006"):
            return "_2"
        case "_" if rest.startswith("__2"):
            return "__2"
        case "3" | "4" | "5":
            return rest[0]
        case "P" if rest.startswith("PM"):
            return "PM"
        case "p" if rest.startswith("pm"):
            return "pm"
        case "-" | "Z":
            for zone in _ZONE_LAYOUTS:
                if rest.startswith(zone, 1):
                    return rest[0] + zone
        case "." | "," if len(rest) >= 2 and rest[1] in "09":
            j = 1
            while j < len(rest) and rest[j] == rest[1]:
                j += 1
            # Only a run of one digit, not followed by another digit, is a fractional second.
            if not (j < len(rest) and rest[j].isdigit()):
                return rest[:j]
    return None


def _zone_name(t: datetime) -> str:
    name = t.tzname() or ""
    # An unnamed fixed offset (Go's FixedZone("", ...)) has no abbreviation; Python invents "UTC+02:00".
    if (
        isinstance(t.tzinfo, timezone)
        and t.tzinfo is not UTC
        and re.fullmatch(r"UTC[+-]\d\d:\d\d(:\d\d)?", name)
    ):
        return ""
    return name


def _layout_value(t: datetime, chunk: str) -> str:
    hour12 = t.hour % 12 or 12
    delta = t.utcoffset()
    offset = int(delta.total_seconds()) if delta is not None else 0
    match chunk:
        case "January":
            return _MONTHS[t.month - 1]
        case "Jan":
            return _MONTHS[t.month - 1][:3]
        case "1":
            return str(t.month)
        case "01":
            return f"{t.month:02d}"
        case "Monday":
            return _WEEKDAYS[t.weekday()]
        case "Mon":
            return _WEEKDAYS[t.weekday()][:3]
        case "2":
            return str(t.day)
        case "_2":
            return f"{t.day:2d}"
        case "02":
            return f"{t.day:02d}"
        case "__2":
            return f"{t.timetuple().tm_yday:3d}"
        case "002":
            return f"{t.timetuple().tm_yday:03d}"
        case "2006":
            return f"{t.year:04d}"
        case "06":
            return f"{t.year % 100:02d}"
        case "15":
            return f"{t.hour:02d}"
        case "3":
            return str(hour12)
        case "03":
            return f"{hour12:02d}"
        case "4":
            return str(t.minute)
        case "04":
            return f"{t.minute:02d}"
        case "5":
            return str(t.second)
        case "05":
            return f"{t.second:02d}"
        case "PM":
            return "PM" if t.hour >= 12 else "AM"
        case "pm":
            return "pm" if t.hour >= 12 else "am"
        case "MST":
            name = _zone_name(t)
            return name or _layout_value(t, "-0700")
    if chunk[0] in ".,":
        digits = f"{t.microsecond * 1000:09d}"[: len(chunk) - 1]
        if chunk[1] == "9":
            digits = digits.rstrip("0")
            return chunk[0] + digits if digits else ""
        return chunk[0] + digits
    # Numeric zones: -0700, -07:00, -07, -070000, -07:00:00 and their Z forms (Z when the offset is 0).
    if chunk[0] == "Z" and offset == 0:
        return "Z"
    sign = "-" if offset < 0 else "+"
    offset = abs(offset)
    hours, minutes, seconds = offset // 3600, offset // 60 % 60, offset % 60
    colon = ":" if ":" in chunk else ""
    text = f"{sign}{hours:02d}"
    if chunk[1:] != "07":
        text += f"{colon}{minutes:02d}"
    if chunk[1:] in ("070000", "07:00:00"):
        text += f"{colon}{seconds:02d}"
    return text


def _format_time(t: datetime, layout: str) -> str:
    """time.Time.Format."""
    out: list[str] = []
    i = 0
    while i < len(layout):
        chunk = _layout_chunk(layout, i)
        if chunk is None:
            out.append(layout[i])
            i += 1
        else:
            out.append(_layout_value(t, chunk))
            i += len(chunk)
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------
# encoding/json, for toJson.


def _json_string(text: str) -> str:
    table = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}

    def one(c: str) -> str:
        if c in table:
            return table[c]
        # Go escapes <, > and & (HTML-safe JSON) and the JavaScript line separators.
        if ord(c) < 0x20 or c in "<>&\u2028\u2029":
            return f"\\u{ord(c):04x}"
        return c

    return '"' + "".join(one(c) for c in text) + '"'


def _json(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "true" if value else "false"
        case int():
            return str(int(value))
        case float():
            if math.isnan(value) or math.isinf(value):
                raise _CallError(f"json: unsupported value: {_format_float(value)}")
            if value != 0 and (abs(value) < 1e-6 or abs(value) >= 1e21):
                return re.sub(r"e-0(\d)$", r"e-\1", _format_float(value, "e"))
            return _format_float(value, "f")
        case str():
            return _json_string(value)
        case datetime():
            return _json_string(_format_time(value, "2006-01-02T15:04:05.999999999Z07:00"))
        case list() | tuple():
            return "[" + _bounded((_json(v) for v in value), ",") + "]"
        case dict():
            return (
                "{"
                + _bounded((f"{_json_string(str(k))}:{_json(value[k])}" for k in _sorted_keys(value)), ",")
                + "}"
            )
    fields = _struct_fields(value)
    if fields is None:
        raise _CallError(f"json: unsupported type: {_type_name(value)}")
    return "{" + _bounded((f"{_json_string(k)}:{_json(v)}" for k, v in fields), ",") + "}"


# ---------------------------------------------------------------------------------------------------------
# Lexer (text/template/parse/lex.go).

_SPACE = " \t\r\n"
_KEYWORDS = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
)


class _Token(NamedTuple):
    kind: str
    val: str
    pos: int


class _Failure(Exception):
    """A parse error at a position; Template.parse turns it into a TemplateError."""

    def __init__(self, msg: str, pos: int) -> None:
        super().__init__(msg)
        self.msg = msg
        self.pos = pos


def _alnum(char: str) -> bool:
    return char == "_" or char.isalpha() or unicodedata.category(char) == "Nd"


def _rune_repr(char: str) -> str:
    """Go's %#U."""
    return f"U+{ord(char):04X} '{char}'"


def _right_delim(text: str, k: int) -> tuple[bool, bool, int]:
    """Whether a right delimiter starts at k, whether it trims (" -}}"), and where it ends."""
    if k + 1 < len(text) and text[k] in _SPACE and text.startswith("-}}", k + 1):
        return True, True, k + 4
    if text.startswith("}}", k):
        return True, False, k + 2
    return False, False, k


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    n = len(text)
    i = 0
    while True:
        j = text.find("{{", i)
        if j < 0:
            if i < n:
                tokens.append(_Token("text", text[i:], i))
            break
        trim = j + 3 < n and text[j + 2] == "-" and text[j + 3] in _SPACE
        chunk = text[i:j].rstrip(_SPACE) if trim else text[i:j]
        if chunk:
            tokens.append(_Token("text", chunk, i))
        k = j + (4 if trim else 2)
        if text.startswith("/*", k):
            close = text.find("*/", k + 2)
            if close < 0:
                raise _Failure("unclosed comment", j)
            delim, trim_right, after = _right_delim(text, close + 2)
            if not delim:
                raise _Failure("comment ends before closing delimiter", j)
        else:
            tokens.append(_Token("left", "{{", j))
            after, trim_right = _lex_action(text, k, j, tokens)
        i = after
        if trim_right:
            while i < n and text[i] in _SPACE:
                i += 1
    tokens.append(_Token("eof", "", n))
    return tokens


def _at_terminator(text: str, k: int) -> bool:
    """Whether an identifier, field or variable may end at k (Go's atTerminator)."""
    return k >= len(text) or text[k] in _SPACE or text[k] in ".,|:()" or text.startswith("}}", k)


def _scan_word(text: str, k: int) -> int:
    while k < len(text) and _alnum(text[k]):
        k += 1
    if not _at_terminator(text, k):
        raise _Failure(f"bad character {_rune_repr(text[k])}", k)
    return k


def _scan_quoted(text: str, k: int, quote: str, what: str) -> int:
    m = k + 1
    while True:
        if m >= len(text) or text[m] == "\n":
            raise _Failure(f"unterminated {what}", k)
        if text[m] == "\\":
            if m + 1 >= len(text) or text[m + 1] == "\n":
                raise _Failure(f"unterminated {what}", k)
            m += 2
        elif text[m] == quote:
            return m + 1
        else:
            m += 1


def _scan_number(text: str, k: int) -> int:
    """Go's scanNumber: the extent of a number; the parser checks its syntax properly."""
    n = len(text)
    m = k

    def accept(chars: str) -> bool:
        nonlocal m
        if m < n and text[m] in chars:
            m += 1
            return True
        return False

    def accept_run(chars: str) -> None:
        nonlocal m
        while m < n and text[m] in chars:
            m += 1

    accept("+-")
    digits = "0123456789_"
    if accept("0"):
        if accept("xX"):
            digits = "0123456789abcdefABCDEF_"
        elif accept("oO"):
            digits = "01234567_"
        elif accept("bB"):
            digits = "01_"
    accept_run(digits)
    if accept("."):
        accept_run(digits)
    if len(digits) == 11 and accept("eE"):
        accept("+-")
        accept_run("0123456789_")
    if len(digits) == 23 and accept("pP"):
        accept("+-")
        accept_run("0123456789_")
    accept("i")
    if m < n and (_alnum(text[m]) or text[m] in "+-"):
        raise _Failure(f"bad number syntax: {_quote(text[k : m + 1])}", k)
    return m


def _lex_action(text: str, k: int, start: int, tokens: list[_Token]) -> tuple[int, bool]:
    """Tokens of one action from k; returns where its right delimiter ends and whether it trims."""
    parens = 0
    while True:
        delim, trim, after = _right_delim(text, k)
        if delim:
            if parens:
                raise _Failure("unclosed left paren", k)
            tokens.append(_Token("right", "}}", k))
            return after, trim
        if k >= len(text):
            raise _Failure("unclosed action", start)
        c = text[k]
        if c == "(":
            parens += 1
            tokens.append(_Token("lparen", c, k))
            k += 1
        elif c == ")":
            parens -= 1
            if parens < 0:
                raise _Failure(f"unexpected right paren {_rune_repr(c)}", k)
            tokens.append(_Token("rparen", c, k))
            k += 1
        else:
            k = _lex_token(text, k, tokens)


def _lex_token(text: str, k: int, tokens: list[_Token]) -> int:
    """The token at k inside an action (not a delimiter or parenthesis); returns where it ends."""
    n = len(text)
    c = text[k]
    m = k + 1
    kind = ""
    if c in _SPACE:
        while m < n and text[m] in _SPACE:
            m += 1
        if text.startswith("-}}", m):
            m -= 1  # leave " -}}" whole for the delimiter check
        kind = "space" if m > k else ""
    elif c == ":":
        if not text.startswith("=", m):
            raise _Failure("expected :=", k)
        m, kind = m + 1, "declare"
    elif c in "=|":
        kind = "assign" if c == "=" else "pipe"
    elif c in '"`':
        m, kind = _scan_string(text, k), "string"
    elif c == "'":
        m, kind = _scan_quoted(text, k, "'", "character constant"), "char"
    elif c == "$":
        m, kind = (m if _at_terminator(text, m) else _scan_word(text, m)), "var"
    elif c == "." and not (m < n and "0" <= text[m] <= "9"):
        m, kind = (m, "dot") if _at_terminator(text, m) else (_scan_word(text, m), "field")
    elif c in "+-." or "0" <= c <= "9":
        m, kind = _scan_number(text, k), "number"
    elif _alnum(c):
        m = _scan_word(text, k)
        word = text[k:m]
        kind = "kw" if word in _KEYWORDS else "bool" if word in ("true", "false") else "ident"
        kind = "nil" if word == "nil" else kind
    elif c.isascii() and c.isprintable():
        kind = "punct"
    else:
        raise _Failure(f"unrecognized character in action: {_rune_repr(c)}", k)
    if kind:
        tokens.append(_Token(kind, text[k:m], k))
    return m


def _scan_string(text: str, k: int) -> int:
    if text[k] == '"':
        return _scan_quoted(text, k, '"', "quoted string")
    close = text.find("`", k + 1)
    if close < 0:
        raise _Failure("unterminated raw quoted string", k)
    return close + 1


def _token_str(tok: _Token) -> str:
    """How Go's parser names a token in "unexpected ..." errors."""
    if tok.kind == "eof":
        return "EOF"
    if tok.kind in ("kw", "nil", "dot"):
        return f"<{tok.val}>"
    if len(tok.val) > 10:
        return _quote(tok.val[:10]) + "..."
    return _quote(tok.val)


# ---------------------------------------------------------------------------------------------------------
# Parse tree (text/template/parse/node.go). __str__ gives Go's String(), used in error contexts.


@dataclass(eq=False, slots=True)
class _Text:
    pos: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False, slots=True)
class _Literal:
    pos: int
    kind: str  # "bool", "number" or "string"
    value: object
    source: str

    def __str__(self) -> str:
        return self.source


@dataclass(eq=False, slots=True)
class _Dot:
    pos: int

    def __str__(self) -> str:
        return "."


@dataclass(eq=False, slots=True)
class _Nil:
    pos: int

    def __str__(self) -> str:
        return "nil"


@dataclass(eq=False, slots=True)
class _Ident:
    pos: int
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(eq=False, slots=True)
class _Field:
    pos: int
    idents: list[str]

    def __str__(self) -> str:
        return "".join("." + ident for ident in self.idents)


@dataclass(eq=False, slots=True)
class _Variable:
    pos: int
    idents: list[str]  # ["$x", "Field", ...]

    def __str__(self) -> str:
        return ".".join(self.idents)


@dataclass(eq=False, slots=True)
class _Chain:
    pos: int
    node: _Node
    fields: list[str]

    def __str__(self) -> str:
        head = f"({self.node})" if isinstance(self.node, _Pipe) else str(self.node)
        return head + "".join("." + field for field in self.fields)


@dataclass(eq=False, slots=True)
class _Command:
    pos: int
    args: list[_Node]

    def __str__(self) -> str:
        return " ".join(f"({arg})" if isinstance(arg, _Pipe) else str(arg) for arg in self.args)


@dataclass(eq=False, slots=True)
class _Pipe:
    pos: int
    decl: list[str]
    is_assign: bool
    cmds: list[_Command]

    def __str__(self) -> str:
        head = ", ".join(self.decl) + " := " if self.decl else ""
        return head + " | ".join(map(str, self.cmds))


@dataclass(eq=False, slots=True)
class _Action:
    pos: int
    pipe: _Pipe

    def __str__(self) -> str:
        return f"{{{{{self.pipe}}}}}"


@dataclass(eq=False, slots=True)
class _Control:
    pos: int
    kind: str  # "if", "with" or "range"
    pipe: _Pipe
    body: list[_Node]
    else_body: list[_Node] | None

    def __str__(self) -> str:
        text = f"{{{{{self.kind} {self.pipe}}}}}" + "".join(map(str, self.body))
        if self.else_body is not None:
            text += "{{else}}" + "".join(map(str, self.else_body))
        return text + "{{end}}"


@dataclass(eq=False, slots=True)
class _Call:
    """{{template "name" pipeline}}."""

    pos: int
    name: str
    pipe: _Pipe | None

    def __str__(self) -> str:
        tail = f" {self.pipe}" if self.pipe is not None else ""
        return f"{{{{template {_quote(self.name)}{tail}}}}}"


@dataclass(eq=False, slots=True)
class _Jump:
    """{{break}} or {{continue}}."""

    pos: int
    kind: str

    def __str__(self) -> str:
        return f"{{{{{self.kind}}}}}"


@dataclass(eq=False, slots=True)
class _Delim:
    """{{end}} or {{else}} while parsing: they close a list, they are not in one."""

    pos: int
    kind: str

    def __str__(self) -> str:
        return f"{{{{{self.kind}}}}}"


_Node = _Text | _Literal | _Dot | _Nil | _Ident | _Field | _Variable | _Chain | _Command | _Pipe | _Action
_Node |= _Control | _Call | _Jump | _Delim


# ---------------------------------------------------------------------------------------------------------
# Parser (text/template/parse/parse.go).


_ESCAPE_BYTES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}


def _unquote(source: str, pos: int) -> str:
    """strconv.Unquote of a "..." or `...` literal; a rune literal's body uses the same escapes."""
    quote, body = source[0], source[1:-1]
    if quote == "`":
        return body.replace("\r", "")
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        e = body[i + 1]
        i += 2
        if e in _ESCAPE_BYTES:
            out.append(_ESCAPE_BYTES[e])
        elif e == quote:
            out.append(ord(quote))
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i : i + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise _Failure(f"invalid syntax: {source}", pos)
            code = int(digits, 16)
            i += width
            if e == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise _Failure(f"invalid syntax: {source}", pos)
            else:
                out += chr(code).encode()
        elif e in "01234567":
            digits = body[i - 1 : i + 2]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                raise _Failure(f"invalid syntax: {source}", pos)
            out.append(int(digits, 8))
            i += 2
        else:
            raise _Failure(f"invalid syntax: {source}", pos)
    return out.decode("utf-8", "replace")


def _parse_number(tok: _Token) -> _Literal:
    """A number or rune literal: an int unless it is written as a float (1.0, 1e3, 0x1p4)."""
    text = tok.val
    if tok.kind == "char":
        byte_escape = re.fullmatch(r"'\\(?:x([0-9a-fA-F]{2})|([0-7]{3}))'", text)
        if byte_escape:
            # '\xff' is the number 255, not the rune its byte would decode to.
            value = int(byte_escape[1], 16) if byte_escape[1] else int(byte_escape[2], 8)
            if value > 255:
                raise _Failure(f"malformed character constant: {text}", tok.pos)
            return _Literal(tok.pos, "number", value, text)
        body = _unquote(text, tok.pos)
        if len(body) != 1:
            raise _Failure(f"malformed character constant: {text}", tok.pos)
        return _Literal(tok.pos, "number", ord(body), text)
    if text.endswith("i"):
        raise _Failure(f"complex numbers are not supported: {text}", tok.pos)
    clean = text.replace("_", "")
    value: int | float
    try:
        # Go reads a leading 0 as octal; Python's int(..., 0) refuses it.
        octal = re.fullmatch(r"([+-]?)0([0-7]+)", clean)
        value = int(octal[1] + octal[2], 8) if octal else int(clean, 0)
    except ValueError:
        try:
            hex_float = re.fullmatch(r"[+-]?0[xX].*", clean)
            value = float.fromhex(clean) if hex_float else float(clean)
        except ValueError:
            raise _Failure(f"illegal number syntax: {_quote(text)}", tok.pos) from None
        if math.isinf(value) or not any(c in text for c in ".eEpP"):
            raise _Failure(f"illegal number syntax: {_quote(text)}", tok.pos) from None
    else:
        if not -(1 << 63) <= value < (1 << 63):
            raise _Failure(f"{text} overflows int", tok.pos)
    return _Literal(tok.pos, "number", value, text)


def _is_empty(body: list[_Node]) -> bool:
    return all(isinstance(node, _Text) and not node.text.strip() for node in body)


_OPERAND_KINDS = frozenset(
    {"bool", "char", "dot", "field", "ident", "number", "nil", "string", "var", "lparen"}
)


class _Parser:
    def __init__(self, tokens: list[_Token], functions: Iterable[str]) -> None:
        self.tokens = tokens
        self.functions = frozenset(functions)
        self.i = 0
        self.vars = ["$"]
        self.range_depth = 0
        self.depth = 0
        self.trees: dict[str, list[_Node]] = {}

    # Token stream: Go's parser backs up at most three tokens; an index does the same.
    def next(self) -> _Token:
        tok = self.peek()
        self.i += 1
        return tok

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> _Token:
        return self.tokens[min(self.i, len(self.tokens) - 1)]

    def next_non_space(self) -> _Token:
        tok = self.next()
        while tok.kind == "space":
            tok = self.next()
        return tok

    def peek_non_space(self) -> _Token:
        tok = self.next_non_space()
        self.backup()
        return tok

    def fail(self, msg: str, pos: int) -> NoReturn:
        raise _Failure(msg, pos)

    def unexpected(self, tok: _Token, context: str) -> NoReturn:
        self.fail(f"unexpected {_token_str(tok)} in {context}", tok.pos)

    def expect(self, kind: str, context: str) -> _Token:
        tok = self.next_non_space()
        if tok.kind != kind:
            self.unexpected(tok, context)
        return tok

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_PARSE_DEPTH:
            self.fail(f"nesting deeper than {MAX_PARSE_DEPTH}", pos)

    # Templates.
    def parse(self, name: str) -> dict[str, list[_Node]]:
        root: list[_Node] = []
        while self.peek().kind != "eof":
            if self.peek().kind == "left":
                save = self.i
                self.next()
                tok = self.next_non_space()
                if tok.kind == "kw" and tok.val == "define":
                    self.definition()
                    continue
                self.i = save
            node = self.text_or_action()
            if isinstance(node, _Delim):
                self.fail(f"unexpected {node}", node.pos)
            root.append(node)
        self.add(name, root, self.peek().pos)
        return self.trees

    def add(self, name: str, body: list[_Node], pos: int) -> None:
        old = self.trees.get(name)
        if old is None or _is_empty(old):
            self.trees[name] = body
        elif not _is_empty(body):
            self.fail(f"multiple definition of template {_quote(name)}", pos)

    def template_name(self, context: str) -> tuple[str, _Token]:
        tok = self.next_non_space()
        if tok.kind != "string":
            self.unexpected(tok, context)
        return _unquote(tok.val, tok.pos), tok

    def subtree(self, context: str) -> list[_Node]:
        """A define or block body: its own variables ($ only) and no enclosing range."""
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        body, end = self.item_list()
        if end.kind != "end":
            self.fail(f"unexpected {end} in {context}", end.pos)
        self.vars, self.range_depth = saved
        return body

    def definition(self) -> None:
        name, tok = self.template_name("define clause")
        self.expect("right", "define clause")
        self.add(name, self.subtree("define clause"), tok.pos)

    def item_list(self) -> tuple[list[_Node], _Delim]:
        nodes: list[_Node] = []
        while self.peek_non_space().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, _Delim):
                return nodes, node
            nodes.append(node)
        self.fail("unexpected EOF", self.peek().pos)

    def text_or_action(self) -> _Node:
        tok = self.next_non_space()
        if tok.kind == "text":
            return _Text(tok.pos, tok.val)
        if tok.kind == "left":
            return self.action()
        self.unexpected(tok, "input")

    # Actions.
    def action(self) -> _Node:
        tok = self.next_non_space()
        if tok.kind == "kw":
            match tok.val:
                case "block":
                    return self.block()
                case "break" | "continue":
                    if not self.range_depth:
                        self.fail(f"{{{{{tok.val}}}}} outside {{{{range}}}}", tok.pos)
                    self.expect("right", f"{{{{{tok.val}}}}}")
                    return _Jump(tok.pos, tok.val)
                case "else":
                    after = self.peek_non_space()
                    # "else if" / "else with": leave the keyword for the enclosing control to chain on.
                    if not (after.kind == "kw" and after.val in ("if", "with")):
                        self.expect("right", "else")
                    return _Delim(tok.pos, "else")
                case "end":
                    self.expect("right", "end")
                    return _Delim(tok.pos, "end")
                case "if" | "with" | "range":
                    return self.control(tok.val, tok.pos)
                case "template":
                    return self.template_call()
        self.backup()
        pos = self.peek().pos
        return _Action(pos, self.pipeline("command", "right"))

    def control(self, kind: str, pos: int) -> _Control:
        saved_vars = len(self.vars)
        self.nest(pos)
        pipe = self.pipeline(kind, "right")
        if kind == "range":
            self.range_depth += 1
        body, delim = self.item_list()
        if kind == "range":
            self.range_depth -= 1
        else_body: list[_Node] | None = None
        if delim.kind == "else":
            after = self.peek()
            if kind in ("if", "with") and after.kind == "kw" and after.val == kind:
                # {{if a}}x{{else if b}}y{{end}} is {{if a}}x{{else}}{{if b}}y{{end}}{{end}}.
                self.next()
                else_body = [self.control(kind, after.pos)]
            else:
                else_body, end = self.item_list()
                if end.kind != "end":
                    self.fail(f"expected end; found {end}", end.pos)
        del self.vars[saved_vars:]
        self.depth -= 1
        return _Control(pos, kind, pipe, body, else_body)

    def template_call(self) -> _Call:
        name, tok = self.template_name("template clause")
        pipe = None
        if self.next_non_space().kind != "right":
            self.backup()
            pipe = self.pipeline("template clause", "right")
        return _Call(tok.pos, name, pipe)

    def block(self) -> _Call:
        """{{block "name" pipeline}}body{{end}}: define name as body, then execute it."""
        name, tok = self.template_name("block clause")
        pipe = self.pipeline("block clause", "right")
        self.add(name, self.subtree("block clause"), tok.pos)
        return _Call(tok.pos, name, pipe)

    # Pipelines.
    def pipeline(self, context: str, end: str) -> _Pipe:
        pos = self.peek_non_space().pos
        decl: list[str] = []
        is_assign = False
        while (var := self.peek_non_space()).kind == "var":
            save = self.i
            self.next()
            after = self.peek_non_space()
            if after.kind in ("assign", "declare"):
                is_assign = after.kind == "assign"
                self.next_non_space()
                decl.append(var.val)
                self.vars.append(var.val)
                break
            if after.kind == "punct" and after.val == ",":
                self.next_non_space()
                decl.append(var.val)
                self.vars.append(var.val)
                if context == "range" and len(decl) < 2:
                    if self.peek_non_space().kind in ("var", "right", "rparen"):
                        continue
                    self.fail("range can only initialize variables", after.pos)
                self.fail(f"too many declarations in {context}", after.pos)
            self.i = save
            break
        cmds: list[_Command] = []
        while True:
            tok = self.next_non_space()
            if tok.kind == end:
                if not cmds:
                    self.fail(f"missing value for {context}", tok.pos)
                for stage, cmd in enumerate(cmds[1:], start=2):
                    if isinstance(cmd.args[0], _Literal | _Dot | _Nil):
                        self.fail(f"non executable command in pipeline stage {stage}", cmd.pos)
                return _Pipe(pos, decl, is_assign, cmds)
            if tok.kind not in _OPERAND_KINDS:
                self.unexpected(tok, context)
            self.backup()
            cmds.append(self.command())

    def command(self) -> _Command:
        pos = self.peek_non_space().pos
        args: list[_Node] = []
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                args.append(operand)
            tok = self.next()
            if tok.kind == "space":
                continue
            if tok.kind in ("right", "rparen"):
                self.backup()
            elif tok.kind != "pipe":
                self.unexpected(tok, "operand")
            break
        if not args:
            self.fail("empty command", pos)
        return _Command(pos, args)

    def operand(self) -> _Node | None:
        node = self.term()
        if node is None or self.peek().kind != "field":
            return node
        fields: list[str] = []
        pos = self.peek().pos
        while self.peek().kind == "field":
            fields.append(self.next().val[1:])
        match node:
            case _Field():
                return _Field(node.pos, node.idents + fields)
            case _Variable():
                return _Variable(node.pos, node.idents + fields)
            case _Literal() | _Nil() | _Dot():
                self.fail(f"unexpected . after term {_quote(str(node))}", pos)
        return _Chain(node.pos, node, fields)

    def term(self) -> _Node | None:
        tok = self.next_non_space()
        match tok.kind:
            case "ident":
                if tok.val not in self.functions:
                    self.fail(f"function {_quote(tok.val)} not defined", tok.pos)
                return _Ident(tok.pos, tok.val)
            case "dot":
                return _Dot(tok.pos)
            case "nil":
                return _Nil(tok.pos)
            case "var":
                if tok.val not in self.vars:
                    self.fail(f"undefined variable {_quote(tok.val)}", tok.pos)
                return _Variable(tok.pos, [tok.val])
            case "field":
                return _Field(tok.pos, [tok.val[1:]])
            case "bool":
                return _Literal(tok.pos, "bool", tok.val == "true", tok.val)
            case "number" | "char":
                return _parse_number(tok)
            case "string":
                return _Literal(tok.pos, "string", _unquote(tok.val, tok.pos), tok.val)
            case "lparen":
                self.nest(tok.pos)
                pipe = self.pipeline("parenthesized pipeline", "rparen")
                self.depth -= 1
                return pipe
        self.backup()
        return None


# ---------------------------------------------------------------------------------------------------------
# Functions and methods.


@dataclass(frozen=True, slots=True)
class _Func:
    """A callable with Go's parameter types: "any", "str", "strs" ([]string), "keys", "time", "int"."""

    call: Callable[..., object]
    params: tuple[str, ...] = ()
    variadic: str | None = None
    short_circuit: bool = False  # and/or evaluate their arguments lazily


def _len(value: object) -> int:
    match value:
        case str():
            return len(value.encode())  # Go's len counts bytes
        case list() | tuple() | dict():
            return len(value)
        case None:
            raise _CallError("len of nil pointer")
    raise _CallError(f"len of type {_type_name(value)}")


def _index_arg(index: object, cap: int) -> int:
    if index is None:
        raise _CallError("cannot index slice/array with nil")
    if not isinstance(index, int) or isinstance(index, bool):
        raise _CallError(f"cannot index slice/array with type {_type_name(index)}")
    if not 0 <= index <= cap:
        raise _CallError(f"index out of range: {index}")
    return index


def _index(item: object, *indexes: object) -> object:
    if item is None:
        raise _CallError("index of untyped nil")
    for index in indexes:
        match item:
            case str() | list() | tuple():
                size = len(item.encode()) if isinstance(item, str) else len(item)
                at = _index_arg(index, size)
                if at == size:
                    raise _CallError(f"index out of range: {at}")
                item = item.encode()[at] if isinstance(item, str) else item[at]
            case dict():
                if index is None:
                    raise _CallError("value is nil; should be of type string")
                if not isinstance(index, str):
                    raise _CallError(f"value has type {_type_name(index)}; should be string")
                # missingkey=zero: Alertmanager's maps hold strings, whose zero value is "".
                item = item.get(index, "")
            case None:
                raise _CallError("index of nil pointer")
            case _:
                raise _CallError(f"can't index item of type {_type_name(item)}")
    return item


def _slice(item: object, *indexes: object) -> object:
    if item is None:
        raise _CallError("slice of untyped nil")
    if len(indexes) > 3:
        raise _CallError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise _CallError("cannot 3-index slice a string")
        encoded = item.encode()
        cap = len(encoded)
    elif isinstance(item, list | tuple):
        cap = len(item)
    else:
        raise _CallError(f"can't slice item of type {_type_name(item)}")
    bounds = [0, cap, cap]
    for i, index in enumerate(indexes):
        bounds[i] = _index_arg(index, cap)
    if bounds[0] > bounds[1]:
        raise _CallError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    if len(indexes) == 3 and bounds[1] > bounds[2]:
        raise _CallError(f"invalid slice index: {bounds[1]} > {bounds[2]}")
    if isinstance(item, str):
        return encoded[bounds[0] : bounds[1]].decode("utf-8", "replace")
    return list(item[bounds[0] : bounds[1]])


def _basic_kind(value: object) -> str | None:
    match value:
        case bool():
            return "bool"
        case int():
            return "int"
        case float():
            return "float"
        case str():
            return "string"
    return None


def _eq(arg1: object, *rest: object) -> bool:
    if not rest:
        raise _CallError("missing argument for comparison")
    kind1 = _basic_kind(arg1)
    for arg in rest:
        kind2 = _basic_kind(arg)
        if kind1 != kind2:
            if arg1 is not None and arg is not None:
                raise _CallError("incompatible types for comparison")
            truth = False
        elif kind1 is not None:
            truth = arg1 == arg
        elif arg1 is None or arg is None:
            truth = arg1 is None and arg is None
        elif type(arg1) is not type(arg):
            raise _CallError(
                f"non-comparable types {_format_value(arg1)}: {_type_name(arg1)}, {_type_name(arg)}: "
                f"{_format_value(arg)}"
            )
        elif not isinstance(arg, datetime | _Pair):
            # Lists, maps and structs holding them are not comparable in Go.
            raise _CallError(f"non-comparable type {_format_value(arg)}: {_type_name(arg)}")
        else:
            truth = arg1 == arg
        if truth:
            return True
    return False


def _lt(arg1: object, arg2: object) -> bool:
    kind1, kind2 = _basic_kind(arg1), _basic_kind(arg2)
    if kind1 is None or kind2 is None:
        raise _CallError("invalid type for comparison")
    if kind1 != kind2:
        raise _CallError("incompatible types for comparison")
    if kind1 == "bool":
        raise _CallError("invalid type for comparison")
    return arg1 < arg2  # type: ignore[operator]


def _le(arg1: object, arg2: object) -> bool:
    return _lt(arg1, arg2) or _eq(arg1, arg2)


# Go's unicode.IsSpace, which strings.TrimSpace uses (Python's str.strip also strips \x1c-\x1f).
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
_GO_SPACE += "\u2028\u2029\u202f\u205f\u3000"
_WORD = re.compile(r"\w+(?:['’.:]\w+)*")


def _simple_case(text: str, upper: bool) -> str:
    """strings.ToUpper/ToLower: per-rune mappings, so "ß" stays "ß" rather than Python's "SS"."""
    cased = text.upper() if upper else text.lower()
    if len(cased) == len(text):
        return cased
    return "".join(m if len(m := (c.upper() if upper else c.lower())) == 1 else c for c in text)


def _title(text: str) -> str:
    """cases.Title: each word's first letter upper, the rest lower ("they're", "example.com" are words)."""
    return _WORD.sub(lambda m: m[0][0].upper() + m[0][1:].lower(), text)


_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7F",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}


def _translate_regex(pattern: str) -> str:
    """RE2 syntax to Python's where they differ in common use: \\z, (?<name>), [[:alpha:]]."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append("\\Z" if pattern[i + 1] == "z" and not in_class else pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if pattern.startswith("[:", i):
                close = pattern.find(":]", i + 2)
                if close > 0 and pattern[i + 2 : close] in _POSIX_CLASSES:
                    out.append(_POSIX_CLASSES[pattern[i + 2 : close]])
                    i = close + 2
                    continue
            if c == "]":
                in_class = False
            elif c in "[&~|":
                c = "\\" + c  # literal in RE2; Python warns of future set operations
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("\\]")  # a leading ] is literal
                i += 1
            continue
        elif pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
            out.append("(?P<")
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=128)
def _regex(pattern: str) -> re.Pattern[str]:
    # Go uses RE2, which runs in linear time; Python's re backtracks, so a pathological pattern in the
    # config can be slowed by crafted label values. Patterns come from the config file, not from alerts.
    try:
        return re.compile(_translate_regex(pattern))
    except (re.error, OverflowError, RecursionError) as e:
        raise _CallError(f"error parsing regexp: {e}: {_quote(pattern)}") from None


def _expand(template: str, match: re.Match[str]) -> str:
    """regexp.Expand: $1, ${1}, $name, ${name}; $$ is a literal $; unknown groups expand to ""."""
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        i = j + 1
        if template.startswith("$", i):
            out.append("$")
            i += 1
            continue
        braced = template.startswith("{", i)
        k = start = i + 1 if braced else i
        while k < n and (template[k] == "_" or template[k].isalnum()):
            k += 1
        if k == start or (braced and not template.startswith("}", k)):
            out.append("$")  # malformed: the $ is literal
            continue
        name = template[start:k]
        i = k + 1 if braced else k
        # $1x is the group named "1x", not group 1 then "x": names are as long as possible.
        if name.isascii() and name.isdigit() and len(name) < 9:
            group = match.group(int(name)) if int(name) <= (match.re.groups) else None
        else:
            group = match.groupdict().get(name)
        out.append(group or "")
    return "".join(out)


def _re_replace_all(pattern: str, repl: str, text: str) -> str:
    """regexp.ReplaceAllString, including Go's rule that an empty match right after a match is skipped."""
    regex = _regex(pattern)
    parts: list[str] = []
    size = 0
    pos = last = 0
    while pos <= len(text):
        match = regex.search(text, pos)
        if match is None:
            break
        parts.append(text[last : match.start()])
        if match.end() > last or match.start() == 0:
            parts.append(_expand(repl, match))
        size += len(parts[-1]) + (len(parts[-2]) if len(parts) > 1 else 0)
        if size > MAX_OUTPUT:
            raise _CallError(f"result exceeds {MAX_OUTPUT} characters")
        last = match.end()
        pos = pos + 1 if match.end() <= pos else match.end()
    parts.append(text[last:])
    return _bounded(parts)


def _url_unescape(text: str) -> str:
    """url.QueryUnescape."""
    bad = re.search(r"%(?![0-9A-Fa-f]{2})", text)
    if bad:
        raise _CallError(f"invalid URL escape {_quote(text[bad.start() : bad.start() + 3])}")
    return urllib.parse.unquote_plus(text, errors="replace")


def _in_zone(name: str, t: datetime) -> datetime:
    """time.LoadLocation + Time.In."""
    if name in ("", "UTC"):
        return t.astimezone(UTC)
    if name == "Local":
        return t.astimezone()
    try:
        return t.astimezone(ZoneInfo(name))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _CallError(f"unknown time zone {name}") from None


def _ns_between(later: datetime, earlier: datetime) -> _Duration:
    ns = (later - earlier) // timedelta(microseconds=1) * 1000
    return _Duration(max(-_MAX_DURATION - 1, min(_MAX_DURATION, ns)))  # Go saturates Sub


def _parse_go_float(text: str) -> float:
    """strconv.ParseFloat (no surrounding space or stray underscores, unlike Python's float)."""
    try:
        if text != text.strip() or "_" in text:
            raise ValueError(text)
        if re.fullmatch(r"[+-]?0[xX].*", text):
            return float.fromhex(text)
        return float(text)
    except ValueError:
        raise _CallError(f"strconv.ParseFloat: parsing {_quote(text)}: invalid syntax") from None


def _humanize_duration(value: object) -> str:
    """Prometheus's humanizeDuration: seconds as "1d 2h 3m 4s", "1.234s" or "100ms"."""
    match value:
        case _Duration():
            seconds = value / 1e9
        case bool():
            raise _CallError("can't convert bool to float")
        case int() | float():
            seconds = float(value)
        case str():
            seconds = _parse_go_float(value)
        case _:
            raise _CallError(f"can't convert {_type_name(value)} to float")
    if math.isnan(seconds) or math.isinf(seconds):
        return _format_float(seconds)
    if seconds == 0:
        return "0s"
    if abs(seconds) >= 1:
        sign = "-" if seconds < 0 else ""
        whole = int(abs(seconds))
        secs, mins, hours, days = whole % 60, whole // 60 % 60, whole // 3600 % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {mins}m {secs}s"
        if hours:
            return f"{sign}{hours}h {mins}m {secs}s"
        if mins:
            return f"{sign}{mins}m {secs}s"
        return f"{sign}{_format_float(abs(seconds), 'g', 4)}s"
    prefix = ""
    for unit in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(seconds) >= 1:
            break
        prefix = unit
        seconds *= 1000
    return f"{_format_float(seconds, 'g', 4)}{prefix}s"


def _duration_round(d: int, m: int, *, truncate: bool) -> _Duration:
    if m <= 0:
        return _Duration(d)
    rest = abs(d) % m
    magnitude = abs(d) - rest
    if not truncate and rest + rest >= m:
        magnitude += m  # halves round away from zero
    return _Duration(magnitude if d >= 0 else -magnitude)


def _remove(kv: _KV, *keys: list[str]) -> _KV:
    drop = {key for group in keys for key in group}
    return _KV({k: v for k, v in kv.items() if k not in drop})


_FUNCS: dict[str, _Func] = {
    # Go's builtins.
    "and": _Func(lambda: None, ("any",), "any", short_circuit=True),
    "or": _Func(lambda: None, ("any",), "any", short_circuit=True),
    "not": _Func(lambda st, v: not _truth(v), ("any",)),
    "len": _Func(lambda st, v: _len(v), ("any",)),
    "index": _Func(lambda st, item, *ix: _index(item, *ix), ("any",), "any"),
    "slice": _Func(lambda st, item, *ix: _slice(item, *ix), ("any",), "any"),
    "print": _Func(lambda st, *args: _sprint(args), (), "any"),
    "printf": _Func(lambda st, fmt, *args: _sprintf(fmt, args), ("str",), "any"),
    "println": _Func(lambda st, *args: _bounded((_format_value(a) for a in args), " ") + "\n", (), "any"),
    "eq": _Func(lambda st, a, *rest: _eq(a, *rest), ("any",), "any"),
    "ne": _Func(lambda st, a, b: not _eq(a, b), ("any", "any")),
    "lt": _Func(lambda st, a, b: _lt(a, b), ("any", "any")),
    "le": _Func(lambda st, a, b: _le(a, b), ("any", "any")),
    "gt": _Func(lambda st, a, b: not _le(a, b), ("any", "any")),
    "ge": _Func(lambda st, a, b: not _lt(a, b), ("any", "any")),
    "html": _Func(lambda st, *args: _html_escape(_builtin_text(args)), (), "any"),
    "js": _Func(lambda st, *args: _js_escape(_builtin_text(args)), (), "any"),
    "urlquery": _Func(lambda st, *args: urllib.parse.quote_plus(_builtin_text(args), safe=""), (), "any"),
    # Alertmanager's template.DefaultFuncs.
    "toUpper": _Func(lambda st, s: _simple_case(s, upper=True), ("str",)),
    "toLower": _Func(lambda st, s: _simple_case(s, upper=False), ("str",)),
    "title": _Func(lambda st, s: _title(s), ("str",)),
    "trimSpace": _Func(lambda st, s: s.strip(_GO_SPACE), ("str",)),
    "join": _Func(lambda st, sep, items: _bounded(items, sep), ("str", "strs")),
    "match": _Func(lambda st, pattern, text: _regex(pattern).search(text) is not None, ("str", "str")),
    "reReplaceAll": _Func(lambda st, p, r, t: _re_replace_all(p, r, t), ("str", "str", "str")),
    "safeHtml": _Func(lambda st, s: s, ("str",)),
    "safeUrl": _Func(lambda st, s: s, ("str",)),
    "urlUnescape": _Func(lambda st, s: _url_unescape(s), ("str",)),
    "stringSlice": _Func(lambda st, *items: list(items), (), "str"),
    "date": _Func(lambda st, layout, t: _format_time(t, layout), ("str", "time")),
    "tz": _Func(lambda st, name, t: _in_zone(name, t), ("str", "time")),
    "since": _Func(lambda st, t: _ns_between(st.now, t), ("time",)),
    "humanizeDuration": _Func(lambda st, v: _humanize_duration(v), ("any",)),
    "toJson": _Func(lambda st, v: _json(v), ("any",)),
}

_KV_METHODS: dict[str, _Func] = {
    "SortedPairs": _Func(lambda st, kv: kv.sorted_pairs()),
    "Names": _Func(lambda st, kv: [p.Name for p in kv.sorted_pairs()]),
    "Values": _Func(lambda st, kv: [p.Value for p in kv.sorted_pairs()]),
    # Alertmanager's Remove takes a []string; single names are accepted too.
    "Remove": _Func(lambda st, kv, *keys: _remove(kv, *keys), (), "keys"),
    "String": _Func(lambda st, kv: _kv_string(kv.sorted_pairs())),
}
_PAIRS_METHODS: dict[str, _Func] = {
    "Names": _Func(lambda st, ps: [p.Name for p in ps]),
    "Values": _Func(lambda st, ps: [p.Value for p in ps]),
    "String": _Func(lambda st, ps: _kv_string(ps)),
}
_ALERTS_METHODS: dict[str, _Func] = {
    "Firing": _Func(lambda st, alerts: [a for a in alerts if a.status == "firing"]),
    "Resolved": _Func(lambda st, alerts: [a for a in alerts if a.status == "resolved"]),
}
_TIME_METHODS: dict[str, _Func] = {
    "Format": _Func(lambda st, t, layout: _format_time(t, layout), ("str",)),
    "String": _Func(lambda st, t: _time_string(t)),
    "Unix": _Func(lambda st, t: (t - _EPOCH) // timedelta(seconds=1)),
    "UnixMilli": _Func(lambda st, t: (t - _EPOCH) // timedelta(milliseconds=1)),
    "UTC": _Func(lambda st, t: t.astimezone(UTC)),
    "Local": _Func(lambda st, t: t.astimezone()),
    "IsZero": _Func(lambda st, t: t == _ZERO_TIME),
    "Year": _Func(lambda st, t: t.year),
    "YearDay": _Func(lambda st, t: t.timetuple().tm_yday),
    "Day": _Func(lambda st, t: t.day),
    "Hour": _Func(lambda st, t: t.hour),
    "Minute": _Func(lambda st, t: t.minute),
    "Second": _Func(lambda st, t: t.second),
    "Sub": _Func(lambda st, t, other: _ns_between(t, other), ("time",)),
    "Add": _Func(lambda st, t, ns: t + timedelta(microseconds=ns // 1000), ("int",)),
}
_DURATION_METHODS: dict[str, _Func] = {
    "String": _Func(lambda st, d: _duration_string(d)),
    "Seconds": _Func(lambda st, d: d / 1e9),
    "Minutes": _Func(lambda st, d: d / 6e10),
    "Hours": _Func(lambda st, d: d / 3.6e12),
    "Milliseconds": _Func(lambda st, d: abs(d) // 1_000_000 * (1 if d >= 0 else -1)),
    "Round": _Func(lambda st, d, m: _duration_round(d, m, truncate=False), ("int",)),
    "Truncate": _Func(lambda st, d, m: _duration_round(d, m, truncate=True), ("int",)),
}


def _method(receiver: object, name: str) -> _Func | None:
    """A method of the receiver's Go type, bound to it; Go looks methods up before fields and map keys."""
    match receiver:
        case _KV():
            table = _KV_METHODS
        case _Pairs():
            table = _PAIRS_METHODS
        case _Alerts():
            table = _ALERTS_METHODS
        case datetime():
            table = _TIME_METHODS
        case _Duration():
            table = _DURATION_METHODS
        case _:
            return None
    method = table.get(name)
    if method is None:
        return None
    call = method.call
    return _Func(lambda st, *args: call(st, receiver, *args), method.params, method.variadic)


_PARAM_NAMES = {"str": "string", "strs": "[]string", "keys": "[]string", "time": "time.Time", "int": "int"}


def _is_strings(value: object) -> TypeGuard[Sequence[str]]:
    return (
        isinstance(value, list | tuple)
        and not isinstance(value, _Pairs | _Alerts)
        and all(isinstance(item, str) for item in value)
    )


# ---------------------------------------------------------------------------------------------------------
# Execution (text/template/exec.go).


class _BreakLoop(Exception):
    pass


class _ContinueLoop(Exception):
    pass


class _State:
    def __init__(self, template: Template) -> None:
        self.template = template
        self.out: list[str] = []
        self.size = 0
        self.vars: list[list[object]] = []
        self.depth = 0
        self.iterations = 0
        self.node: object = None
        self.tree = template.name
        self.now = datetime.now(UTC)

    def error(self, msg: str) -> NoReturn:
        raise TemplateError(self.template._error_context(self.node, self.tree, msg))

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            self.error(f"output exceeds {MAX_OUTPUT} characters")
        self.out.append(text)

    # Variables: a stack; control structures pop what they pushed at their {{end}}.
    def push(self, name: str, value: object) -> None:
        self.vars.append([name, value])

    def mark(self) -> int:
        return len(self.vars)

    def pop(self, mark: int) -> None:
        del self.vars[mark:]

    def set_var(self, name: str, value: object) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        self.error(f"undefined variable: {name}")

    def set_top_var(self, n: int, value: object) -> None:
        self.vars[-n][1] = value

    def var_value(self, name: str) -> object:
        for var_name, value in reversed(self.vars):
            if var_name == name:
                return value
        self.error(f"undefined variable: {name}")

    # Walking the tree.
    def walk_list(self, dot: object, nodes: list[_Node]) -> None:
        for node in nodes:
            self.walk(dot, node)

    def walk(self, dot: object, node: _Node) -> None:
        match node:
            case _Text():
                self.write(node.text)
            case _Action():
                self.node = node
                value = self.eval_pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    self.node = node
                    try:
                        self.write("<no value>" if value is None else _format_value(value))
                    except _CallError as e:
                        self.error(str(e))
            case _Control(kind="range"):
                self.walk_range(dot, node)
            case _Control():
                mark = self.mark()
                self.node = node
                value = self.eval_pipeline(dot, node.pipe)
                if _truth(value):
                    self.walk_list(value if node.kind == "with" else dot, node.body)
                elif node.else_body is not None:
                    self.walk_list(dot, node.else_body)
                self.pop(mark)
            case _Call():
                self.walk_template(dot, node)
            case _Jump(kind="break"):
                raise _BreakLoop
            case _Jump():
                raise _ContinueLoop

    def walk_range(self, dot: object, node: _Control) -> None:
        self.node = node
        outer = self.mark()
        value = self.eval_pipeline(dot, node.pipe)
        mark = self.mark()
        items: Iterable[tuple[object, object]]
        match value:
            case list() | tuple():
                items = enumerate(value)
            case dict():
                items = ((key, value[key]) for key in _sorted_keys(value))
            case int() if not isinstance(value, bool):
                if len(node.pipe.decl) > 1:
                    self.error(f"can't use {value} to iterate over more than one variable")
                items = ((i, i) for i in range(value))
            case None:
                items = ()
            case _:
                self.node = node
                self.error(f"range can't iterate over {_format_value(value)}")
        ran = False
        for index, elem in items:
            ran = True
            self.iterations += 1
            if self.iterations > MAX_RANGE_ITERATIONS:
                self.node = node
                self.error(f"range iterations exceed {MAX_RANGE_ITERATIONS}")
            self.bind_range(node.pipe, index, elem)
            try:
                self.walk_list(elem, node.body)
            except _ContinueLoop:
                pass
            except _BreakLoop:
                break
            finally:
                self.pop(mark)
        if not ran and node.else_body is not None:
            self.walk_list(dot, node.else_body)
        self.pop(outer)

    def bind_range(self, pipe: _Pipe, index: object, elem: object) -> None:
        decl = pipe.decl
        if decl:
            if pipe.is_assign:
                self.set_var(decl[0], index if len(decl) > 1 else elem)
            else:
                self.set_top_var(1, elem)
        if len(decl) > 1:
            if pipe.is_assign:
                self.set_var(decl[1], elem)
            else:
                self.set_top_var(2, index)

    def walk_template(self, dot: object, node: _Call) -> None:
        self.node = node
        body = self.template._trees.get(node.name)
        if body is None:
            self.error(f"template {_quote(node.name)} not defined")
        if self.depth >= MAX_TEMPLATE_DEPTH:
            self.error(f"exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})")
        new_dot = self.eval_pipeline(dot, node.pipe) if node.pipe is not None else None
        # No dynamic scoping: the called template sees only $, set to its dot.
        saved = self.vars, self.tree
        self.vars, self.tree = [["$", new_dot]], node.name
        self.depth += 1
        try:
            self.walk_list(new_dot, body)
        finally:
            self.vars, self.tree = saved
            self.depth -= 1

    # Evaluation.
    def eval_pipeline(self, dot: object, pipe: _Pipe) -> object:
        value: object = _MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)  # each value is the next command's last argument
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.push(name, value)
        return value

    def not_a_function(self, args: list[_Node], final: object) -> None:
        if len(args) > 1 or final is not _MISSING:
            self.error(f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot: object, cmd: _Command, final: object) -> object:
        first = cmd.args[0]
        match first:
            case _Field():
                return self.eval_field_chain(dot, dot, first, first.idents, cmd.args, final)
            case _Chain():
                return self.eval_chain(dot, first, cmd.args, final)
            case _Ident():
                return self.eval_function(dot, first, cmd, cmd.args, final)
            case _Pipe():
                self.node = first
                self.not_a_function(cmd.args, final)
                return self.eval_pipeline(dot, first)
            case _Variable():
                return self.eval_variable(dot, first, cmd.args, final)
        self.node = first
        self.not_a_function(cmd.args, final)
        match first:
            case _Literal():
                return first.value
            case _Dot():
                return dot
        self.error("nil is not a command")

    def eval_arg(self, dot: object, node: _Node) -> object:
        self.node = node
        match node:
            case _Dot():
                return dot
            case _Nil():
                return None
            case _Field():
                return self.eval_field_chain(dot, dot, node, node.idents, [node], _MISSING)
            case _Variable():
                return self.eval_variable(dot, node, None, _MISSING)
            case _Pipe():
                return self.eval_pipeline(dot, node)
            case _Ident():
                return self.eval_function(dot, node, node, None, _MISSING)
            case _Chain():
                return self.eval_chain(dot, node, None, _MISSING)
            case _Literal():
                return node.value
        self.error(f"can't handle {node} as an argument")

    def eval_variable(self, dot: object, node: _Variable, args: list[_Node] | None, final: object) -> object:
        self.node = node
        value = self.var_value(node.idents[0])
        if len(node.idents) == 1:
            self.not_a_function(args or [node], final)
            return value
        return self.eval_field_chain(dot, value, node, node.idents[1:], args, final)

    def eval_chain(self, dot: object, node: _Chain, args: list[_Node] | None, final: object) -> object:
        if isinstance(node.node, _Nil):
            self.node = node
            self.error(f"indirection through explicit nil in {node}")
        receiver = self.eval_arg(dot, node.node)
        return self.eval_field_chain(dot, receiver, node, node.fields, args, final)

    def eval_field_chain(
        self,
        dot: object,
        receiver: object,
        node: _Node,
        idents: list[str],
        args: list[_Node] | None,
        final: object,
    ) -> object:
        for ident in idents[:-1]:
            receiver = self.eval_field(dot, ident, node, None, _MISSING, receiver)
        return self.eval_field(dot, idents[-1], node, args, final, receiver)

    def eval_field(
        self, dot: object, name: str, node: _Node, args: list[_Node] | None, final: object, receiver: object
    ) -> object:
        self.node = node
        if receiver is None:
            return None  # a field of nothing is nothing ("<no value>"), as in Go
        method = _method(receiver, name)
        if method is not None:
            return self.eval_call(dot, method, node, name, args, final)
        has_args = (args is not None and len(args) > 1) or final is not _MISSING
        if isinstance(receiver, dict):
            if has_args:
                self.error(f"{name} is not a method but has arguments")
            # missingkey=zero, as Alertmanager executes: a missing label is "".
            return receiver.get(name, "")
        value = _struct_field(receiver, name)
        if value is not _ABSENT:
            if has_args:
                self.error(f"{name} has arguments but cannot be invoked as function")
            return value
        self.error(f"can't evaluate field {name} in type {_type_name(receiver)}")

    def eval_function(
        self, dot: object, node: _Ident, cmd: _Node, args: list[_Node] | None, final: object
    ) -> object:
        self.node = node
        return self.eval_call(dot, _FUNCS[node.name], cmd, node.name, args, final)

    def eval_call(
        self, dot: object, func: _Func, node: _Node, name: str, args: list[_Node] | None, final: object
    ) -> object:
        arg_nodes = args[1:] if args else []
        count = len(arg_nodes) + (final is not _MISSING)
        fixed = len(func.params)
        self.node = node
        if func.variadic is None and count != fixed:
            self.error(f"wrong number of args for {name}: want {fixed} got {count}")
        if func.variadic is not None and count < fixed:
            self.error(f"wrong number of args for {name}: want at least {fixed} got {count}")
        if func.short_circuit:
            # and/or stop at the first argument that decides, returning it (not a bool).
            value: object = None
            for arg in arg_nodes:
                value = self.eval_arg(dot, arg)
                if _truth(value) == (name == "or"):
                    return value
            return final if final is not _MISSING else value
        values = [self.eval_arg(dot, arg) for arg in arg_nodes]
        if final is not _MISSING:
            values.append(final)
        self.node = node
        checked = [
            self.check_type(v, func.params[i] if i < fixed else func.variadic) for i, v in enumerate(values)
        ]
        try:
            result = func.call(self, *checked)
        except _CallError as e:
            self.node = node
            self.error(f"error calling {name}: {e}")
        if isinstance(result, str) and len(result) > MAX_OUTPUT:
            self.error(f"error calling {name}: result exceeds {MAX_OUTPUT} characters")
        return result

    def check_type(self, value: object, kind: str | None) -> object:
        """Go's argument conversion: no implicit string conversions, a []string must be one."""
        match kind:
            case "any" | None:
                return value
            case "str" if isinstance(value, str):
                return value
            case "strs" if _is_strings(value):
                return list(value)
            case "keys" if isinstance(value, str):
                return [value]
            case "keys" if _is_strings(value):
                return list(value)
            case "time" if isinstance(value, datetime):
                return _aware(value)
            case "int" if isinstance(value, int) and not isinstance(value, bool):
                return value
        expected = _PARAM_NAMES[kind]
        if value is None:
            self.error(f"invalid value; expected {expected}")
        self.error(f"wrong type for value; expected {expected}; got {_type_name(value)}")


# ---------------------------------------------------------------------------------------------------------


class Template:
    """A parsed template: its main body plus the templates its text defines."""

    __slots__ = ("_text", "_trees", "name")

    def __init__(self, name: str, text: str, trees: dict[str, list[_Node]]) -> None:
        self.name = name
        self._text = text
        self._trees = trees

    @classmethod
    def parse(cls, text: str, name: str = "") -> Template:
        """Parse text; raises TemplateError on a syntax error, an unknown function or undefined variable."""
        try:
            trees = _Parser(_lex(text), _FUNCS).parse(name)
        except _Failure as e:
            raise TemplateError(f"template: {cls._location(text, name, e.pos)}: {e.msg}") from None
        except RecursionError:
            raise TemplateError(f"template: {name}: nesting too deep to parse") from None
        return cls(name, text, trees)

    def render(self, data: TemplateData) -> str:
        """Execute against Alertmanager-shaped notification data; raises TemplateError on execution errors."""
        return self.execute(data)

    def execute(self, dot: object) -> str:
        """Execute with any dot (str, int, float, bool, None, list, dict, datetime, AlertData...)."""
        state = _State(self)
        state.vars = [["$", dot]]
        try:
            state.walk_list(dot, self._trees[self.name])
        except RecursionError:
            raise TemplateError(f"template: {self.name}: nesting too deep to execute") from None
        return "".join(state.out)

    @staticmethod
    def _location(text: str, name: str, pos: int) -> str:
        """NAME:LINE:COL, columns counted from 0 like Go's exec errors; no NAME: for unnamed templates."""
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1)
        return f"{name}:{line}:{col}" if name else f"{line}:{col}"

    def _error_context(self, node: object, tree: str, msg: str) -> str:
        if node is None or not hasattr(node, "pos"):
            return f"template: {self.name}: {msg}"
        context = str(node)
        if len(context) > 20:
            context = context[:20] + "..."
        where = self._location(self._text, self.name, node.pos)
        return f"template: {where}: executing {_quote(tree)} at <{context}>: {msg}"
