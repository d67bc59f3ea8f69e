"""The parser of Go's text/template (text/template/parse/parse.go): tokens to trees of nodes, one per named
template, with Go's scoping of variables and Go's error messages."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from shared.gotemplate.errors import ParseError
from shared.gotemplate.lexer import Token, lex
from shared.gotemplate.nodes import (
    Action,
    Call,
    Chain,
    Command,
    Control,
    Delim,
    Dot,
    Field,
    Ident,
    Jump,
    Literal,
    Nil,
    Node,
    Pipe,
    Text,
    Variable,
)
from shared.gotemplate.strconv import go_quote, number_value, unquote


@dataclass(frozen=True)
class Syntax:
    """What a service's templates may say.

    functions: the names a template may call. variables: those in scope before the first action (Go's `$`,
    plus any the service declares in front, as Prometheus does `$labels`). refused and refused_keywords:
    functions and keywords (define, template, block) refused with the reason given. strict: also refuse what
    Go's parser lets through although every execution would fail or it is surely a slip (`$x := $x`,
    assigning an undeclared `$x`, a variable of an if body used in its else, a trailing `|`, range variables
    without `:=`). max_depth: how deep actions and parentheses may nest.
    """

    functions: Collection[str]
    variables: tuple[str, ...] = ("$",)
    refused: Mapping[str, str] = field(default_factory=dict)
    refused_keywords: Mapping[str, str] = field(default_factory=dict)
    strict: bool = False
    max_depth: int = 100


@dataclass(frozen=True)
class Parsed:
    """A parsed text: the trees by template name, and the variables ever assigned with `=` (whose type a
    static check cannot know)."""

    trees: dict[str, list[Node]]
    assigned: frozenset[str]


def parse(text: str, name: str, syntax: Syntax) -> Parsed:
    """Parse text as the template called name; raises ParseError."""
    parser = _Parser(lex(text), syntax)
    trees = parser.parse(name)
    return Parsed(trees, frozenset(parser.assigned))


def _suggestion(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _is_empty(body: list[Node]) -> bool:
    return all(isinstance(node, Text) and not node.text.strip() for node in body)


_OPERAND_KINDS = frozenset(
    {"bool", "char", "complex", "dot", "field", "ident", "number", "nil", "string", "var", "lparen"}
)


class _Parser:
    def __init__(self, tokens: list[Token], syntax: Syntax) -> None:
        self.tokens = tokens
        self.syntax = syntax
        self.strict = syntax.strict
        self.i = 0
        self.vars = list(syntax.variables)
        self.assigned: set[str] = set()
        self.range_depth = 0
        self.depth = 0
        self.trees: dict[str, list[Node]] = {}

    # Token stream: Go's parser backs up at most three tokens; an index does the same.
    def next(self) -> Token:
        tok = self.peek()
        self.i += 1
        return tok

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> Token:
        return self.tokens[min(self.i, len(self.tokens) - 1)]

    def next_non_space(self) -> Token:
        tok = self.next()
        while tok.kind == "space":
            tok = self.next()
        return tok

    def peek_non_space(self) -> Token:
        tok = self.next_non_space()
        self.backup()
        return tok

    def fail(self, msg: str, pos: int, explained: tuple[int, str] | None = None) -> NoReturn:
        raise ParseError(msg, pos, explained)

    def unexpected(self, tok: Token, context: str) -> NoReturn:
        self.fail(f"unexpected {tok} in {context}", tok.pos)

    def expect(self, kind: str, context: str) -> Token:
        tok = self.next_non_space()
        if tok.kind != kind:
            self.unexpected(tok, context)
        return tok

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > self.syntax.max_depth:
            self.fail(f"nesting deeper than {self.syntax.max_depth}", pos)

    # Templates.
    def parse(self, name: str) -> dict[str, list[Node]]:
        root: list[Node] = []
        while self.peek().kind != "eof":
            if self.peek().kind == "left":
                save = self.i
                self.next()
                tok = self.next_non_space()
                if tok.kind == "kw" and tok.val == "define":
                    self.refuse_keyword(tok)
                    self.definition(tok)
                    continue
                self.i = save
            node = self.text_or_action()
            if isinstance(node, Delim):
                self.fail(f"unexpected {node}", node.pos)
            root.append(node)
        self.add(name, root, self.peek().pos)
        return self.trees

    def refuse_keyword(self, tok: Token) -> None:
        reason = self.syntax.refused_keywords.get(tok.val)
        if reason is not None:
            self.fail(f"{{{{{tok.val}}}}} is not supported: {reason}", tok.pos)

    def add(self, name: str, body: list[Node], pos: int) -> None:
        old = self.trees.get(name)
        if old is None or _is_empty(old):
            self.trees[name] = body
        elif not _is_empty(body):
            self.fail(f"multiple definition of template {go_quote(name)}", pos)

    def template_name(self, context: str) -> tuple[str, Token]:
        tok = self.next_non_space()
        if tok.kind != "string":
            self.unexpected(tok, context)
        return self.string(tok), tok

    def subtree(self, opener: Token, context: str) -> list[Node]:
        """A define or block body: its own variables ($ only) and no enclosing range."""
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        body, end = self.item_list(opener)
        if end.kind != "end":
            self.fail(f"unexpected {end} in {context}", end.pos)
        self.vars, self.range_depth = saved
        return body

    def definition(self, opener: Token) -> None:
        name, tok = self.template_name("define clause")
        self.expect("right", "define clause")
        self.add(name, self.subtree(opener, "define clause"), tok.pos)

    def item_list(self, opener: Token) -> tuple[list[Node], Delim]:
        nodes: list[Node] = []
        while self.peek_non_space().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, Delim):
                return nodes, node
            nodes.append(node)
        explained = f"unexpected EOF: {{{{{opener.val}}}}} has no matching {{{{end}}}}"
        self.fail("unexpected EOF", self.peek().pos, (opener.pos, explained))

    def text_or_action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind == "text":
            return Text(tok.pos, tok.val)
        if tok.kind == "left":
            return self.action()
        self.unexpected(tok, "input")

    # Actions.
    def action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind == "kw":
            match tok.val:
                case "block":
                    self.refuse_keyword(tok)
                    return self.block(tok)
                case "break" | "continue":
                    if not self.range_depth:
                        self.fail(f"{{{{{tok.val}}}}} outside {{{{range}}}}", tok.pos)
                    self.expect("right", f"{{{{{tok.val}}}}}")
                    return Jump(tok.pos, tok.val)
                case "else":
                    after = self.peek_non_space()
                    # "else if" / "else with": leave the keyword for the enclosing control to chain on.
                    if not (after.kind == "kw" and after.val in ("if", "with")):
                        self.expect("right", "else")
                    return Delim(tok.pos, "else")
                case "end":
                    self.expect("right", "end")
                    return Delim(tok.pos, "end")
                case "if" | "with" | "range":
                    return self.control(tok)
                case "template":
                    self.refuse_keyword(tok)
                    return self.template_call()
                case "define":
                    self.refuse_keyword(tok)
        self.backup()
        pos = self.peek().pos
        return Action(pos, self.pipeline("command", "right"))

    def control(self, opener: Token) -> Control:
        kind, pos = opener.val, opener.pos
        saved_vars = len(self.vars)
        self.nest(pos)
        pipe = self.pipeline(kind, "right")
        body_vars = len(self.vars)
        if kind == "range":
            self.range_depth += 1
        body, delim = self.item_list(opener)
        if kind == "range":
            self.range_depth -= 1
        if self.strict:
            del self.vars[body_vars:]  # what the body declares is not the else branch's
        else_body: list[Node] | None = None
        if delim.kind == "else":
            after = self.peek()
            if kind in ("if", "with") and after.kind == "kw" and after.val == kind:
                # {{if a}}x{{else if b}}y{{end}} is {{if a}}x{{else}}{{if b}}y{{end}}{{end}}.
                self.next()
                else_body = [self.control(after)]
            else:
                else_body, end = self.item_list(opener)
                if end.kind != "end":
                    self.fail(f"expected end; found {end}", end.pos)
        del self.vars[saved_vars:]
        self.depth -= 1
        return Control(pos, kind, pipe, body, else_body)

    def template_call(self) -> Call:
        name, tok = self.template_name("template clause")
        pipe = None
        if self.next_non_space().kind != "right":
            self.backup()
            pipe = self.pipeline("template clause", "right")
        return Call(tok.pos, name, pipe)

    def block(self, opener: Token) -> Call:
        """{{block "name" pipeline}}body{{end}}: define name as body, then execute it."""
        name, tok = self.template_name("block clause")
        pipe = self.pipeline("block clause", "right")
        self.add(name, self.subtree(opener, "block clause"), tok.pos)
        return Call(tok.pos, name, pipe)

    # Pipelines.
    def declarations(self, context: str) -> tuple[list[Token], bool]:
        """`$x :=`, `$x =` or (range only) `$k, $v :=` at the start of a pipeline."""
        decl: list[Token] = []
        while (var := self.peek_non_space()).kind == "var":
            save = self.i
            self.next_non_space()
            after = self.peek_non_space()
            if after.kind in ("assign", "declare"):
                self.next_non_space()
                decl.append(var)
                return decl, after.kind == "assign"
            if after.kind == "punct" and after.val == ",":
                self.next_non_space()
                decl.append(var)
                if context == "range" and len(decl) < 2:
                    if self.peek_non_space().kind in ("var", "right", "rparen"):
                        continue
                    self.fail("range can only initialize variables", after.pos)
                self.fail(f"too many declarations in {context}", after.pos)
            self.i = save  # not a declaration: the variable starts the first command
            break
        if decl and self.strict:
            self.fail(f"missing := after the variables of {context}", decl[0].pos)
        return decl, False

    def pipeline(self, context: str, end: str) -> Pipe:
        pos = self.peek_non_space().pos
        decl, is_assign = self.declarations(context)
        if not self.strict:
            self.vars.extend(var.val for var in decl)  # Go's parser declares them before the commands
        cmds: list[Command] = []
        trailing_pipe: Token | None = None
        while True:
            tok = self.next_non_space()
            if tok.kind == end:
                if not cmds:
                    self.fail(f"missing value for {context}", tok.pos)
                if trailing_pipe is not None and self.strict:
                    self.fail("missing command after |", trailing_pipe.pos)
                for stage, cmd in enumerate(cmds[1:], start=2):
                    if isinstance(cmd.args[0], Literal | Dot | Nil):
                        self.fail(f"non executable command in pipeline stage {stage}", cmd.pos)
                break
            if tok.kind not in _OPERAND_KINDS:
                self.unexpected(tok, context)
            self.backup()
            cmd, trailing_pipe = self.command()
            cmds.append(cmd)
        names = [var.val for var in decl]
        if is_assign:
            self.assigned.update(names)
        if self.strict:
            for var in decl:
                if is_assign:
                    self.use_var(var)
                else:  # declared after its pipeline: `$x := $x` refers to an outer $x or fails
                    self.vars.append(var.val)
        return Pipe(pos, names, is_assign, cmds)

    def command(self) -> tuple[Command, Token | None]:
        """Operands separated by spaces, up to `|` (returned) or the end of the pipeline."""
        pos = self.peek_non_space().pos
        args: list[Node] = []
        pipe: Token | None = None
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
            elif tok.kind == "pipe":
                pipe = tok
            else:
                self.unexpected(tok, "operand")
            break
        if not args:
            self.fail("empty command", pos)
        return Command(pos, args), pipe

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().kind != "field":
            return node
        fields: list[str] = []
        pos = self.peek().pos
        while self.peek().kind == "field":
            fields.append(self.next().val[1:])
        match node:
            case Field():
                return Field(node.pos, node.idents + fields)
            case Variable():
                return Variable(node.pos, node.idents + fields)
            case Literal() | Nil() | Dot():
                self.fail(f"unexpected . after term {go_quote(str(node))}", pos)
        return Chain(node.pos, node, fields)

    def term(self) -> Node | None:
        tok = self.next_non_space()
        match tok.kind:
            case "ident":
                self.check_function(tok)
                return Ident(tok.pos, tok.val)
            case "dot":
                return Dot(tok.pos)
            case "nil":
                return Nil(tok.pos)
            case "var":
                return Variable(tok.pos, [self.use_var(tok)])
            case "field":
                return Field(tok.pos, [tok.val[1:]])
            case "bool":
                return Literal(tok.pos, "bool", tok.val == "true", tok.val)
            case "number" | "char":
                return self.number(tok)
            case "complex":
                self.complex(tok)
            case "string":
                return Literal(tok.pos, "string", self.string(tok), tok.val)
            case "lparen":
                self.nest(tok.pos)
                pipe = self.pipeline("parenthesized pipeline", "rparen")
                self.depth -= 1
                return pipe
        self.backup()
        return None

    def number(self, tok: Token) -> Literal:
        if tok.kind == "number" and tok.val.endswith("i"):
            self.complex(tok)
        try:
            value = number_value(tok.val, tok.kind == "char")
        except ValueError as e:
            msg = str(e)
            self.fail(f"invalid syntax: {tok.val}" if msg == "invalid syntax" else msg, tok.pos)
        return Literal(tok.pos, "number", value, tok.val)

    def complex(self, tok: Token) -> NoReturn:
        explained = f"complex constant {tok.val} is not supported"
        self.fail(f"complex numbers are not supported: {tok.val}", tok.pos, (tok.pos, explained))

    def string(self, tok: Token) -> str:
        try:
            return unquote(tok.val)
        except ValueError:
            explained = f"invalid string literal {tok.val}: invalid syntax"
            self.fail(f"invalid syntax: {tok.val}", tok.pos, (tok.pos, explained))

    def check_function(self, tok: Token) -> None:
        name = tok.val
        reason = self.syntax.refused.get(name)
        if reason is not None:
            self.fail(f"function {go_quote(name)} is not supported by tripwire: {reason}", tok.pos)
        if name not in self.syntax.functions:
            msg = f"function {go_quote(name)} not defined"
            self.fail(msg, tok.pos, (tok.pos, msg + _suggestion(name, self.syntax.functions)))

    def use_var(self, tok: Token) -> str:
        if tok.val not in self.vars:
            msg = f"undefined variable {go_quote(tok.val)}"
            self.fail(msg, tok.pos, (tok.pos, msg + _suggestion(tok.val, set(self.vars))))
        return tok.val
