"""PromQL functions over float samples, each as Prometheus 3.x computes it (promql/functions.go).

Functions that change a value mark the sample's `__name__` for removal at the end of the query; those that
only select or relabel (last_over_time, sort, label_replace, label_join) keep it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.evaluator.promql.aggregations import mean
from services.evaluator.promql.nodes import (
    Call,
    MatrixSelector,
    Node,
    PromQLError,
    StringLiteral,
    ValueType,
    VectorSelector,
)
from services.evaluator.promql.numeric import go_div, kahan_add, linear_regression, quantile
from services.evaluator.promql.values import (
    METRIC_NAME,
    Matrix,
    RangeSeries,
    Sample,
    Scalar,
    String,
    Vector,
    labels_key,
)
from shared.gofloat import go_parse_float
from shared.matchers import compile_go

if TYPE_CHECKING:
    from services.evaluator.promql.engine import _Evaluator


@dataclass(frozen=True)
class Function:
    returns: ValueType
    impl: Callable[[_Evaluator, Call, int], Vector | Scalar]
    # Run once when the expression is compiled: validates literal arguments (raising PromQLError) and may
    # return the call with precomputed data (label_replace's compiled regex).
    check: Callable[[Call], Call] | None = None


def shown(name: str) -> str:
    """`name` for an error message: bytes that are not valid UTF-8 as `\\xff`, as Go's %s shows them."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def valid_label_name(name: str) -> bool:
    """Prometheus 3.x's label name rule (model.UTF8Validation): any non-empty valid UTF-8 string."""
    if not name:
        return False
    try:
        name.encode("utf-8")  # a lone surrogate (an undecodable byte kept by surrogateescape) is not UTF-8
    except UnicodeEncodeError:
        return False
    return True


def _error(message: str) -> Exception:
    from services.evaluator.promql.engine import EvalError

    return EvalError(message)


# Float helpers with Go's semantics (NaN/Inf instead of Python's exceptions) -----------------------------
def _safe(fn: Callable[[float], float], odd: bool = False) -> Callable[[float], float]:
    """`fn` returning Go's ±Inf/NaN where Python raises; `odd`: an overflow takes the argument's sign."""

    def wrapped(x: float) -> float:
        try:
            return fn(x)
        except OverflowError:
            return math.copysign(math.inf, x) if odd else math.inf
        except ValueError:
            return math.nan

    return wrapped


def _ln(x: float) -> float:
    if x == 0:
        return -math.inf
    if x < 0 or math.isnan(x):
        return math.nan
    return math.inf if math.isinf(x) else math.log(x)


def _log_base(fn: Callable[[float], float]) -> Callable[[float], float]:
    def wrapped(x: float) -> float:
        if x == 0:
            return -math.inf
        if x < 0 or math.isnan(x):
            return math.nan
        return math.inf if math.isinf(x) else fn(x)

    return wrapped


def _sgn(x: float) -> float:
    return -1.0 if x < 0 else 1.0 if x > 0 else x


def _go_max(a: float, b: float) -> float:
    if (math.isinf(a) and a > 0) or (math.isinf(b) and b > 0):
        return math.inf
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a > b else b


def _go_min(a: float, b: float) -> float:
    if (math.isinf(a) and a < 0) or (math.isinf(b) and b < 0):
        return -math.inf
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a < b else b


def _go_floor(x: float) -> float:
    """Go's math.Floor: ±Inf and NaN are returned as they are (Python's floor raises on them)."""
    return float(math.floor(x)) if math.isfinite(x) else x


MATH: dict[str, Callable[[float], float]] = {
    "abs": abs,
    "ceil": lambda x: float(math.ceil(x)) if math.isfinite(x) else x,
    "floor": lambda x: float(math.floor(x)) if math.isfinite(x) else x,
    "exp": _safe(math.exp),
    "sqrt": _safe(math.sqrt),
    "ln": _ln,
    "log2": _log_base(math.log2),
    "log10": _log_base(math.log10),
    "sgn": _sgn,
    "acos": _safe(math.acos),
    "acosh": _safe(math.acosh),
    "asin": _safe(math.asin),
    "asinh": _safe(math.asinh),
    "atan": _safe(math.atan),
    "atanh": lambda x: math.copysign(math.inf, x) if abs(x) == 1 else _safe(math.atanh)(x),
    "cos": _safe(math.cos),
    "cosh": _safe(math.cosh),
    "sin": _safe(math.sin),
    "sinh": _safe(math.sinh, odd=True),
    "tan": _safe(math.tan),
    "tanh": _safe(math.tanh),
    "deg": lambda x: x * 180 / math.pi,
    "rad": lambda x: x * math.pi / 180,
}


def _math(name: str) -> Function:
    fn = MATH[name]

    def impl(ev: _Evaluator, node: Call, ts: int) -> Vector:
        return [Sample(s.labels, fn(s.value), True) for s in ev.vector(node.args[0], ts)]

    return Function("vector", impl)


# Instant-vector functions -------------------------------------------------------------------------------
def _round(ev: _Evaluator, node: Call, ts: int) -> Vector:
    to_nearest = ev.scalar(node.args[1], ts) if len(node.args) > 1 else 1.0
    # As funcRound, all in floats: math.Floor(v*inverse+0.5)/inverse, Inf and NaN passing through.
    inverse = go_div(1.0, to_nearest)
    return [
        Sample(s.labels, go_div(_go_floor(s.value * inverse + 0.5), inverse), True)
        for s in ev.vector(node.args[0], ts)
    ]


def _clamp(ev: _Evaluator, node: Call, ts: int) -> Vector:
    vector = ev.vector(node.args[0], ts)
    low, high = ev.scalar(node.args[1], ts), ev.scalar(node.args[2], ts)
    if high < low:
        return []
    return [Sample(s.labels, _go_max(low, _go_min(high, s.value)), True) for s in vector]


def _clamp_min(ev: _Evaluator, node: Call, ts: int) -> Vector:
    low = ev.scalar(node.args[1], ts)
    return [Sample(s.labels, _go_max(low, s.value), True) for s in ev.vector(node.args[0], ts)]


def _clamp_max(ev: _Evaluator, node: Call, ts: int) -> Vector:
    high = ev.scalar(node.args[1], ts)
    return [Sample(s.labels, _go_min(high, s.value), True) for s in ev.vector(node.args[0], ts)]


def _timestamp(ev: _Evaluator, node: Call, ts: int) -> Vector:
    arg = node.args[0]
    if isinstance(arg, VectorSelector):
        # The sample's own timestamp, not the evaluation time, as Prometheus does for a plain selector.
        return [
            Sample(series.labels, round(series.timestamps[i] * 1000) / 1000, True)
            for series, i in ev.picked(arg, ts)
        ]
    return [Sample(s.labels, ts / 1000, True) for s in ev.vector(arg, ts)]


def _time(ev: _Evaluator, node: Call, ts: int) -> Scalar:
    return Scalar(ts / 1000)


def _pi(ev: _Evaluator, node: Call, ts: int) -> Scalar:
    return Scalar(math.pi)


def _vector(ev: _Evaluator, node: Call, ts: int) -> Vector:
    return [Sample({}, ev.scalar(node.args[0], ts))]


def _scalar(ev: _Evaluator, node: Call, ts: int) -> Scalar:
    vector = ev.vector(node.args[0], ts)
    return Scalar(vector[0].value if len(vector) == 1 else math.nan)


def _sort_key(descending: bool) -> Callable[[Sample], tuple[int, float]]:
    # NaN sorts last either way.
    def key(s: Sample) -> tuple[int, float]:
        if s.value != s.value:
            return (1, 0.0)
        return (0, -s.value if descending else s.value)

    return key


def _sort(ev: _Evaluator, node: Call, ts: int) -> Vector:
    return sorted(ev.vector(node.args[0], ts), key=_sort_key(False))


def _sort_desc(ev: _Evaluator, node: Call, ts: int) -> Vector:
    return sorted(ev.vector(node.args[0], ts), key=_sort_key(True))


def _string_arg(ev: _Evaluator, node: Node, ts: int) -> str:
    value = ev.eval(node, ts)
    if not isinstance(value, String):
        raise _error("expected a string argument")
    return value.value


_GO_EXPAND = re.compile(r"\$(?:\{([^}]*)\}|([a-zA-Z0-9_]+)|(\$))")


def go_expand(template: str, match: re.Match[str]) -> str:
    """Go's Regexp.Expand: `$1`, `${1}`, `$name`, `${name}`, `$$`; an unknown or unmatched group is empty."""

    def replace(m: re.Match[str]) -> str:
        if m.group(3):
            return "$"
        name = m.group(1) if m.group(1) is not None else m.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except (IndexError, KeyError, re.error):
            return ""  # an unknown or unmatched group expands to nothing, as in Go
        return value or ""

    return _GO_EXPAND.sub(replace, template)


def _with_label(sample: Sample, name: str, value: str) -> Sample:
    """`sample` with label `name` set to `value` (removed when empty). Setting `__name__` explicitly cancels
    its pending removal, as in Prometheus."""
    labels = dict(sample.labels)
    if value:
        labels[name] = value
    else:
        labels.pop(name, None)
    return Sample(labels, sample.value, sample.drop_name and name != METRIC_NAME)


def _literal(node: Node) -> str | None:
    return node.value if isinstance(node, StringLiteral) else None


def _replace_regex(pattern: str) -> re.Pattern[str]:
    """label_replace's regex as Prometheus compiles it: RE2 syntax, `^(?s:...)$` (fully anchored)."""
    try:
        return compile_go(pattern, dotall=True)
    except re.error:
        raise PromQLError(f"invalid regular expression in label_replace(): {pattern}") from None


def _check_label_replace(call: Call) -> Call:
    """At compile time, as Prometheus checks at evaluation: the regex, then the destination name."""
    if len(call.args) != 5:
        return call
    dst, pattern = _literal(call.args[1]), _literal(call.args[4])
    if pattern is None:
        return call
    regex = _replace_regex(pattern)
    if dst is not None and not valid_label_name(dst):
        raise PromQLError(f"invalid destination label name in label_replace(): {shown(dst)}")
    return dataclasses.replace(call, regex=regex)


def _check_label_join(call: Call) -> Call:
    for arg in call.args[3:]:
        src = _literal(arg)
        if src is not None and not valid_label_name(src):
            raise PromQLError(f"invalid source label name in label_join(): {shown(src)}")
    dst = _literal(call.args[1]) if len(call.args) > 1 else None
    if dst is not None and not valid_label_name(dst):
        raise PromQLError(f"invalid destination label name in label_join(): {shown(dst)}")
    return call


def _unique(vector: Vector) -> Vector:
    """label_replace and label_join refuse to make two series alike (Matrix.ContainsSameLabelset)."""
    if len({labels_key(s.labels) for s in vector}) != len(vector):
        raise _error("vector cannot contain metrics with the same labelset")
    return vector


def _label_replace(ev: _Evaluator, node: Call, ts: int) -> Vector:
    dst, replacement, src, pattern = (_string_arg(ev, a, ts) for a in node.args[1:5])
    regex = node.regex or _replace_regex(pattern)  # compiled with the expression
    if not valid_label_name(dst):
        raise _error(f"invalid destination label name in label_replace(): {shown(dst)}")
    out: Vector = []
    for sample in ev.vector(node.args[0], ts):
        match = regex.fullmatch(sample.labels.get(src, ""))
        if match is None:
            out.append(sample)
            continue
        out.append(_with_label(sample, dst, go_expand(replacement, match)))
    return _unique(out)


def _label_join(ev: _Evaluator, node: Call, ts: int) -> Vector:
    dst, separator = _string_arg(ev, node.args[1], ts), _string_arg(ev, node.args[2], ts)
    sources = [_string_arg(ev, a, ts) for a in node.args[3:]]
    for source in sources:
        if not valid_label_name(source):
            raise _error(f"invalid source label name in label_join(): {shown(source)}")
    if not valid_label_name(dst):
        raise _error(f"invalid destination label name in label_join(): {shown(dst)}")
    out: Vector = []
    for sample in ev.vector(node.args[0], ts):
        out.append(_with_label(sample, dst, separator.join(sample.labels.get(s, "") for s in sources)))
    return _unique(out)


def _absent_labels(arg: Node) -> dict[str, str]:
    if isinstance(arg, MatrixSelector):
        arg = arg.selector
    if not isinstance(arg, VectorSelector):
        return {}
    # createLabelsForAbsentFunction: only `=` matchers give a label, a name matched twice gives none, and
    # setting an empty value (foo{a=""}) removes the label, as Prometheus' labels.Builder does.
    labels: dict[str, str] = {}
    seen: set[str] = set()
    for m in arg.matchers:
        if m.name == METRIC_NAME:
            continue
        if m.op == "=" and m.name not in seen and m.value:
            labels[m.name] = m.value
        else:
            labels.pop(m.name, None)
        if m.op == "=":
            seen.add(m.name)
    return labels


def _absent(ev: _Evaluator, node: Call, ts: int) -> Vector:
    if ev.vector(node.args[0], ts):
        return []
    return [Sample(_absent_labels(node.args[0]), 1.0)]


def _absent_over_time(ev: _Evaluator, node: Call, ts: int) -> Vector:
    if ev.eval(node.args[0], ts):
        return []
    return [Sample(_absent_labels(node.args[0]), 1.0)]


@dataclass(frozen=True, slots=True)
class CivilTime:
    """A UTC time split as Go's time.Time reports it (Weekday: Sunday is 0; YearDay from 1)."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    weekday: int
    yearday: int
    days_in_month: int


_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def civil_time(seconds: int) -> CivilTime:
    """The proleptic Gregorian UTC date and time of Unix time `seconds`, in integer arithmetic (Howard
    Hinnant's civil_from_days), so any int64 time works, unlike datetime's years 1 to 9999."""
    days, rem = divmod(seconds, 86400)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of the year starting on March 1st
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    leap = _is_leap(year)
    yearday = doy - 305 if doy >= 306 else doy + 60 + leap  # March 1st is day 60, or 61 in a leap year
    length = 29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]
    return CivilTime(year, month, day, rem // 3600, rem % 3600 // 60, (days + 4) % 7, yearday, length)


def _date(fn: Callable[[CivilTime], int]) -> Function:
    def impl(ev: _Evaluator, node: Call, ts: int) -> Vector:
        if not node.args:
            # time.Unix(enh.Ts/1000, 0): Go's integer division truncates toward zero.
            seconds = ts // 1000 if ts >= 0 else -(-ts // 1000)
            return [Sample({}, float(fn(civil_time(seconds))))]
        out = []
        for s in ev.vector(node.args[0], ts):
            # time.Unix(int64(v), 0): truncated toward zero. Go's int64() of NaN, ±Inf or a value beyond
            # the int64 range is platform-defined (amd64 and arm64 differ), so those give NaN here.
            if not math.isfinite(s.value) or not -(2**63) <= s.value < 2**63:
                out.append(Sample(s.labels, math.nan, True))
                continue
            out.append(Sample(s.labels, float(fn(civil_time(int(s.value)))), True))
        return out

    return Function("vector", impl)


def _histogram_quantile(ev: _Evaluator, node: Call, ts: int) -> Vector:
    q = ev.scalar(node.args[0], ts)
    groups: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], list[tuple[float, float]]]] = {}
    for sample in ev.vector(node.args[1], ts):
        try:
            # strconv.ParseFloat of the `le` label (empty when missing); a bucket it refuses is ignored.
            bound = go_parse_float(sample.labels.get("le", ""))
        except ValueError:
            continue
        # Grouped by every label but `le`, `__name__` included (a name still pending removal counts, as in
        # Prometheus); the name is then dropped from the result like any function's.
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        key = labels_key(labels)
        groups.setdefault(key, (labels, []))[1].append((bound, sample.value))
    return [Sample(labels, bucket_quantile(q, buckets), True) for labels, buckets in groups.values()]


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' BucketQuantile over classic (upper bound, cumulative count) buckets."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets, key=lambda b: b[0])
    if not buckets or not math.isinf(buckets[-1][0]) or buckets[-1][0] < 0:
        return math.nan
    # Coalesce buckets with the same upper bound.
    merged: list[list[float]] = []
    for bound, count in buckets:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    # Make counts monotonic, ignoring tiny floating-point deltas.
    prev = merged[0][1]
    for bucket in merged[1:]:
        current = bucket[1]
        if current == prev:
            continue
        if _almost_equal(prev, current, 1e-12) or current < prev:
            bucket[1] = prev
            continue
        prev = current
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    bucket_start = 0.0
    bucket_end = merged[b][0]
    count = merged[b][1]
    if b > 0:
        bucket_start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return bucket_start + (bucket_end - bucket_start) * go_div(rank, count)


def _almost_equal(a: float, b: float, epsilon: float) -> bool:
    if a == b:
        return True
    diff = abs(a - b)
    if a == 0 or b == 0 or diff < 2.2250738585072014e-308:
        return diff < epsilon * 2.2250738585072014e-308
    return diff / (abs(a) + abs(b)) < epsilon


# Range-vector functions ---------------------------------------------------------------------------------
def _over_range(
    fn: Callable[[RangeSeries], float | None], keep_name: bool = False, min_samples: int = 1
) -> Function:
    def impl(ev: _Evaluator, node: Call, ts: int) -> Vector:
        matrix: Matrix = ev.eval(node.args[-1], ts)  # type: ignore[assignment]
        out = []
        for series in matrix:
            if len(series.values) < min_samples:
                continue
            value = fn(series)
            if value is not None:
                out.append(Sample(series.labels, value, series.drop_name or not keep_name))
        return out

    return Function("vector", impl)


def _extrapolated(is_counter: bool, is_rate: bool) -> Function:
    def impl(ev: _Evaluator, node: Call, ts: int) -> Vector:
        arg = node.args[0]
        range_ms, offset_ms, at = ev.window(arg)
        ref = ev.q.ref_time(ts, at, offset_ms)
        range_start, range_end = ref - range_ms, ref
        matrix: Matrix = ev.eval(arg, ts)  # type: ignore[assignment]
        out = []
        for series in matrix:
            value = extrapolated_rate(series, range_start, range_end, range_ms, is_counter, is_rate)
            if value is not None:
                out.append(Sample(series.labels, value, True))
        return out

    return Function("vector", impl)


def extrapolated_rate(
    series: RangeSeries, range_start: int, range_end: int, range_ms: int, is_counter: bool, is_rate: bool
) -> float | None:
    """rate/increase/delta: the change over the window, extrapolated to its edges as Prometheus does."""
    times, values = series.timestamps, series.values
    n = len(values)
    if n < 2:
        return None
    result = values[-1] - values[0]
    if is_counter:
        prev = values[0]
        for current in values[1:]:
            if current < prev:
                result += prev
            prev = current
    duration_to_start = (times[0] - range_start) / 1000
    duration_to_end = (range_end - times[-1]) / 1000
    sampled = (times[-1] - times[0]) / 1000
    average = sampled / (n - 1)
    threshold = average * 1.1
    if duration_to_start >= threshold:
        duration_to_start = average / 2
    if is_counter and result > 0 and values[0] >= 0:
        duration_to_zero = sampled * (values[0] / result)
        duration_to_start = min(duration_to_start, duration_to_zero)
    if duration_to_end >= threshold:
        duration_to_end = average / 2
    factor = (sampled + duration_to_start + duration_to_end) / sampled
    if is_rate:
        factor /= range_ms / 1000
    return result * factor


def _instant_rate(is_rate: bool) -> Callable[[RangeSeries], float | None]:
    def fn(series: RangeSeries) -> float | None:
        last, prev = series.values[-1], series.values[-2]
        interval = (series.timestamps[-1] - series.timestamps[-2]) / 1000
        if interval == 0:
            return None
        if is_rate:
            change = last if last < prev else last - prev
            return change / interval
        return last - prev

    return fn


def _deriv(series: RangeSeries) -> float | None:
    slope, _ = linear_regression(series.timestamps, series.values, series.timestamps[0])
    return slope


def _predict_linear(ev: _Evaluator, node: Call, ts: int) -> Vector:
    matrix: Matrix = ev.eval(node.args[0], ts)  # type: ignore[assignment]
    duration = ev.scalar(node.args[1], ts)
    out = []
    for series in matrix:
        if len(series.values) < 2:
            continue
        slope, intercept = linear_regression(series.timestamps, series.values, ts)
        out.append(Sample(series.labels, slope * duration + intercept, True))
    return out


def _changes(series: RangeSeries) -> float:
    changes = 0
    prev = series.values[0]
    for current in series.values[1:]:
        if not (current == prev or (math.isnan(current) and math.isnan(prev))):
            changes += 1
        prev = current
    return float(changes)


def _resets(series: RangeSeries) -> float:
    resets = 0
    prev = series.values[0]
    for current in series.values[1:]:
        if current < prev:
            resets += 1
        prev = current
    return float(resets)


def _sum_over_time(series: RangeSeries) -> float:
    total, c = 0.0, 0.0
    for v in series.values:
        total, c = kahan_add(v, total, c)
    return total + c if not math.isinf(total) else total


def _max_over_time(series: RangeSeries) -> float:
    best = series.values[0]
    for v in series.values[1:]:
        if v > best or math.isnan(best):
            best = v
    return best


def _min_over_time(series: RangeSeries) -> float:
    best = series.values[0]
    for v in series.values[1:]:
        if v < best or math.isnan(best):
            best = v
    return best


def _var_over_time(series: RangeSeries) -> float:
    count = 0.0
    mean_v = c_mean = aux = c_aux = 0.0
    for v in series.values:
        count += 1
        delta = v - (mean_v + c_mean)
        mean_v, c_mean = kahan_add(delta / count, mean_v, c_mean)
        aux, c_aux = kahan_add(delta * (v - (mean_v + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def _mad_over_time(series: RangeSeries) -> float:
    if any(math.isnan(v) for v in series.values):
        return math.nan  # a NaN sample makes the result NaN rather than being silently dropped
    median = quantile(0.5, list(series.values))
    return quantile(0.5, [abs(v - median) for v in series.values])


def _quantile_over_time(ev: _Evaluator, node: Call, ts: int) -> Vector:
    q = ev.scalar(node.args[0], ts)
    matrix: Matrix = ev.eval(node.args[1], ts)  # type: ignore[assignment]
    return [Sample(s.labels, quantile(q, list(s.values)), True) for s in matrix if s.values]


FUNCTIONS: dict[str, Function] = {
    **{name: _math(name) for name in MATH},
    "round": Function("vector", _round),
    "clamp": Function("vector", _clamp),
    "clamp_min": Function("vector", _clamp_min),
    "clamp_max": Function("vector", _clamp_max),
    "timestamp": Function("vector", _timestamp),
    "time": Function("scalar", _time),
    "pi": Function("scalar", _pi),
    "vector": Function("vector", _vector),
    "scalar": Function("scalar", _scalar),
    "sort": Function("vector", _sort),
    "sort_desc": Function("vector", _sort_desc),
    "label_replace": Function("vector", _label_replace, check=_check_label_replace),
    "label_join": Function("vector", _label_join, check=_check_label_join),
    "absent": Function("vector", _absent),
    "absent_over_time": Function("vector", _absent_over_time),
    "histogram_quantile": Function("vector", _histogram_quantile),
    "day_of_month": _date(lambda d: d.day),
    "day_of_week": _date(lambda d: d.weekday),
    "day_of_year": _date(lambda d: d.yearday),
    "days_in_month": _date(lambda d: d.days_in_month),
    "hour": _date(lambda d: d.hour),
    "minute": _date(lambda d: d.minute),
    "month": _date(lambda d: d.month),
    "year": _date(lambda d: d.year),
    "rate": _extrapolated(is_counter=True, is_rate=True),
    "increase": _extrapolated(is_counter=True, is_rate=False),
    "delta": _extrapolated(is_counter=False, is_rate=False),
    "irate": _over_range(_instant_rate(True), min_samples=2),
    "idelta": _over_range(_instant_rate(False), min_samples=2),
    "deriv": _over_range(_deriv, min_samples=2),
    "predict_linear": Function("vector", _predict_linear),
    "changes": _over_range(_changes),
    "resets": _over_range(_resets),
    "avg_over_time": _over_range(lambda s: mean(list(s.values))),
    "sum_over_time": _over_range(_sum_over_time),
    "count_over_time": _over_range(lambda s: float(len(s.values))),
    "min_over_time": _over_range(_min_over_time),
    "max_over_time": _over_range(_max_over_time),
    "last_over_time": _over_range(lambda s: s.values[-1], keep_name=True),
    "present_over_time": _over_range(lambda s: 1.0),
    "stddev_over_time": _over_range(lambda s: math.sqrt(_var_over_time(s))),
    "stdvar_over_time": _over_range(_var_over_time),
    "mad_over_time": _over_range(_mad_over_time),
    "quantile_over_time": Function("vector", _quantile_over_time),
}


def call(ev: _Evaluator, node: Call, ts: int) -> Vector | Scalar:
    return FUNCTIONS[node.name].impl(ev, node, ts)


__all__ = ["FUNCTIONS", "StringLiteral", "bucket_quantile", "call", "extrapolated_rate", "go_expand"]
