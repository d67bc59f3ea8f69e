"""Label and annotation templates: Go's text/template as Prometheus expands alert templates.

`parse_template` parses with the shared Go template engine (shared.gotemplate), strictly, then checks the
static types it can know (the alert data, `$labels`, `$value`, literals, function results). What Go's
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

from typing import Any, NoReturn

from services.evaluator.rules.template_functions import (
    DATA_FIELDS,
    DATA_TYPE,
    FUNCTIONS,
    MAP_TYPE,
    MODEL,
    REFUSED,
    UNKNOWN_LITERAL,
    TemplateData,
    format_value,
    go_type,
    static_problem,
    static_result,
)
from shared.gotemplate import ExecError, ParseError, Syntax, execute, parse
from shared.gotemplate.nodes import (
    Action,
    Chain,
    Command,
    Control,
    Dot,
    Field,
    Ident,
    Literal,
    Nil,
    Node,
    Pipe,
    Variable,
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


# Variables Prometheus declares in front of every alert template, with their static types.
_PREDEFINED = {
    "$": DATA_TYPE,
    "$labels": MAP_TYPE,
    "$externalLabels": MAP_TYPE,
    "$externalURL": "string",
    "$value": "float64",
}
_SINGLE = "an alert template is a single template"
_SYNTAX = Syntax(
    functions=FUNCTIONS,
    variables=tuple(_PREDEFINED),
    refused=REFUSED,
    refused_keywords={"define": _SINGLE, "template": _SINGLE, "block": _SINGLE},
    strict=True,
)


# Load-time type check ---------------------------------------------------------------------------------------
_ANY, _NIL = "any", "<nil>"


class _Checker:
    """Walks the tree with the static types it can know (Go type names; "any" when it cannot) and fails on
    what would fail on every expansion: fields of values that have none, non-functions given arguments,
    wrong argument counts and types, comparisons of different kinds, bad literal patterns and numbers."""

    def __init__(self, source: str, assigned: frozenset[str]) -> None:
        self.src = source
        self.assigned = assigned
        self.scopes: list[tuple[str, str]] = [
            (n, _ANY if n in assigned else t) for n, t in _PREDEFINED.items()
        ]

    def fail(self, node: Any, message: str) -> NoReturn:
        _error(self.src, node.pos, message)

    def walk(self, nodes: list[Node], dot: str) -> None:
        for node in nodes:
            if isinstance(node, Action):
                self.pipe(node.pipe, dot)
            elif isinstance(node, Control):
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

    def range_element(self, node: Control, over: str) -> str:
        """The element type of a range, typing its variables: one gets the element, two key and element."""
        decls = node.pipe.decl
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
                static = _ANY if var in self.assigned else types[offset]
                self.scopes[base + offset] = (var, static)
        return element

    def var_type(self, name: str) -> str:
        for var, static in reversed(self.scopes):
            if var == name:
                return static
        return _ANY

    def pipe(self, pipe: Pipe, dot: str) -> str:
        result = _ANY
        for stage, command in enumerate(pipe.cmds):
            result = self.command(command, dot, result if stage else None)
        if not pipe.is_assign:
            for var in pipe.decl:
                self.scopes.append((var, _ANY if var in self.assigned else result))
        return result

    def command(self, command: Command, dot: str, final: str | None) -> str:
        first = command.args[0]
        has_args = len(command.args) > 1 or final is not None
        if isinstance(first, Field):
            return self.fields(dot, first, has_args)
        if isinstance(first, Chain):
            if isinstance(first.node, Nil):
                self.fail(first, f"indirection through explicit nil in {first}")
            return self.fields(self.arg(first.node, dot), first, has_args)
        if isinstance(first, Ident):
            return self.call(first, command.args[1:], final, dot, command)
        if isinstance(first, Variable) and len(first.idents) > 1:
            return self.fields(self.var_type(first.idents[0]), first, has_args)
        if has_args:
            self.fail(first, f"can't give argument to non-function {first}")
        if isinstance(first, Nil):
            self.fail(first, "nil is not a command")
        return self.arg(first, dot)

    def fields(self, static: str, node: Field | Variable | Chain, has_args: bool) -> str:
        names = (
            node.idents[1:]
            if isinstance(node, Variable)
            else node.fields
            if isinstance(node, Chain)
            else node.idents
        )
        for i, name in enumerate(names):
            last = i == len(names) - 1
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
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Nil):
            return _NIL
        if isinstance(node, Literal):
            return go_type(node.value)
        if isinstance(node, Field):
            return self.fields(dot, node, False)
        if isinstance(node, Variable):
            static = self.var_type(node.idents[0])
            return self.fields(static, node, False) if len(node.idents) > 1 else static
        if isinstance(node, Chain):
            return self.fields(self.arg(node.node, dot), node, False)
        if isinstance(node, Pipe):
            return self.pipe(node, dot)
        return self.call(node, [], None, dot, node)

    def call(self, ident: Ident, args: list[Any], final: str | None, dot: str, at: Any) -> str:
        name, function = ident.name, FUNCTIONS[ident.name]
        count, fixed = len(args) + (final is not None), len(function.params)
        if function.variadic is None and count != fixed:
            self.fail(at, f"wrong number of args for {name}: want {fixed} got {count}")
        if count < fixed:
            self.fail(at, f"wrong number of args for {name}: want at least {fixed} got {count}")
        kinds = [function.params[i] if i < fixed else function.variadic for i in range(count)]
        types: list[str] = []
        for kind, node in zip(kinds, args, strict=False):
            if isinstance(node, Nil):
                if kind != "any":
                    self.fail(node, f"cannot assign nil to {'reflect.Value' if kind == 'value' else kind}")
                types.append(_NIL)
                continue
            if kind == "string" and isinstance(node, Literal) and not isinstance(node.value, str):
                self.fail(node, f"expected string; found {node}")
            types.append(self.arg(node, dot))
            self.check_kind(types[-1], kind, node, name)
        if final is not None:
            self.check_kind(final, kinds[-1] or "any", at, name)
            types.append(final)
        literals = [a.value if isinstance(a, Literal) else UNKNOWN_LITERAL for a in args]
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


# The interface ----------------------------------------------------------------------------------------------
class Template:
    """A parsed template; `render` fills it in. Two templates are equal when their sources are."""

    __slots__ = ("_tree", "source")

    def __init__(self, source: str, tree: list[Node]) -> None:
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
        data = TemplateData(labels, external_labels, external_url, value)
        variables = (
            ("$labels", labels),
            ("$externalLabels", external_labels),
            ("$externalURL", external_url),
            ("$value", value),
        )
        try:
            return execute({"": self._tree}, "", data, model=MODEL, functions=FUNCTIONS, variables=variables)
        except ExecError as e:
            # Go's exec names the argument at fault when there is one, else the command.
            node: Any = e.arg if e.arg is not None else e.node
            _error(self.source, node.pos, f"executing <{node}>: {e.msg}")
        except RecursionError:
            raise TemplateError("template nested too deeply to expand") from None


def parse_template(source: str) -> Template:
    """Parse `source`; raises TemplateError saying what is wrong and where (`at <offset>: ...`)."""
    try:
        parsed = parse(source, "", _SYNTAX)
        tree = parsed.trees[""]
        _Checker(source, parsed.assigned).walk(tree, DATA_TYPE)
    except ParseError as e:
        _error(source, e.explained_pos, e.explained_msg)
    except RecursionError:
        raise TemplateError("template nested too deeply to parse") from None
    return Template(source, tree)
