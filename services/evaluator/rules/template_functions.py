"""The functions alert templates call, with Prometheus' semantics and output (template/template.go:
humanize*, reReplaceAll, match, title, toUpper, ...), on top of text/template's builtins from the shared
engine; the alert data as a Go type; and what the load-time check knows of each function's types.

Go values are modelled as: str (string), float (float64), int (int), bool (bool), dict (map[string]string),
TemplateData (the alert data struct) and None (nil). A function's Go `error` result is a CallError; the
executor reports it as "error calling <name>: ...", as text/template does.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import quote_plus

from shared.gotemplate import ABSENT, BUILTINS, CallError, Func, Model
from shared.gotemplate.fmt import format_float_verb
from shared.gotemplate.strconv import can_backquote, format_float, parse_float
from shared.matchers import compile_go, go_quote

FunctionError = CallError  # the name this module's functions have always raised


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


class PrometheusModel(Model):
    """The Go types of Prometheus' alert data: the data struct, and maps that are all map[string]string."""

    def type_name(self, value: object) -> str:
        if isinstance(value, dict):
            return MAP_TYPE
        if isinstance(value, TemplateData):
            return DATA_TYPE
        return super().type_name(value)

    def field(self, value: object, name: str) -> object:
        if isinstance(value, TemplateData) and name in DATA_FIELDS:
            return value.field(name)
        return ABSENT

    def struct(self, value: object) -> list[tuple[str, object]] | None:
        if isinstance(value, TemplateData):
            return [(name, value.field(name)) for name in DATA_FIELDS]
        return None


MODEL = PrometheusModel()


def go_type(value: Any) -> str:
    """Go's %T of a template value."""
    return MODEL.type_name(value)


# Numbers as Go prints and parses them -----------------------------------------------------------------------
def format_value(value: float) -> str:
    """A float as Go's `%v` prints it (strconv 'g', shortest): 3, 0.30000000000000004, 1e+06, NaN, +Inf."""
    return format_float(value)


def format_g4(value: float) -> str:
    """Go's `%.4g`, the format of every humanize function."""
    return format_float_verb(value, "g", 4)


def to_float(value: Any) -> float:
    """Prometheus' ConvertToFloat: float64, int and strings in Go's float syntax."""
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return parse_float(value)
    raise FunctionError(f"can't convert {go_type(value)} to float")


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
        return compile_go(pattern)
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
    return f"`{text}`" if can_backquote(text) else go_quote(text)


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


# The function table -----------------------------------------------------------------------------------------
_STRING_TO_STRING = ("string",), None, "string"
FUNCTIONS: dict[str, Func] = {
    # Prometheus (template/template.go)
    "humanize": Func(humanize, ("any",), None, "string"),
    "humanize1024": Func(humanize1024, ("any",), None, "string"),
    "humanizeDuration": Func(humanize_duration, ("any",), None, "string"),
    "humanizePercentage": Func(humanize_percentage, ("any",), None, "string"),
    "humanizeTimestamp": Func(humanize_timestamp, ("any",), None, "string"),
    "toUpper": Func(to_upper, *_STRING_TO_STRING),
    "toLower": Func(to_lower, *_STRING_TO_STRING),
    "title": Func(title, *_STRING_TO_STRING),
    "stripPort": Func(strip_port, *_STRING_TO_STRING),
    "stripDomain": Func(strip_domain, *_STRING_TO_STRING),
    "safeHtml": Func(lambda text: text, *_STRING_TO_STRING),
    "graphLink": Func(lambda expr: _link(expr, 0), *_STRING_TO_STRING),
    "tableLink": Func(lambda expr: _link(expr, 1), *_STRING_TO_STRING),
    "reReplaceAll": Func(re_replace_all, ("string", "string", "string"), None, "string"),
    "match": Func(match, ("string", "string"), None, "bool"),
    "parseDuration": Func(parse_duration, ("string",), None, "float64"),
    # text/template's builtins
    **BUILTINS,
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
            FUNCTIONS[name].call(first)  # type: ignore[misc]
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
