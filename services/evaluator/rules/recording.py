"""A recording rule: evaluate an expression, store its result as a new series (rules/recording.go)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.evaluator.promql import Expression
from services.evaluator.promql.parse import Sample
from services.evaluator.series import METRIC_NAME


class RuleError(RuntimeError):
    """A rule whose evaluation failed; its health becomes "err" with this message."""


@dataclass
class RecordingRule:
    name: str
    expr: Expression
    labels: dict[str, str] = field(default_factory=dict)
    health: str = "unknown"
    last_error: str = ""

    def eval(self, vector: list[Sample], limit: int = 0) -> list[Sample]:
        """The series to record: the result renamed to the rule's name, with the rule's labels set (an empty
        label value removes the label). Two results with the same labels are an error, as in Prometheus."""
        out: list[Sample] = []
        seen: set[tuple[tuple[str, str], ...]] = set()
        for labels, value in vector:
            recorded = {**labels, METRIC_NAME: self.name}
            for key, label_value in self.labels.items():
                if label_value:
                    recorded[key] = label_value
                else:
                    recorded.pop(key, None)
            key = tuple(sorted(recorded.items()))
            if key in seen:
                raise RuleError("vector contains metrics with the same labelset after applying rule labels")
            seen.add(key)
            out.append((recorded, value))
        if limit and len(out) > limit:
            raise RuleError(f"exceeded limit of {limit} with {len(out)} series")
        return out
