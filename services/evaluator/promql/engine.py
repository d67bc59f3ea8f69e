"""The PromQL engine: evaluates a compiled expression over a series store at a timestamp, as Prometheus 3.x
does.

Semantics followed exactly (promql/engine.go in Prometheus 3.x):
- an instant selector takes each series' newest sample in `(t - lookback, t]`, none if that is a stale marker;
- a range selector takes the samples in `(t - range, t]` (left-open), stale markers left out;
- `offset` and `@` move the reference time (`@ start()` / `@ end()` are the query's bounds);
- subqueries evaluate their expression at the multiples of their step inside `(t - range, t]`;
- `__name__` is dropped where a function or operator drops it, and two series left alike there are an
  error, as the Prometheus server and promtool do by default. `Engine(delayed_name_removal=True)` instead
  delays the removal to the end of the query, as the feature flag promql-delayed-name-removal does (and
  promqltest, whose scripts are written for it): `label_replace` and `by (__name__)` then still see it.

Timestamps are integer milliseconds inside the engine. The storage is anything with `select(matchers)`
yielding series with `labels`, `timestamps` (float seconds, ascending) and `values` — `SeriesStore` does.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.evaluator.promql.nodes import (
    Aggregate,
    Binary,
    Call,
    MatrixSelector,
    Node,
    NumberLiteral,
    PromQLError,
    StringLiteral,
    Subquery,
    Unary,
    VectorSelector,
    compile_expr,
    type_of,
)
from services.evaluator.promql.values import (
    METRIC_NAME,
    Matrix,
    RangeSeries,
    Sample,
    Scalar,
    String,
    Value,
    Vector,
    is_stale,
    labels_key,
    without_name,
)
from shared.matchers import Matcher

__all__ = ["Engine", "EvalError", "PromQLError", "compile_expr"]

DEFAULT_LOOKBACK_MS = 300_000
DEFAULT_SUBQUERY_STEP_MS = 60_000


class EvalError(RuntimeError):
    """An expression that failed at evaluation time (e.g. many-to-many matching, duplicate label sets)."""


class StoredSeries(Protocol):
    labels: dict[str, str]
    timestamps: Sequence[float]
    values: Sequence[float]


class Storage(Protocol):
    def select(self, matchers: Iterable[Matcher]) -> Iterable[StoredSeries]: ...


@dataclass
class _Query:
    """One evaluation: the storage, the query's time bounds (for `@ start()`/`@ end()`) and caches."""

    storage: Storage
    start_ms: int
    end_ms: int
    lookback_ms: int
    subquery_step_ms: int
    delayed_name_removal: bool = False
    # Selections by matchers; may be shared by the rules of one group tick (see `SelectionCache`).
    selected: dict[tuple[Matcher, ...], list[StoredSeries]] = field(default_factory=dict)

    def select(self, selector: VectorSelector) -> list[StoredSeries]:
        found = self.selected.get(selector.matchers)
        if found is None:
            found = list(self.storage.select(selector.matchers))
            self.selected[selector.matchers] = found
        return found

    def ref_time(self, ts: int, at: object, offset_ms: int) -> int:
        if at is None:
            base = ts
        elif at == "start":
            base = self.start_ms
        elif at == "end":
            base = self.end_ms
        else:
            base = at  # type: ignore[assignment]
        return base - offset_ms


class Engine:
    """Evaluates compiled expressions. Stateless between calls; one engine serves every rule."""

    def __init__(
        self,
        lookback_ms: int = DEFAULT_LOOKBACK_MS,
        subquery_step_ms: int = DEFAULT_SUBQUERY_STEP_MS,
        *,
        delayed_name_removal: bool = False,
    ) -> None:
        self.lookback_ms = lookback_ms
        self.subquery_step_ms = subquery_step_ms
        # Off by default, as in Prometheus 3.x (a feature flag); promqltest turns it on.
        self.delayed_name_removal = delayed_name_removal

    def _query(self, storage: Storage, start_ms: int, end_ms: int) -> _Query:
        return _Query(
            storage, start_ms, end_ms, self.lookback_ms, self.subquery_step_ms, self.delayed_name_removal
        )

    def instant(
        self,
        expr: Node | str,
        storage: Storage,
        ts_ms: int,
        cache: dict[tuple[Matcher, ...], list[StoredSeries]] | None = None,
    ) -> Value:
        """The value of `expr` at `ts_ms`: a vector, scalar, string, or a matrix (for a range selector).
        `cache` lets several evaluations over the same unchanged storage share their series selections."""
        node = compile_expr(expr) if isinstance(expr, str) else expr
        query = self._query(storage, ts_ms, ts_ms)
        if cache is not None:
            query.selected = cache
        value = _Evaluator(query).eval(node, ts_ms)
        if isinstance(value, list) and (not value or isinstance(value[0], Sample)):
            return finish_vector(value)  # type: ignore[arg-type]
        if isinstance(value, list):
            return finish_matrix(value)  # type: ignore[arg-type]
        return value

    def range(self, expr: Node | str, storage: Storage, start_ms: int, end_ms: int, step_ms: int) -> Matrix:
        """The value of `expr` at every step from `start_ms` to `end_ms` (inclusive), as series."""
        node = compile_expr(expr) if isinstance(expr, str) else expr
        if type_of(node) not in ("vector", "scalar"):
            raise PromQLError(
                f"range query needs an instant vector or scalar expression, got {type_of(node)}"
            )
        query = self._query(storage, start_ms, end_ms)
        evaluator = _Evaluator(query)
        out = finish_matrix(_steps(evaluator, node, start_ms, end_ms, step_ms))
        # Prometheus sorts a range query's series by label set (labels.Compare: pairs in name order).
        out.sort(key=lambda series: labels_key(series.labels))
        return out


def _steps(evaluator: _Evaluator, node: Node, start_ms: int, end_ms: int, step_ms: int) -> Matrix:
    """Evaluate `node` at each step and collect the results per label set."""
    series: dict[tuple[tuple[str, str], ...], RangeSeries] = {}
    ts = start_ms
    while ts <= end_ms:
        value = evaluator.eval(node, ts)
        samples = [Sample({}, value.value)] if isinstance(value, Scalar) else value
        seen: set[tuple[tuple[str, str], ...]] = set()
        for sample in samples:  # type: ignore[union-attr]
            key = labels_key(sample.labels)
            if key in seen:
                raise EvalError("vector cannot contain metrics with the same labelset")
            seen.add(key)
            out = series.get(key)
            if out is None:
                out = series[key] = RangeSeries(sample.labels, drop_name=sample.drop_name)
            out.timestamps.append(ts)
            out.values.append(sample.value)
        if step_ms <= 0:
            break
        ts += step_ms
    return list(series.values())


def finish_vector(vector: Vector) -> Vector:
    """Apply delayed `__name__` removal and refuse duplicate label sets, as at the end of a query."""
    names = {s.labels.get(METRIC_NAME) for s in vector}
    if len(names) <= 1 and all(s.drop_name for s in vector):
        # Distinct series of one name stay distinct without it: skip building a key per sample (this runs
        # after every function and operator, e.g. each rate() of a 1,000-rule tick).
        return [Sample(without_name(s.labels), s.value) for s in vector]
    out: Vector = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for sample in vector:
        labels = sample.labels
        if sample.drop_name and METRIC_NAME in labels:
            labels = {k: v for k, v in labels.items() if k != METRIC_NAME}
        key = labels_key(labels)
        if key in seen:
            raise EvalError("vector cannot contain metrics with the same labelset")
        seen.add(key)
        out.append(Sample(labels, sample.value))
    return out


def finish_matrix(matrix: Matrix) -> Matrix:
    out: dict[tuple[tuple[str, str], ...], RangeSeries] = {}
    for series in matrix:
        labels = series.labels
        if series.drop_name and METRIC_NAME in labels:
            labels = {k: v for k, v in labels.items() if k != METRIC_NAME}
        key = labels_key(labels)
        if key in out:
            # After dropping names, two series may merge if their steps do not overlap (as Prometheus).
            merged = out[key]
            if set(merged.timestamps) & set(series.timestamps):
                raise EvalError("vector cannot contain metrics with the same labelset")
            points = sorted(
                zip(
                    list(merged.timestamps) + list(series.timestamps),
                    list(merged.values) + list(series.values),
                    strict=True,
                )
            )
            merged.timestamps = [p[0] for p in points]
            merged.values = [p[1] for p in points]
            continue
        out[key] = RangeSeries(labels, list(series.timestamps), list(series.values))
    return list(out.values())


class MillisView(Sequence[int]):
    """Stored float-second timestamps seen as integer milliseconds, converted only where read (rate reads
    two of them; converting whole windows up front cost a third of a tick)."""

    __slots__ = ("_seconds",)
    __hash__ = None  # type: ignore[assignment]  # compared by value, like the list it stands for

    def __init__(self, seconds: Sequence[float]) -> None:
        self._seconds = seconds

    def __len__(self) -> int:
        return len(self._seconds)

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        if isinstance(index, slice):
            return [round(t * 1000) for t in self._seconds[index]]
        return round(self._seconds[index] * 1000)

    def __iter__(self):  # type: ignore[no-untyped-def, override]
        return (round(t * 1000) for t in self._seconds)

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other)  # type: ignore[call-overload]

    def __repr__(self) -> str:
        return repr(list(self))


def drop_names_now(vector: Vector) -> Vector:
    """Without delayed name removal: drop `__name__` where the operation marked it, then refuse two series
    left alike (Prometheus checks ContainsSameLabelset after each function and operator)."""
    if not any(s.drop_name for s in vector):
        return vector
    return finish_vector(vector)


class _Evaluator:
    def __init__(self, query: _Query) -> None:
        self.q = query

    # Dispatch -------------------------------------------------------------------------------------------
    def eval(self, node: Node, ts: int) -> Value:
        value = self._eval(node, ts)
        if (
            not self.q.delayed_name_removal
            and isinstance(node, Call | Unary | Binary | Aggregate)
            and isinstance(value, list)
            and value
            and isinstance(value[0], Sample)
        ):
            return drop_names_now(value)  # type: ignore[arg-type]
        return value

    def _eval(self, node: Node, ts: int) -> Value:
        match node:
            case NumberLiteral():
                return Scalar(node.value)
            case StringLiteral():
                return String(node.value)
            case VectorSelector():
                return self.instant_selector(node, ts)
            case MatrixSelector():
                return self.range_selector(node, ts)
            case Subquery():
                return self.subquery(node, ts)
            case Unary():
                value = self.eval(node.expr, ts)
                if isinstance(value, Scalar):
                    return Scalar(-value.value)
                return [Sample(s.labels, -s.value, True) for s in value]  # type: ignore[union-attr]
            case Binary():
                from services.evaluator.promql.binary import evaluate_binary

                return evaluate_binary(self, node, ts)
            case Aggregate():
                from services.evaluator.promql.aggregations import evaluate_aggregate

                return evaluate_aggregate(self, node, ts)
            case Call():
                from services.evaluator.promql.functions import call

                return call(self, node, ts)
        raise AssertionError(node)

    def scalar(self, node: Node, ts: int) -> float:
        value = self.eval(node, ts)
        if isinstance(value, Scalar):
            return value.value
        raise EvalError(f"expected a scalar, got {type(value).__name__}")

    def vector(self, node: Node, ts: int) -> Vector:
        value = self.eval(node, ts)
        if isinstance(value, Scalar):
            raise EvalError("expected an instant vector, got a scalar")
        return value  # type: ignore[return-value]

    # Selectors ------------------------------------------------------------------------------------------
    def picked(self, node: VectorSelector, ts: int) -> Iterator[tuple[StoredSeries, int]]:
        """Each selected series with the index of its newest sample in `(ref - lookback, ref]`, unless that
        sample is a stale marker."""
        ref = self.q.ref_time(ts, node.at, node.offset_ms)
        upper = ref / 1000
        lower = (ref - self.q.lookback_ms) / 1000
        for series in self.q.select(node):
            times = series.timestamps
            i = bisect.bisect_right(times, upper) - 1
            if i < 0 or times[i] <= lower:
                continue
            value = series.values[i]
            if math.isnan(value) and is_stale(value):
                continue
            yield series, i

    def instant_selector(self, node: VectorSelector, ts: int) -> Vector:
        return [Sample(series.labels, series.values[i]) for series, i in self.picked(node, ts)]

    def range_selector(self, node: MatrixSelector, ts: int) -> Matrix:
        selector = node.selector
        ref = self.q.ref_time(ts, selector.at, selector.offset_ms)
        upper = ref / 1000
        lower = (ref - node.range_ms) / 1000
        out: Matrix = []
        for series in self.q.select(selector):
            times = series.timestamps
            lo = bisect.bisect_right(times, lower)
            hi = bisect.bisect_right(times, upper)
            if lo >= hi:
                continue
            window_v = series.values[lo:hi]
            total = sum(window_v)
            if math.isnan(total):  # cheap test first: most windows hold no NaN, let alone a stale marker
                kept = [(t, v) for t, v in zip(times[lo:hi], window_v, strict=True) if not is_stale(v)]
                if not kept:
                    continue
                seconds: Sequence[float] = [p[0] for p in kept]
                window_v = [p[1] for p in kept]
            else:
                seconds = times[lo:hi]
            out.append(RangeSeries(series.labels, MillisView(seconds), window_v))
        return out

    def subquery(self, node: Subquery, ts: int) -> Matrix:
        step = node.step_ms or self.q.subquery_step_ms
        ref = self.q.ref_time(ts, node.at, node.offset_ms)
        low = ref - node.range_ms
        # The first multiple of the step after `low` (left-open window), as Go's truncating division does.
        start = step * (low // step) if low >= 0 else -((-low) // step) * step
        if start <= low:
            start += step
        return _steps(self, node.expr, start, ref, step)

    def window(self, node: Node) -> tuple[int, int, object]:
        """For a range-vector argument: (range_ms, offset_ms, at), used by rate's extrapolation."""
        if isinstance(node, MatrixSelector):
            return node.range_ms, node.selector.offset_ms, node.selector.at
        if isinstance(node, Subquery):
            return node.range_ms, node.offset_ms, node.at
        raise EvalError("expected a range vector")
