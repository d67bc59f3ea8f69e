"""Binary operators: arithmetic, comparison (with and without `bool`) and set operators, with vector matching
(`on`, `ignoring`, `group_left`, `group_right`) as Prometheus' VectorBinop, VectorAnd/Or/Unless do it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from services.evaluator.promql.nodes import ARITHMETIC, COMPARISONS, SET_OPERATORS, Binary
from services.evaluator.promql.numeric import go_div
from services.evaluator.promql.values import METRIC_NAME, Labels, Sample, Scalar, Value, Vector
from shared.matchers import labels_string

if TYPE_CHECKING:
    from services.evaluator.promql.engine import _Evaluator


def _pow(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except (ValueError, OverflowError):
        if a == 0 and b < 0:
            return math.inf
        if math.isnan(a) or math.isnan(b):
            return math.nan
        try:
            # Go's math.Pow: a negative base with a non-integer exponent is NaN; overflow is ±Inf.
            if a < 0 and not float(b).is_integer():
                return math.nan
            return math.copysign(math.inf, a if float(b).is_integer() and int(b) % 2 else 1.0)
        except (ValueError, OverflowError):
            return math.nan


def _mod(a: float, b: float) -> float:
    # Go's math.Mod: NaN for a zero divisor or an infinite dividend; the dividend for an infinite divisor.
    if b == 0 or math.isinf(a) or math.isnan(a) or math.isnan(b):
        return math.nan
    if math.isinf(b):
        return a
    return math.fmod(a, b)


ARITH = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": go_div,
    "%": _mod,
    "^": _pow,
    "atan2": math.atan2,
}
COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


def _apply(op: str, a: float, b: float) -> tuple[float, bool]:
    """(value, keep) as Prometheus' vectorElemBinop: comparisons keep the left value when true."""
    if op in COMPARE:
        return a, COMPARE[op](a, b)
    try:
        return ARITH[op](a, b), True
    except OverflowError:
        return math.inf, True


def evaluate_binary(ev: _Evaluator, node: Binary, ts: int) -> Value:
    lhs = ev.eval(node.lhs, ts)
    rhs = ev.eval(node.rhs, ts)
    op = node.op
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        value, keep = _apply(op, lhs.value, rhs.value)
        if op in COMPARISONS:
            return Scalar(1.0 if keep else 0.0)
        return Scalar(value)
    if isinstance(rhs, Scalar):
        return _vector_scalar(op, lhs, rhs.value, swap=False, return_bool=node.return_bool)  # type: ignore[arg-type]
    if isinstance(lhs, Scalar):
        return _vector_scalar(op, rhs, lhs.value, swap=True, return_bool=node.return_bool)  # type: ignore[arg-type]
    if op in SET_OPERATORS:
        return _set_op(node, lhs, rhs)  # type: ignore[arg-type]
    return _vector_vector(node, lhs, rhs)  # type: ignore[arg-type]


def _vector_scalar(op: str, vector: Vector, scalar: float, swap: bool, return_bool: bool) -> Vector:
    out: Vector = []
    drop = op in ARITHMETIC or return_bool
    for sample in vector:
        a, b = (scalar, sample.value) if swap else (sample.value, scalar)
        value, keep = _apply(op, a, b)
        if op in COMPARISONS and swap:
            value = b  # the vector element's value, even when it is on the right
        if return_bool:
            value, keep = (1.0 if keep else 0.0), True
        if keep:
            out.append(Sample(sample.labels, value, sample.drop_name or drop))
    return out


def _signature(labels: Labels, on: bool, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    if on:
        return tuple(sorted((n, labels[n]) for n in names if labels.get(n, "") != ""))
    return tuple(sorted((k, v) for k, v in labels.items() if k != METRIC_NAME and k not in names))


def _set_op(node: Binary, lhs: Vector, rhs: Vector) -> Vector:
    on, names = node.on, node.matching
    if node.op == "and":
        if not lhs or not rhs:
            return []
        right = {_signature(s.labels, on, names) for s in rhs}
        return [s for s in lhs if _signature(s.labels, on, names) in right]
    if node.op == "or":
        if not lhs:
            return list(rhs)
        if not rhs:
            return list(lhs)
        left = {_signature(s.labels, on, names) for s in lhs}
        return list(lhs) + [s for s in rhs if _signature(s.labels, on, names) not in left]
    # unless
    if not lhs or not rhs:
        return list(lhs)
    right = {_signature(s.labels, on, names) for s in rhs}
    return [s for s in lhs if _signature(s.labels, on, names) not in right]


def _vector_vector(node: Binary, lhs: Vector, rhs: Vector) -> Vector:
    from services.evaluator.promql.engine import EvalError

    if not lhs or not rhs:
        return []
    op, on, names, card = node.op, node.on, node.matching, node.card
    if card == "one-to-many":
        lhs, rhs = rhs, lhs
    right: dict[tuple[tuple[str, str], ...], Sample] = {}
    for sample in rhs:
        sig = _signature(sample.labels, on, names)
        if sig in right:
            side = "left" if card == "one-to-many" else "right"
            # Prometheus' exact text (no space after the ';'), naming the first series then its duplicate.
            raise EvalError(
                f"found duplicate series for the match group {labels_string(dict(sig))} on the {side} "
                f"hand-side of the operation: [{labels_string(right[sig].labels)}, "
                f"{labels_string(sample.labels)}];many-to-many matching not allowed: matching labels must "
                "be unique on one side"
            )
        right[sig] = sample
    matched: dict[tuple[tuple[str, str], ...], set[tuple[tuple[str, str], ...]] | None] = {}
    drop = op in ARITHMETIC or node.return_bool
    out: Vector = []
    for sample in lhs:
        sig = _signature(sample.labels, on, names)
        other = right.get(sig)
        if other is None:
            continue
        # Checked before filtering, so a mismatch is an error even when a comparison drops every sample.
        if card == "one-to-one":
            if sig in matched:
                raise EvalError(
                    "multiple matches for labels: "
                    "many-to-one matching must be explicit (group_left/group_right)"
                )
            matched[sig] = None
        a, b = sample.value, other.value
        if card == "one-to-many":
            a, b = b, a
        value, keep = _apply(op, a, b)
        if node.return_bool:
            value, keep = (1.0 if keep else 0.0), True
        if not keep:
            continue
        labels = _result_labels(sample.labels, other.labels, node)
        if card != "one-to-one":
            inserted = matched.setdefault(sig, set())
            key = tuple(sorted(labels.items()))
            if key in inserted:  # type: ignore[operator]
                raise EvalError("multiple matches for labels: grouping labels must ensure unique matches")
            inserted.add(key)  # type: ignore[union-attr]
        out.append(Sample(labels, value, drop or sample.drop_name))
    return out


def _result_labels(many: Labels, one: Labels, node: Binary) -> Labels:
    if node.card == "one-to-one":
        if node.on:
            return {k: v for k, v in many.items() if k in node.matching}
        return {k: v for k, v in many.items() if k not in node.matching}
    labels = dict(many)
    for name in node.include:
        value = one.get(name, "")
        if value:
            labels[name] = value
        else:
            labels.pop(name, None)
    return labels
