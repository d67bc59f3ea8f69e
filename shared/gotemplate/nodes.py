"""The parse tree of Go's text/template (text/template/parse/node.go). `str()` of a node is Go's String(),
which execution errors quote as their context."""

from __future__ import annotations

from dataclasses import dataclass

from shared.gotemplate.strconv import go_quote


@dataclass(eq=False, slots=True)
class Text:
    """Plain text between actions."""

    pos: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False, slots=True)
class Literal:
    """A bool, number or string constant, with its source text."""

    pos: int
    kind: str  # "bool", "number" or "string"
    value: bool | int | float | str
    source: str

    def __str__(self) -> str:
        return self.source


@dataclass(eq=False, slots=True)
class Dot:
    """`.`"""

    pos: int

    def __str__(self) -> str:
        return "."


@dataclass(eq=False, slots=True)
class Nil:
    """`nil`"""

    pos: int

    def __str__(self) -> str:
        return "nil"


@dataclass(eq=False, slots=True)
class Ident:
    """A function name."""

    pos: int
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(eq=False, slots=True)
class Field:
    """`.A.B`: a chain of fields (or methods, or map keys) on dot."""

    pos: int
    idents: list[str]

    def __str__(self) -> str:
        return "".join("." + ident for ident in self.idents)


@dataclass(eq=False, slots=True)
class Variable:
    """`$x` or `$x.A.B`."""

    pos: int
    idents: list[str]  # ["$x", "A", ...]

    def __str__(self) -> str:
        return ".".join(self.idents)


@dataclass(eq=False, slots=True)
class Chain:
    """`(pipeline).A.B` or `fn.A`: fields of any other operand."""

    pos: int
    node: Node
    fields: list[str]

    def __str__(self) -> str:
        head = f"({self.node})" if isinstance(self.node, Pipe) else str(self.node)
        return head + "".join("." + field for field in self.fields)


@dataclass(eq=False, slots=True)
class Command:
    """Operands separated by spaces: a function or method call, or one value."""

    pos: int
    args: list[Node]

    def __str__(self) -> str:
        return " ".join(f"({arg})" if isinstance(arg, Pipe) else str(arg) for arg in self.args)


@dataclass(eq=False, slots=True)
class Pipe:
    """Commands separated by `|`, with the variables it declares (`:=`) or assigns (`=`)."""

    pos: int
    decl: list[str]
    is_assign: bool
    cmds: list[Command]

    def __str__(self) -> str:
        head = ", ".join(self.decl) + " := " if self.decl else ""  # Go prints := for = too
        return head + " | ".join(map(str, self.cmds))


@dataclass(eq=False, slots=True)
class Action:
    """`{{ pipeline }}`: its value is printed unless it declares variables."""

    pos: int
    pipe: Pipe

    def __str__(self) -> str:
        return f"{{{{{self.pipe}}}}}"


@dataclass(eq=False, slots=True)
class Control:
    """`{{if}}`, `{{with}}` or `{{range}}`, with its else branch (an `else if` is an else holding an if)."""

    pos: int
    kind: str  # "if", "with" or "range"
    pipe: Pipe
    body: list[Node]
    else_body: list[Node] | None

    def __str__(self) -> str:
        text = f"{{{{{self.kind} {self.pipe}}}}}" + "".join(map(str, self.body))
        if self.else_body is not None:
            text += "{{else}}" + "".join(map(str, self.else_body))
        return text + "{{end}}"


@dataclass(eq=False, slots=True)
class Call:
    """{{template "name" pipeline}} (and the call half of a block)."""

    pos: int
    name: str
    pipe: Pipe | None

    def __str__(self) -> str:
        tail = f" {self.pipe}" if self.pipe is not None else ""
        return f"{{{{template {go_quote(self.name)}{tail}}}}}"


@dataclass(eq=False, slots=True)
class Jump:
    """{{break}} or {{continue}}."""

    pos: int
    kind: str

    def __str__(self) -> str:
        return f"{{{{{self.kind}}}}}"


@dataclass(eq=False, slots=True)
class Delim:
    """{{end}} or {{else}} while parsing: they close a list, they are not in one."""

    pos: int
    kind: str

    def __str__(self) -> str:
        return f"{{{{{self.kind}}}}}"


Node = Text | Literal | Dot | Nil | Ident | Field | Variable | Chain | Command | Pipe | Action | Control
Node |= Call | Jump | Delim
