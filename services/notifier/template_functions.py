"""Alertmanager's template functions (template.DefaultFuncs): toUpper toLower title trimSpace join match
reReplaceAll safeHtml safeUrl urlUnescape stringSlice date tz since humanizeDuration toJson, with Go's
semantics; every string they build is capped like the engine's own."""

from __future__ import annotations

import functools
import math
import re
import urllib.parse
from datetime import datetime

from services.notifier.gotime import Duration, format_time, in_zone, ns_between
from services.notifier.template_data import Pair
from shared.gotemplate import MAX_STRING, CallError, Func, Model
from shared.gotemplate.strconv import format_float, go_quote, parse_float
from shared.gotemplate.values import bounded, sorted_keys

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
        raise CallError(f"error parsing regexp: {e}: {go_quote(pattern)}") from None


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
        if size > MAX_STRING:
            raise CallError(f"result exceeds {MAX_STRING} characters")
        last = match.end()
        pos = pos + 1 if match.end() <= pos else match.end()
    parts.append(text[last:])
    return bounded(parts)


def _url_unescape(text: str) -> str:
    """url.QueryUnescape."""
    bad = re.search(r"%(?![0-9A-Fa-f]{2})", text)
    if bad:
        raise CallError(f"invalid URL escape {go_quote(text[bad.start() : bad.start() + 3])}")
    return urllib.parse.unquote_plus(text, errors="replace")


def _humanize_duration(model: Model, value: object) -> str:
    """Prometheus's humanizeDuration: seconds as "1d 2h 3m 4s", "1.234s" or "100ms"."""
    match value:
        case Duration():
            seconds = value / 1e9
        case bool():
            raise CallError("can't convert bool to float")
        case int() | float():
            seconds = float(value)
        case str():
            seconds = parse_float(value)
        case _:
            raise CallError(f"can't convert {model.type_name(value)} to float")
    if math.isnan(seconds) or math.isinf(seconds):
        return format_float(seconds)
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
        return f"{sign}{format_float(abs(seconds), 'g', 4)}s"
    prefix = ""
    for unit in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(seconds) >= 1:
            break
        prefix = unit
        seconds *= 1000
    return f"{format_float(seconds, 'g', 4)}{prefix}s"


# encoding/json, for toJson -------------------------------------------------------------------------------
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


def _json(value: object, model: Model) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "true" if value else "false"
        case int():
            return str(int(value))
        case float():
            if math.isnan(value) or math.isinf(value):
                raise CallError(f"json: unsupported value: {format_float(value)}")
            if value != 0 and (abs(value) < 1e-6 or abs(value) >= 1e21):
                return re.sub(r"e-0(\d)$", r"e-\1", format_float(value, "e"))
            return format_float(value, "f")
        case str():
            return _json_string(value)
        case datetime():
            return _json_string(format_time(value, "2006-01-02T15:04:05.999999999Z07:00"))
        case list() | tuple():
            return "[" + bounded((_json(v, model) for v in value), ",") + "]"
        case dict():
            return (
                "{"
                + bounded(
                    (f"{_json_string(str(k))}:{_json(value[k], model)}" for k in sorted_keys(value)), ","
                )
                + "}"
            )
    fields = model.struct(value)
    if fields is None:
        raise CallError(f"json: unsupported type: {model.type_name(value)}")
    # JSON names are Alertmanager's json tags: the Go name with a lower-case initial (Pair has none).
    if not isinstance(value, Pair):
        fields = [(name[0].lower() + name[1:], v) for name, v in fields]
    return "{" + bounded((f"{_json_string(k)}:{_json(v, model)}" for k, v in fields), ",") + "}"


FUNCTIONS: dict[str, Func] = {
    "toUpper": Func(lambda s: _simple_case(s, upper=True), ("string",), None, "string"),
    "toLower": Func(lambda s: _simple_case(s, upper=False), ("string",), None, "string"),
    "title": Func(_title, ("string",), None, "string"),
    "trimSpace": Func(lambda s: s.strip(_GO_SPACE), ("string",), None, "string"),
    "join": Func(lambda sep, items: bounded(items, sep), ("string", "[]string"), None, "string"),
    "match": Func(
        lambda pattern, text: _regex(pattern).search(text) is not None, ("string", "string"), None, "bool"
    ),
    "reReplaceAll": Func(_re_replace_all, ("string", "string", "string"), None, "string"),
    "safeHtml": Func(lambda s: s, ("string",), None, "string"),
    "safeUrl": Func(lambda s: s, ("string",), None, "string"),
    "urlUnescape": Func(_url_unescape, ("string",), None, "string"),
    "stringSlice": Func(lambda *items: list(items), (), "string"),
    "date": Func(lambda layout, t: format_time(t, layout), ("string", "time.Time"), None, "string"),
    "tz": Func(in_zone, ("string", "time.Time")),
    "since": Func(lambda st, t: ns_between(st.now, t), ("time.Time",), with_state=True),
    "humanizeDuration": Func(lambda st, v: _humanize_duration(st.model, v), ("any",), None, "string", True),
    "toJson": Func(lambda st, v: _json(v, st.model), ("any",), None, "string", True),
}
