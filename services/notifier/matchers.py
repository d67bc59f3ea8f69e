"""Alertmanager's matcher syntax and key formatting.

Values may be quoted (with Go escapes) or, as in Alertmanager's UTF-8 matcher syntax, bare. Route keys and
group keys embed matchers and label sets in Alertmanager's exact string form.
"""

from __future__ import annotations

import re

from shared.matchers import OPERATORS, Matcher, MatcherError, labels_string

__all__ = ["Matcher", "MatcherError", "labels_string", "matchers_string", "parse_matcher", "sort_key"]

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*|"(?:[^"\\]|\\.)*")\s*(=~|!~|!=|=)\s*(.*?)\s*$', re.DOTALL)


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


def parse_matcher(text: str) -> Matcher:
    """One matcher in Alertmanager's syntax, e.g. `severity=~"critical|page"`."""
    match = _MATCHER.match(text)
    if not match:
        raise MatcherError(f"bad matcher format: {text}")
    name, op, value = match.groups()
    return Matcher.create(_unquote(name) if name.startswith('"') else name, op, _unquote(value))


def sort_key(m: Matcher) -> tuple[str, str, int]:
    """Alertmanager sorts route matchers by name, then value, then operator (=, !=, =~, !~)."""
    return (m.name, m.value, OPERATORS.index(m.op))


def matchers_string(matchers: list[Matcher]) -> str:
    return "{" + ",".join(str(m) for m in matchers) + "}"
