"""Label matchers, as Prometheus selectors and Alertmanager routes and silences use them:
`name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`.

Regexes are fully anchored (the whole value must match) and an absent label matches as the empty string, as in
both upstream projects. `str()` gives the upstream form, which Alertmanager embeds in route and group keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OPERATORS = ("=", "!=", "=~", "!~")


class MatcherError(ValueError):
    pass


def go_quote(text: str, ascii_only: bool = False, quote: str = '"') -> str:
    """Go's strconv.Quote (QuoteToASCII with ascii_only; QuoteRune's style with quote="'")."""
    out = [quote]
    for ch in text:
        code = ord(ch)
        if ch in (quote, "\\"):
            out.append("\\" + ch)
        elif ch.isprintable() and (not ascii_only or code < 0x80):
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append(quote)
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


_INLINE_FLAGS = re.compile(r"\(\?([imsU]+)\)")


def go_regex(pattern: str) -> str:
    """An RE2 pattern in Python's syntax. RE2 allows flag groups like `(?i)` anywhere, applying to the rest
    of the enclosing group; Python only at the start. So `a((?i)b)c` becomes `a((?i:b))c`."""
    out: list[str] = []
    i, n = 0, len(pattern)
    closers: list[int] = []  # per open group: how many scoped flag groups to close with it
    pending = 0  # scoped flag groups opened at top level
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if ch == "[":  # a character class: copy verbatim up to its end
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            out.append(pattern[i : j + 1])
            i = j + 1
            continue
        flags = _INLINE_FLAGS.match(pattern, i)
        if flags:
            python_flags = flags.group(1).replace("U", "")
            out.append(f"(?{python_flags}:" if python_flags else "(?:")
            if closers:
                closers[-1] += 1
            else:
                pending += 1
            i = flags.end()
            continue
        if ch == "(":
            closers.append(0)
        elif ch == ")" and closers:
            out.append(")" * closers.pop())
        out.append(ch)
        i += 1
    out.append(")" * pending)
    return "".join(out)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, name: str, op: str, value: str) -> Matcher:
        """A checked matcher; raises MatcherError for an unknown operator or an invalid regex."""
        if op not in OPERATORS:
            raise MatcherError(f"unknown match operator {op!r}")
        regex = None
        if op in ("=~", "!~"):
            try:
                # As Prometheus: anchored, `.` matches newlines, RE2's mid-pattern flags made Python-scoped.
                regex = re.compile(f"(?s:{go_regex(value)})")
            except re.error as exc:
                raise MatcherError(f"invalid regular expression {value!r}: {exc}") from None
        return cls(name, op, value, regex)

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = self.regex.fullmatch(actual) is not None  # type: ignore[union-attr]
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{go_quote(self.value)}"
