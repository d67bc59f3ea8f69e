"""Aggregation operators (sum, avg, min, max, count, group, stddev, stdvar, topk, bottomk, quantile,
count_values, limitk, limit_ratio) with `by` / `without`, as Prometheus' rangeEvalAgg and aggregation()."""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

from services.evaluator.promql.nodes import Aggregate
from services.evaluator.promql.numeric import kahan_add, quantile
from services.evaluator.promql.values import METRIC_NAME, Labels, Sample, Scalar, String, Vector
from shared.gofloat import format_go_float
from shared.matchers import go_quote

if TYPE_CHECKING:
    from services.evaluator.promql.engine import _Evaluator

_KEEP_LABELS = {"topk", "bottomk", "limitk", "limit_ratio"}


def _group_labels(labels: Labels, node: Aggregate) -> Labels:
    if node.without:
        return {k: v for k, v in labels.items() if k != METRIC_NAME and k not in node.grouping}
    return {k: v for k, v in labels.items() if k in node.grouping}


def evaluate_aggregate(ev: _Evaluator, node: Aggregate, ts: int) -> Vector:
    from services.evaluator.promql.engine import EvalError

    vector = ev.vector(node.expr, ts)
    op = node.op
    param: float | str | None = None
    if node.param is not None:
        value = ev.eval(node.param, ts)
        if isinstance(value, String | Scalar):
            param = value.value
        else:
            raise EvalError(f"{op}: parameter must be a scalar or string")
    if op == "limit_ratio" and math.isnan(float(param)):  # type: ignore[arg-type]
        raise EvalError("Ratio value is NaN")  # even over an empty vector, as Prometheus
    if op == "count_values":
        return _count_values(vector, node, str(param))
    if op in ("topk", "bottomk", "limitk"):
        k_float = float(param)  # type: ignore[arg-type]
        if math.isnan(k_float):
            raise EvalError("Parameter value is NaN")
        if k_float >= 2**63:
            k = 2**63 - 1
        elif k_float <= -(2**63):
            k = -(2**63)
        else:
            k = int(k_float)
        if k < 1:
            return []
    groups: dict[tuple[tuple[str, str], ...], tuple[Labels, list[Sample]]] = {}
    for sample in vector:
        labels = _group_labels(sample.labels, node)
        key = tuple(sorted(labels.items()))
        entry = groups.get(key)
        if entry is None:
            groups[key] = (labels, [sample])
        else:
            entry[1].append(sample)
    out: Vector = []
    for labels, members in groups.values():
        if op == "topk":
            out.extend(_top(members, k, largest=True))
        elif op == "bottomk":
            out.extend(_top(members, k, largest=False))
        elif op == "limitk":
            out.extend(members[:k])
        elif op == "limit_ratio":
            ratio = float(param)  # type: ignore[arg-type]
            if math.isnan(ratio):
                raise EvalError("Ratio value is NaN")
            out.extend(_limit_ratio(members, max(-1.0, min(1.0, ratio))))
        else:
            # Grouping `by (__name__)` groups by names still pending removal, which are then removed.
            drop = METRIC_NAME in labels and any(s.drop_name for s in members)
            out.append(Sample(labels, _reduce(op, [s.value for s in members], param), drop))
    return out


def _reduce(op: str, values: list[float], param: float | str | None) -> float:
    if op == "sum":
        total, c = 0.0, 0.0
        for v in values:
            total, c = kahan_add(v, total, c)
        return total + c
    if op == "avg":
        return mean(values)
    if op == "count":
        return float(len(values))
    if op == "group":
        return 1.0
    if op == "max":
        best = values[0]
        for v in values[1:]:
            if v > best or math.isnan(best):
                best = v
        return best
    if op == "min":
        best = values[0]
        for v in values[1:]:
            if v < best or math.isnan(best):
                best = v
        return best
    if op in ("stddev", "stdvar"):
        count, mean_v, aux = 0, 0.0, 0.0
        for v in values:
            count += 1
            delta = v - mean_v
            mean_v += delta / count
            aux += delta * (v - mean_v)
        var = aux / count
        return math.sqrt(var) if op == "stddev" else var
    if op == "quantile":
        return quantile(float(param), values)  # type: ignore[arg-type]
    raise AssertionError(op)


def mean(values: list[float]) -> float:
    """Prometheus' avg: a Kahan sum divided at the end, falling back to an incremental mean on overflow."""
    total, c = values[0], 0.0
    count = 1.0
    incremental = False
    mean_v = 0.0
    for v in values[1:]:
        count += 1
        if not incremental:
            new_total, new_c = kahan_add(v, total, c)
            if not math.isinf(new_total):
                total, c = new_total, new_c
                continue
            incremental = True
            mean_v = total / (count - 1)
            c = c / (count - 1)
        if math.isinf(mean_v):
            if math.isinf(v) and (mean_v > 0) == (v > 0):
                continue
            if not math.isinf(v) and not math.isnan(v):
                continue
        q = (count - 1) / count
        mean_v, c = kahan_add(v / count, q * mean_v, q * c)
    if incremental:
        return mean_v + c
    return total / count + c / count


def _top(members: list[Sample], k: int, largest: bool) -> list[Sample]:
    # NaN always sorts last: it is neither the largest nor the smallest.
    def key(s: Sample) -> tuple[int, float]:
        if s.value != s.value:
            return (1, 0.0)
        return (0, -s.value if largest else s.value)

    return sorted(members, key=key)[:k]


def _limit_ratio(members: list[Sample], ratio: float) -> list[Sample]:
    # A stable per-series offset in [0, 1): a series is kept when its offset is below the ratio (or, for a
    # negative ratio, at or above 1 + ratio), so limit_ratio(r) and limit_ratio(r - 1) are complements.
    out = []
    for sample in members:
        digest = hashlib.blake2b(repr(sorted(sample.labels.items())).encode(), digest_size=8).digest()
        offset = int.from_bytes(digest, "big") / 2**64
        if (ratio >= 0 and offset < ratio) or (ratio < 0 and offset >= 1 + ratio):
            out.append(sample)
    return out


def _count_values(vector: Vector, node: Aggregate, label: str) -> Vector:
    from services.evaluator.promql.engine import EvalError
    from services.evaluator.promql.functions import valid_label_name

    if not valid_label_name(label):  # Prometheus 3.x: any non-empty UTF-8 name
        raise EvalError(f"invalid label name {go_quote(label)}")
    counts: dict[tuple[tuple[str, str], ...], tuple[Labels, int]] = {}
    for sample in vector:
        labels = _group_labels(sample.labels, node)
        labels[label] = format_go_float(sample.value)
        key = tuple(sorted(labels.items()))
        prior = counts.get(key)
        counts[key] = (labels, (prior[1] if prior else 0) + 1)
    return [Sample(labels, float(n)) for labels, n in counts.values()]
