"""Label matchers with Prometheus' regex semantics (RE2 syntax, anchored, `.` matching newlines)."""

from __future__ import annotations

import pytest

from shared.matchers import Matcher, MatcherError, go_regex


@pytest.mark.parametrize(
    ("re2", "python"),
    [
        ("((?i)PRO).*", "((?i:PRO)).*"),
        (".*((?i)DUC).*", ".*((?i:DUC)).*"),
        ("(?i)abc", "(?i:abc)"),
        ("a(?i)b|c", "a(?i:b|c)"),
        ("[(?i)]x", "[(?i)]x"),  # inside a character class it is just characters
        (r"a\(?i)", r"a\(?i)"),
    ],
)
def test_re2_inline_flags_become_scoped_python_flags(re2: str, python: str):
    assert go_regex(re2) == python


@pytest.mark.parametrize(
    ("op", "pattern", "value", "expected"),
    [
        ("=~", ".*((?i)DUC).*", "production", True),
        ("=~", "prod", "production", False),  # anchored at both ends
        ("=~", "a.b", "a\nb", True),  # `.` matches a newline, as Prometheus compiles with (?s)
        ("!~", "5..", "503", False),
        ("=~", "", "", True),
        ("!=", "x", "y", True),
    ],
)
def test_matching_follows_prometheus(op: str, pattern: str, value: str, expected: bool):
    assert Matcher.create("l", op, pattern).matches({"l": value}) is expected


def test_a_missing_label_matches_as_the_empty_string():
    assert Matcher.create("absent", "=", "").matches({"other": "x"})


def test_invalid_regex_is_a_clear_error():
    with pytest.raises(MatcherError, match="invalid regular expression"):
        Matcher.create("l", "=~", "(unclosed")
