"""The errors of the Go template engine: a parse error at a position, an execution error at a node, and the
`error` a template function returns."""

from __future__ import annotations


class ParseError(Exception):
    """A template that does not lex or parse, in Go's words, at an offset of the source.

    `explained` is tripwire's wording of the same problem where it says more than Go's (a did-you-mean, the
    unclosed action's text, the opener of an unterminated block), with the offset it is best reported at;
    each service picks the wording it promises its users.
    """

    def __init__(self, msg: str, pos: int, explained: tuple[int, str] | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.pos = pos
        self.explained = explained

    @property
    def explained_pos(self) -> int:
        """Where tripwire's wording reports the problem."""
        return self.explained[0] if self.explained else self.pos

    @property
    def explained_msg(self) -> str:
        """Tripwire's wording of the problem (Go's when it has nothing to add)."""
        return self.explained[1] if self.explained else self.msg


class ExecError(Exception):
    """An execution failure, as text/template's exec reports it: the node being executed (its String() is the
    error's context), the argument at fault when there is one, and the name of the template running."""

    def __init__(self, msg: str, node: object, tree: str, arg: object = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.node = node
        self.tree = tree
        self.arg = arg


class CallError(Exception):
    """The `error` a template function returns; the executor reports it as `error calling NAME: ...`."""
