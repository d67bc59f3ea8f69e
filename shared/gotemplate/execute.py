"""The executor of Go's text/template (text/template/exec.go): walks a parsed tree over a dot, with a stack of
variables, Go's field, method and function calls and Go's error messages, within output and loop limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from shared.gotemplate.errors import CallError, ExecError
from shared.gotemplate.fmt import format_value
from shared.gotemplate.functions import CHECKED_KINDS, Func
from shared.gotemplate.nodes import (
    Action,
    Call,
    Chain,
    Command,
    Control,
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
from shared.gotemplate.strconv import go_quote
from shared.gotemplate.values import ABSENT, MAX_STRING, MISSING, Model, sorted_keys, truth


@dataclass(frozen=True, slots=True)
class Limits:
    """What one execution may do: characters of output, range iterations, nested template calls (Go allows
    100000; Python frames are dearer and real templates nest a few levels)."""

    output: int = MAX_STRING
    range_iterations: int = 100_000
    template_depth: int = 50


def execute(
    trees: Mapping[str, list[Node]],
    name: str,
    dot: object,
    *,
    model: Model,
    functions: Mapping[str, Func],
    limits: Limits = Limits(),
    variables: Sequence[tuple[str, object]] = (),
) -> str:
    """Execute the template called name with dot as `.` and `$`, plus the variables given; raises ExecError
    (and RecursionError for data nested deeper than Python recurses)."""
    state = State(trees, name, model, functions, limits)
    state.vars = [["$", dot], *([var, value] for var, value in variables)]
    state.walk_list(dot, trees[name])
    return "".join(state.out)


class _BreakLoop(Exception):
    pass


class _ContinueLoop(Exception):
    pass


def _is_strings(value: object) -> bool:
    # Only plain lists: a named slice type (template.Pairs...) is not a []string in Go.
    return type(value) in (list, tuple) and all(isinstance(item, str) for item in value)  # type: ignore[union-attr]


class State:
    """One execution: output, variables, and where it is (for errors)."""

    __slots__ = (
        "_now",
        "depth",
        "functions",
        "iterations",
        "limits",
        "model",
        "node",
        "out",
        "size",
        "tree",
        "trees",
        "vars",
    )

    def __init__(
        self,
        trees: Mapping[str, list[Node]],
        name: str,
        model: Model,
        functions: Mapping[str, Func],
        limits: Limits,
    ) -> None:
        self.trees = trees
        self.model = model
        self.functions = functions
        self.limits = limits
        self.out: list[str] = []
        self.size = 0
        self.vars: list[list[object]] = []
        self.depth = 0
        self.iterations = 0
        self.node: object = None
        self.tree = name
        self._now: datetime | None = None

    @property
    def now(self) -> datetime:
        """The execution's clock: one instant however often a template asks."""
        if self._now is None:
            self._now = datetime.now(UTC)
        return self._now

    def error(self, msg: str, arg: object = None) -> NoReturn:
        raise ExecError(msg, self.node, self.tree, arg)

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > self.limits.output:
            self.error(f"output exceeds {self.limits.output} characters")
        self.out.append(text)

    # Variables: a stack; control structures pop what they pushed at their {{end}}.
    def set_var(self, name: str, value: object) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        self.error(f"undefined variable: {name}")

    def var_value(self, name: str) -> object:
        for var_name, value in reversed(self.vars):
            if var_name == name:
                return value
        self.error(f"undefined variable: {name}")

    # Walking the tree.
    def walk_list(self, dot: object, nodes: list[Node]) -> None:
        for node in nodes:
            self.walk(dot, node)

    def walk(self, dot: object, node: Node) -> None:
        # Dispatch on the exact node type: `is` tests are the fastest, and templates run per alert.
        kind = type(node)
        if kind is Text:
            self.write(node.text)  # type: ignore[union-attr]
        elif kind is Action:
            self.walk_action(dot, node)  # type: ignore[arg-type]
        elif kind is Control:
            if node.kind == "range":  # type: ignore[union-attr]
                self.walk_range(dot, node)  # type: ignore[arg-type]
            else:
                self.walk_if_with(dot, node)  # type: ignore[arg-type]
        elif kind is Call:
            self.walk_template(dot, node)  # type: ignore[arg-type]
        elif kind is Jump:
            raise _BreakLoop if node.kind == "break" else _ContinueLoop  # type: ignore[union-attr]

    def walk_action(self, dot: object, node: Action) -> None:
        self.node = node
        value = self.eval_pipeline(dot, node.pipe)
        if not node.pipe.decl:
            self.node = node
            if type(value) is str:  # the common case: %v of a string is the string
                self.write(value)
                return
            try:
                self.write("<no value>" if value is None else format_value(value, self.model))
            except CallError as e:
                self.error(str(e))

    def walk_if_with(self, dot: object, node: Control) -> None:
        mark = len(self.vars)
        self.node = node
        value = self.eval_pipeline(dot, node.pipe)
        if truth(value):
            self.walk_list(value if node.kind == "with" else dot, node.body)
        elif node.else_body is not None:
            self.walk_list(dot, node.else_body)
        del self.vars[mark:]

    def walk_range(self, dot: object, node: Control) -> None:
        self.node = node
        outer = len(self.vars)
        value = self.eval_pipeline(dot, node.pipe)
        mark = len(self.vars)
        items: Iterable[tuple[object, object]]
        match value:
            case list() | tuple():
                items = enumerate(value)
            case dict():
                items = ((key, value[key]) for key in sorted_keys(value))
            case int() if not isinstance(value, bool):
                if len(node.pipe.decl) > 1:
                    self.error(f"can't use {value} to iterate over more than one variable")
                items = ((i, i) for i in range(value))
            case None:
                items = ()
            case _:
                self.node = node
                self.error(f"range can't iterate over {format_value(value, self.model)}")
        ran = False
        for key, elem in items:
            ran = True
            self.iterations += 1
            if self.iterations > self.limits.range_iterations:
                self.node = node
                self.error(f"range iterations exceed {self.limits.range_iterations}")
            self.bind_range(node.pipe, key, elem)
            try:
                self.walk_list(elem, node.body)
            except _ContinueLoop:
                pass
            except _BreakLoop:
                break
            finally:
                del self.vars[mark:]
        if not ran and node.else_body is not None:
            self.walk_list(dot, node.else_body)
        del self.vars[outer:]

    def bind_range(self, pipe: Pipe, key: object, elem: object) -> None:
        """One variable gets the element; two get the key and the element."""
        decl = pipe.decl
        if decl:
            if pipe.is_assign:
                self.set_var(decl[0], key if len(decl) > 1 else elem)
            else:
                self.vars[-1][1] = elem
        if len(decl) > 1:
            if pipe.is_assign:
                self.set_var(decl[1], elem)
            else:
                self.vars[-2][1] = key

    def walk_template(self, dot: object, node: Call) -> None:
        self.node = node
        body = self.trees.get(node.name)
        if body is None:
            self.error(f"template {go_quote(node.name)} not defined")
        if self.depth >= self.limits.template_depth:
            self.error(f"exceeded maximum template depth ({self.limits.template_depth})")
        new_dot = self.eval_pipeline(dot, node.pipe) if node.pipe is not None else None
        # No dynamic scoping: the called template sees only $, set to its dot.
        saved = self.vars, self.tree
        self.vars, self.tree = [["$", new_dot]], node.name
        self.depth += 1
        try:
            self.walk_list(new_dot, body)
        finally:
            self.vars, self.tree = saved
            self.depth -= 1

    # Evaluation.
    def eval_pipeline(self, dot: object, pipe: Pipe) -> object:
        value: object = MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)  # each value is the next command's last argument
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.vars.append([name, value])
        return value

    def not_a_function(self, args: list[Node], final: object) -> None:
        if len(args) > 1 or final is not MISSING:
            self.error(f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot: object, cmd: Command, final: object) -> object:
        first = cmd.args[0]
        kind = type(first)
        if kind is Field:
            return self.eval_field_chain(dot, dot, first, first.idents, cmd.args, final)  # type: ignore[union-attr]
        if kind is Variable:
            return self.eval_variable(dot, first, cmd.args, final)  # type: ignore[arg-type]
        if kind is Ident:
            return self.eval_function(dot, first, cmd, cmd.args, final)  # type: ignore[arg-type]
        if kind is Chain:
            return self.eval_chain(dot, first, cmd.args, final)  # type: ignore[arg-type]
        self.node = first
        self.not_a_function(cmd.args, final)
        if kind is Pipe:
            return self.eval_pipeline(dot, first)  # type: ignore[arg-type]
        if kind is Literal:
            return first.value  # type: ignore[union-attr]
        if kind is Dot:
            return dot
        self.error("nil is not a command")

    def eval_arg(self, dot: object, node: Node) -> object:
        self.node = node
        kind = type(node)
        if kind is Literal:
            return node.value  # type: ignore[union-attr]
        if kind is Variable:
            return self.eval_variable(dot, node, None, MISSING)  # type: ignore[arg-type]
        if kind is Field:
            return self.eval_field_chain(dot, dot, node, node.idents, [node], MISSING)  # type: ignore[union-attr]
        if kind is Dot:
            return dot
        if kind is Nil:
            return None
        if kind is Pipe:
            return self.eval_pipeline(dot, node)  # type: ignore[arg-type]
        if kind is Ident:
            return self.eval_function(dot, node, node, None, MISSING)  # type: ignore[arg-type]
        if kind is Chain:
            return self.eval_chain(dot, node, None, MISSING)  # type: ignore[arg-type]
        self.error(f"can't handle {node} as an argument")

    def eval_variable(self, dot: object, node: Variable, args: list[Node] | None, final: object) -> object:
        self.node = node
        value = self.var_value(node.idents[0])
        if len(node.idents) == 1:
            self.not_a_function(args or [node], final)
            return value
        return self.eval_field_chain(dot, value, node, node.idents[1:], args, final)

    def eval_chain(self, dot: object, node: Chain, args: list[Node] | None, final: object) -> object:
        if isinstance(node.node, Nil):
            self.node = node
            self.error(f"indirection through explicit nil in {node}")
        receiver = self.eval_arg(dot, node.node)
        return self.eval_field_chain(dot, receiver, node, node.fields, args, final)

    def eval_field_chain(
        self,
        dot: object,
        receiver: object,
        node: Node,
        idents: list[str],
        args: list[Node] | None,
        final: object,
    ) -> object:
        for ident in idents[:-1]:
            receiver = self.eval_field(dot, ident, node, None, MISSING, receiver)
        return self.eval_field(dot, idents[-1], node, args, final, receiver)

    def eval_field(
        self, dot: object, name: str, node: Node, args: list[Node] | None, final: object, receiver: object
    ) -> object:
        self.node = node
        if receiver is None:
            return None  # a field of nothing is nothing ("<no value>"), as in Go
        # A plain map has no methods (a named one, like Alertmanager's KV, may): skip the lookup.
        method = None if type(receiver) is dict else self.model.method(receiver, name)
        if method is not None:
            return self.eval_call(dot, method, node, name, args, final, receiver)
        has_args = (args is not None and len(args) > 1) or final is not MISSING
        if isinstance(receiver, dict):
            if has_args:
                self.error(f"{name} is not a method but has arguments")
            return receiver.get(name, "")  # missingkey=zero: the maps hold strings, whose zero value is ""
        value = self.model.field(receiver, name)
        if value is not ABSENT:
            if has_args:
                self.error(f"{name} has arguments but cannot be invoked as function")
            return value
        self.error(f"can't evaluate field {name} in type {self.model.type_name(receiver)}")

    def eval_function(
        self, dot: object, node: Ident, cmd: Node, args: list[Node] | None, final: object
    ) -> object:
        self.node = node
        return self.eval_call(dot, self.functions[node.name], cmd, node.name, args, final)

    def eval_call(
        self,
        dot: object,
        func: Func,
        node: Node,
        name: str,
        args: list[Node] | None,
        final: object,
        receiver: object = MISSING,
    ) -> object:
        arg_nodes = args[1:] if args else []
        has_final = final is not MISSING
        count = len(arg_nodes) + has_final
        fixed = func.arity
        self.node = node
        if count != fixed and (func.variadic is None or count < fixed):
            want = f"at least {fixed}" if func.variadic is not None else str(fixed)
            self.error(f"wrong number of args for {name}: want {want} got {count}")
        if func.call is None:
            # and/or stop at the first argument that decides, returning it (not a bool).
            value: object = None
            for arg in arg_nodes:
                value = self.eval_arg(dot, arg)
                if truth(value) == (name == "or"):
                    return value
            return final if has_final else value
        values = [self.eval_arg(dot, arg) for arg in arg_nodes]
        if has_final:
            values.append(final)
        self.node = node
        if func.checked:
            for i, value in enumerate(values):
                kind = func.params[i] if i < fixed else func.variadic
                if kind in CHECKED_KINDS:
                    values[i] = self.check_type(value, kind, arg_nodes[i] if i < len(arg_nodes) else None)
        if receiver is not MISSING:
            values.insert(0, receiver)
        try:
            result = func.call(self, *values) if func.with_state else func.call(*values)
        except CallError as e:
            self.node = node
            self.error(f"error calling {name}: {e}")
        if isinstance(result, str) and len(result) > MAX_STRING:
            self.error(f"error calling {name}: result exceeds {MAX_STRING} characters")
        return result

    def check_type(self, value: object, kind: str | None, arg: Node | None) -> object:
        """Go's argument conversion: no implicit string conversions, a []string must be one."""
        match kind:
            case "string" if isinstance(value, str):
                return value
            case "[]string" if _is_strings(value):
                return list(value)  # type: ignore[call-overload]
            case "keys" if isinstance(value, str):
                return [value]
            case "keys" if _is_strings(value):
                return list(value)  # type: ignore[call-overload]
            case "time.Time" if isinstance(value, datetime):
                return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            case "int" if isinstance(value, int) and not isinstance(value, bool):
                return value
        expected = "[]string" if kind == "keys" else kind
        if value is None:
            self.error(f"invalid value; expected {expected}", arg)
        self.error(f"wrong type for value; expected {expected}; got {self.model.type_name(value)}", arg)
