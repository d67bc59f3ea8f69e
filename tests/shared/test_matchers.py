"""Label matchers with Prometheus' regex semantics (RE2 syntax, anchored, `.` matching newlines)."""

from __future__ import annotations

import re

import pytest

from shared.matchers import Matcher, MatcherError, go_regex


@pytest.mark.parametrize(
    ("re2", "python"),
    [
        ("((?i)PRO).*", "((?i:PRO)).*"),
        (".*((?i)DUC).*", ".*((?i:DUC)).*"),
        ("(?i)abc", "(?i:abc)"),
        ("a(?i)b|c", "a(?i:b)|(?i:c)"),  # the flag reaches across `|`, which still splits the whole pattern
        ("x|(?i)y|z", "x|(?i:y)|(?i:z)"),
        ("(a(?i)b|c)d", "(a(?i:b)|(?i:c))d"),
        ("(?i)a(?s)b|c", "(?i:a(?s:b))|(?is:c)"),  # reopened as one group
        ("[(?i)]x", "[(?i)]x"),  # inside a character class it is just characters
        (r"a\(?i)", r"a\(?i)"),
    ],
)
def test_re2_inline_flags_become_scoped_python_flags(re2: str, python: str):
    assert go_regex(re2) == python


@pytest.mark.parametrize(
    ("re2", "python"),
    [
        (r"a\Q.*+\Eb", r"a\.\*\+b"),  # \Q...\E is literal text
        (r"\Qab\E*", "ab*"),  # and a quantifier after it takes its last character
        (r"\Q(unterminated", r"\(unterminated"),  # to the end without \E
        ("(?U)a+b*?", "a+?b*"),  # ungreedy: every quantifier's laziness swapped
        ("(?iU)A{2,3}", "(?i:A{2,3}?)"),
        ("x((?U)a*)b*", "x(a*?)b*"),  # until the enclosing group ends, as every RE2 flag
        ("a(?U)b*|c*", "ab*?|c*?"),  # and across its alternatives
        ("(?:a)?(?P<n>b)??", "(?:a)?(?P<n>b)??"),  # a group's `(?` is no quantifier
        ("a{,3}", r"a\{,3}"),  # no repetition in RE2 (Python would read {0,3})
        ("a{x}", r"a\{x}"),
    ],
)
def test_re2_literal_text_ungreedy_and_braces(re2: str, python: str):
    assert go_regex(re2) == python


def test_repeated_flags_and_alternatives_do_not_nest_groups():
    # Every (?i) opened a group again, reopened at every |: 1.8 KB of pattern made 452 KB and seconds of
    # compiling on the event loop (an unauthenticated query or silence filter stalled a service: review).
    pattern = "(?i)" * 300 + "a" + "|b" * 300
    assert go_regex(pattern) == "(?i:a" + ")|(?i:b" * 300 + ")"
    assert re.fullmatch(go_regex(pattern), "B")


def test_ungreedy_changes_what_groups_capture():
    # What label_replace, relabel `replace` and reReplaceAll see: the first group takes as little as it can.
    assert re.fullmatch(go_regex("(?U)(a+)(a*)"), "aaa").groups() == ("a", "aa")
    assert re.fullmatch(go_regex("(a+)(a*)"), "aaa").groups() == ("aaa", "")


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


@pytest.mark.parametrize("pattern", ["(" * 2000 + ")" * 2000, "a{99999999999}"])
def test_a_regex_too_deep_or_too_repeated_for_python_is_a_clear_error(pattern: str):
    # re raises RecursionError and OverflowError for these, which escaped as a 500 from the silences filter.
    with pytest.raises(MatcherError, match="invalid regular expression"):
        Matcher.create("l", "=~", pattern)
