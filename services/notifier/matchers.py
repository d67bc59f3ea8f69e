"""Alertmanager label matchers: `name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`.

Values may be quoted (with Go escapes) or, as in Alertmanager's UTF-8 matcher syntax, bare. Regexes are
fully anchored. The string form (`String()`) is Alertmanager's, because route keys and group keys embed it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_OPS = ("=~", "!~", "!=", "=")
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*|"(?:[^"\\]|\\.)*")\s*(=~|!~|!=|=)\s*(.*?)\s*$', re.DOTALL)


class MatcherError(ValueError):
    pass


def go_quote(value: str) -> str:
    """A string quoted as Go's %q does for printable text (keys and group labels use it)."""
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        body = text[1:-1]
        try:
            return (
                body.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1").decode()
            )
        except (UnicodeDecodeError, UnicodeEncodeError):
            raise MatcherError(f"invalid escape sequence in {text}") from None
    if '"' in text:
        raise MatcherError(f"unbalanced quotes in matcher value {text!r}")
    return text


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, name: str, op: str, value: str) -> Matcher:
        if op not in _OPS:
            raise MatcherError(f"unknown match operator {op!r}")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(f"(?:{value})")
            except re.error as exc:
                raise MatcherError(f"invalid regular expression {value!r}: {exc}") from None
        return cls(name, op, value, regex)

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = self._regex.fullmatch(actual) is not None  # type: ignore[union-attr]
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{go_quote(self.value)}"


def parse_matcher(text: str) -> Matcher:
    """One matcher in Alertmanager's syntax, e.g. `severity=~"critical|page"`."""
    match = _MATCHER.match(text)
    if not match:
        raise MatcherError(f"bad matcher format: {text}")
    name, op, value = match.groups()
    return Matcher.create(_unquote(name) if name.startswith('"') else name, op, _unquote(value))


def sort_key(m: Matcher) -> tuple[str, str, int]:
    """Alertmanager sorts route matchers by name, then value, then operator."""
    return (m.name, m.value, _OPS.index(m.op))


def matchers_string(matchers: list[Matcher]) -> str:
    return "{" + ",".join(str(m) for m in matchers) + "}"


def labels_string(labels: dict[str, str]) -> str:
    """A label set as Prometheus' LabelSet.String(): `{a="1", b="2"}` sorted by name."""
    return "{" + ", ".join(f"{k}={go_quote(labels[k])}" for k in sorted(labels)) + "}"
