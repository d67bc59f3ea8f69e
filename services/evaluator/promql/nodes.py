"""Compiling PromQL text into our own small, immutable expression tree.

Parsing is `promql-parser`'s (the Rust parser Greptime maintains, with Prometheus' grammar). Its nodes are
proxies into Rust: every attribute access builds new Python objects, far too slow to walk on every tick of a
thousand rules. So an expression is parsed once and converted into the dataclasses below, checked on the way:
anything tripwire does not evaluate is refused here, at load time, with the reason.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal

import promql_parser

from services.evaluator.promql.values import METRIC_NAME
from shared.matchers import Matcher, MatcherError


class PromQLError(ValueError):
    """An expression that does not parse, or that uses something tripwire does not evaluate."""


ValueType = Literal["scalar", "vector", "matrix", "string"]
# `@` is a fixed time in ms, or the query's start or end.
At = int | Literal["start", "end"] | None


@dataclass(frozen=True, slots=True)
class NumberLiteral:
    value: float


@dataclass(frozen=True, slots=True)
class StringLiteral:
    value: str


@dataclass(frozen=True, slots=True)
class VectorSelector:
    name: str | None
    matchers: tuple[Matcher, ...]
    offset_ms: int = 0
    at: At = None


@dataclass(frozen=True, slots=True)
class MatrixSelector:
    selector: VectorSelector
    range_ms: int


@dataclass(frozen=True, slots=True)
class Subquery:
    expr: Node
    range_ms: int
    step_ms: int  # 0: the engine's default subquery step
    offset_ms: int = 0
    at: At = None


@dataclass(frozen=True, slots=True)
class Unary:
    expr: Node  # always a negation: unary plus is dropped while compiling


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    lhs: Node
    rhs: Node
    return_bool: bool = False
    card: Literal["one-to-one", "many-to-one", "one-to-many", "many-to-many"] = "one-to-one"
    on: bool = False  # True: on(labels); False: ignoring(labels) (an empty ignoring() is the default)
    matching: tuple[str, ...] = ()
    include: tuple[str, ...] = ()  # group_left/group_right labels


@dataclass(frozen=True, slots=True)
class Aggregate:
    op: str
    expr: Node
    param: Node | None = None
    without: bool = False
    grouping: tuple[str, ...] = ()
    has_grouping: bool = False  # `by ()` groups everything; no clause as well


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]
    # label_replace's regex, compiled once with the expression (Go's RE2 syntax, fully anchored).
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)


Node = (
    NumberLiteral
    | StringLiteral
    | VectorSelector
    | MatrixSelector
    | Subquery
    | Unary
    | Binary
    | Aggregate
    | Call
)

COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPERATORS = frozenset({"and", "or", "unless"})
ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^", "atan2"})

_MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}
_CARD = {
    "VectorMatchCardinality.OneToOne": "one-to-one",
    "VectorMatchCardinality.ManyToOne": "many-to-one",
    "VectorMatchCardinality.OneToMany": "one-to-many",
    "VectorMatchCardinality.ManyToMany": "many-to-many",
}
_INT64_MAX = 2**63 - 1


def _ms(delta: timedelta | None) -> int:
    return 0 if delta is None else delta // timedelta(milliseconds=1)


def _at(modifier: object | None) -> At:
    if modifier is None:
        return None
    kind = str(modifier.type)  # type: ignore[attr-defined]
    if kind.endswith("Start"):
        return "start"
    if kind.endswith("End"):
        return "end"
    # The parser's own rendering, `@ 1.500` (seconds, ms precision): its `at` getter converts to a datetime,
    # which fails beyond the year 9999, while Prometheus allows any time whose milliseconds fit an int64.
    text = str(modifier).removeprefix("@").strip()
    try:
        seconds = Decimal(text)
    except InvalidOperation:
        raise PromQLError(f"timestamp out of bounds for @ modifier: {text}") from None
    if seconds == 0:
        # A time before 1970 renders as 0, and the parser cannot represent it (its getter panics): refuse it
        # rather than evaluate at the wrong time. (Prometheus accepts negative `@` times.)
        try:
            modifier.at  # type: ignore[attr-defined]  # noqa: B018
        except BaseException as exc:  # pyo3's PanicException derives from BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            found = re.search(r"SystemTimeError\(([^)]*)\)", str(exc))
            before = f" (-{found.group(1)})" if found else ""
            raise PromQLError(
                f"timestamp out of bounds for @ modifier{before}: times before 1970 are not supported"
            ) from None
    ms = int((seconds * 1000).to_integral_value())
    if ms > _INT64_MAX:
        raise PromQLError(f"timestamp out of bounds for @ modifier: {text}")
    return ms


def type_of(node: Node) -> ValueType:
    """The static PromQL type of an expression."""
    match node:
        case NumberLiteral():
            return "scalar"
        case StringLiteral():
            return "string"
        case VectorSelector() | Aggregate():
            return "vector"
        case MatrixSelector() | Subquery():
            return "matrix"
        case Unary():
            return type_of(node.expr)
        case Binary():
            both_scalar = type_of(node.lhs) == "scalar" and type_of(node.rhs) == "scalar"
            return "scalar" if both_scalar else "vector"
        case Call():
            from services.evaluator.promql.functions import FUNCTIONS

            return FUNCTIONS[node.name].returns
    raise AssertionError(node)


def compile_expr(text: str) -> Node:
    """Parse `text` into an expression tree; raises PromQLError saying what is wrong or unsupported.

    The parser is Rust code behind pyo3: besides its own ValueError, reading its nodes can raise
    OverflowError/ValueError (values beyond Python's datetime or timedelta) or even a PanicException, which
    derives from BaseException. All of these are the expression's fault, so all become a PromQLError."""
    try:
        tree = promql_parser.parse(text)
        token = _GO_STRINGS.set(_go_strings(text))
        try:
            return _convert(tree)
        finally:
            _GO_STRINGS.reset(token)
    except PromQLError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # see above: pyo3 panics are BaseExceptions
        raise PromQLError(f"could not parse expression: {exc}") from None


# String literals as Go decodes them, by the parser's decoding, for the expression being converted.
_GO_STRINGS: ContextVar[dict[str, str]] = ContextVar("go_strings", default={})  # noqa: B039  # never mutated
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|`[^`]*`|#[^\n]*')


def _go_strings(text: str) -> dict[str, str]:
    """The string literals of `text` that the parser decodes differently from Go: it reads `\\xNN` and
    octal escapes as code points, Go as bytes (so "\\xc3\\xa9" is "é", and "\\xff" is not valid UTF-8,
    which label names must be). Maps the parser's value to Go's (invalid bytes as surrogate escapes)."""
    if "\\" not in text:
        return {}
    from services.evaluator.promql.notation import NotationError, unquote_bytes

    fixes: dict[str, str] = {}
    for match in _STRING_OR_COMMENT.finditer(text):
        raw = match.group()
        if raw[0] in "#`" or "\\" not in raw:
            continue
        try:
            parsed = promql_parser.parse(raw)
            go_value = unquote_bytes(raw)
        except (ValueError, NotationError):
            continue
        if isinstance(parsed, promql_parser.StringLiteral) and parsed.val != go_value:
            fixes[parsed.val] = go_value
    return fixes


def _selector(node: promql_parser.VectorSelector) -> VectorSelector:
    matcher_set = node.matchers
    if matcher_set.or_matchers:
        raise PromQLError("'or' inside label matchers is not supported (it is not in Prometheus 3.x)")
    matchers: list[Matcher] = []
    name = node.name
    if name:
        matchers.append(Matcher(METRIC_NAME, "=", name))
    for m in matcher_set.matchers:
        try:
            matchers.append(Matcher.create(m.name, _MATCH_OPS[str(m.op)], m.value))
        except MatcherError as exc:
            raise PromQLError(str(exc)) from None
    return VectorSelector(name or None, tuple(matchers), _ms(node.offset), _at(node.at))


def _convert(node: object) -> Node:
    P = promql_parser
    match node:
        case P.ParenExpr():
            return _convert(node.expr)
        case P.NumberLiteral():
            return NumberLiteral(float(node.val))
        case P.StringLiteral():
            value = node.val
            return StringLiteral(_GO_STRINGS.get().get(value, value))
        case P.VectorSelector():
            return _selector(node)
        case P.MatrixSelector():
            return MatrixSelector(_selector(node.vector_selector), _ms(node.range))
        case P.SubqueryExpr():
            return Subquery(
                _convert(node.expr), _ms(node.range), _ms(node.step), _ms(node.offset), _at(node.at)
            )
        case P.UnaryExpr():
            inner = _convert(node.expr)
            if isinstance(inner, NumberLiteral):
                return NumberLiteral(-inner.value)
            return Unary(inner)
        case P.BinaryExpr():
            return _binary(node)
        case P.AggregateExpr():
            modifier = node.modifier
            without = modifier is not None and str(modifier.type).endswith("Without")
            return Aggregate(
                op=str(node.op),
                expr=_convert(node.expr),
                param=_convert(node.param) if node.param is not None else None,
                without=without,
                grouping=tuple(modifier.labels) if modifier is not None else (),
                has_grouping=modifier is not None,
            )
        case P.Call():
            from services.evaluator.promql.functions import FUNCTIONS

            name = node.func.name
            if name not in FUNCTIONS:
                raise PromQLError(f"function {name}() is not supported by tripwire")
            call = Call(name, tuple(_convert(a) for a in node.args))
            check = FUNCTIONS[name].check
            return check(call) if check is not None else call
    raise PromQLError(f"unsupported expression {node}")


def _binary(node: promql_parser.BinaryExpr) -> Binary:
    op = str(node.op)
    modifier = node.modifier
    lhs, rhs = _convert(node.lhs), _convert(node.rhs)
    if modifier is None:
        card = "many-to-many" if op in SET_OPERATORS else "one-to-one"
        return Binary(op, lhs, rhs, card=card)  # type: ignore[arg-type]
    matching = modifier.matching
    on = matching is not None and str(matching.type).endswith("Include")
    return Binary(
        op=op,
        lhs=lhs,
        rhs=rhs,
        return_bool=bool(modifier.return_bool),
        card=_CARD[str(modifier.card)],  # type: ignore[arg-type]
        on=on,
        matching=tuple(matching.labels) if matching is not None else (),
        include=tuple(modifier.group_labels or ()),
    )


def lookbehind_ms(node: Node, lookback_ms: int) -> int:
    """How far before the evaluation time `node` reads samples (ranges, offsets, subqueries and the lookback
    of instant selectors): the series store must keep at least this much history. `@` reads at fixed times,
    which are counted as if at the evaluation time."""
    match node:
        case VectorSelector():
            return max(0, node.offset_ms) + lookback_ms
        case MatrixSelector():
            return max(0, node.selector.offset_ms) + node.range_ms
        case Subquery():
            return max(0, node.offset_ms) + node.range_ms + lookbehind_ms(node.expr, lookback_ms)
        case Unary():
            return lookbehind_ms(node.expr, lookback_ms)
        case Binary():
            return max(lookbehind_ms(node.lhs, lookback_ms), lookbehind_ms(node.rhs, lookback_ms))
        case Aggregate():
            inner = lookbehind_ms(node.expr, lookback_ms)
            return max(inner, lookbehind_ms(node.param, lookback_ms)) if node.param is not None else inner
        case Call():
            return max((lookbehind_ms(a, lookback_ms) for a in node.args), default=0)
    return 0
