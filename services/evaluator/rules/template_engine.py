"""A Go text/template interpreter for the subset Prometheus alert templates use: lexer, parser, executor.

The parser checks what Go's parser checks (syntax, defined functions, defined variables), so errors surface
when a rule file loads. The executor follows text/template's rules for truth, printing, field access on maps
(missing keys are the zero value, as Prometheus runs with missingkey=zero), pipelines (the piped value is the
last argument) and variable scopes (to the `end` of the control structure that declares them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.evaluator.rules.template_functions import FUNCTIONS, REFUSED, go_print, truth
from services.evaluator.rules.templates import TemplateError

# Variables Prometheus defines before every alert template.
PREDEFINED = ("$", "$labels", "$externalLabels", "$externalURL", "$value")
_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}


# Lexing ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    kind: str  # string number bool nil var field ident ( ) | , := =
    value: Any
    pos: int


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)')
  | (?P<declare>:=)
  | (?P<punct>[()|,=])
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?))
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f",
            "v": "\v", "0": "\0"}  # fmt: skip


def _unquote(text: str, pos: int) -> str:
    out, i = [], 1
    while i < len(text) - 1:
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[nxt]
            out.append(chr(int(text[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            raise TemplateError(f"at {pos}: unknown escape sequence \\{nxt}")
    return "".join(out)


def _lex(text: str, offset: int) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            raise TemplateError(f"at {offset + i}: unexpected {text[i]!r} in action")
        kind, raw = m.lastgroup, m.group()
        pos = offset + i
        i = m.end()
        if kind == "space":
            continue
        if kind == "string":
            tokens.append(Token("string", _unquote(raw, pos), pos))
        elif kind == "raw":
            tokens.append(Token("string", raw[1:-1], pos))
        elif kind == "char":
            tokens.append(Token("number", ord(_unquote(raw, pos)), pos))
        elif kind == "number":
            clean = raw.replace("_", "")
            is_float = not clean.lower().lstrip("+-").startswith("0x") and any(c in clean for c in ".eE")
            value: Any = float(clean) if is_float else int(clean, 0)
            tokens.append(Token("number", value, pos))
        elif kind == "ident" and raw in ("true", "false"):
            tokens.append(Token("bool", raw == "true", pos))
        elif kind == "ident" and raw == "nil":
            tokens.append(Token("nil", None, pos))
        elif kind in ("punct", "declare"):
            tokens.append(Token(raw, raw, pos))
        else:
            tokens.append(Token(kind, raw, pos))  # type: ignore[arg-type]
    return tokens


# Tree ------------------------------------------------------------------------------------------------------
@dataclass
class Pipe:
    decl: list[str] = field(default_factory=list)
    assign: bool = False  # `=` (assign an existing variable) rather than `:=`
    commands: list[list[Any]] = field(default_factory=list)  # each: operands; operand: (kind, ...)


@dataclass
class Control:
    kind: str  # if | with | range
    pipe: Pipe
    body: list[Any] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)


def _split_actions(source: str) -> list[tuple[str, Any, int]]:
    """Text and action pieces, with `{{-`/`-}}` trimming applied and comments dropped."""
    pieces: list[tuple[str, Any, int]] = []
    pos = 0
    while True:
        start = source.find("{{", pos)
        if start < 0:
            if source[pos:]:
                pieces.append(("text", source[pos:], pos))
            return pieces
        text = source[pos:start]
        inner = start + 2
        if (
            source.startswith("- ", inner)
            or source.startswith("-\t", inner)
            or source.startswith("-\n", inner)
        ):
            text = text.rstrip()
            inner += 1
        if text:
            pieces.append(("text", text, pos))
        end = _action_end(source, inner, start)
        body = source[inner:end]
        trim_right = body.endswith((" -", "\t-", "\n-"))
        if trim_right:
            body = body[:-1]
        pos = end + 2
        if trim_right:
            while pos < len(source) and source[pos].isspace():
                pos += 1
        stripped = body.strip()
        if stripped.startswith("/*"):
            if not stripped.endswith("*/"):
                raise TemplateError(f"at {start}: unclosed comment")
            continue
        pieces.append(("action", _lex(body, inner), start))


def _action_end(source: str, i: int, start: int) -> int:
    """Index of the `}}` closing the action that starts before `i`, skipping quoted strings."""
    quote = None
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\" and quote != "`":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"`'":
            quote = ch
        elif source.startswith("}}", i):
            return i
        i += 1
    raise TemplateError(f"at {start}: unclosed action: '{{{{' without a matching '}}}}'")


class _Parser:
    def __init__(self, source: str) -> None:
        self.pieces = _split_actions(source)
        self.scopes: list[set[str]] = [set(PREDEFINED)]

    def parse(self) -> list[Any]:
        body, stop = self._list()
        if stop is not None:
            raise TemplateError(f"at {stop[1]}: unexpected {{{{ {stop[0]} }}}}")
        return body

    def _list(self) -> tuple[list[Any], tuple[str, int, list[Token]] | None]:
        """Nodes until `else`/`end` (returned as the stop) or the end of input."""
        nodes: list[Any] = []
        while self.pieces:
            kind, payload, pos = self.pieces.pop(0)
            if kind == "text":
                nodes.append(payload)
                continue
            tokens: list[Token] = payload
            if not tokens:
                raise TemplateError(f"at {pos}: missing value for command")
            head = tokens[0]
            if head.kind == "ident" and head.value in ("else", "end"):
                return nodes, (head.value, pos, tokens[1:])
            if head.kind == "ident" and head.value in ("if", "with", "range"):
                nodes.append(self._control(head.value, tokens[1:], pos))
                continue
            if head.kind == "ident" and head.value in _KEYWORDS:
                raise TemplateError(f"at {pos}: {{{{ {head.value} }}}} is not supported in alert templates")
            nodes.append(self._pipe(tokens, pos))
        return nodes, None

    def _control(self, kind: str, tokens: list[Token], pos: int) -> Control:
        self.scopes.append(set())
        try:
            node = Control(kind, self._pipe(tokens, pos, allow_two=kind == "range"))
            node.body, stop = self._list()
            node.otherwise = self._else_chain(stop, pos, kind)
            return node
        finally:
            self.scopes.pop()

    def _else_chain(self, stop: tuple[str, int, list[Token]] | None, pos: int, kind: str) -> list[Any]:
        """What follows a control's body: nothing (`end`), an `else` list, or an `else if`/`else with` chain
        that shares the one `end`."""
        if stop is None:
            raise TemplateError(f"at {pos}: unexpected EOF: {{{{ {kind} }}}} has no {{{{ end }}}}")
        word, at, rest = stop
        if word == "end":
            if rest:
                raise TemplateError(f"at {at}: unexpected {rest[0].value!r} in end")
            return []
        if rest and rest[0].kind == "ident" and rest[0].value in ("if", "with"):
            self.scopes.append(set())
            try:
                nested = Control(rest[0].value, self._pipe(rest[1:], at))
                nested.body, after = self._list()
                nested.otherwise = self._else_chain(after, pos, kind)
            finally:
                self.scopes.pop()
            return [nested]
        if rest:
            raise TemplateError(f"at {at}: unexpected {rest[0].value!r} in else")
        otherwise, after = self._list()
        if after is None or after[0] != "end":
            raise TemplateError(f"at {pos}: unexpected EOF: {{{{ {kind} }}}} has no {{{{ end }}}}")
        if after[2]:
            raise TemplateError(f"at {after[1]}: unexpected {after[2][0].value!r} in end")
        return otherwise

    def _pipe(self, tokens: list[Token], pos: int, allow_two: bool = False) -> Pipe:
        pipe = Pipe()
        decl = [t.value for t in tokens[:3] if t.kind == "var"]
        if len(tokens) >= 2 and tokens[0].kind == "var" and tokens[1].kind in (":=", "="):
            pipe.decl, pipe.assign, tokens = [tokens[0].value], tokens[1].kind == "=", tokens[2:]
        elif (
            allow_two
            and len(tokens) >= 4
            and tokens[0].kind == "var"
            and tokens[1].kind == ","
            and tokens[2].kind == "var"
            and tokens[3].kind in (":=", "=")
        ):
            pipe.decl, tokens = decl[:2], tokens[4:]
        if not tokens:
            raise TemplateError(f"at {pos}: missing value for command")
        command: list[Any] = []
        depth_tokens = list(tokens)
        while depth_tokens:
            token = depth_tokens.pop(0)
            if token.kind == "|":
                if not command:
                    raise TemplateError(f"at {token.pos}: missing command before '|'")
                pipe.commands.append(command)
                command = []
                continue
            command.append(self._operand(token, depth_tokens, pos))
        if not command:
            raise TemplateError(f"at {pos}: missing command after '|'")
        pipe.commands.append(command)
        for name in pipe.decl:
            if pipe.assign:
                self._check_var(name, pos)
            else:
                self.scopes[-1].add(name)
        return pipe

    def _operand(self, token: Token, rest: list[Token], pos: int) -> tuple[Any, ...]:
        if token.kind == "(":
            depth, inner = 1, []
            while rest:
                t = rest.pop(0)
                depth += {"(": 1, ")": -1}.get(t.kind, 0)
                if depth == 0:
                    break
                inner.append(t)
            else:
                raise TemplateError(f"at {token.pos}: unclosed left paren")
            return ("pipe", self._pipe(inner, token.pos))
        if token.kind in ("string", "number", "bool", "nil"):
            return ("const", token.value)
        if token.kind == "field":
            chain = tuple(p for p in token.value.split(".") if p)
            return ("field", chain)
        if token.kind == "var":
            name, *chain = token.value.split(".")
            self._check_var(name, token.pos)
            return ("var", name, tuple(chain))
        if token.kind == "ident":
            name = token.value
            if name in REFUSED:
                raise TemplateError(
                    f'at {token.pos}: function "{name}" is not supported by tripwire ({REFUSED[name]})'
                )
            if name not in FUNCTIONS:
                raise TemplateError(f'at {token.pos}: function "{name}" not defined')
            return ("func", name)
        raise TemplateError(f"at {token.pos}: unexpected {token.value!r} in command")

    def _check_var(self, name: str, pos: int) -> None:
        if not any(name in scope for scope in self.scopes):
            raise TemplateError(f'at {pos}: undefined variable "{name}"')


def parse(source: str) -> list[Any]:
    """The template's tree; raises TemplateError like Go's parser would."""
    return _Parser(source).parse()


# Execution --------------------------------------------------------------------------------------------------
class _Exec:
    def __init__(self, data: dict[str, Any]) -> None:
        self.vars: list[dict[str, Any]] = [
            {
                "$": data,
                "$labels": data["Labels"],
                "$externalLabels": data["ExternalLabels"],
                "$externalURL": data["ExternalURL"],
                "$value": data["Value"],
            }
        ]
        self.out: list[str] = []
        self.data = data

    def run(self, nodes: list[Any], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, str):
                self.out.append(node)
            elif isinstance(node, Pipe):
                value = self.pipe(node, dot)
                if not node.decl:
                    self.out.append(go_print(value))
            else:
                self.control(node, dot)

    def control(self, node: Control, dot: Any) -> None:
        self.vars.append({})
        try:
            value = self.pipe(node.pipe, dot, declare=node.kind != "range")
            if node.kind == "range":
                self._range(node, value, dot)
            elif truth(value):
                self.run(node.body, value if node.kind == "with" else dot)
            else:
                self.run(node.otherwise, dot)
        finally:
            self.vars.pop()

    def _range(self, node: Control, value: Any, dot: Any) -> None:
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list | tuple | str):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        elif value is None:
            items = []
        else:
            raise TemplateError(f"range can't iterate over {go_print(value)}")
        if not items:
            self.run(node.otherwise, dot)
            return
        for key, element in items:
            scope = self.vars[-1]
            if len(node.pipe.decl) == 2:
                scope[node.pipe.decl[0]], scope[node.pipe.decl[1]] = key, element
            elif node.pipe.decl:
                scope[node.pipe.decl[0]] = element
            self.run(node.body, element)

    def pipe(self, pipe: Pipe, dot: Any, declare: bool = True) -> Any:
        value: Any = None
        piped = False
        for command in pipe.commands:
            value = self.command(command, dot, value if piped else _NOTHING)
            piped = True
        if declare and pipe.decl:
            if pipe.assign:
                for scope in reversed(self.vars):
                    if pipe.decl[0] in scope:
                        scope[pipe.decl[0]] = value
                        break
            else:
                self.vars[-1][pipe.decl[0]] = value
        return value

    def command(self, operands: list[Any], dot: Any, piped: Any) -> Any:
        head = operands[0]
        if head[0] == "func":
            fn: Callable[..., Any] = FUNCTIONS[head[1]]
            if head[1] in ("and", "or"):
                return self._logic(head[1], operands[1:], dot, piped)
            args = [self.operand(o, dot) for o in operands[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            try:
                return fn(*args)
            except TemplateError:
                raise
            except Exception as exc:
                raise TemplateError(f"error calling {head[1]}: {exc}") from None
        if len(operands) > 1 or piped is not _NOTHING:
            raise TemplateError(f"can't give argument to non-function {_describe(head)}")
        return self.operand(head, dot)

    def _logic(self, name: str, operands: list[Any], dot: Any, piped: Any) -> Any:
        values = [lambda o=o: self.operand(o, dot) for o in operands]
        if piped is not _NOTHING:
            values.append(lambda: piped)
        if not values:
            raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
        result: Any = None
        for get in values:
            result = get()
            if truth(result) == (name == "or"):
                return result
        return result

    def operand(self, operand: tuple[Any, ...], dot: Any) -> Any:
        kind = operand[0]
        if kind == "const":
            return operand[1]
        if kind == "field":
            return _fields(dot, operand[1])
        if kind == "var":
            for scope in reversed(self.vars):
                if operand[1] in scope:
                    return _fields(scope[operand[1]], operand[2])
            raise TemplateError(f'undefined variable "{operand[1]}"')
        if kind == "pipe":
            return self.pipe(operand[1], dot)
        if kind == "func":
            return self.command([operand], dot, _NOTHING)
        raise AssertionError(operand)


_NOTHING = object()


def _describe(operand: tuple[Any, ...]) -> str:
    return repr(operand[1]) if len(operand) > 1 else operand[0]


def _fields(value: Any, chain: tuple[str, ...]) -> Any:
    for name in chain:
        if isinstance(value, dict):
            if name in value:
                value = value[name]
            elif not value or all(isinstance(v, str) for v in value.values()):
                value = ""  # missingkey=zero on map[string]string
            else:
                raise TemplateError(f"can't evaluate field {name}")
        else:
            raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
    return value


def execute(tree: list[Any], data: dict[str, Any]) -> str:
    """Run a parsed template over Prometheus' alert data (Labels, Value, ExternalLabels, ExternalURL)."""
    runner = _Exec(data)
    runner.run(tree, data)
    return "".join(runner.out)
