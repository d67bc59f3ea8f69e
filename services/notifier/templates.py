"""Alertmanager notification templates: a faithful, safe subset of Go's text/template.

Alertmanager evaluates receiver fields such as slack `title`/`text` or pagerduty `description` as Go
text/template strings against its notification data (`.Status`, `.Alerts`, `.CommonLabels`...). The shared
engine (shared.gotemplate) lexes, parses and interprets the same syntax in pure Python (no eval/exec), with
Go's messages and corner cases; this module adds Alertmanager's data model (template_data), functions
(template_functions) and limits, and words errors as Go does. Alertmanager executes with
`missingkey=zero`: a missing label renders as "".

Supported: text and actions with `{{-`/`-}}` trim markers and `{{/* comments */}}`; pipelines; fields,
variables (`:=`, `=`) and field chains on `.`, `$x` and `(...)`; `if`/`else if`/`else`, `with`/`else with`/
`else`, `range` over lists, maps (in key order) and integers with `break`/`continue`/`else`,
`define`/`template`/`block`; string ("..." with Go escapes, `raw`), rune, number (decimal, hex, octal,
binary, float), bool and nil literals; parenthesised pipelines. Go's builtins `and or not len index slice
print printf println eq ne lt le gt ge html js urlquery`, Alertmanager's `toUpper toLower title trimSpace
join match reReplaceAll safeHtml safeUrl urlUnescape stringSlice date tz since humanizeDuration toJson`, the
KV methods `SortedPairs Names Values Remove String`, `.Alerts.Firing`/`.Resolved`, and a few time.Time and
time.Duration methods (`Format Unix UTC Sub`..., `Seconds Round`...).

Deliberately not supported: `call` (the data holds no functions), complex numbers, custom delimiters,
html/template's contextual escaping, and Alertmanager's own named templates (`template
"slack.default.title"`) or `templates:` files: a template may only use what its own text defines.

Limits, because label values may come from outside: output is capped at MAX_OUTPUT characters, and so is
every intermediate string; range iterations per render at MAX_RANGE_ITERATIONS; `template` nesting at
MAX_TEMPLATE_DEPTH; parse nesting at MAX_PARSE_DEPTH.
"""

from __future__ import annotations

import functools

from services.notifier.template_data import MODEL, AlertData, TemplateData
from services.notifier.template_functions import FUNCTIONS
from shared.gotemplate import BUILTINS, MAX_STRING, ExecError, Limits, ParseError, Syntax, execute, parse
from shared.gotemplate.nodes import Node
from shared.gotemplate.strconv import go_quote

__all__ = [
    "MAX_OUTPUT",
    "MAX_PARSE_DEPTH",
    "MAX_RANGE_ITERATIONS",
    "MAX_TEMPLATE_DEPTH",
    "AlertData",
    "Template",
    "TemplateData",
    "TemplateError",
    "is_template",
    "render",
]

MAX_OUTPUT = MAX_STRING
MAX_RANGE_ITERATIONS = 100_000
# Go allows 100000 nested template calls; Python frames are dearer and real templates nest a few levels.
MAX_TEMPLATE_DEPTH = 50
MAX_PARSE_DEPTH = 100

_FUNCTIONS = {**BUILTINS, **FUNCTIONS}
_SYNTAX = Syntax(functions=_FUNCTIONS, max_depth=MAX_PARSE_DEPTH)
_LIMITS = Limits(output=MAX_OUTPUT, range_iterations=MAX_RANGE_ITERATIONS, template_depth=MAX_TEMPLATE_DEPTH)


class TemplateError(ValueError):
    """A template that does not parse or fails to execute; the message names the position, Go-style."""


def is_template(text: str) -> bool:
    """Whether text contains an action at all (plain strings need no rendering)."""
    return "{{" in text


def render(text: str, data: TemplateData) -> str:
    """Parse (through a small cache) and render text against data; "" stays "" as in Alertmanager."""
    if not text:
        return ""
    return _parsed(text).render(data)


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> Template:
    return Template.parse(text)


class Template:
    """A parsed template: its main body plus the templates its text defines."""

    __slots__ = ("_text", "_trees", "name")

    def __init__(self, name: str, text: str, trees: dict[str, list[Node]]) -> None:
        self.name = name
        self._text = text
        self._trees = trees

    @classmethod
    def parse(cls, text: str, name: str = "") -> Template:
        """Parse text; raises TemplateError on a syntax error, an unknown function or undefined variable."""
        try:
            trees = parse(text, name, _SYNTAX).trees
        except ParseError as e:
            raise TemplateError(f"template: {cls._location(text, name, e.pos)}: {e.msg}") from None
        except RecursionError:
            raise TemplateError(f"template: {name}: nesting too deep to parse") from None
        return cls(name, text, trees)

    def render(self, data: TemplateData) -> str:
        """Execute against Alertmanager-shaped notification data; raises TemplateError on execution errors."""
        return self.execute(data)

    def execute(self, dot: object) -> str:
        """Execute with any dot (str, int, float, bool, None, list, dict, datetime, AlertData...)."""
        try:
            return execute(self._trees, self.name, dot, model=MODEL, functions=_FUNCTIONS, limits=_LIMITS)
        except ExecError as e:
            raise TemplateError(self._error_context(e)) from None
        except RecursionError:
            raise TemplateError(f"template: {self.name}: nesting too deep to execute") from None

    @staticmethod
    def _location(text: str, name: str, pos: int) -> str:
        """NAME:LINE:COL, columns counted from 0 like Go's exec errors; no NAME: for unnamed templates."""
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1)
        return f"{name}:{line}:{col}" if name else f"{line}:{col}"

    def _error_context(self, error: ExecError) -> str:
        node = error.node
        pos = getattr(node, "pos", None)
        if pos is None:
            return f"template: {self.name}: {error.msg}"
        context = str(node)
        if len(context) > 20:
            context = context[:20] + "..."
        where = self._location(self._text, self.name, pos)
        return f"template: {where}: executing {go_quote(error.tree)} at <{context}>: {error.msg}"
