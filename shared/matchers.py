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


def go_quote(value: str) -> str:
    """A string quoted as Go's %q does for printable text."""
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
        found = self.regex.fullmatch(actual) is not None  # type: ignore[union-attr]
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{go_quote(self.value)}"
