"""Compiling PromQL text into something the evaluator can run.

Supported today: an instant vector selector compared with a number, `<selector> <op> <number>` (or the
number on the left), with `=`, `!=`, `=~`, `!~` matchers and the comparison operators `>`, `<`, `>=`, `<=`,
`==`, `!=`. That is what a threshold alert needs; the full engine (functions, aggregations, ranges) replaces
this module's evaluation while keeping its interface: `compile_expr(text).evaluate(store, ts, lookback)`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import promql_parser

from services.evaluator.series import METRIC_NAME, SeriesStore
from shared.matchers import Matcher, MatcherError

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
# `a < b` with the number on the left is `b > a` with the selector on the left.
_FLIPPED = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "==": "==", "!=": "!="}
_MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}

SUPPORTED = "an instant selector compared with a number, e.g. 'errors_ratio{service=\"checkout\"} > 0.02'"


class PromQLError(ValueError):
    """An expression that does not parse, or that tripwire does not evaluate (yet)."""


Sample = tuple[dict[str, str], float]


@dataclass(frozen=True)
class Selector:
    matchers: tuple[Matcher, ...]

    def evaluate(self, store: SeriesStore, ts: float, lookback: float) -> list[Sample]:
        result = []
        for series in store.select(self.matchers):
            point = series.latest(ts, lookback)
            if point is not None:
                result.append((series.labels, point[1]))
        return result


@dataclass(frozen=True)
class Expression:
    """A compiled expression: `evaluate` gives the instant vector at `ts`."""

    text: str
    selector: Selector
    op: str
    threshold: float

    def evaluate(self, store: SeriesStore, ts: float, lookback: float) -> list[Sample]:
        # A comparison without `bool` filters, keeping the sample value and `__name__` (as Prometheus does).
        compare = _COMPARISONS[self.op]
        return [
            (labels, v)
            for labels, v in self.selector.evaluate(store, ts, lookback)
            if compare(v, self.threshold)
        ]


def _selector(node: promql_parser.VectorSelector) -> Selector:
    if node.offset is not None or node.at is not None:
        raise PromQLError("offset and @ modifiers are not supported yet")
    if node.matchers.or_matchers:
        raise PromQLError("'or' inside label matchers is not supported")
    matchers: list[Matcher] = []
    if node.name:
        matchers.append(Matcher(METRIC_NAME, "=", node.name))
    for m in node.matchers.matchers:
        try:
            matchers.append(Matcher.create(m.name, _MATCH_OPS[str(m.op)], m.value))
        except MatcherError as exc:
            raise PromQLError(str(exc)) from None
    return Selector(tuple(matchers))


def _unwrap(node: object) -> object:
    while isinstance(node, promql_parser.ParenExpr):
        node = node.expr
    return node


def compile_expr(text: str) -> Expression:
    """Parse and check `text`; raises PromQLError saying what is wrong or unsupported."""
    try:
        tree = promql_parser.parse(text)
    except ValueError as exc:
        raise PromQLError(f"could not parse expression: {exc}") from None
    tree = _unwrap(tree)
    if isinstance(tree, promql_parser.BinaryExpr):
        op = str(tree.op)
        lhs, rhs = _unwrap(tree.lhs), _unwrap(tree.rhs)
        if op in _COMPARISONS:
            if tree.modifier is not None and tree.modifier.return_bool:
                raise PromQLError("comparisons with 'bool' are not supported yet; " + SUPPORTED)
            if isinstance(lhs, promql_parser.VectorSelector) and isinstance(rhs, promql_parser.NumberLiteral):
                return Expression(text, _selector(lhs), op, float(rhs.val))
            if isinstance(lhs, promql_parser.NumberLiteral) and isinstance(rhs, promql_parser.VectorSelector):
                return Expression(text, _selector(rhs), _FLIPPED[op], float(lhs.val))
    raise PromQLError(f"expression {text.strip()!r} is not supported yet; supported: {SUPPORTED}")
