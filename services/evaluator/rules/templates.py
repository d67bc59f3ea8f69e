"""Label and annotation templates: Go's text/template as Prometheus expands alert templates.

`parse_template` runs a lexer and recursive-descent parser modelled on text/template/parse, then a check of
the static types it can know (the alert data, `$labels`, `$value`, literals, function results). What Go's
parser refuses, and what fails whenever it runs, is a TemplateError when the rule file loads, never at 3 a.m.
when the alert fires: syntax, unknown functions, undefined variables (`$label`), unterminated actions, a
stray `{{ end }}`, `gt $value 80` (float64 against int), `toUpper $value`, a bad regexp literal. (Stricter
than Go in one way: such code is refused even in a branch or and/or operand that might never run.) Messages
say what is wrong and where: `at <offset>`, plus line and column in multi-line templates.

`Template.render` executes with Prometheus' data and rules: `.Labels`/`$labels`, `.Value`/`$value`,
`.ExternalLabels`/`$externalLabels`, `.ExternalURL`/`$externalURL` (the variables Prometheus declares in
front of every alert template); missingkey=zero, so a missing label prints as ""; values print as Go's
fmt does. Where Go's execution would fail (a string that is not a number given to humanize, say), render
raises TemplateError with Go's message; the caller shows it as Prometheus shows "error expanding template".

The functions live in template_functions; `define`, `template` and `block` are refused (an alert template is
a single template), as are Prometheus' functions that need a query engine or a URL (see REFUSED there).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from services.evaluator.rules.template_functions import (
    DATA_FIELDS,
    DATA_TYPE,
    FUNCTIONS,
    MAP_TYPE,
    REFUSED,
    UNKNOWN_LITERAL,
    FunctionError,
    TemplateData,
    format_value,
    go_quote,
    go_type,
    parse_go_float,
    print_value,
    static_problem,
    static_result,
    truth,
)

__all__ = ["Template", "TemplateError", "format_value", "parse_template"]


class TemplateError(ValueError):
    """A template that cannot be parsed, or (from render) one whose expansion failed."""


def _where(source: str, pos: int) -> str:
    """`at <offset>`, with the line and column (1-based) when the template has several lines."""
    if "\n" not in source:
        return f"at {pos}"
    line = source.count("\n", 0, pos) + 1
    column = pos - source.rfind("\n", 0, pos)
    return f"at {pos} (line {line}, column {column})"


def _error(source: str, pos: int, message: str) -> NoReturn:
    raise TemplateError(f"{_where(source, pos)}: {message}")


def _suggest(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else ""


# Lexing -----------------------------------------------------------------------------------------------------
_SPACE = " \t\r\n"
_KEYWORDS = {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # text left right space ident keyword nil bool number char complex string raw variable field
    #            dot pipe declare assign lparen rparen punct eof
    val: str
    pos: int

    @property
    def end(self) -> int:
        return self.pos + len(self.val)

    def __str__(self) -> str:  # as Go's parser names a token in "unexpected ..."
        if self.kind == "eof":
            return "EOF"
        if self.kind in ("keyword", "nil"):
            return f"<{self.val}>"
        return go_quote(self.val[:10]) + "..." if len(self.val) > 10 else go_quote(self.val)


def _go_rune(ch: str) -> str:
    """Go's %#U: U+00A0, or U+002D '-' for a printable rune."""
    return f"U+{ord(ch):04X}" + (f" '{ch}'" if ch.isprintable() else "")


def _is_alnum(ch: str) -> bool:
    return ch == "_" or ch.isalpha() or ch.isdecimal()


class _Lexer:
    """text/template/parse's lexer: text, then `{{ ... }}` actions as tokens; `{{-`/`-}}` trim the spaces
    around them and `{{/* */}}` comments vanish."""

    def __init__(self, source: str) -> None:
        self.src = source

    def fail(self, pos: int, message: str) -> NoReturn:
        _error(self.src, pos, message)

    def tokens(self) -> Iterator[_Tok]:
        src, pos = self.src, 0
        while True:
            left = src.find("{{", pos)
            if left < 0:
                if pos < len(src):
                    yield _Tok("text", src[pos:], pos)
                yield _Tok("eof", "", len(src))
                return
            inside = left + 2
            trim = src[inside : inside + 1] == "-" and src[inside + 1 : inside + 2] in tuple(_SPACE)
            text_end = pos + len(src[pos:left].rstrip(_SPACE)) if trim else left
            if text_end > pos:
                yield _Tok("text", src[pos:text_end], pos)
            if trim:
                inside += 2
            if src.startswith("/*", inside):
                pos = self.comment(left, inside)
                continue
            yield _Tok("left", "{{", left)
            pos = yield from self.action(left, inside)

    def at_right(self, pos: int) -> tuple[bool, bool]:
        """Whether a right delimiter starts at pos, and whether it trims (` -}}`)."""
        src = self.src
        if src[pos : pos + 1] in tuple(_SPACE) and src.startswith("-}}", pos + 1):
            return True, True
        return src.startswith("}}", pos), False

    def skip_space(self, pos: int) -> int:
        while pos < len(self.src) and self.src[pos] in _SPACE:
            pos += 1
        return pos

    def comment(self, left: int, start: int) -> int:
        close = self.src.find("*/", start + 2)
        if close < 0:
            self.fail(left, "unclosed comment")
        delim, trim = self.at_right(close + 2)
        if not delim:
            self.fail(left, "comment ends before closing delimiter")
        end = close + 2 + (2 if trim else 0) + 2
        return self.skip_space(end) if trim else end

    def action(self, left: int, pos: int) -> Iterator[_Tok]:
        """The tokens of one action, up to and including its right delimiter; returns where text resumes."""
        src, parens = self.src, 0
        while True:
            delim, trim = self.at_right(pos)
            if delim:
                if parens:
                    self.fail(pos, "unclosed left paren")
                pos += 2 if trim else 0
                yield _Tok("right", "}}", pos)
                return self.skip_space(pos + 2) if trim else pos + 2
            if pos >= len(src):
                self.fail(left, f"unclosed action: {go_quote(src[left : left + 40])} has no closing }}}}")
            ch = src[pos]
            if ch in _SPACE:
                end = self.skip_space(pos)
                if src.startswith("-}}", end):  # the last space belongs to a trimming ` -}}`
                    end -= 1
                if end > pos:
                    yield _Tok("space", src[pos:end], pos)
                pos = end
                continue
            if ch == "(":
                parens += 1
            elif ch == ")":
                parens -= 1
                if parens < 0:
                    self.fail(pos, "unexpected right paren")
            token = self.token(pos, ch)
            yield token
            pos = token.end

    def token(self, pos: int, ch: str) -> _Tok:
        src = self.src
        simple = {"=": "assign", "|": "pipe", "(": "lparen", ")": "rparen"}
        if ch in simple:
            return _Tok(simple[ch], ch, pos)
        if ch == ":":
            if not src.startswith(":=", pos):
                self.fail(pos, "expected :=")
            return _Tok("declare", ":=", pos)
        if ch == '"':
            return _Tok("string", src[pos : self.quoted(pos, '"', "unterminated quoted string")], pos)
        if ch == "'":
            return _Tok("char", src[pos : self.quoted(pos, "'", "unterminated character constant")], pos)
        if ch == "`":
            end = src.find("`", pos + 1)
            if end < 0:
                self.fail(pos, "unterminated raw quoted string")
            return _Tok("raw", src[pos : end + 1], pos)
        if ch == "$":
            return self.word(pos, "variable")
        following = src[pos + 1 : pos + 2]
        if ch == "." and not (following and following in "0123456789"):  # .5 is a number
            return self.word(pos, "field")
        if ch in "+-.0123456789":
            return self.number(pos)
        if _is_alnum(ch):
            return self.word(pos, "ident")
        if ch.isascii() and ch.isprintable():
            return _Tok("punct", ch, pos)
        self.fail(pos, f"unrecognized character in action: {_go_rune(ch)}")

    def quoted(self, pos: int, quote: str, message: str) -> int:
        src, i = self.src, pos + 1
        while i < len(src):
            ch = src[i]
            if ch == "\\":
                i += 1
                if i >= len(src) or src[i] == "\n":
                    break
            elif ch == "\n":
                break
            elif ch == quote:
                return i + 1
            i += 1
        self.fail(pos, message)

    def at_terminator(self, pos: int) -> bool:
        """What may follow an identifier, field or variable: space, `.`, `,`, `|`, `:`, parens, `}`."""
        return pos >= len(self.src) or self.src[pos] in _SPACE or self.src[pos] in ".,|:()}"

    def word(self, pos: int, kind: str) -> _Tok:
        src = self.src
        start = pos + 1 if kind in ("variable", "field") else pos
        if kind != "ident" and self.at_terminator(start):
            return _Tok("variable" if kind == "variable" else "dot", src[pos:start], pos)
        end = start
        while end < len(src) and _is_alnum(src[end]):
            end += 1
        if not self.at_terminator(end):
            self.fail(end, f"bad character {_go_rune(src[end])}")
        text = src[pos:end]
        if kind == "ident":
            if text in _KEYWORDS:
                kind = "keyword"
            elif text == "nil":
                kind = "nil"
            elif text in ("true", "false"):
                kind = "bool"
        return _Tok(kind, text, pos)

    def scan_number(self, pos: int) -> int:
        """text/template's scanNumber: sign, base prefix, digits, fraction, exponent, `i`; -1 if an
        alphanumeric character follows."""
        src, n = self.src, len(self.src)

        def run(i: int, chars: str) -> int:
            while i < n and src[i] in chars:
                i += 1
            return i

        pos = run(pos, "+-") if src[pos : pos + 1] in ("+", "-") else pos
        digits = "0123456789_"
        if src[pos : pos + 1] == "0":
            pos += 1
            prefix = src[pos : pos + 1]
            if prefix and prefix in "xX":
                pos, digits = pos + 1, "0123456789abcdefABCDEF_"
            elif prefix and prefix in "oO":
                pos, digits = pos + 1, "01234567_"
            elif prefix and prefix in "bB":
                pos, digits = pos + 1, "01_"
        pos = run(pos, digits)
        if src[pos : pos + 1] == ".":
            pos = run(pos + 1, digits)
        exponent = "eE" if len(digits) == 11 else "pP" if len(digits) == 23 else ""
        if exponent and src[pos : pos + 1] and src[pos] in exponent:
            pos += 1
            if src[pos : pos + 1] in ("+", "-"):
                pos += 1
            pos = run(pos, "0123456789_")
        if src[pos : pos + 1] == "i":
            pos += 1
        return -(pos + 1) if pos < n and _is_alnum(src[pos]) else pos

    def number(self, pos: int) -> _Tok:
        end = self.scan_number(pos)
        if end >= 0 and self.src[end : end + 1] in ("+", "-"):  # a complex constant: 1+2i
            end = self.scan_number(end)
            if end < 0 or self.src[end - 1] != "i":
                self.fail(pos, f"bad number syntax: {go_quote(self.src[pos : abs(end) if end < 0 else end])}")
            return _Tok("complex", self.src[pos:end], pos)
        if end < 0:
            self.fail(pos, f"bad number syntax: {go_quote(self.src[pos:-end])}")
        return _Tok("number", self.src[pos:end], pos)


# Literals ---------------------------------------------------------------------------------------------------
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}


def _unquote(text: str) -> str:
    """strconv.Unquote of a "..." or `...` literal; ValueError for an invalid one."""
    if text[0] == "`":
        return text[1:-1].replace("\r", "")
    out = bytearray()
    for code, is_byte in _escaped(text[1:-1], text[0]):
        out += bytes([code]) if is_byte else chr(code).encode()
    return out.decode(errors="replace")


def _escaped(body: str, quote: str) -> Iterator[tuple[int, bool]]:
    """The code points of a quoted literal's body, and whether each is a raw byte (\\x, \\ooo)."""
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == quote:
            raise ValueError("invalid syntax")
        if ch != "\\":
            yield ord(ch), False
            i += 1
            continue
        esc = body[i + 1]
        if esc in _SIMPLE_ESCAPES or esc == quote:
            yield _SIMPLE_ESCAPES.get(esc, ord(quote)), False
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError("invalid syntax")
            code = int(digits, 16)
            if esc != "x" and (code > 0x10FFFF or 0xD800 <= code < 0xE000):
                raise ValueError("invalid syntax")
            yield code, esc == "x"
            i += 2 + width
        elif esc in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits) or int(digits, 8) > 255:
                raise ValueError("invalid syntax")
            yield int(digits, 8), True
            i += 4
        else:
            raise ValueError("invalid syntax")


def _go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64) without the range check: 0x, 0o, 0b and leading-0 octal, `_`."""
    sign, digits = (text[0], text[1:]) if text[:1] in ("+", "-") else ("", text)
    if len(digits) > 1 and digits[0] == "0" and digits[1] in "01234567_":
        digits = "0o" + digits[1:]
    try:
        value = int(digits, 0)
    except ValueError:
        return None
    return -value if sign == "-" else value


def _number_value(tok: _Tok) -> int | float:
    """A numeric constant as text/template types it when the context does not: int for integer syntax,
    float64 when the text has . e or p (not hex digits), a rune's code for 'x'. ValueError when invalid."""
    text = tok.val
    if tok.kind == "char":
        codes = list(_escaped(text[1:-1], "'"))
        if len(codes) != 1:
            raise ValueError(f"malformed character constant: {text}")
        return codes[0][0]
    value = _go_int(text)
    is_hex_int = text.lstrip("+-")[:2] in ("0x", "0X") and not any(c in text for c in "pP")
    if value is None:
        try:
            value_f = parse_go_float(text)
        except FunctionError:
            raise ValueError(f"illegal number syntax: {go_quote(text)}") from None
        if not any(c in text for c in ".eEpP"):
            raise ValueError(f"integer overflow: {go_quote(text)}")
        return value_f
    if not is_hex_int and any(c in text for c in ".eEpP"):
        return float(value)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{text} overflows int")
    return value


# The tree ---------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Text:
    pos: int
    text: str


@dataclass(slots=True)
class _Dot:
    pos: int
    end: int


@dataclass(slots=True)
class _Nil:
    pos: int
    end: int


@dataclass(slots=True)
class _Literal:
    pos: int
    end: int
    value: bool | int | float | str


@dataclass(slots=True)
class _Field:
    pos: int
    end: int
    names: tuple[str, ...]


@dataclass(slots=True)
class _Variable:
    pos: int
    end: int
    name: str
    names: tuple[str, ...] = ()


@dataclass(slots=True)
class _Ident:
    pos: int
    end: int
    name: str


@dataclass(slots=True)
class _Chain:
    pos: int
    end: int
    node: Any  # an operand
    names: tuple[str, ...]


@dataclass(slots=True)
class _Command:
    pos: int
    end: int
    args: list[Any]


@dataclass(slots=True)
class _Pipe:
    pos: int
    end: int
    decls: list[_Variable]
    is_assign: bool
    cmds: list[_Command]


@dataclass(slots=True)
class _Action:
    pos: int
    pipe: _Pipe


@dataclass(slots=True)
class _Control:
    pos: int
    kind: str  # if | with | range
    pipe: _Pipe
    body: list[Any]
    else_body: list[Any] | None


@dataclass(slots=True)
class _Jump:
    pos: int
    kind: str  # break | continue


@dataclass(slots=True)
class _Stop:  # {{end}} or {{else}} ending a list
    pos: int
    word: str


# Variables Prometheus declares in front of every alert template, with their static types.
_PREDEFINED = {
    "$": DATA_TYPE,
    "$labels": MAP_TYPE,
    "$externalLabels": MAP_TYPE,
    "$externalURL": "string",
    "$value": "float64",
}
_TERM_KINDS = {
    "bool",
    "char",
    "complex",
    "dot",
    "field",
    "ident",
    "number",
    "nil",
    "raw",
    "string",
    "variable",
}


# Parsing ----------------------------------------------------------------------------------------------------
class _Parser:
    """text/template/parse's recursive descent, with its scoping of variable declarations."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.lexer = _Lexer(source).tokens()
        self.toks: list[_Tok] = []
        self.i = 0
        self.vars: list[str] = list(_PREDEFINED)
        self.assigned: set[str] = set()  # variables ever assigned with `=`: their static type is unknown
        self.range_depth = 0

    def fail(self, pos: int, message: str) -> NoReturn:
        _error(self.src, pos, message)

    def next(self) -> _Tok:
        while len(self.toks) <= self.i:
            self.toks.append(next(self.lexer, None) or self.toks[-1])
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> _Tok:
        tok = self.next()
        self.backup()
        return tok

    def next_non_space(self) -> _Tok:
        tok = self.next()
        while tok.kind == "space":
            tok = self.next()
        return tok

    def peek_non_space(self) -> _Tok:
        tok = self.next_non_space()
        self.backup()
        return tok

    def unexpected(self, tok: _Tok, context: str) -> NoReturn:
        self.fail(tok.pos, f"unexpected {tok} in {context}")

    def parse(self) -> list[Any]:
        nodes: list[Any] = []
        while self.peek().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, _Stop):
                self.fail(node.pos, f"unexpected {{{{{node.word}}}}}")
            nodes.append(node)
        return nodes

    def text_or_action(self) -> Any:
        tok = self.next_non_space()
        if tok.kind == "text":
            return _Text(tok.pos, tok.val)
        if tok.kind == "left":
            return self.action()
        self.unexpected(tok, "input")

    def action(self) -> Any:
        tok = self.next_non_space()
        if tok.kind == "keyword":
            word = tok.val
            if word in ("block", "define", "template"):
                self.fail(tok.pos, f"{{{{{word}}}}} is not supported: an alert template is a single template")
            if word in ("break", "continue"):
                after = self.next_non_space()
                if after.kind != "right":
                    self.unexpected(after, f"{{{{{word}}}}}")
                if not self.range_depth:
                    self.fail(tok.pos, f"{{{{{word}}}}} outside {{{{range}}}}")
                return _Jump(tok.pos, word)
            if word == "end":
                after = self.next_non_space()
                if after.kind != "right":
                    self.unexpected(after, "end")
                return _Stop(tok.pos, "end")
            if word == "else":
                following = self.peek_non_space()
                if not (following.kind == "keyword" and following.val in ("if", "with")):
                    after = self.next_non_space()
                    if after.kind != "right":
                        self.unexpected(after, "else")
                return _Stop(tok.pos, "else")
            return self.control(tok)
        self.backup()
        pipe = self.pipeline("command", "right")
        return _Action(pipe.pos, pipe)

    def control(self, opener: _Tok) -> _Control:
        """if/with/range: the pipeline's variables live to the matching {{end}}, the body's to its end."""
        context, mark = opener.val, len(self.vars)
        pipe = self.pipeline(context, "right")
        body_mark = len(self.vars)
        self.range_depth += context == "range"
        body, stop = self.item_list(opener)
        self.range_depth -= context == "range"
        del self.vars[body_mark:]
        else_body = None
        if stop.word == "else":
            following = self.peek()
            if context in ("if", "with") and following.kind == "keyword" and following.val == context:
                else_body = [self.control(self.next())]  # {{else if}} shares the outer {{end}}
            else:
                else_body, stop = self.item_list(opener)
                del self.vars[body_mark:]
                if stop.word != "end":
                    self.fail(stop.pos, "expected end; found {{else}}")
        del self.vars[mark:]
        return _Control(opener.pos, context, pipe, body, else_body)

    def item_list(self, opener: _Tok) -> tuple[list[Any], _Stop]:
        nodes: list[Any] = []
        while self.peek_non_space().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, _Stop):
                return nodes, node
            nodes.append(node)
        self.fail(opener.pos, f"unexpected EOF: {{{{{opener.val}}}}} has no matching {{{{end}}}}")

    def declarations(self, context: str) -> tuple[list[_Variable], bool]:
        """`$x :=`, `$x =` or (range only) `$k, $v :=` at the start of a pipeline."""
        decls: list[_Variable] = []
        while self.peek_non_space().kind == "variable":
            saved = self.i
            var = self.next_non_space()
            following = self.peek_non_space()
            if following.kind in ("declare", "assign"):
                self.next_non_space()
                decls.append(_Variable(var.pos, var.end, var.val))
                return decls, following.kind == "assign"
            if following.kind == "punct" and following.val == ",":
                self.next_non_space()
                decls.append(_Variable(var.pos, var.end, var.val))
                if context == "range" and len(decls) < 2:
                    if self.peek_non_space().kind == "variable":
                        continue
                    self.fail(self.peek_non_space().pos, "range can only initialize variables")
                self.fail(var.pos, f"too many declarations in {context}")
            self.i = saved  # not a declaration: the variable starts the first command
            break
        if decls:
            self.fail(decls[0].pos, f"missing := after the variables of {context}")
        return decls, False

    def pipeline(self, context: str, end: str) -> _Pipe:
        start = self.peek_non_space()
        decls, is_assign = self.declarations(context)
        cmds: list[_Command] = []
        pipe_tok: _Tok | None = None
        while True:
            tok = self.next_non_space()
            if tok.kind == end:
                break
            if tok.kind not in _TERM_KINDS and tok.kind != "lparen":
                self.unexpected(tok, context)
            self.backup()
            command, pipe_tok = self.command()
            cmds.append(command)
        if not cmds:
            self.fail(tok.pos, f"missing value for {context}")
        if pipe_tok is not None:
            self.fail(pipe_tok.pos, "missing command after |")
        for stage, command in enumerate(cmds[1:], start=2):
            if isinstance(command.args[0], _Dot | _Nil | _Literal):
                self.fail(command.pos, f"non executable command in pipeline stage {stage}")
        for var in decls:
            if is_assign:
                self.use_var(var)
                self.assigned.add(var.name)
            else:  # declared after its pipeline: `$x := $x` refers to an outer $x or fails
                self.vars.append(var.name)
        # A parenthesized pipeline ends at its `)`; an action's at its last command.
        return _Pipe(start.pos, tok.end if end == "rparen" else cmds[-1].end, decls, is_assign, cmds)

    def command(self) -> tuple[_Command, _Tok | None]:
        """Operands separated by spaces, up to `|` (returned) or the end of the pipeline."""
        start = self.peek_non_space()
        args: list[Any] = []
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                args.append(operand)
            tok = self.next()
            if tok.kind == "space":
                continue
            if tok.kind in ("right", "rparen"):
                self.backup()
                pipe_tok = None
            elif tok.kind == "pipe":
                pipe_tok = tok
            else:
                self.unexpected(tok, "operand")
            break
        if not args:
            self.fail(start.pos, "empty command")
        return _Command(start.pos, args[-1].end, args), pipe_tok

    def operand(self) -> Any:
        node = self.term()
        if node is None or self.peek().kind != "field":
            return node
        names: list[str] = []
        end = node.end
        while self.peek().kind == "field":
            tok = self.next()
            names.append(tok.val[1:])
            end = tok.end
        if isinstance(node, _Field):
            return _Field(node.pos, end, node.names + tuple(names))
        if isinstance(node, _Variable):
            return _Variable(node.pos, end, node.name, node.names + tuple(names))
        if isinstance(node, _Dot | _Nil | _Literal):
            self.fail(node.pos, f"unexpected . after term {go_quote(self.src[node.pos : node.end])}")
        return _Chain(node.pos, end, node, tuple(names))

    def term(self) -> Any:
        tok = self.next_non_space()
        kind = tok.kind
        if kind == "ident":
            self.check_function(tok)
            return _Ident(tok.pos, tok.end, tok.val)
        if kind == "dot":
            return _Dot(tok.pos, tok.end)
        if kind == "nil":
            return _Nil(tok.pos, tok.end)
        if kind == "variable":
            return self.use_var(_Variable(tok.pos, tok.end, tok.val))
        if kind == "field":
            return _Field(tok.pos, tok.end, (tok.val[1:],))
        if kind == "bool":
            return _Literal(tok.pos, tok.end, tok.val == "true")
        if kind in ("number", "char"):
            try:
                return _Literal(tok.pos, tok.end, _number_value(tok))
            except ValueError as exc:
                self.fail(tok.pos, str(exc))
        if kind == "complex":
            self.fail(tok.pos, f"complex constant {tok.val} is not supported")
        if kind == "lparen":
            pipe = self.pipeline("parenthesized pipeline", "rparen")
            pipe.pos = tok.pos
            return pipe
        if kind in ("string", "raw"):
            try:
                return _Literal(tok.pos, tok.end, _unquote(tok.val))
            except ValueError:
                self.fail(tok.pos, f"invalid string literal {tok.val}: invalid syntax")
        self.backup()
        return None

    def check_function(self, tok: _Tok) -> None:
        name = tok.val
        if name in REFUSED:
            self.fail(tok.pos, f'function "{name}" is not supported by tripwire: {REFUSED[name]}')
        if name not in FUNCTIONS:
            self.fail(tok.pos, f'function "{name}" not defined{_suggest(name, FUNCTIONS)}')

    def use_var(self, var: _Variable) -> _Variable:
        if var.name not in self.vars:
            self.fail(var.pos, f'undefined variable "{var.name}"{_suggest(var.name, set(self.vars))}')
        return var


# Load-time type check ---------------------------------------------------------------------------------------
_ANY, _NIL = "any", "<nil>"


class _Checker:
    """Walks the tree with the static types it can know (Go type names; "any" when it cannot) and fails on
    what would fail on every expansion: fields of values that have none, non-functions given arguments,
    wrong argument counts and types, comparisons of different kinds, bad literal patterns and numbers."""

    def __init__(self, source: str, assigned: set[str]) -> None:
        self.src = source
        self.assigned = assigned
        self.scopes: list[tuple[str, str]] = [
            (n, _ANY if n in assigned else t) for n, t in _PREDEFINED.items()
        ]

    def fail(self, node: Any, message: str) -> NoReturn:
        _error(self.src, node.pos, message)

    def text(self, node: Any) -> str:
        return self.src[node.pos : node.end]

    def walk(self, nodes: list[Any], dot: str) -> None:
        for node in nodes:
            if isinstance(node, _Action):
                self.pipe(node.pipe, dot)
            elif isinstance(node, _Control):
                mark = len(self.scopes)
                result = self.pipe(node.pipe, dot)
                inner = dot if node.kind == "if" else result
                if node.kind == "range":
                    inner = self.range_element(node, result)
                body_mark = len(self.scopes)
                self.walk(node.body, inner)
                del self.scopes[body_mark:]
                if node.else_body is not None:
                    self.walk(node.else_body, dot)
                del self.scopes[mark:]

    def range_element(self, node: _Control, over: str) -> str:
        """The element type of a range, typing its variables: one gets the element, two key and element."""
        decls = node.pipe.decls
        if over == MAP_TYPE:
            key, element = "string", "string"
        elif over == "int":
            if len(decls) > 1:
                self.fail(node.pipe, "can't use an int to iterate over more than one variable")
            key, element = "int", "int"
        elif over in (_ANY, _NIL):
            key, element = _ANY, _ANY
        else:
            self.fail(node.pipe, f"range can't iterate over a {over}")
        if not node.pipe.is_assign:
            types = [element] if len(decls) == 1 else [key, element]
            base = len(self.scopes) - len(decls)  # the pipeline declared them last
            for offset, var in enumerate(decls):
                static = _ANY if var.name in self.assigned else types[offset]
                self.scopes[base + offset] = (var.name, static)
        return element

    def var_type(self, name: str) -> str:
        for var, static in reversed(self.scopes):
            if var == name:
                return static
        return _ANY

    def pipe(self, pipe: _Pipe, dot: str) -> str:
        result = _ANY
        for stage, command in enumerate(pipe.cmds):
            result = self.command(command, dot, result if stage else None)
        if not pipe.is_assign:
            for var in pipe.decls:
                self.scopes.append((var.name, _ANY if var.name in self.assigned else result))
        return result

    def command(self, command: _Command, dot: str, final: str | None) -> str:
        first = command.args[0]
        has_args = len(command.args) > 1 or final is not None
        if isinstance(first, _Field):
            return self.fields(dot, first, has_args)
        if isinstance(first, _Chain):
            if isinstance(first.node, _Nil):
                self.fail(first, f"indirection through explicit nil in {self.text(first)}")
            return self.fields(self.arg(first.node, dot), first, has_args)
        if isinstance(first, _Ident):
            return self.call(first, command.args[1:], final, dot, command)
        if isinstance(first, _Variable) and first.names:
            return self.fields(self.var_type(first.name), first, has_args)
        if has_args:
            self.fail(first, f"can't give argument to non-function {self.text(first)}")
        if isinstance(first, _Nil):
            self.fail(first, "nil is not a command")
        return self.arg(first, dot)

    def fields(self, static: str, node: Any, has_args: bool) -> str:
        for i, name in enumerate(node.names):
            last = i == len(node.names) - 1
            if static == DATA_TYPE:
                if name not in DATA_FIELDS:
                    fields = ", ".join(f".{f}" for f in DATA_FIELDS)
                    self.fail(node, f"can't evaluate field {name}: the alert data has only {fields}")
                if last and has_args:
                    self.fail(node, f"{name} has arguments but cannot be invoked as function")
                static = DATA_FIELDS[name]
            elif static == MAP_TYPE:
                if last and has_args:
                    self.fail(node, f"{name} is not a method but has arguments")
                static = "string"
            elif static in (_ANY, _NIL):
                return _ANY
            else:
                self.fail(node, f"can't evaluate field {name} in type {static}")
        return static

    def arg(self, node: Any, dot: str) -> str:
        """The static type of an operand used as an argument (or alone)."""
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Nil):
            return _NIL
        if isinstance(node, _Literal):
            return go_type(node.value)
        if isinstance(node, _Field):
            return self.fields(dot, node, False)
        if isinstance(node, _Variable):
            static = self.var_type(node.name)
            return self.fields(static, node, False) if node.names else static
        if isinstance(node, _Chain):
            return self.fields(self.arg(node.node, dot), node, False)
        if isinstance(node, _Pipe):
            return self.pipe(node, dot)
        return self.call(node, [], None, dot, node)

    def call(self, ident: _Ident, args: list[Any], final: str | None, dot: str, at: Any) -> str:
        name, function = ident.name, FUNCTIONS[ident.name]
        count, fixed = len(args) + (final is not None), len(function.params)
        if function.variadic is None and count != fixed:
            self.fail(at, f"wrong number of args for {name}: want {fixed} got {count}")
        if count < fixed:
            self.fail(at, f"wrong number of args for {name}: want at least {fixed} got {count}")
        kinds = [function.params[i] if i < fixed else function.variadic for i in range(count)]
        types: list[str] = []
        for kind, node in zip(kinds, args, strict=False):
            if isinstance(node, _Nil):
                if kind != "any":
                    self.fail(node, f"cannot assign nil to {'reflect.Value' if kind == 'value' else kind}")
                types.append(_NIL)
                continue
            if kind == "string" and isinstance(node, _Literal) and not isinstance(node.value, str):
                self.fail(node, f"expected string; found {self.text(node)}")
            types.append(self.arg(node, dot))
            self.check_kind(types[-1], kind, node, name)
        if final is not None:
            self.check_kind(final, kinds[-1] or "any", at, name)
            types.append(final)
        literals = [a.value if isinstance(a, _Literal) else UNKNOWN_LITERAL for a in args]
        problem = static_problem(name, types, literals + [UNKNOWN_LITERAL] * (final is not None))
        if problem:
            self.fail(at, problem)
        return static_result(name, types)

    def check_kind(self, static: str, kind: str | None, node: Any, name: str) -> None:
        if kind != "string" or static in ("string", _ANY):
            return
        if static == _NIL:
            self.fail(node, f"invalid value; expected string (argument to {name})")
        self.fail(node, f"wrong type for value; expected string; got {static} (argument to {name})")


# Execution --------------------------------------------------------------------------------------------------
class _Missing:
    """No value piped into a command (text/template's missingVal)."""


_MISSING = _Missing()


class _BreakLoop(Exception):
    pass


class _ContinueLoop(Exception):
    pass


class _Exec:
    """text/template's exec: walks the tree over the alert data with a stack of variables."""

    def __init__(self, source: str, data: TemplateData) -> None:
        self.src = source
        self.vars: list[list[Any]] = [
            ["$", data],
            ["$labels", data.labels],
            ["$externalLabels", data.external_labels],
            ["$externalURL", data.external_url],
            ["$value", data.value],
        ]
        self.out: list[str] = []

    def fail(self, node: Any, message: str) -> NoReturn:
        _error(self.src, node.pos, f"executing <{self.src[node.pos : node.end]}>: {message}")

    def walk(self, dot: Any, nodes: list[Any]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.out.append(node.text)
            elif isinstance(node, _Action):
                value = self.pipeline(dot, node.pipe)
                if not node.pipe.decls:
                    self.out.append(print_value(value))
            elif isinstance(node, _Control):
                if node.kind == "range":
                    self.range(dot, node)
                else:
                    self.if_with(dot, node)
            else:
                raise _BreakLoop if node.kind == "break" else _ContinueLoop

    def if_with(self, dot: Any, node: _Control) -> None:
        mark = len(self.vars)
        try:
            value = self.pipeline(dot, node.pipe)
            if truth(value):
                self.walk(value if node.kind == "with" else dot, node.body)
            elif node.else_body is not None:
                self.walk(dot, node.else_body)
        finally:
            del self.vars[mark:]

    def range(self, dot: Any, node: _Control) -> None:
        mark = len(self.vars)
        try:
            over = self.pipeline(dot, node.pipe)
            decls = node.pipe.decls
            if isinstance(over, dict):
                items = [(key, over[key]) for key in sorted(over)]
            elif isinstance(over, int) and not isinstance(over, bool):
                if len(decls) > 1:
                    self.fail(node.pipe, f"can't use {over} to iterate over more than one variable")
                items = [(i, i) for i in range(over)]
            elif over is None:
                items = []
            else:
                self.fail(node.pipe, f"range can't iterate over {print_value(over)}")
            inner = len(self.vars)
            for key, element in items:
                self.set_range_vars(node.pipe, inner, key, element)
                try:
                    self.walk(element, node.body)
                except _ContinueLoop:
                    pass
                except _BreakLoop:
                    break
                finally:
                    del self.vars[inner:]
            if not items and node.else_body is not None:
                self.walk(dot, node.else_body)
        finally:
            del self.vars[mark:]

    def set_range_vars(self, pipe: _Pipe, inner: int, key: Any, element: Any) -> None:
        """One variable gets the element; two get the key and the element."""
        values = [element] if len(pipe.decls) == 1 else [key, element]
        for var, value in zip(pipe.decls, values, strict=False):
            if pipe.is_assign:
                self.set_var(var.name, value)
        if not pipe.is_assign:
            for offset, value in enumerate(reversed(values), start=1):
                self.vars[inner - offset][1] = value

    def var(self, node: _Variable) -> Any:
        for name, value in reversed(self.vars):
            if name == node.name:
                return value
        self.fail(node, f"undefined variable: {node.name}")

    def set_var(self, name: str, value: Any) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return

    def pipeline(self, dot: Any, pipe: _Pipe) -> Any:
        value: Any = _MISSING
        for command in pipe.cmds:
            value = self.command(dot, command, value)
        for var in pipe.decls:
            if pipe.is_assign:
                self.set_var(var.name, value)
            else:
                self.vars.append([var.name, value])
        return value

    def command(self, dot: Any, command: _Command, final: Any) -> Any:
        first = command.args[0]
        has_args = len(command.args) > 1 or final is not _MISSING
        if isinstance(first, _Field):
            return self.fields(dot, first, has_args)
        if isinstance(first, _Chain):
            return self.fields(self.arg(dot, first.node), first, has_args)
        if isinstance(first, _Ident):
            return self.call(dot, first, command.args[1:], final, command)
        if isinstance(first, _Variable) and first.names:
            return self.fields(self.var(first), first, has_args)
        if has_args:
            self.fail(first, f"can't give argument to non-function {self.src[first.pos : first.end]}")
        if isinstance(first, _Nil):
            self.fail(first, "nil is not a command")
        return self.arg(dot, first)

    def fields(self, receiver: Any, node: Any, has_args: bool) -> Any:
        for i, name in enumerate(node.names):
            last = i == len(node.names) - 1
            if receiver is None:  # a field of nothing is nothing (Go's zero reflect.Value)
                return None
            if isinstance(receiver, TemplateData) and name in DATA_FIELDS:
                if last and has_args:
                    self.fail(node, f"{name} has arguments but cannot be invoked as function")
                receiver = receiver.field(name)
            elif isinstance(receiver, dict):
                if last and has_args:
                    self.fail(node, f"{name} is not a method but has arguments")
                receiver = receiver.get(name, "")  # missingkey=zero: a map[string]string's zero value
            else:
                self.fail(node, f"can't evaluate field {name} in type {go_type(receiver)}")
        return receiver

    def arg(self, dot: Any, node: Any) -> Any:
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Nil):
            return None
        if isinstance(node, _Literal):
            return node.value
        if isinstance(node, _Field):
            return self.fields(dot, node, False)
        if isinstance(node, _Variable):
            value = self.var(node)
            return self.fields(value, node, False) if node.names else value
        if isinstance(node, _Chain):
            return self.fields(self.arg(dot, node.node), node, False)
        if isinstance(node, _Pipe):
            return self.pipeline(dot, node)
        return self.call(dot, node, [], _MISSING, node)

    def checked(self, value: Any, kind: str | None, node: Any) -> Any:
        """A value passed for a parameter of this kind (text/template's validateType)."""
        if kind == "string" and not isinstance(value, str):
            if value is None:
                self.fail(node, "invalid value; expected string")
            self.fail(node, f"wrong type for value; expected string; got {go_type(value)}")
        if kind == "value" and value is None:
            self.fail(node, "invalid value; expected reflect.Value")
        return value

    def call(self, dot: Any, ident: _Ident, args: list[Any], final: Any, at: Any) -> Any:
        name, function = ident.name, FUNCTIONS[ident.name]
        count, fixed = len(args) + (final is not _MISSING), len(function.params)
        if (function.variadic is None and count != fixed) or count < fixed:
            want = f"at least {fixed}" if function.variadic else str(fixed)
            self.fail(at, f"wrong number of args for {name}: want {want} got {count}")
        kinds = [function.params[i] if i < fixed else function.variadic for i in range(count)]
        if function.impl is None:  # and/or evaluate their arguments only until the result is known
            value = None
            for kind, node in zip(kinds, args, strict=False):
                value = self.checked(self.arg(dot, node), kind, node)
                if truth(value) == (name == "or"):
                    return value
            return value if final is _MISSING else self.checked(final, kinds[-1], at)
        values = [
            self.checked(self.arg(dot, node), kind, node) for kind, node in zip(kinds, args, strict=False)
        ]
        if final is not _MISSING:
            values.append(self.checked(final, kinds[-1], at))
        try:
            return function.impl(*values)
        except FunctionError as exc:
            self.fail(at, f"error calling {name}: {exc}")


# The interface ----------------------------------------------------------------------------------------------
class Template:
    """A parsed template; `render` fills it in. Two templates are equal when their sources are."""

    __slots__ = ("_tree", "source")

    def __init__(self, source: str, tree: list[Any]) -> None:
        self.source = source
        self._tree = tree

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def render(
        self, labels: dict[str, str], value: float, external_labels: dict[str, str], external_url: str = ""
    ) -> str:
        """Expand with Prometheus' alert data. Raises TemplateError where Go's execution would fail."""
        runner = _Exec(self.source, TemplateData(labels, external_labels, external_url, value))
        try:
            runner.walk(runner.vars[0][1], self._tree)
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateError("template nested too deeply to expand") from None
        return "".join(runner.out)


def parse_template(source: str) -> Template:
    """Parse `source`; raises TemplateError saying what is wrong and where (`at <offset>: ...`)."""
    parser = _Parser(source)
    try:
        tree = parser.parse()
        _Checker(source, parser.assigned).walk(tree, DATA_TYPE)
    except RecursionError:
        raise TemplateError("template nested too deeply to parse") from None
    return Template(source, tree)
