"""The rule-facing side of the engine: an expression compiled once, evaluated at each tick.

`compile_expr(text)` checks the text fully at load time (syntax, supported functions, result type), so a rule
never loads that would fail or silently do something else later; `Expression.evaluate` runs it at a tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.evaluator.promql.engine import Engine, EvalError, Storage
from services.evaluator.promql.nodes import Node, PromQLError, type_of
from services.evaluator.promql.nodes import compile_expr as compile_node
from services.evaluator.promql.values import Scalar

__all__ = ["EvalError", "Expression", "PromQLError", "compile_expr"]

Sample = tuple[dict[str, str], float]
_ENGINES: dict[tuple[int, int], Engine] = {}


def _engine(lookback: float, subquery_step: float) -> Engine:
    key = (round(lookback * 1000), round(subquery_step * 1000))
    engine = _ENGINES.get(key)
    if engine is None:
        engine = _ENGINES[key] = Engine(lookback_ms=key[0], subquery_step_ms=key[1])
    return engine


@dataclass(frozen=True)
class Expression:
    """A compiled rule expression: `evaluate` gives the instant vector at `ts` (seconds)."""

    text: str
    node: Node

    def evaluate(
        self,
        store: Storage,
        ts: float,
        lookback: float,
        cache: dict[Any, Any] | None = None,
        subquery_step: float = 60.0,
    ) -> list[Sample]:
        """The instant vector at `ts` (seconds). `cache` shares series selections between the rules of one
        tick; the caller must drop entries whose series it has written to since. `subquery_step` is the step
        of subqueries that give none (Prometheus uses the global evaluation interval)."""
        value = _engine(lookback, subquery_step).instant(self.node, store, round(ts * 1000), cache)
        if isinstance(value, Scalar):
            # As Prometheus' rule manager: a scalar result is a one-element vector without labels.
            return [({}, value.value)]
        return [(s.labels, s.value) for s in value]  # type: ignore[union-attr]


def compile_expr(text: str) -> Expression:
    """Parse and check `text`; raises PromQLError saying what is wrong or unsupported."""
    node = compile_node(text)
    kind = type_of(node)
    if kind not in ("vector", "scalar"):
        raise PromQLError(
            f"invalid expression type {_TYPE_NAMES[kind]!r} for a rule, must be vector or scalar"
        )
    return Expression(text, node)


_TYPE_NAMES = {"matrix": "range vector", "string": "string", "vector": "instant vector", "scalar": "scalar"}
