"""Prometheus' series-description notation, as promqltest `load` blocks and promtool unit tests write it:

    http_requests{job="api", instance="0"}  0+10x10 _ stale 1 -2x3 _x2 1e3 Inf NaN

Values (promql/parser/generated_parser.y, `series_item`): `a` one value; `axn` n+1 copies of a; `a+bxn` /
`a-bxn` n+1 values from a in steps of b; `_` one missing sample; `_xn` n missing samples; `stale` a staleness
marker (and `stalexn`, n+1 of them). Native histogram values `{{...}}` are recognised and stand as the
`HISTOGRAM` sentinel: tripwire evaluates float samples only, so callers skip what touches them.
"""

from __future__ import annotations

import re
from typing import Final

from services.evaluator.promql.values import METRIC_NAME, STALE_NAN


class NotationError(ValueError):
    """A series description that does not parse; says what and where (column, 1-based)."""


class _Histogram:
    def __repr__(self) -> str:
        return "HISTOGRAM"


HISTOGRAM: Final = _Histogram()
SeriesValue = float | None | _Histogram

# No hex: in this notation `0x59` is 0 repeated (59 + 1 times), as Prometheus' own tests use it.
_UNSIGNED = r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[iI]nf|NaN|nan)"
_ITEM = re.compile(rf"(?P<a>[+-]?{_UNSIGNED}|stale)(?:(?P<b>[+-]{_UNSIGNED})?x(?P<n>\d+))?")
_BLANK = re.compile(r"_(?:x(?P<n>\d+))?")
_HIST_REPEAT = re.compile(r"(?:[+-]\{\{.*?\}\})?x(?P<n>\d+)")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "r": "\r", "a": "\a", "b": "\b", "f": "\f"}


def _number(text: str) -> float:
    lowered = text.lower().lstrip("+")
    if lowered in ("inf", "-inf", "nan"):
        return float(lowered)
    return float(text)


def parse_values(text: str, offset: int = 0) -> list[SeriesValue]:
    """Expand the values part of a series description."""
    out: list[SeriesValue] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text.startswith("{{", i):
            end = text.find("}}", i)
            if end < 0:
                raise NotationError(f"column {offset + i + 1}: unterminated histogram value '{{{{'")
            i = end + 2
            repeat = _HIST_REPEAT.match(text, i)
            if repeat:
                out.extend([HISTOGRAM] * (int(repeat.group("n")) + 1))
                i = repeat.end()
            else:
                out.append(HISTOGRAM)
            continue
        end = i
        while end < n and not text[end].isspace():
            end += 1
        token = text[i:end]
        blank = _BLANK.fullmatch(token)
        item = _ITEM.fullmatch(token)
        if blank:
            out.extend([None] * (int(blank.group("n")) if blank.group("n") else 1))
        elif item:
            first = STALE_NAN if item.group("a") == "stale" else _number(item.group("a"))
            if item.group("n") is None:
                out.append(first)
            else:
                step = _number(item.group("b")) if item.group("b") else 0.0
                if item.group("a") == "stale" and step:
                    raise NotationError(f"column {offset + i + 1}: a stale marker cannot be incremented")
                # value + k*step as Prometheus accumulates it; no arithmetic on a stale marker (adding to that
                # signalling NaN would quiet it into an ordinary NaN).
                value = first
                for _ in range(int(item.group("n")) + 1):
                    out.append(value)
                    if step:
                        value += step
        else:
            raise NotationError(f"column {offset + i + 1}: unexpected {token!r} in series values")
        i = end
    return out


def parse_labels(text: str) -> tuple[dict[str, str], int]:
    """Parse `name{label="value", ...}` (name optional) at the start of `text`; returns the labels (with
    `__name__` when named) and where the values begin."""
    labels: dict[str, str] = {}
    i = len(text) - len(text.lstrip())
    name = _NAME.match(text, i)
    if name:
        labels[METRIC_NAME] = name.group()
        i = name.end()
    if i < len(text) and text[i] == "{":
        i += 1
        while True:
            while i < len(text) and text[i] in " \t,":
                i += 1
            if i < len(text) and text[i] == "}":
                i += 1
                break
            label = _LABEL.match(text, i)
            if not label:
                raise NotationError(f"column {i + 1}: expected a label name in {text.strip()!r}")
            i = label.end()
            value, i = _quoted(text, i)
            labels[label.group(1)] = value
    elif not name:
        raise NotationError(f"column {i + 1}: a series needs a metric name or {{labels}}: {text.strip()!r}")
    return labels, i


def _quoted(text: str, i: int) -> tuple[str, int]:
    if i >= len(text) or text[i] not in "\"'`":
        raise NotationError(f"column {i + 1}: expected a quoted label value")
    quote = text[i]
    i += 1
    chars: list[str] = []
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(chars), i + 1
        if ch == "\\" and quote != "`" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                chars.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt in "uU" or nxt == "x":
                width = {"x": 2, "u": 4, "U": 8}[nxt]
                chars.append(chr(int(text[i + 2 : i + 2 + width], 16)))
                i += 2 + width
                continue
        chars.append(ch)
        i += 1
    raise NotationError(f"column {i + 1}: unterminated label value")


def parse_series_description(text: str) -> tuple[dict[str, str], list[SeriesValue]]:
    """A full line: labels, then values."""
    labels, end = parse_labels(text)
    return labels, parse_values(text[end:], end)


def load_series(
    store: object, labels: dict[str, str], values: list[SeriesValue], start_ms: int, step_ms: int
) -> bool:
    """Write `values` at start + i*step (skipping missing ones) into a SeriesStore; returns whether any
    native-histogram value was present (those are not stored)."""
    series = store.series_for(labels)  # type: ignore[attr-defined]
    histogram = False
    for i, value in enumerate(values):
        if value is None:
            continue
        if value is HISTOGRAM:
            histogram = True
            continue
        series.add((start_ms + i * step_ms) / 1000, value)
    return histogram
