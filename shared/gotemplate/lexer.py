"""The lexer of Go's text/template (text/template/parse/lex.go): text, then `{{ ... }}` actions as tokens.
`{{-`/`-}}` trim the spaces around an action and `{{/* comments */}}` vanish."""

from __future__ import annotations

import unicodedata
from typing import NamedTuple

from shared.gotemplate.errors import ParseError
from shared.gotemplate.strconv import go_quote, rune_repr

SPACE = " \t\r\n"
KEYWORDS = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
)


class Token(NamedTuple):
    """One token. kind: text left right space kw ident nil bool number complex char string var field dot
    pipe declare assign lparen rparen punct eof."""

    kind: str
    val: str
    pos: int

    def __str__(self) -> str:
        """How Go's parser names a token in "unexpected ..." errors."""
        if self.kind == "eof":
            return "EOF"
        if self.kind in ("kw", "nil", "dot"):
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def lex(text: str) -> list[Token]:
    """All the tokens of text, ending with an eof token; ParseError at the first that is malformed."""
    tokens: list[Token] = []
    n = len(text)
    i = 0
    while True:
        j = text.find("{{", i)
        if j < 0:
            if i < n:
                tokens.append(Token("text", text[i:], i))
            break
        trim = j + 3 < n and text[j + 2] == "-" and text[j + 3] in SPACE
        chunk = text[i:j].rstrip(SPACE) if trim else text[i:j]
        if chunk:
            tokens.append(Token("text", chunk, i))
        k = j + (4 if trim else 2)
        if text.startswith("/*", k):
            close = text.find("*/", k + 2)
            if close < 0:
                raise ParseError("unclosed comment", j)
            delim, trim_right, after = _right_delim(text, close + 2)
            if not delim:
                raise ParseError("comment ends before closing delimiter", j)
        else:
            tokens.append(Token("left", "{{", j))
            after, trim_right = _lex_action(text, k, j, tokens)
        i = after
        if trim_right:
            while i < n and text[i] in SPACE:
                i += 1
    tokens.append(Token("eof", "", n))
    return tokens


def _alnum(char: str) -> bool:
    return char == "_" or char.isalpha() or unicodedata.category(char) == "Nd"


def _right_delim(text: str, k: int) -> tuple[bool, bool, int]:
    """Whether a right delimiter starts at k, whether it trims (" -}}"), and where it ends."""
    if k + 1 < len(text) and text[k] in SPACE and text.startswith("-}}", k + 1):
        return True, True, k + 4
    if text.startswith("}}", k):
        return True, False, k + 2
    return False, False, k


def _at_terminator(text: str, k: int) -> bool:
    """Whether an identifier, field or variable may end at k (Go's atTerminator)."""
    return k >= len(text) or text[k] in SPACE or text[k] in ".,|:()" or text.startswith("}}", k)


def _scan_word(text: str, k: int) -> int:
    while k < len(text) and _alnum(text[k]):
        k += 1
    if not _at_terminator(text, k):
        raise ParseError(f"bad character {rune_repr(text[k])}", k)
    return k


def _scan_quoted(text: str, k: int, quote: str, what: str) -> int:
    m = k + 1
    while True:
        if m >= len(text) or text[m] == "\n":
            raise ParseError(f"unterminated {what}", k)
        if text[m] == "\\":
            if m + 1 >= len(text) or text[m + 1] == "\n":
                raise ParseError(f"unterminated {what}", k)
            m += 2
        elif text[m] == quote:
            return m + 1
        else:
            m += 1


def _scan_number(text: str, k: int) -> int:
    """Go's scanNumber: the extent of a number (the parser checks its syntax); -1 if a letter follows."""
    n = len(text)
    m = k

    def accept(chars: str) -> bool:
        nonlocal m
        if m < n and text[m] in chars:
            m += 1
            return True
        return False

    def accept_run(chars: str) -> None:
        nonlocal m
        while m < n and text[m] in chars:
            m += 1

    accept("+-")
    digits = "0123456789_"
    if accept("0"):
        if accept("xX"):
            digits = "0123456789abcdefABCDEF_"
        elif accept("oO"):
            digits = "01234567_"
        elif accept("bB"):
            digits = "01_"
    accept_run(digits)
    if accept("."):
        accept_run(digits)
    if len(digits) == 11 and accept("eE"):
        accept("+-")
        accept_run("0123456789_")
    if len(digits) == 23 and accept("pP"):
        accept("+-")
        accept_run("0123456789_")
    accept("i")
    return -(m + 1) if m < n and _alnum(text[m]) else m


def _lex_number(text: str, k: int, tokens: list[Token]) -> int:
    m = _scan_number(text, k)
    kind = "number"
    if m >= 0 and text[m : m + 1] in ("+", "-"):  # a complex constant: 1+2i, no spaces
        m = _scan_number(text, m)
        if m >= 0 and text[m - 1] != "i":
            raise ParseError(f"bad number syntax: {go_quote(text[k:m])}", k)
        kind = "complex"
    if m < 0:  # a letter follows: the error shows it
        raise ParseError(f"bad number syntax: {go_quote(text[k:-m])}", k)
    tokens.append(Token(kind, text[k:m], k))
    return m


def _lex_action(text: str, k: int, start: int, tokens: list[Token]) -> tuple[int, bool]:
    """Tokens of one action from k; returns where its right delimiter ends and whether it trims."""
    parens = 0
    while True:
        delim, trim, after = _right_delim(text, k)
        if delim:
            if parens:
                raise ParseError("unclosed left paren", k)
            tokens.append(Token("right", "}}", k))
            return after, trim
        if k >= len(text):
            shown = go_quote(text[start : start + 40])
            raise ParseError(
                "unclosed action", start, (start, f"unclosed action: {shown} has no closing }}}}")
            )
        c = text[k]
        if c == "(":
            parens += 1
            tokens.append(Token("lparen", c, k))
            k += 1
        elif c == ")":
            parens -= 1
            if parens < 0:
                raise ParseError(f"unexpected right paren {rune_repr(c)}", k)
            tokens.append(Token("rparen", c, k))
            k += 1
        else:
            k = _lex_token(text, k, tokens)


def _lex_token(text: str, k: int, tokens: list[Token]) -> int:
    """The token at k inside an action (not a delimiter or parenthesis); returns where it ends."""
    n = len(text)
    c = text[k]
    m = k + 1
    kind = ""
    if c in SPACE:
        while m < n and text[m] in SPACE:
            m += 1
        if text.startswith("-}}", m):
            m -= 1  # leave " -}}" whole for the delimiter check
        kind = "space" if m > k else ""
    elif c == ":":
        if not text.startswith("=", m):
            raise ParseError("expected :=", k)
        m, kind = m + 1, "declare"
    elif c in "=|":
        kind = "assign" if c == "=" else "pipe"
    elif c in '"`':
        m, kind = _scan_string(text, k), "string"
    elif c == "'":
        m, kind = _scan_quoted(text, k, "'", "character constant"), "char"
    elif c == "$":
        m, kind = (m if _at_terminator(text, m) else _scan_word(text, m)), "var"
    elif c == "." and not (m < n and "0" <= text[m] <= "9"):
        m, kind = (m, "dot") if _at_terminator(text, m) else (_scan_word(text, m), "field")
    elif c in "+-." or "0" <= c <= "9":
        return _lex_number(text, k, tokens)
    elif _alnum(c):
        m = _scan_word(text, k)
        word = text[k:m]
        kind = "kw" if word in KEYWORDS else "bool" if word in ("true", "false") else "ident"
        kind = "nil" if word == "nil" else kind
    elif c.isascii() and c.isprintable():
        kind = "punct"
    else:
        raise ParseError(f"unrecognized character in action: {rune_repr(c)}", k)
    if kind:
        tokens.append(Token(kind, text[k:m], k))
    return m


def _scan_string(text: str, k: int) -> int:
    if text[k] == '"':
        return _scan_quoted(text, k, '"', "quoted string")
    close = text.find("`", k + 1)
    if close < 0:
        raise ParseError("unterminated raw quoted string", k)
    return close + 1
