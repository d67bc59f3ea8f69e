"""Go's text/template in pure Python (no eval/exec), shared by the evaluator's alert templates (Prometheus)
and the notifier's notification templates (Alertmanager).

The pipeline is Go's: `lexer` (tokens) -> `parser` (trees of `nodes`, with Go's variable scoping and error
messages) -> `execute` (Go's evaluation of fields, methods, functions, range/if/with, define/template/block),
printing through `fmt` (Go's %v and Printf) and `strconv`. `builtins` holds text/template's functions.

A service supplies what is its own: a `Syntax` (the function names, predeclared variables, what it refuses,
strictness), a `Model` (the Go types of its data: names, fields, methods, how they print), its functions
(`Func`), and `Limits`. Errors are structured (`ParseError` at an offset, `ExecError` at a node) so each
service words their location as its users expect.
"""

from shared.gotemplate.builtins import BUILTINS
from shared.gotemplate.errors import CallError, ExecError, ParseError
from shared.gotemplate.execute import Limits, State, execute
from shared.gotemplate.functions import Func
from shared.gotemplate.parser import Parsed, Syntax, parse
from shared.gotemplate.values import ABSENT, MAX_STRING, Model

__all__ = [
    "ABSENT",
    "BUILTINS",
    "MAX_STRING",
    "CallError",
    "ExecError",
    "Func",
    "Limits",
    "Model",
    "ParseError",
    "Parsed",
    "State",
    "Syntax",
    "execute",
    "parse",
]
