"""PromQL for tripwire: parsed by `promql-parser`, compiled into our own tree (nodes), evaluated by the
engine with Prometheus 3.x semantics over the in-memory series store."""

from services.evaluator.promql.parse import EvalError, Expression, PromQLError, compile_expr

__all__ = ["EvalError", "Expression", "PromQLError", "compile_expr"]
