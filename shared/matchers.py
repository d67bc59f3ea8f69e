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
        if 0xDC80 <= code <= 0xDCFF:  # an invalid UTF-8 byte, kept by Python's surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in (quote, "\\"):
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


def labels_string(labels: dict[str, str]) -> str:
    """A label set as Prometheus' labels.String() and Alertmanager's LabelSet.String(): `{a="1", b="2"}`,
    names sorted, values quoted as Go's strconv.Quote."""
    return "{" + ", ".join(f"{k}={go_quote(labels[k])}" for k in sorted(labels)) + "}"


_INLINE_FLAGS = re.compile(r"\(\?([imsU]+)\)")
# A repetition operator (RE2 reads a `{` that starts none as a literal).
_QUANTIFIER = re.compile(r"[*+?]|\{\d+(?:,\d*)?\}")

# RE2's Perl and POSIX classes are ASCII-only (Python's \d \w \s and \b are Unicode-aware): code point ranges.
_Ranges = tuple[tuple[int, int], ...]
_DIGIT: _Ranges = ((0x30, 0x39),)
_WORD: _Ranges = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_PERL_CLASSES: dict[str, _Ranges] = {"d": _DIGIT, "w": _WORD, "s": ((0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20))}
_POSIX_CLASSES: dict[str, _Ranges] = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": _DIGIT,
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": _WORD,
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
_POSIX = re.compile(r"\[:(\^?)([a-z]+):\]")
_MAX_RUNE = 0x10FFFF


def _class_body(ranges: _Ranges, negated: bool) -> str:
    """`ranges` (or their complement) as the inside of a Python character class."""
    if negated:
        out, low = [], 0
        for lo, hi in ranges:
            if lo > low:
                out.append((low, lo - 1))
            low = hi + 1
        out.append((low, _MAX_RUNE))
        ranges = tuple(out)
    return "".join(
        _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges
    )


def _class_char(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\U{code:08x}"


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """The Python form of the escape at `pattern[i]` (a backslash), and the index after it."""
    ch = pattern[i + 1 : i + 2]
    if not ch:
        return pattern[i:], i + 1  # a trailing backslash: left for re.compile to refuse
    if ch.lower() in _PERL_CLASSES:
        body = _class_body(_PERL_CLASSES[ch.lower()], negated=ch.isupper())
        return (body if in_class else f"[{body}]"), i + 2
    if not in_class and ch in "bB":
        return f"(?a:\\{ch})", i + 2  # RE2's word boundary is ASCII too
    if not in_class and ch == "z":
        return "\\Z", i + 2  # RE2's end of text; Python spells it \Z (RE2 has no \Z)
    return pattern[i : i + 2], i + 2


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    r"""The Python form of the character class starting at `pattern[i]` (a `[`), and the index after it.
    Translates RE2's `[:alpha:]`-style POSIX classes and its ASCII \d \w \s inside."""
    n = len(pattern)
    out = ["["]
    j = i + 1
    if j < n and pattern[j] == "^":
        out.append("^")
        j += 1
    first = True
    while j < n and (pattern[j] != "]" or first):
        first = False
        if pattern[j] == "\\":
            text, j = _escape(pattern, j, in_class=True)
            out.append(text)
            continue
        posix = _POSIX.match(pattern, j) if pattern[j] == "[" else None
        if posix and posix.group(2) in _POSIX_CLASSES:
            out.append(_class_body(_POSIX_CLASSES[posix.group(2)], negated=bool(posix.group(1))))
            j = posix.end()
            continue
        if pattern[j] == "[":
            out.append("\\[")  # a literal `[` in RE2; Python would warn of a nested set
        else:
            out.append(pattern[j])
        j += 1
    if j >= n:
        return pattern[i:], n  # unterminated: left for re.compile to refuse
    out.append("]")
    return "".join(out), j + 1


def _quoted(pattern: str, i: int) -> tuple[str, int]:
    r"""The Python form of the `\Q...\E` at `pattern[i]` (literal text, to the end without `\E`) and
    the index after it."""
    end = pattern.find("\\E", i + 2)
    end = len(pattern) if end < 0 else end
    return re.escape(pattern[i + 2 : end]), end + 2


def _repetition(pattern: str, i: int, ungreedy: bool) -> tuple[str, int]:
    """The Python form of the repetition operator at `pattern[i]`, lazy or greedy as RE2 reads it under
    `ungreedy` (`(?U)`), and the index after it. A `{` that starts no repetition is literal in RE2, where
    Python might read one (`{,3}`)."""
    quantifier = _QUANTIFIER.match(pattern, i)
    if quantifier is None:
        return "\\{", i + 1
    lazy = pattern.startswith("?", quantifier.end())
    return quantifier.group() + ("?" if lazy != ungreedy else ""), quantifier.end() + lazy


def go_regex(pattern: str) -> str:
    r"""An RE2 pattern in Python's syntax. RE2 allows flag groups like `(?i)` anywhere, applying to the rest
    of the enclosing group, across its `|` alternatives; Python only at the start. So `a((?i)b|c)d` becomes
    `a((?i:b)|(?i:c))d`. RE2's \d \w \s and \b are ASCII-only and it has POSIX classes (`[[:alpha:]]`): both
    become explicit ASCII classes. `\Q...\E` is literal text, and `(?U)` (ungreedy) swaps the laziness of the
    quantifiers after it."""
    out: list[str] = []
    i, n = 0, len(pattern)
    groups = [_Group(frozenset(), False)]  # the open groups, the whole pattern first
    while i < n:
        ch, group = pattern[i], groups[-1]
        if ch == "\\":
            text, i = _quoted(pattern, i) if pattern.startswith("Q", i + 1) else _escape(pattern, i, False)
        elif ch == "[":
            text, i = _char_class(pattern, i)
        elif flags := _INLINE_FLAGS.match(pattern, i):
            text, i = group.set_flags(flags.group(1)), flags.end()
        elif ch in "*+?{" and not (ch == "?" and out and out[-1] == "("):  # a group's `(?` is no quantifier
            text, i = _repetition(pattern, i, group.ungreedy)
        else:
            text, i = ch, i + 1
            if ch == "(":
                groups.append(_Group(group.flags, group.ungreedy))
            elif ch == ")" and len(groups) > 1:
                text = ")" * groups.pop().opened + ")"
            elif ch == "|":
                text = group.alternative()
        out.append(text)
    out.append(")" * groups[0].opened)
    return "".join(out)


def compile_go(pattern: str, dotall: bool = False) -> re.Pattern[str]:
    """An RE2 pattern compiled by Python's re (`dotall`: as Prometheus wraps it, `.` matching newlines).
    Raises re.error for any pattern re cannot take, including one nested too deep (re's parser recurses)
    or repeated too often, which re reports as RecursionError and OverflowError."""
    translated = go_regex(pattern)
    try:
        return re.compile(f"(?s:{translated})" if dotall else translated)
    except (RecursionError, OverflowError) as exc:
        raise re.error(f"{type(exc).__name__}: {exc}") from None


class _Group:
    """The flags in effect in one open group of an RE2 pattern, and the Python flag groups that carry them."""

    def __init__(self, inherited: frozenset[str], ungreedy: bool) -> None:
        self.inherited = inherited  # on from the enclosing groups' Python flag groups
        self.flags = inherited
        self.ungreedy = ungreedy  # (?U): swaps quantifiers' laziness, which Python has no flag for
        self.opened = 0  # Python flag groups opened in this group, closed with it

    def set_flags(self, flags: str) -> str:
        """The Python text for RE2's `(?flags)` here: a scoped group for the flags not yet on, or nothing."""
        self.ungreedy = self.ungreedy or "U" in flags
        new = set(flags) - {"U"} - self.flags
        if not new:
            return ""  # repeated flags add nothing (a pattern of many `(?i)` must not nest as many groups)
        self.flags |= new
        self.opened += 1
        return f"(?{''.join(sorted(new))}:"

    def alternative(self) -> str:
        """The Python text for a `|` here: the flag groups closed, and the flags this group set on again for
        the next alternative, as one group."""
        added = self.flags - self.inherited
        text = ")" * self.opened + "|" + (f"(?{''.join(sorted(added))}:" if added else "")
        self.opened = 1 if added else 0
        return text


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
                regex = compile_go(value, dotall=True)
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
