"""A runner for Prometheus' promqltest scripts (promql/promqltest/testdata/*.test) against tripwire's engine.

It reads and checks scripts as promql/promqltest/test.go does:

- Lines are trimmed and `#` comment lines blanked (`getLines`); a blank line ends a block. Commands, by
  their first word: `clear`; `load <step>` / `load_with_nhcb <step>` then series lines;
  `eval instant at <t> <expr>`, `eval range from <t> to <t> step <d> <expr>` (and the older `eval_fail`,
  `eval_warn`, `eval_info`, `eval_ordered`), followed by `expect ...` lines and the expected result:
  `{labels} value` per series, a bare number for a scalar (it ends the block), values in the series
  notation for range results.
- Times and durations are Prometheus durations (`0`, `50m`, `1h30m`; units in y w d h m s ms order).
- Results compare as test.go `compareResult`: series by their exact label set, unordered unless `ordered`;
  floats with `almost.Equal` (relative epsilon 1e-6, NaN equals NaN, a stale marker equals only a stale
  marker); a matrix must be sorted by labels. `expect fail` checks the error's message or regex if given.
- An instant eval is also run as promqltest runs it: again with `@ <eval time>` on every selector at other
  evaluation times (unless it calls a function in AT_MODIFIER_UNSAFE), and each of those as a range query
  from t-1m to t+1m step 1m whose middle step must give the same result.

Scope is explicit: a case is skipped, with its reason, when it touches native histograms (its selectors
match a series loaded with `{{...}}` values or converted by `load_with_nhcb`, or its expectation has a
`{{...}}` value) or calls a function listed in OUT_OF_SCOPE_FUNCTIONS. Every other case counts.
Annotations (`expect warn|info|no_warn|no_info`, `eval_warn`, `eval_info`) are not implemented by
tripwire: such a case is still evaluated and compared, only the annotation part is ignored
(`Outcome.annotations_ignored`). An expected failure passes whether tripwire raises the error while
compiling the expression or while evaluating it (Prometheus raises these at evaluation).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.evaluator.promql.notation import (
    HISTOGRAM,
    NotationError,
    SeriesValue,
    go_number,
    load_series,
    parse_series_description,
    unquote,
)
from services.evaluator.promql.values import is_stale
from services.evaluator.series import SeriesStore
from shared.matchers import go_regex

# Prometheus functions tripwire does not evaluate, with why. Experimental ones need
# --enable-feature=promql-experimental-functions (or promql-duration-expr) in Prometheus 3.x.
OUT_OF_SCOPE_FUNCTIONS: dict[str, str] = {
    "info": "experimental in Prometheus 3.x",
    "double_exponential_smoothing": "experimental in Prometheus 3.x",
    "holt_winters": "removed in Prometheus 3.0",
    "sort_by_label": "experimental in Prometheus 3.x",
    "sort_by_label_desc": "experimental in Prometheus 3.x",
    "first_over_time": "experimental in Prometheus 3.x",
    "ts_of_first_over_time": "experimental in Prometheus 3.x",
    "ts_of_last_over_time": "experimental in Prometheus 3.x",
    "ts_of_min_over_time": "experimental in Prometheus 3.x",
    "ts_of_max_over_time": "experimental in Prometheus 3.x",
    # Query-range functions of the experimental duration expressions (not the `@ start()` modifier).
    "start": "experimental in Prometheus 3.x (promql-duration-expr)",
    "end": "experimental in Prometheus 3.x (promql-duration-expr)",
    "step": "experimental in Prometheus 3.x (promql-duration-expr)",
    "range": "experimental in Prometheus 3.x (promql-duration-expr)",
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
# promql.AtModifierUnsafeFunctions: their result depends on the evaluation time even with `@` arguments.
AT_MODIFIER_UNSAFE = frozenset(
    {"days_in_month", "day_of_month", "day_of_week", "day_of_year", "hour", "minute", "month", "year"}
    | {"predict_linear", "time", "timestamp"}
)
EPSILON = 0.000001  # promqltest's defaultEpsilon
MIN_NORMAL = 2.2250738585072014e-308
LOOKBACK_MS = 300_000  # promqltest's engine: the default 5m lookback
SUBQUERY_STEP_MS = 60_000  # and NoStepSubqueryIntervalFn: 1m

_PAT_SPACE = re.compile(r"[\t ]+")
_PAT_LOAD = re.compile(r"^load(?:_(with_nhcb))?\s+(.+?)$")
_PAT_EVAL_INSTANT = re.compile(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
_PAT_EVAL_RANGE = re.compile(
    r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$"
)
_PAT_EXPECT = re.compile(r"^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$")
_RANGE_VECTOR_PREFIX = "expect range vector"
_PAT_EXPECT_RANGE = re.compile(r"^" + _RANGE_VECTOR_PREFIX + r"\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$")
_EXPECT_STRING_PREFIX = "expect string"
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS_MS = (31_536_000_000, 604_800_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_STRING_LITERAL = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_CALL = re.compile(r"(@\s*)?\b([a-zA-Z_][a-zA-Z0-9_]*)\s*\(")

LabelKey = tuple[tuple[str, str], ...]


class ScriptError(ValueError):
    """The script could not be read (an unknown command, a bad line): the file's test fails, since it is the
    runner (or the copied corpus) that is wrong, not the engine."""


def duration_ms(text: str) -> int:
    """A promqltest time or duration, as prometheus/common's model.ParseDuration reads it."""
    if text == "0":
        return 0
    match = _DURATION.match(text or "")
    if not text or not match:
        raise ScriptError(f"not a valid duration string: {text!r}")
    return sum(int(n) * unit for n, unit in zip(match.groups(), _DURATION_UNITS_MS, strict=True) if n)


def key_of(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


def parse_go_number(text: str) -> float | None:
    """promqltest's parseNumber (ParseInt(s, 0, 64), else ParseFloat); None when it is not a number."""
    try:
        return go_number(text)
    except ValueError:
        return None


# --- script parsing ---------------------------------------------------------------------------------------


@dataclass
class Load:
    line: int
    step_ms: int
    nhcb: bool
    series: dict[LabelKey, tuple[dict[str, str], list[SeriesValue]]] = field(default_factory=dict)


@dataclass
class Clear:
    line: int


@dataclass
class Expectation:
    """One `expect fail|warn|info|...` line: an exact message or a regex (None: anything)."""

    message: str | None = None
    regex: re.Pattern[str] | None = None

    def matches(self, text: str) -> bool:
        if self.regex is not None:
            return self.regex.search(text) is not None
        return self.message is None or self.message == text


@dataclass
class Case:
    """One `eval` command and what it expects."""

    file: str
    line: int
    expr: str
    instant_at: int | None = None  # instant query time (ms); None for a range query
    range_args: tuple[int, int, int] | None = None  # range query, or `expect range vector` of an instant one
    fail: bool = False  # eval_fail
    ordered: bool = False  # eval_ordered
    expectations: dict[str, list[Expectation]] = field(default_factory=dict)
    fail_message: str | None = None  # expected_fail_message (with eval_fail)
    fail_regex: re.Pattern[str] | None = None  # expected_fail_regexp
    expect_scalar: bool = False
    expected: dict[LabelKey, tuple[int, dict[str, str], list[SeriesValue]]] = field(default_factory=dict)
    expected_string: str = ""
    exclude_from_range_query: bool = False
    annotations: bool = False  # has warn/info expectations, which tripwire does not produce
    skip: str | None = None

    @property
    def is_fail(self) -> bool:
        return self.fail or bool(self.expectations.get("fail"))

    @property
    def is_ordered(self) -> bool:
        return self.ordered or bool(self.expectations.get("ordered"))

    @property
    def is_range(self) -> bool:
        return self.instant_at is None


Command = Load | Clear | Case


def get_lines(text: str) -> list[str]:
    """test.go getLines: trimmed lines, comment lines blanked (so a comment ends a block)."""
    return ["" if line.strip().startswith("#") else line.strip() for line in text.split("\n")]


def parse_script(path: Path) -> list[Command]:
    """All commands of a script, in order (test.go `parse`); raises ScriptError naming file and line."""
    lines = get_lines(path.read_text())
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        word = _PAT_SPACE.split(line, maxsplit=1)[0].lower()
        cursor = [i]  # the line being read, for error messages
        try:
            if word == "clear":
                commands.append(Clear(i + 1))
            elif word.startswith("load"):
                load, i = _parse_load(lines, cursor)
                commands.append(load)
            elif word.startswith("eval"):
                case, i = _parse_eval(path.name, lines, cursor)
                commands.append(case)
            else:
                raise ScriptError(f"invalid command {line!r}")
        except (ScriptError, NotationError) as exc:
            raise ScriptError(f"{path.name}:{cursor[0] + 1}: {exc}") from None
        i += 1
    return commands


def _parse_load(lines: list[str], cursor: list[int]) -> tuple[Load, int]:
    i = cursor[0]
    match = _PAT_LOAD.match(lines[i])
    if not match:
        raise ScriptError("invalid load command. (load[_with_nhcb] <step:duration>)")
    load = Load(i + 1, duration_ms(match.group(2)), nhcb=match.group(1) == "with_nhcb")
    while i + 1 < len(lines) and lines[i + 1]:
        i = cursor[0] = i + 1
        labels, values = parse_series_description(lines[i])
        load.series[key_of(labels)] = (labels, values)  # a repeated series replaces the earlier one
    return load, i


def _parse_eval(file: str, lines: list[str], cursor: list[int]) -> tuple[Case, int]:
    i = cursor[0]
    instant, ranged = _PAT_EVAL_INSTANT.match(lines[i]), _PAT_EVAL_RANGE.match(lines[i])
    if instant:
        modifier, expr = instant.group(1), instant.group(3)
        case = Case(file, i + 1, expr, instant_at=duration_ms(instant.group(2)))
    elif ranged:
        modifier, expr = ranged.group(1), ranged.group(5)
        start, end, step = (duration_ms(ranged.group(k)) for k in (2, 3, 4))
        if end < start:
            raise ScriptError("invalid test definition, end timestamp is before start timestamp")
        case = Case(file, i + 1, expr, range_args=(start, end, step))
    else:
        raise ScriptError(f"invalid evaluation command {lines[i]!r}")
    case.fail, case.ordered = modifier == "fail", modifier == "ordered"
    case.annotations = modifier in ("warn", "info")
    expect_range_vector = False
    j = 1  # position of the next expected series (expect lines do not count), for `ordered`
    while i + 1 < len(lines) and lines[i + 1]:
        i = cursor[0] = i + 1
        line = lines[i]
        if case.fail and line.startswith("expected_fail_message"):
            case.fail_message = line.removeprefix("expected_fail_message").strip()
            break
        if case.fail and line.startswith("expected_fail_regexp"):
            case.fail_regex = re.compile(go_regex(line.removeprefix("expected_fail_regexp").strip()))
            break
        if line.startswith(_RANGE_VECTOR_PREFIX):
            match = _PAT_EXPECT_RANGE.match(line)
            if not match:
                raise ScriptError(f"invalid range vector definition {line!r}")
            start, end, step = (duration_ms(match.group(k)) for k in (1, 2, 3))
            case.range_args, case.instant_at = (start, end, step), end  # evaluated at the range's end
            case.exclude_from_range_query = expect_range_vector = True
        elif line.startswith(_EXPECT_STRING_PREFIX):
            literal = line.removeprefix(_EXPECT_STRING_PREFIX + " ")
            if line == _EXPECT_STRING_PREFIX or not literal:
                raise ScriptError("expected string literal not valid - a quoted string literal is required")
            case.expected_string, case.exclude_from_range_query = unquote(literal), True
        elif line.split(" ")[0] == "expect":
            _parse_expect(case, line)
            j -= 1
        elif (number := parse_go_number(line)) is not None:
            case.expect_scalar = True
            case.expected[()] = (0, {}, [number])
            break
        else:
            labels, values = parse_series_description(line)
            if len(values) > 1 and not case.is_range and not expect_range_vector:
                raise ScriptError("expecting multiple values in instant evaluation not allowed")
            case.expect_scalar = False
            case.expected[key_of(labels)] = (j, labels, values)
        j += 1
    _scope(case)
    return case, i


def _parse_expect(case: Case, line: str) -> None:
    match = _PAT_EXPECT.match(line.strip())
    if not match:
        raise ScriptError(f"invalid expect statement {line!r}")
    kind, how, what = match.groups()
    if how == "msg":
        expectation = Expectation(message=what.strip())
    elif how == "regex":
        expectation = Expectation(regex=re.compile(go_regex(what.strip())))
    else:
        expectation = Expectation()
    case.expectations.setdefault(kind, []).append(expectation)
    if kind in ("warn", "info", "no_warn", "no_info"):
        case.annotations = True
    if len(case.expectations.get("fail", [])) > 1:
        raise ScriptError("invalid expect lines, multiple expect fail lines are not allowed")


def called_functions(expr: str) -> list[str]:
    """Names called as functions in `expr` (string literals ignored; `@ start()` is the modifier)."""
    text = _STRING_LITERAL.sub('""', expr)
    return [m.group(2) for m in _CALL.finditer(text) if not m.group(1)]


def _scope(case: Case) -> None:
    """The static scope rules: out-of-scope functions, native-histogram expectations."""
    for name in called_functions(case.expr):
        if name in OUT_OF_SCOPE_FUNCTIONS:
            case.skip = f"{name}(): {OUT_OF_SCOPE_FUNCTIONS[name]}"
            return
    if any(HISTOGRAM in values for _, _, values in case.expected.values()):
        case.skip = NATIVE_HISTOGRAMS


def eval_cases(commands: list[Command]) -> list[Case]:
    return [c for c in commands if isinstance(c, Case)]


# --- running ----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    status: str  # passed | failed | skipped
    detail: str = ""  # the skip reason, or what differed
    category: str = ""  # a failure's kind, for the summary

    @property
    def annotations_ignored(self) -> bool:
        return self.status != "skipped" and self.case.annotations


class _Mismatch(Exception):
    """A case's result differs from its expectation."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category
        self.detail = detail


@dataclass
class _State:
    """The test storage: what `load` commands put there, and which series hold native histograms."""

    store: SeriesStore = field(default_factory=lambda: SeriesStore(float("inf")))
    histograms: list[dict[str, str]] = field(default_factory=list)


def run_script(path: Path) -> list[Outcome]:
    """Run every command of a script in order; one outcome per eval case."""
    state = _State()
    outcomes: list[Outcome] = []
    for command in parse_script(path):
        if isinstance(command, Clear):
            state = _State()
        elif isinstance(command, Load):
            _load(state, command)
        else:
            outcomes.append(run_case(command, state))
    return outcomes


def _load(state: _State, load: Load) -> None:
    for labels, values in load.series.values():
        if load_series(state.store, labels, values, 0, load.step_ms):
            state.histograms.append(labels)
        if load.nhcb:
            base = _nhcb_base(labels)
            if base is not None and base not in state.histograms:
                state.histograms.append(base)


def _nhcb_base(labels: dict[str, str]) -> dict[str, str] | None:
    """The native histogram `load_with_nhcb` builds from a classic histogram series (convertnhcb)."""
    name = labels.get("__name__", "")
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            base = {k: v for k, v in labels.items() if k != "le"}
            base["__name__"] = name.removesuffix(suffix)
            return base
    return None


def run_case(case: Case, state: _State) -> Outcome:
    """Evaluate one case (in all the ways promqltest does) and compare it with its expectation."""
    from services.evaluator.promql.engine import PromQLError, compile_expr

    if case.skip:
        return Outcome(case, "skipped", case.skip)
    try:
        node = compile_expr(case.expr)
    except PromQLError as exc:
        if case.is_fail:
            return _expected_failure(case, exc)
        return Outcome(case, "failed", f"does not compile: {exc}", "does not compile")
    if state.histograms and _touches(node, state.histograms):
        return Outcome(case, "skipped", NATIVE_HISTOGRAMS)
    try:
        if case.is_range:
            _run_range_eval(case, node, state.store)
        else:
            _run_instant_eval(case, node, state.store)
    except _Mismatch as exc:
        return Outcome(case, "failed", exc.detail, exc.category)
    return Outcome(case, "passed")


def _expected_failure(case: Case, error: Exception) -> Outcome:
    """test.go checkExpectedFailure: the error must match the expected message or regex, if any."""
    text = str(error)
    checks = [Expectation(message=case.fail_message) if case.fail_message else None]
    checks.append(Expectation(regex=case.fail_regex) if case.fail_regex else None)
    checks.append(case.expectations["fail"][0] if case.expectations.get("fail") else None)
    for check in checks:
        if check is not None and not check.matches(text):
            want = check.message if check.regex is None else f"/{check.regex.pattern}/"
            return Outcome(case, "failed", f"expected error {want!r}, got {text!r}", "error message differs")
    return Outcome(case, "passed")


def _engine() -> Any:
    from services.evaluator.promql.engine import Engine

    # test.go's engine runs with EnableDelayedNameRemoval: true, which the scripts are written for.
    return Engine(lookback_ms=LOOKBACK_MS, subquery_step_ms=SUBQUERY_STEP_MS, delayed_name_removal=True)


def _evaluate(call: Any, *args: Any) -> tuple[Any, Exception | None]:
    """Run an engine call; an engine error (or crash) is returned, not raised."""
    from services.evaluator.promql.engine import EvalError, PromQLError

    try:
        return call(*args), None
    except (EvalError, PromQLError) as exc:
        return None, exc
    except Exception as exc:  # an engine bug: this case fails, the runner carries on
        return None, RuntimeError(f"engine crashed: {type(exc).__name__}: {exc}")


def _on_error(case: Case, error: Exception | None, mode: str) -> bool:
    """Whether evaluation is over: an error where one was expected passes, anything else is a mismatch."""
    if error is not None:
        if case.is_fail:
            outcome = _expected_failure(case, error)
            if outcome.status == "failed":
                raise _Mismatch(outcome.category, outcome.detail)
            return True
        category = "engine crash" if str(error).startswith("engine crashed") else "evaluation error"
        raise _Mismatch(category, f"{mode}error: {error}")
    if case.is_fail:
        raise _Mismatch("expected an error", f"{mode}expected an error, got a result")
    return False


def _run_range_eval(case: Case, node: Any, store: SeriesStore) -> None:
    assert case.range_args is not None
    result, error = _evaluate(_engine().range, node, store, *case.range_args)
    if not _on_error(case, error, ""):
        _compare(case, result, "")


def _run_instant_eval(case: Case, node: Any, store: SeriesStore) -> None:
    assert case.instant_at is not None
    queries = [(node, case.instant_at, "")]
    variant_times = _at_modifier_times(node, case.instant_at)
    pinned = _pin_at(node, case.instant_at) if variant_times else None
    for variant_ts in variant_times:
        at = f"every selector @ {case.instant_at / 1000:g}, evaluated at t={variant_ts / 1000:g}s: "
        queries.append((pinned, variant_ts, at))
    for query, ts, mode in queries:
        _run_instant_query(case, query, ts, store, mode)


def _run_instant_query(case: Case, node: Any, ts: int, store: SeriesStore, mode: str) -> None:
    from services.evaluator.promql.values import Scalar

    engine = _engine()
    result, error = _evaluate(engine.instant, node, store, ts)
    if _on_error(case, error, mode):
        return
    _compare(case, result, mode)
    if case.exclude_from_range_query or "range()" in case.expr:
        return
    # The same query as a range query around `ts` must give the same result at its middle step.
    mode = f"{mode}range mode: "
    matrix, error = _evaluate(engine.range, node, store, ts - 60_000, ts + 60_000, 60_000)
    if error is not None:
        raise _Mismatch("range mode", f"{mode}error: {error}")
    if case.is_ordered:
        return  # range results are always sorted by labels
    _assert_sorted(matrix, mode)
    vector = [
        (series.labels, value)
        for series in matrix
        for t, value in zip(series.timestamps, series.values, strict=True)
        if t == ts
    ]
    if isinstance(result, Scalar):
        if not vector:
            raise _Mismatch("range mode", f"{mode}no value at t={ts / 1000:g}s for a scalar")
        _compare_scalar(case, vector[0][1], mode)
    else:
        _compare_vector(case, vector, mode)


def _compare(case: Case, result: Any, mode: str) -> None:
    """test.go compareResult."""
    from services.evaluator.promql.values import RangeSeries, Scalar, String

    if isinstance(result, String):
        if case.expected_string != result.value:
            raise _Mismatch(
                "wrong value", f'{mode}expected string "{case.expected_string}", got "{result.value}"'
            )
    elif isinstance(result, Scalar):
        _compare_scalar(case, result.value, mode)
    elif case.is_range or (result and isinstance(result[0], RangeSeries)):
        _compare_matrix(case, result, mode)
    else:
        _compare_vector(case, [(s.labels, s.value) for s in result], mode)


def _compare_scalar(case: Case, got: float, mode: str) -> None:
    if not case.expect_scalar:
        raise _Mismatch("result type", f"{mode}expected a vector or matrix, got scalar {got}")
    expected = case.expected[()][2][0]
    assert isinstance(expected, float)
    if not almost_equal(expected, got):
        raise _Mismatch("wrong value", f"{mode}expected scalar {expected}, got {got}")


def _compare_vector(case: Case, got: list[tuple[dict[str, str], float]], mode: str) -> None:
    if case.expect_scalar:
        raise _Mismatch("result type", f"{mode}expected a scalar, got vector {_show_vector(got)}")
    seen: set[LabelKey] = set()
    for pos, (labels, value) in enumerate(got):
        key = key_of(labels)
        if key not in case.expected:
            raise _Mismatch(
                "unexpected series", f"{mode}unexpected {_series(labels)} = {value} in {_show_vector(got)}"
            )
        exp_pos, _, values = case.expected[key]
        if case.is_ordered and exp_pos != pos + 1:
            raise _Mismatch(
                "order", f"{mode}expected {_series(labels)} at position {exp_pos}, it was at {pos + 1}"
            )
        expected = values[0] if values else None
        expected_value = 0.0 if expected is None else expected  # `_` is an omitted value: 0
        assert isinstance(expected_value, float)
        if not almost_equal(expected_value, value):
            raise _Mismatch(
                "wrong value", f"{mode}expected {expected_value} for {_series(labels)}, got {value}"
            )
        seen.add(key)
    for key, (_, labels, values) in case.expected.items():
        if key not in seen:
            raise _Mismatch(
                "missing series", f"{mode}expected {_series(labels)} = {values[:1]}, got {_show_vector(got)}"
            )


def _compare_matrix(case: Case, got: list[Any], mode: str) -> None:
    if case.is_ordered:
        raise _Mismatch("result type", f"{mode}expected ordered result, but query returned a matrix")
    if case.expect_scalar:
        raise _Mismatch("result type", f"{mode}expected a scalar, got a matrix")
    _assert_sorted(got, mode)
    # An instant query's matrix has no step to place expected points (test.go: the range "cannot return
    # this many points") unless `expect range vector` gave one.
    start, end, step = case.range_args if case.range_args else (case.instant_at or 0, None, 0)
    seen: set[LabelKey] = set()
    for series in got:
        key = key_of(series.labels)
        if key not in case.expected:
            raise _Mismatch("unexpected series", f"{mode}unexpected {_series(series.labels)} in the result")
        seen.add(key)
        expected_points = []
        for k, value in enumerate(case.expected[key][2]):
            t = start + k * step
            if end is None or t > end:
                raise _Mismatch("result type", f"{mode}the query range cannot return the expected points")
            if value is not None:
                expected_points.append((t, value))
        actual = list(zip(series.timestamps, series.values, strict=True))
        if len(expected_points) != len(actual):
            raise _Mismatch(
                "wrong points",
                f"{mode}{_series(series.labels)}: expected {_points(expected_points)}, got {_points(actual)}",
            )
        for (t_exp, v_exp), (t_got, v_got) in zip(expected_points, actual, strict=True):
            assert isinstance(v_exp, float)
            if t_exp != t_got or not almost_equal(v_exp, v_got):
                category = "wrong points" if t_exp != t_got else "wrong value"
                what = f"{_series(series.labels)}: expected {_points(expected_points)}, got {_points(actual)}"
                raise _Mismatch(category, mode + what)
    for key, (_, labels, _values) in case.expected.items():
        if key not in seen:
            raise _Mismatch("missing series", f"{mode}expected {_series(labels)} not found")


def _assert_sorted(matrix: list[Any], mode: str) -> None:
    """test.go assertMatrixSorted: a matrix is sorted by labels (labels.Compare)."""
    keys = [key_of(series.labels) for series in matrix]
    for i in range(len(keys) - 1):
        if keys[i] > keys[i + 1]:
            raise _Mismatch("matrix not sorted", f"{mode}matrix not sorted by labels at index {i + 1}")


def almost_equal(a: float, b: float) -> bool:
    """Prometheus' util/almost.Equal with promqltest's epsilon."""
    a_stale, b_stale = is_stale(a), is_stale(b)
    if a_stale or b_stale:
        return a_stale and b_stale
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < MIN_NORMAL:
        return diff < EPSILON * MIN_NORMAL
    return diff / min(abs_sum, 1.7976931348623157e308) < EPSILON


# --- the @ modifier variants (test.go atModifierTestCases) -------------------------------------------------


def _at_modifier_times(node: Any, ts: int) -> list[int]:
    """The other evaluation times promqltest tries with every selector pinned to `@ ts`; none when the
    expression calls a function whose result depends on the evaluation time."""
    if any(
        isinstance(n, _nodes().Call) and n.name in AT_MODIFIER_UNSAFE for n in _walk(node, subqueries=False)
    ):
        return []
    if ts == 0:
        return [-1000, 0, 1000]
    return [-10 * ts, 0, int(ts / 5), ts, 10 * ts]  # Go's integer division truncates toward zero


def _pin_at(node: Any, ts: int) -> Any:
    """`node` with `@ ts` on every selector and subquery that has no fixed `@` yet (`@ start()`/`@ end()`
    are replaced, as test.go's Timestamp overrides them); nothing inside a subquery is touched."""
    nodes = _nodes()
    if isinstance(node, nodes.VectorSelector | nodes.Subquery):
        return dataclasses.replace(node, at=ts) if not isinstance(node.at, int) else node
    if isinstance(node, nodes.MatrixSelector):
        return dataclasses.replace(node, selector=_pin_at(node.selector, ts))
    changes = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if _is_node(value):
            changes[f.name] = _pin_at(value, ts)
        elif isinstance(value, tuple) and value and all(_is_node(v) for v in value):
            changes[f.name] = tuple(_pin_at(v, ts) for v in value)
    return dataclasses.replace(node, **changes) if changes else node


def _touches(node: Any, histograms: list[dict[str, str]]) -> bool:
    """Whether any selector of the expression matches a series that holds native histograms."""
    nodes = _nodes()
    for n in _walk(node, subqueries=True):
        if isinstance(n, nodes.VectorSelector) and any(
            all(m.matches(labels) for m in n.matchers) for labels in histograms
        ):
            return True
    return False


def _walk(node: Any, subqueries: bool) -> Iterator[Any]:
    yield node
    if not subqueries and isinstance(node, _nodes().Subquery):
        return
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        children = value if isinstance(value, tuple) else (value,)
        for child in children:
            if _is_node(child):
                yield from _walk(child, subqueries)


def _nodes() -> Any:
    from services.evaluator.promql import nodes

    return nodes


def _is_node(value: object) -> bool:
    return dataclasses.is_dataclass(value) and type(value).__module__ == _nodes().__name__


# --- formatting -------------------------------------------------------------------------------------------


def _series(labels: dict[str, str]) -> str:
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def _show_vector(got: list[tuple[dict[str, str], float]]) -> str:
    text = ", ".join(f"{_series(labels)} {value}" for labels, value in got[:4])
    more = f" (+{len(got) - 4} more)" if len(got) > 4 else ""
    return f"[{text}]{more}"


def _points(points: list[tuple[Any, Any]]) -> str:
    text = " ".join(f"{v}@{t / 1000:g}s" for t, v in points[:8])
    return text + (f" (+{len(points) - 8} more)" if len(points) > 8 else "")
