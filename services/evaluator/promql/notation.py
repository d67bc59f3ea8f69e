"""Prometheus' series-description notation, as promqltest `load` blocks and promtool unit tests write it:

    http_requests{job="api", instance="0"}  0+10x10 _ stale 1 -2x3 _x2 1e3 Inf -Inf NaN

This follows Prometheus' own lexer and grammar (promql/parser/lex.go `lexValueSequence`, `scanNumber`;
generated_parser.y `series_description`, `series_item`, `series_value`; parse.go `number`):

- `a` one value; `axn` n+1 copies of a; `a+bxn` / `a-bxn` n+1 values starting at a, each the previous plus
  (or minus) b, accumulated one addition at a time as Go does (`$1 += $2`).
- `_` one missing sample; `_xn` n missing samples (not n+1).
- `stale` a staleness marker; `stale+bxn` is accepted as Prometheus accepts it (the additions turn the marker
  into an ordinary NaN). `stalexn`, `Infxn`, `NaNxn` are errors: the lexer reads `stalex3` as one identifier.
- numbers: decimal, float, exponent, `_` digit separators, `Inf`/`NaN` in any letter case (with an optional
  sign). A leading zero makes an integer octal (`010` is 8), because Prometheus parses numbers with Go's
  `ParseInt(s, 0, 64)` first. Hexadecimal is not allowed here: `0x59` means 0 repeated 60 times.
- native histograms `{{...}}`, `{{...}}xn`, `{{...}}+{{...}}xn`, `{{...}}-{{...}}xn` are recognised and
  stand as the `HISTOGRAM` sentinel: tripwire evaluates float samples only, so callers skip what touches them.

Items are separated by whitespace. The labels are `name{label="value", ...}`, `name`, or `{...}` (with
`__name__` inside, or a bare quoted name as Prometheus 3 allows); label values are Go-quoted strings.
"""

from __future__ import annotations

import math
import re
from typing import Final, Protocol

from services.evaluator.promql.values import METRIC_NAME, STALE_NAN


class NotationError(ValueError):
    """A series description that does not parse; says what and where (column, 1-based)."""


class _Histogram:
    __slots__ = ()

    def __repr__(self) -> str:
        return "HISTOGRAM"


HISTOGRAM: Final = _Histogram()
SeriesValue = float | None | _Histogram

# Words the lexer turns into something other than an identifier, so they cannot name a metric.
_NOT_METRIC_NAMES = frozenset({"bool", "on", "ignoring", "group_left", "group_right", "atan2", "inf", "nan"})
_SPACE = " \t\n\r"
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


def _is_alpha(ch: str) -> bool:
    return ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _is_alnum(ch: str) -> bool:
    return _is_alpha(ch) or "0" <= ch <= "9"


def _error(pos: int, message: str) -> NotationError:
    return NotationError(f"column {pos + 1}: {message}")


# --- labels ----------------------------------------------------------------------------------------------


def parse_labels(text: str) -> tuple[dict[str, str], int]:
    """Parse `name{label="value", ...}` (name optional) at the start of `text`; returns the labels (with
    `__name__` when named) and the index where the values begin."""
    i = 0
    while i < len(text) and text[i] in _SPACE:
        i += 1
    labels: dict[str, str] = {}
    name = _METRIC_NAME.match(text, i)
    if name:
        if name.group().lower() in _NOT_METRIC_NAMES:
            raise _error(i, f"{name.group()!r} cannot be a metric name")
        i = name.end()
    if i < len(text) and text[i] == "{":
        i = _parse_label_set(text, i + 1, labels)
    elif not name:
        found = repr(text[i]) if i < len(text) else "end of input"
        raise _error(i, f"expected a metric name or '{{' to start the series, found {found}")
    if name:
        labels[METRIC_NAME] = name.group()  # a name outside the braces wins over `__name__` inside
    return labels, i


def _parse_label_set(text: str, i: int, labels: dict[str, str]) -> int:
    """The inside of `{...}` from just after `{`; returns the index just after `}`."""
    expect_item = True  # at the start, or just after a comma
    while True:
        while i < len(text) and text[i] in _SPACE:
            i += 1
        if i >= len(text):
            raise _error(i, "unexpected end of input inside braces")
        ch = text[i]
        if ch == "}":
            return i + 1  # `{}` and a trailing comma (`{a="b",}`) are both allowed
        if not expect_item:
            raise _error(i, f"unexpected {ch!r} in label set, expected ',' or '}}'")
        if ch == ",":
            raise _error(i, "unexpected ',' in label set, expected a label name or '}'")
        start = i
        if ch in "\"'`":
            label, i = _quoted(text, i)  # Prometheus 3: `{"name.with.dots"="v"}` or a bare `{"metric"}`
        else:
            ident = _LABEL_NAME.match(text, i)
            if not ident:
                raise _error(i, f"unexpected {ch!r} in label set, expected a label name")
            label, i = ident.group(), ident.end()
        while i < len(text) and text[i] in _SPACE:
            i += 1
        if ch in "\"'`" and (i >= len(text) or text[i] != "="):
            _set_label(labels, METRIC_NAME, label, start)
        else:
            if i >= len(text) or text[i] != "=" or text[i + 1 : i + 2] in ("~", "="):
                found = repr(text[i : i + 2]) if i < len(text) else "end of input"
                raise _error(i, f"unexpected {found} after label name {label!r}, expected '='")
            i += 1
            while i < len(text) and text[i] in _SPACE:
                i += 1
            if i >= len(text) or text[i] not in "\"'`":
                raise _error(i, f"expected a quoted value for label {label!r}")
            value, i = _quoted(text, i)
            _set_label(labels, label, value, start)
        while i < len(text) and text[i] in _SPACE:
            i += 1
        if i < len(text) and text[i] == ",":
            i += 1
            expect_item = True
        else:
            expect_item = False


def _set_label(labels: dict[str, str], name: str, value: str, pos: int) -> None:
    # Prometheus' storage rejects a series with a repeated label name ("label name is not unique").
    if name in labels:
        raise _error(pos, f"duplicate label name {name!r}")
    labels[name] = value


def unquote(text: str) -> str:
    """A whole Go string literal (`"..."`, `'...'` or `` `...` ``), unquoted; raises NotationError."""
    if not text or text[0] not in "\"'`":
        raise _error(0, "expected a quoted string")
    value, end = _quoted(text, 0)
    if end != len(text):
        raise _error(end, f"unexpected {text[end:]!r} after the closing quote")
    return value


def unquote_bytes(text: str) -> str:
    """A whole Go string literal unquoted as Go's strconv.Unquote does, byte escapes (`\\xff`, `\\377`)
    included even where they do not form valid UTF-8: such bytes are kept as surrogate escapes."""
    value, end = _quoted(text, 0, errors="surrogateescape")
    if end != len(text):
        raise _error(end, f"unexpected {text[end:]!r} after the closing quote")
    return value


def _quoted(text: str, i: int, errors: str = "strict") -> tuple[str, int]:
    """A Go-quoted string at `i` (`"..."`, `'...'` with escapes, or raw `` `...` ``); returns it and the index
    after its closing quote. Escapes as Go's strconv.Unquote (byte escapes must form valid UTF-8, unless
    `errors` says how to keep invalid bytes)."""
    quote, start = text[i], i
    i += 1
    if quote == "`":
        end = text.find("`", i)
        if end < 0:
            raise _error(start, "unterminated raw string")
        return text[i:end], end + 1
    out = bytearray()
    while True:
        if i >= len(text) or text[i] == "\n":
            raise _error(start, "unterminated quoted string")
        ch = text[i]
        if ch == quote:
            break
        if ch == "\\":
            i = _escape(text, i, quote, out)
        else:
            out += ch.encode()
            i += 1
    try:
        return out.decode("utf-8", errors), i + 1
    except UnicodeDecodeError:
        raise _error(start, "label value is not valid UTF-8") from None


def _escape(text: str, i: int, quote: str, out: bytearray) -> int:
    """Decode the escape sequence at `i` (a backslash) into `out`; returns the index after it."""
    esc = text[i + 1 : i + 2]
    if not esc:
        raise _error(i, "escape sequence not terminated")
    if esc in _SIMPLE_ESCAPES:
        out.append(_SIMPLE_ESCAPES[esc])
        return i + 2
    if esc == quote:  # only the string's own quote may be escaped
        out += esc.encode()
        return i + 2
    if esc in "01234567":
        digits = text[i + 1 : i + 4]
        if not re.fullmatch(r"[0-7]{3}", digits) or int(digits, 8) > 255:
            raise _error(i, f"invalid octal escape '\\{digits}'")
        out.append(int(digits, 8))
        return i + 4
    if esc in "xuU":
        width = {"x": 2, "u": 4, "U": 8}[esc]
        digits = text[i + 2 : i + 2 + width]
        if not re.fullmatch(rf"[0-9a-fA-F]{{{width}}}", digits):
            raise _error(i, f"invalid escape '\\{esc}{digits}'")
        code = int(digits, 16)
        if esc == "x":
            out.append(code)  # a byte, as Go's \x: several may form one UTF-8 character
        elif code > 0x10FFFF or 0xD800 <= code < 0xE000:
            raise _error(i, "escape sequence is an invalid Unicode code point")
        else:
            out += chr(code).encode()
        return i + 2 + width
    raise _error(i, f"unknown escape sequence '\\{esc}'")


# --- values ----------------------------------------------------------------------------------------------

# Token kinds of Prometheus' lexer in series-description mode.
_NUMBER, _IDENT, _ADD, _SUB, _TIMES, _BLANK, _SPACE_TOK, _HIST = (
    "number",
    "identifier",
    "'+'",
    "'-'",
    "'x'",
    "'_'",
    "space",
    "histogram",
)


def _scan_number(text: str, i: int) -> int:
    """Prometheus' scanNumber in series mode (no hex): returns the end of the number token, or raises."""
    start, n = i, len(text)

    def peek(k: int) -> str:
        return text[k] if k < n else ""

    if peek(i) == ".":
        i += 1
    if peek(i).isdigit() and peek(i).isascii():
        i += 1
    dot = exp = False
    while peek(i) and peek(i) in "0123456789._eE":
        ch = peek(i)
        if ch == ".":
            if dot:
                raise _error(start, f"bad number syntax: {text[start : i + 1]!r}")
            dot = True
            i += 1
            if peek(i) and peek(i) in "_.":
                raise _error(start, f"bad number syntax: {text[start : i + 1]!r}")
        elif ch in "eE":
            if exp:
                raise _error(start, f"bad number syntax: {text[start : i + 1]!r}")
            exp = True
            i += 1
            if peek(i) and peek(i) in "+-":
                i += 1
            if not peek(i) or peek(i) in "._eE":
                raise _error(start, f"bad number syntax: {text[start : i + 1]!r}")
        elif ch == "_":
            i += 1
            if not peek(i) or peek(i) in "._eE":
                raise _error(start, f"bad number syntax: {text[start : i + 1]!r}")
        else:
            while peek(i).isdigit() and peek(i).isascii():
                i += 1
    # Only `x` (the repetition) may follow a number directly.
    if peek(i) and peek(i) != "x" and _is_alnum(peek(i)):
        raise _error(start, f"bad number syntax: {text[start : i + 1]!r}")
    return i


def _underscores_ok(s: str) -> bool:
    """Go's rule for digit separators: an underscore only between two digits."""
    return re.search(r"(?<![0-9])_|_(?![0-9])", s) is None


def go_number(s: str) -> float:
    """A number as Prometheus computes it (parse.go `number`): Go's `strconv.ParseInt(s, 0, 64)`, else
    `strconv.ParseFloat(s, 64)`. Raises ValueError for what neither accepts (hexadecimal floats aside)."""
    sign, body = (-1.0, s[1:]) if s[:1] == "-" else (1.0, s[1:] if s[:1] == "+" else s)
    integer: int | None = None
    if re.fullmatch(r"0[xX](_?[0-9a-fA-F])+", body):
        integer = int(body[2:].replace("_", ""), 16)
    elif re.fullmatch(r"0[oO](_?[0-7])+", body):
        integer = int(body[2:].replace("_", ""), 8)
    elif re.fullmatch(r"0[bB](_?[01])+", body):
        integer = int(body[2:].replace("_", ""), 2)
    elif re.fullmatch(r"0(_?[0-7])+", body):  # a leading zero: Go's legacy octal literal
        integer = int(body.replace("_", ""), 8)
    elif re.fullmatch(r"[1-9](_?[0-9])*|0", body):
        integer = int(body.replace("_", ""))
    if integer is not None and integer <= _INT64_MAX + (sign < 0):
        return sign * float(integer)
    lowered = body.lower()
    if lowered in ("inf", "infinity", "nan"):
        return sign * float(lowered[:3])
    decimal = re.fullmatch(r"([0-9_]+\.?[0-9_]*|\.[0-9_]+)([eE][+-]?[0-9_]+)?", body)
    if not decimal or not _underscores_ok(body):
        raise ValueError(f"invalid number {s!r}")
    value = float(body.replace("_", ""))
    if value == math.inf:  # ParseFloat: a finite literal beyond the float64 range is an error (ErrRange)
        raise ValueError(f"number {s!r} is out of range")
    return sign * value


def _tokens(text: str, pos: int) -> list[tuple[str, str, int]]:
    """Lex the values part (from `pos`) into (kind, text, position) tokens."""
    out: list[tuple[str, str, int]] = []
    i, n = pos, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            start = i
            while i < n and text[i] in _SPACE:
                i += 1
            out.append((_SPACE_TOK, text[start:i], start))
        elif text.startswith("{{", i):
            end = text.find("}}", i + 2)
            if end < 0:
                raise _error(i, "unterminated native histogram value '{{'")
            out.append((_HIST, text[i : end + 2], i))
            i = end + 2
        elif ch in "+-x_":
            out.append(({"+": _ADD, "-": _SUB, "x": _TIMES, "_": _BLANK}[ch], ch, i))
            i += 1
        elif ("0" <= ch <= "9") or (ch == "." and "0" <= text[i + 1 : i + 2] <= "9" and text[i + 1 : i + 2]):
            end = _scan_number(text, i)
            out.append((_NUMBER, text[i:end], i))
            i = end
        elif _is_alpha(ch):
            start = i
            while i < n and (_is_alnum(text[i]) or text[i] == ":"):
                i += 1
            word = text[start:i]
            out.append((_NUMBER if word.lower() in ("inf", "nan") else _IDENT, word, start))
        else:
            raise _error(i, f"unexpected character in series values: {ch!r}")
    return out


class _Parser:
    """Prometheus' `series_values` / `series_item` grammar over the tokens."""

    def __init__(self, tokens: list[tuple[str, str, int]], end: int) -> None:
        self.tokens = tokens
        self.k = 0
        self.end = end

    def peek(self, ahead: int = 0) -> tuple[str, str, int] | None:
        j = self.k + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.k]
        self.k += 1
        return token

    def unexpected(self, expected: str) -> NotationError:
        token = self.peek()
        if token is None:
            return _error(self.end, f"unexpected end of input in series values, expected {expected}")
        kind, word, pos = token
        what = f"{kind} {word!r}" if kind in (_NUMBER, _IDENT, _HIST) else kind
        return _error(pos, f"unexpected {what} in series values, expected {expected}")

    def values(self) -> list[SeriesValue]:
        out: list[SeriesValue] = []
        while self.peek() is not None:
            if self.peek()[0] != _SPACE_TOK:  # type: ignore[index]
                raise self.unexpected("a space between values")
            self.take()
            if self.peek() is not None and self.peek()[0] != _SPACE_TOK:  # type: ignore[index]
                out.extend(self.item())
        return out

    def repetitions(self) -> int:
        """`x` then an unsigned decimal integer (Go's ParseUint(s, 10, 64))."""
        self.take()  # the `x`
        token = self.peek()
        if token is None or token[0] != _NUMBER or not re.fullmatch(r"[0-9]+", token[1]):
            if token is not None and token[0] == _NUMBER:
                raise _error(token[2], f"invalid repetition in series values: {token[1]!r}")
            raise self.unexpected("a repetition count after 'x'")
        count = int(token[1])
        if count > _UINT64_MAX:
            raise _error(token[2], f"invalid repetition in series values: {token[1]!r} is out of range")
        self.take()
        return count

    def is_next(self, kind: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == kind

    def item(self) -> list[SeriesValue]:
        kind, _word, _pos = self.peek()  # type: ignore[misc]
        if kind == _BLANK:
            self.take()
            return [None] * (self.repetitions() if self.is_next(_TIMES) else 1)
        if kind == _HIST:
            self.take()
            if self.is_next(_TIMES):
                return [HISTOGRAM] * (self.repetitions() + 1)
            if self.is_next(_ADD) or self.is_next(_SUB):
                self.take()
                if not self.is_next(_HIST):
                    raise self.unexpected("a native histogram after '+' or '-'")
                self.take()
                if not self.is_next(_TIMES):
                    raise self.unexpected("'x' and a repetition count")
                return [HISTOGRAM] * (self.repetitions() + 1)
            return [HISTOGRAM]
        first = self.series_value()
        if self.is_next(_TIMES):
            return [first] * (self.repetitions() + 1)
        if self.is_next(_ADD) or self.is_next(_SUB):
            step = self.signed_number()
            if not self.is_next(_TIMES):
                raise self.unexpected("'x' and a repetition count after the increment")
            count = self.repetitions()
            out: list[SeriesValue] = []
            value = first
            for _ in range(count + 1):
                out.append(value)
                value += step  # Go accumulates (`$1 += $2`): the same rounding as Prometheus
            return out
        return [first]

    def series_value(self) -> float:
        token = self.peek()
        assert token is not None
        if token[0] == _IDENT:
            if token[1] != "stale":
                raise self.unexpected('a number or "stale"')
            self.take()
            return STALE_NAN
        if token[0] in (_ADD, _SUB):
            return self.signed_number()
        if token[0] == _NUMBER:
            return self.number()
        raise self.unexpected('a number or "stale"')

    def signed_number(self) -> float:
        sign = -1.0 if self.take()[0] == _SUB else 1.0
        if not self.is_next(_NUMBER):
            raise self.unexpected("a number after the sign")
        return sign * self.number()

    def number(self) -> float:
        _kind, word, pos = self.take()
        try:
            return go_number(word)
        except ValueError:
            raise _error(pos, f"error parsing number {word!r}") from None


def parse_values(text: str, offset: int = 0) -> list[SeriesValue]:
    """Expand the values part of a series description (`offset`: where `text` sits in the full line, for
    error columns). Leading whitespace is optional here; between items it is required."""
    return _parse_values_at(" " + text, 0, offset - 1)


def _parse_values_at(text: str, pos: int, shift: int = 0) -> list[SeriesValue]:
    try:
        tokens = _tokens(text, pos)
        return _Parser(tokens, len(text)).values()
    except NotationError as exc:
        if not shift:
            raise
        match = re.match(r"column (\d+): (.*)", str(exc), re.S)
        assert match
        raise NotationError(f"column {int(match.group(1)) + shift}: {match.group(2)}") from None


def parse_series_description(text: str) -> tuple[dict[str, str], list[SeriesValue]]:
    """A full line: labels, then the values (separated from the labels by whitespace)."""
    labels, end = parse_labels(text)
    return labels, _parse_values_at(text, end)


class _Store(Protocol):
    def series_for(self, full: dict[str, str]) -> _Series: ...


class _Series(Protocol):
    def add(self, ts: float, value: float) -> None: ...


def load_series(
    store: _Store, labels: dict[str, str], values: list[SeriesValue], start_ms: int, step_ms: int
) -> bool:
    """Write `values` at start + i*step (skipping missing ones) into a SeriesStore, timestamps as float
    seconds; returns whether any native-histogram value was present (those are not stored)."""
    series = store.series_for(labels)
    histogram = False
    for i, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, _Histogram):
            histogram = True
            continue
        # From integer milliseconds, so equal times always give the same float.
        series.add((start_ms + i * step_ms) / 1000, value)
    return histogram
