"""The PromQL subset the evaluator runs. Parsing is `promql-parser`'s; we wrap its errors and reject what we
do not evaluate, so a rule never loads that would silently do something else."""

from services.evaluator.promql.parse import Expression, PromQLError, compile_expr

__all__ = ["Expression", "PromQLError", "compile_expr"]
