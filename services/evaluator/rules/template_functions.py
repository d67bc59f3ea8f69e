"""The functions alert templates can call: Prometheus' (template/template.go) and Go's text/template builtins,
with Go's formatting (`fmt`'s %v, %g, Printf verbs) so the text is what Prometheus would produce."""

from __future__ import annotations

import html as html_lib
import ipaddress
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from services.evaluator.promql.functions import go_expand
from services.evaluator.rules.templates import TemplateError, format_value
from shared.matchers import go_regex

# Console-template functions that need a query engine or HTML output; refused when a rule file loads.
REFUSED = {
    "query": "alert templates do not run queries",
    "first": "it works on query results, which alert templates do not have",
    "label": "it works on query results, which alert templates do not have",
    "value": "it works on query results, which alert templates do not have",
    "strvalue": "it works on query results, which alert templates do not have",
    "sortByLabel": "it works on query results, which alert templates do not have",
    "args": "console templates only",
    "tmpl": "console templates only",
    "safeHtml": "console templates only",
    "graphLink": "console templates only",
    "tableLink": "console templates only",
    "parseDuration": "not implemented",
    "toTime": "not implemented",
    "toDuration": "not implemented",
    "now": "not implemented",
}


# Go's fmt ---------------------------------------------------------------------------------------------------
def go_print(value: Any) -> str:
    """fmt.Sprint of one value (what `{{ x }}` prints)."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_value(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{go_print(k)}:{go_print(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_print(v) for v in value) + "]"
    return str(value)


def _go_float(value: float, verb: str, precision: int | None) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if verb in "gG" and precision is None:
        text = format_value(value)
        return text.upper() if verb == "G" else text
    return f"%.{6 if precision is None else precision}{verb}" % value


def go_quote(text: str) -> str:
    """strconv.Quote: JSON-style escapes are close enough for printable text (non-ASCII kept as is)."""
    return json.dumps(text, ensure_ascii=False)


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])")


def go_sprintf(fmt: str, *args: Any) -> str:
    """fmt.Sprintf for the verbs templates use: %v %s %d %f %e %g %x %X %q %t %%, flags, width, precision."""
    out: list[str] = []
    pos = 0
    arg_index = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, precision, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if arg_index >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[arg_index]
        arg_index += 1
        prec = int(precision) if precision not in (None, "*") else (0 if m.group(0).find(".") >= 0 else None)
        text = _format_verb(verb, arg, prec, flags)
        if width and width != "*":
            w = int(width)
            if "-" in flags:
                text = text.ljust(w)
            elif "0" in flags and verb in "dfeEgGxX" and text[:1] in "+-":
                text = text[0] + text[1:].rjust(w - 1, "0")
            else:
                text = text.rjust(w, "0" if "0" in flags and verb in "dfeEgGxX" else " ")
        out.append(text)
    out.append(fmt[pos:])
    if arg_index < len(args):
        extra = ", ".join(f"{_go_type(a)}={go_print(a)}" for a in args[arg_index:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _go_type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float64", str: "string"}.get(type(value), type(value).__name__)


def _format_verb(verb: str, arg: Any, precision: int | None, flags: str) -> str:
    if verb == "v":
        return go_print(arg)
    if verb == "s":
        text = go_print(arg) if not isinstance(arg, str) else arg
        return text[:precision] if precision is not None else text
    if verb == "q":
        return go_quote(arg if isinstance(arg, str) else go_print(arg))
    if verb == "t":
        return go_print(arg) if isinstance(arg, bool) else f"%!t({_go_type(arg)}={go_print(arg)})"
    if verb == "d":
        if isinstance(arg, int) and not isinstance(arg, bool):
            return f"{arg:+d}" if "+" in flags else str(arg)
        return f"%!d({_go_type(arg)}={go_print(arg)})"
    if verb in "xX":
        if isinstance(arg, int) and not isinstance(arg, bool):
            text = format(arg, "x")
        elif isinstance(arg, str):
            text = arg.encode().hex()
        else:
            return f"%!{verb}({_go_type(arg)}={go_print(arg)})"
        return text.upper() if verb == "X" else text
    if verb in "feEgGF":
        if isinstance(arg, bool) or not isinstance(arg, int | float):
            return f"%!{verb}({_go_type(arg)}={go_print(arg)})"
        text = _go_float(float(arg), verb.lower() if verb == "F" else verb, precision)
        return "+" + text if "+" in flags and not text.startswith(("-", "+")) else text
    return f"%!{verb}({_go_type(arg)}={go_print(arg)})"


def _g4(value: float) -> str:
    return _go_float(value, "g", 4)


def _to_float(value: Any) -> float:
    """Prometheus' convertToFloat: numbers, and strings that parse as floats."""
    if isinstance(value, bool):
        raise TemplateError(f"can't convert {go_print(value)} to float")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise TemplateError(f'strconv.ParseFloat: parsing "{value}": invalid syntax') from None
    raise TemplateError(f"can't convert {go_print(value)} to float")


# Prometheus' functions --------------------------------------------------------------------------------------
def humanize(value: Any) -> str:
    v = _to_float(value)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    if abs(v) >= 1:
        prefix = ""
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return _g4(v) + prefix
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix


def humanize1024(value: Any) -> str:
    v = _to_float(value)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return _g4(v) + prefix


def humanize_duration(value: Any) -> str:
    v = _to_float(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        whole = int(v)
        seconds, minutes, hours, days = whole % 60, (whole // 60) % 60, (whole // 3600) % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{_g4(v)}{prefix}s"


def humanize_percentage(value: Any) -> str:
    return _g4(_to_float(value) * 100) + "%"


def humanize_timestamp(value: Any) -> str:
    """time.Time's String() in UTC: `2006-01-02 15:04:05.123 +0000 UTC` (fraction only when non-zero)."""
    v = _to_float(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    nanos = int(v * 1e9)
    moment = datetime.fromtimestamp(nanos // 1_000_000_000, UTC)
    fraction = nanos % 1_000_000_000
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + " +0000 UTC"


def title(text: str) -> str:
    """strings.Title: upper-case the first letter of every word."""
    out, previous = [], " "
    for ch in text:
        out.append(ch.upper() if not (previous.isalnum() or previous == "_") else ch)
        previous = ch
    return "".join(out)


def re_replace_all(pattern: str, replacement: str, text: str) -> str:
    """regexp.ReplaceAllString with Go's `$1`/`${name}` expansion."""
    try:
        regex = re.compile(go_regex(pattern))
    except re.error as exc:
        raise TemplateError(f"regexp: error parsing {pattern!r}: {exc}") from None
    return regex.sub(lambda m: go_expand(replacement, m), text)


def match(pattern: str, text: str) -> bool:
    try:
        return re.search(go_regex(pattern), text) is not None
    except re.error as exc:
        raise TemplateError(f"regexp: error parsing {pattern!r}: {exc}") from None


def _split_host_port(host_port: str) -> tuple[str, str] | None:
    """net.SplitHostPort, or None where Go returns an error."""
    if host_port.startswith("["):
        end = host_port.find("]")
        if end < 0 or not host_port[end + 1 :].startswith(":"):
            return None
        return host_port[1:end], host_port[end + 2 :]
    if host_port.count(":") != 1:
        return None
    host, _, port = host_port.partition(":")
    return host, port


def strip_port(host_port: str) -> str:
    split = _split_host_port(host_port)
    return split[0] if split else host_port


def strip_domain(host_port: str) -> str:
    split = _split_host_port(host_port)
    host, port = split if split else (host_port, "")
    try:
        ipaddress.ip_address(host)
        return host_port
    except ValueError:
        pass
    host = host.split(".")[0]
    if port:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return host


# Go's builtins ---------------------------------------------------------------------------------------------
def truth(value: Any) -> bool:
    """text/template's truth: false, 0, nil and empty strings, maps and lists are false."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | dict | list | tuple):
        return len(value) > 0
    return True


def _comparable(a: Any, b: Any) -> tuple[Any, Any]:
    numeric = (int, float)
    if isinstance(a, bool) != isinstance(b, bool):
        raise TemplateError("incompatible types for comparison")
    if isinstance(a, numeric) and isinstance(b, numeric):
        return a, b
    if type(a) is not type(b):
        raise TemplateError("incompatible types for comparison")
    return a, b


def eq(arg: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("missing argument for comparison")
    for other in others:
        a, b = _comparable(arg, other)
        if a == b:
            return True
    return False


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        a, b = _comparable(a, b)
        if isinstance(a, bool | dict | list | tuple) or a is None:
            raise TemplateError("invalid type for comparison")
        return op(a, b)

    return compare


def length(value: Any) -> int:
    if isinstance(value, str | dict | list | tuple):
        return len(value)
    raise TemplateError(f"len of type {_go_type(value)}")


def index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, dict):
            item = item.get(key, "" if all(isinstance(v, str) for v in item.values()) else None)
        elif isinstance(item, list | tuple | str):
            if not isinstance(key, int) or not 0 <= key < len(item):
                raise TemplateError(f"index out of range: {key}")
            item = item[key]
        else:
            raise TemplateError(f"can't index item of type {_go_type(item)}")
    return item


def go_sprint(*args: Any) -> str:
    """fmt.Sprint: spaces between operands when neither side is a string."""
    out = ""
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_print(arg)
    return out


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Prometheus
    "humanize": humanize,
    "humanize1024": humanize1024,
    "humanizeDuration": humanize_duration,
    "humanizePercentage": humanize_percentage,
    "humanizeTimestamp": humanize_timestamp,
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "title": title,
    "reReplaceAll": re_replace_all,
    "match": match,
    "stripPort": strip_port,
    "stripDomain": strip_domain,
    # Go builtins
    "and": lambda *a: a[-1],
    "or": lambda *a: a[-1],
    "not": lambda a: not truth(a),
    "eq": eq,
    "ne": lambda a, b: not eq(a, b),
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "len": length,
    "index": index,
    "print": go_sprint,
    "printf": go_sprintf,
    "println": lambda *a: " ".join(go_print(x) for x in a) + "\n",
    "urlquery": lambda *a: quote_plus(go_sprint(*a)),
    "html": lambda *a: html_lib.escape(go_sprint(*a)).replace("&#x27;", "&#39;"),
    "js": lambda *a: json.dumps(go_sprint(*a))[1:-1].replace("'", "\\'"),
}
