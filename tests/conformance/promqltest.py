"""A runner for Prometheus' promqltest scripts (promql/promqltest/testdata/*.test) against tripwire's engine.

Script format (promql/promqltest/test.go): `load <step>` followed by indented series in the series notation;
`clear`; `eval instant at <time> <expr>` / `eval range from <t> to <t> step <d> <expr>` (and the older
`eval_fail`, `eval_ordered`, `eval_warn`, `eval_info`) followed by indented `expect ...` lines and the
expected result: `{labels} value` per series, a bare number for a scalar, notation values for range evals.

Scope is explicit: a case is skipped, with its reason, when it touches native histograms (a `{{...}}` value in
its data or its expectation, or a `load_with_nhcb` block) or calls a function listed in OUT_OF_SCOPE. Every
other case counts. Annotations (`expect warn/info/no_warn/no_info`) are not implemented: their result is still
compared, the annotation part is ignored. For `expect fail`, any evaluation or parse error passes (our error
texts are our own).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.evaluator.promql.notation import (
    HISTOGRAM,
    NotationError,
    parse_labels,
    parse_series_description,
    parse_values,
)
from services.evaluator.series import SeriesStore

# Prometheus functions tripwire does not implement, with why (experimental in Prometheus 3.x or native-only).
OUT_OF_SCOPE: dict[str, str] = {
    "first_over_time": "experimental in Prometheus 3.x (--enable-feature=promql-experimental-functions)",
    "ts_of_first_over_time": "experimental in Prometheus 3.x",
    "ts_of_last_over_time": "experimental in Prometheus 3.x",
    "ts_of_min_over_time": "experimental in Prometheus 3.x",
    "ts_of_max_over_time": "experimental in Prometheus 3.x",
    "sort_by_label": "experimental in Prometheus 3.x",
    "sort_by_label_desc": "experimental in Prometheus 3.x",
    "double_exponential_smoothing": "experimental in Prometheus 3.x",
    "holt_winters": "removed in Prometheus 3.x",
    "info": "experimental in Prometheus 3.x",
    "step": "experimental in Prometheus 3.x (promql-duration-expr)",
    "range": "experimental in Prometheus 3.x (promql-duration-expr)",
    "start": "experimental in Prometheus 3.x (promql-duration-expr)",
    "end": "experimental in Prometheus 3.x (promql-duration-expr)",
    "min_of": "experimental in Prometheus 3.x (promql-duration-expr)",
    "max_of": "experimental in Prometheus 3.x (promql-duration-expr)",
    "histogram_count": "native histograms",
    "histogram_sum": "native histograms",
    "histogram_avg": "native histograms",
    "histogram_fraction": "native histograms",
    "histogram_stddev": "native histograms",
    "histogram_stdvar": "native histograms",
}
NATIVE_HISTOGRAMS = "native histograms"
EPSILON = 0.000001  # promqltest's defaultEpsilon
MIN_NORMAL = 2.2250738585072014e-308

_UNITS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}
_DURATION = re.compile(r"(?:(\d+)(ms|s|m|h|d|w|y))+")
_INSTANT = re.compile(r"^(eval(?:_fail|_ordered|_warn|_info)?)\s+instant\s+at\s+(\S+)\s+(.+)$")
_RANGE = re.compile(
    r"^(eval(?:_fail|_ordered|_warn|_info)?)\s+range\s+from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)\s+(.+)$"
)
_FUNCTION_CALL = re.compile(r"\b([a-z_][a-z0-9_]*)\s*\(")


class ScriptError(ValueError):
    """The script itself could not be read (a runner bug or an unknown command): the file's test fails."""


def duration_ms(text: str) -> int:
    """A promqltest time or duration: Prometheus duration syntax (`1h30m`, `50m`, `10s`) or plain seconds."""
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return round(float(text) * 1000)
    if not _DURATION.fullmatch(text):
        raise ScriptError(f"bad duration {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


@dataclass
class Case:
    file: str
    line: int
    expr: str
    instant_at: int | None = None
    range_args: tuple[int, int, int] | None = None
    matrix_args: tuple[int, int, int] | None = None  # `expect range vector from … to … step …`
    expect_fail: bool = False
    ordered: bool = False
    expect_string: str | None = None
    expected: list[str] = field(default_factory=list)
    store: SeriesStore | None = None
    histogram_series: set[tuple[tuple[str, str], ...]] = field(default_factory=set)
    skip: str | None = None


@dataclass
class Outcome:
    case: Case
    status: str  # passed | failed | skipped
    detail: str = ""


def parse_script(path: Path) -> Iterator[Case]:
    """Read a script case by case, each bound to the store its `load` blocks built so far. A generator: run
    each case before reading on, since a later `load` adds to the same store (as promqltest executes)."""
    lines = path.read_text().split("\n")
    store = SeriesStore(float("inf"))
    histograms: set[tuple[tuple[str, str], ...]] = set()
    nhcb = False
    i = 0
    while i < len(lines):
        raw = lines[i]
        text = raw.strip()
        if not text or text.startswith("#"):
            i += 1
            continue
        if text == "clear":
            store, histograms, nhcb = SeriesStore(float("inf")), set(), False
            i += 1
            continue
        if text.startswith("load"):
            words = text.split()
            if words[0] not in ("load", "load_with_nhcb") or len(words) != 2:
                raise ScriptError(f"{path.name}:{i + 1}: bad load command {text!r}")
            nhcb = nhcb or words[0] == "load_with_nhcb"
            step = duration_ms(words[1])
            i += 1
            while i < len(lines) and lines[i].strip() and lines[i][:1] in (" ", "\t"):
                labels, values = parse_series_description(lines[i].strip())
                series = store.series_for(labels)
                for k, value in enumerate(values):
                    if value is HISTOGRAM:
                        histograms.add(tuple(sorted(labels.items())))
                    elif value is not None:
                        series.add(k * step / 1000, value)
                i += 1
            continue
        if text.startswith("eval"):
            case, i = _parse_eval(path, lines, i)
            case.store, case.histogram_series = store, set(histograms)
            if nhcb:
                case.skip = f"{NATIVE_HISTOGRAMS} (load_with_nhcb)"
            yield case
            continue
        raise ScriptError(f"{path.name}:{i + 1}: unknown command {text!r}")


def _parse_eval(path: Path, lines: list[str], i: int) -> tuple[Case, int]:
    text = lines[i].strip()
    instant, ranged = _INSTANT.match(text), _RANGE.match(text)
    if instant:
        command = instant.group(1)
        case = Case(path.name, i + 1, instant.group(3), instant_at=duration_ms(instant.group(2)))
    elif ranged:
        command = ranged.group(1)
        args = tuple(duration_ms(ranged.group(k)) for k in (2, 3, 4))
        case = Case(path.name, i + 1, ranged.group(5), range_args=args)  # type: ignore[arg-type]
    else:
        raise ScriptError(f"{path.name}:{i + 1}: bad eval command {text!r}")
    case.expect_fail = command == "eval_fail"
    case.ordered = command == "eval_ordered"
    i += 1
    while i < len(lines) and lines[i].strip() and lines[i][:1] in (" ", "\t"):
        body = lines[i].strip()
        if body.startswith("#"):
            pass
        elif body.startswith("expect "):
            what = body.split()[1]
            if what == "fail":
                case.expect_fail = True
            elif what == "ordered":
                case.ordered = True
            elif what == "string":
                case.expect_string = body.split(None, 2)[2].strip()[1:-1]  # "…" or `…`
            elif what == "range":
                words = body.split()  # expect range vector from <t> to <t> step <d>
                case.matrix_args = (duration_ms(words[4]), duration_ms(words[6]), duration_ms(words[8]))
        else:
            case.expected.append(body)
        i += 1
    for name in _FUNCTION_CALL.findall(case.expr):
        if name in OUT_OF_SCOPE and case.skip is None:
            case.skip = f"{name}(): {OUT_OF_SCOPE[name]}"
    if any("{{" in e for e in case.expected):
        case.skip = NATIVE_HISTOGRAMS
    return case, i


def almost_equal(a: float, b: float) -> bool:
    """promqltest's comparison: NaN equals NaN; otherwise relative error below 1e-6."""
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < MIN_NORMAL:
        return diff < EPSILON * MIN_NORMAL
    return diff / min(abs_sum, 1.7976931348623157e308) < EPSILON


def run_case(case: Case) -> Outcome:
    """Evaluate one case and compare it with its expectation."""
    from services.evaluator.promql.engine import Engine, EvalError
    from services.evaluator.promql.nodes import PromQLError, compile_expr
    from services.evaluator.promql.values import RangeSeries, Scalar, String

    if case.skip:
        return Outcome(case, "skipped", case.skip)
    assert case.store is not None
    try:
        node = compile_expr(case.expr)
    except PromQLError as exc:
        if case.expect_fail:
            return Outcome(case, "passed")
        return Outcome(case, "failed", f"did not compile: {exc}")
    if case.histogram_series and _touches(node, case):
        return Outcome(case, "skipped", NATIVE_HISTOGRAMS)
    engine = Engine()
    try:
        if case.range_args is not None:
            result: object = engine.range(node, case.store, *case.range_args)
        else:
            result = engine.instant(node, case.store, case.instant_at or 0)
    except (EvalError, PromQLError) as exc:
        if case.expect_fail:
            return Outcome(case, "passed")
        return Outcome(case, "failed", f"error: {exc}")
    if case.expect_fail:
        return Outcome(case, "failed", f"expected an error, got {result!r}"[:300])
    if case.expect_string is not None:
        ok = isinstance(result, String) and result.value == case.expect_string
        return Outcome(case, "passed" if ok else "failed", f"got {result!r}")
    if isinstance(result, String):
        return Outcome(case, "failed", f"unexpected string result {result.value!r}")
    if case.range_args is not None:
        return _compare_range(case, result, case.range_args)  # type: ignore[arg-type]
    if case.matrix_args is not None:
        if isinstance(result, list) and all(isinstance(s, RangeSeries) for s in result):
            return _compare_range(case, result, case.matrix_args)
        return Outcome(case, "failed", f"expected a range vector, got {result!r}"[:300])
    if isinstance(result, Scalar):
        return _compare_scalar(case, result.value)
    if result and isinstance(result[0], RangeSeries):  # type: ignore[index]
        return Outcome(case, "failed", "got a range vector where an instant result was expected")
    return _compare_vector(case, result)  # type: ignore[arg-type]


def _touches(node: object, case: Case) -> bool:
    """Whether any selector of the expression selects a series that had native-histogram samples."""
    from services.evaluator.promql import nodes

    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, nodes.MatrixSelector):
            n = n.selector
        if isinstance(n, nodes.VectorSelector):
            for series in case.store.select(n.matchers):  # type: ignore[union-attr]
                if tuple(sorted(series.labels.items())) in case.histogram_series:
                    return True
            continue
        for attr in ("expr", "lhs", "rhs", "param"):
            child = getattr(n, attr, None)
            if child is not None:
                stack.append(child)
        stack.extend(getattr(n, "args", ()))
    return False


def _expected_scalar(case: Case) -> float | None:
    if len(case.expected) == 1 and not re.search(r"[{}]", case.expected[0]):
        try:
            values = parse_values(case.expected[0])
        except NotationError:
            return None
        if len(values) == 1 and isinstance(values[0], float):
            return values[0]
    return None


def _compare_scalar(case: Case, got: float) -> Outcome:
    expected = _expected_scalar(case)
    if expected is None:
        return Outcome(case, "failed", f"got scalar {got}, expected {case.expected}")
    ok = almost_equal(expected, got)
    return Outcome(case, "passed" if ok else "failed", f"expected scalar {expected}, got {got}")


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _expected_series(case: Case) -> list[tuple[dict[str, str], list[object]]]:
    out = []
    for line in case.expected:
        labels, end = parse_labels(line)
        out.append((labels, parse_values(line[end:], end)))
    return out


def _compare_vector(case: Case, got: list) -> Outcome:  # type: ignore[type-arg]
    expected = _expected_series(case)
    exp_map = {_key(labels): values[0] if values else None for labels, values in expected}
    got_map = {_key(s.labels): s.value for s in got}
    if len(exp_map) != len(expected):
        raise ScriptError(f"{case.file}:{case.line}: duplicate expected series")
    detail = f"expected {_show(exp_map)}, got {_show(got_map)}"
    if set(exp_map) != set(got_map):
        return Outcome(case, "failed", detail)
    for key, value in exp_map.items():
        if not isinstance(value, float) or not almost_equal(value, got_map[key]):
            return Outcome(case, "failed", detail)
    if case.ordered and [_key(s.labels) for s in got] != [_key(labels) for labels, _ in expected]:
        return Outcome(case, "failed", "order differs: " + detail)
    return Outcome(case, "passed")


def _compare_range(case: Case, got: list, args: tuple[int, int, int]) -> Outcome:  # type: ignore[type-arg]
    start, _, step = args
    expected: dict[tuple[tuple[str, str], ...], dict[int, float]] = {}
    for labels, values in _expected_series(case):
        points = {}
        for k, value in enumerate(values):
            if isinstance(value, float):
                points[start + k * step] = value
        expected[_key(labels)] = points
    if not case.expected:
        expected = {}
    actual = {_key(s.labels): dict(zip(list(s.timestamps), list(s.values), strict=True)) for s in got}
    detail = f"expected {_show(expected)}, got {_show(actual)}"
    if set(expected) != set(actual):
        return Outcome(case, "failed", detail)
    for key, points in expected.items():
        if set(points) != set(actual[key]):
            return Outcome(case, "failed", detail)
        if not all(almost_equal(v, actual[key][t]) for t, v in points.items()):
            return Outcome(case, "failed", detail)
    return Outcome(case, "passed")


def _show(mapping: dict) -> str:  # type: ignore[type-arg]
    text = ", ".join(f"{dict(k)}: {v}" for k, v in list(mapping.items())[:4])
    more = f" (+{len(mapping) - 4} more)" if len(mapping) > 4 else ""
    return "{" + text[:400] + "}" + more
