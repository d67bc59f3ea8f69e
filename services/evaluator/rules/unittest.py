"""`tripwire rules test FILE…`: rule unit tests in promtool's format (cmd/promtool/unittest.go).

A test file names rule files (relative to itself, globs allowed) and test groups. For each test group the
input series are loaded lazily, as promtool's lazy loader does: before the evaluation at `t`, exactly the
samples at or before `t` are in storage. The rule groups are evaluated at every `evaluation_interval` from
the start up to the largest `eval_time` of the group; after each evaluation the alert tests whose
`eval_time` falls in `[t, t + evaluation_interval)` compare the firing alerts. The PromQL tests run last,
against everything loaded and recorded (recording rules, `ALERTS`, `ALERTS_FOR_STATE`).

Output and exit codes are promtool's: `Unit Testing: FILE`, then `  SUCCESS` or `  FAILED:` and every
failure, with expected and actual results side by side; exit 1 if anything failed or could not run.
"""

from __future__ import annotations

import glob
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from services.evaluator.promql.engine import Engine, EvalError
from services.evaluator.promql.nodes import PromQLError, compile_expr, type_of
from services.evaluator.promql.notation import (
    NotationError,
    load_series,
    parse_labels,
    parse_series_description,
)
from services.evaluator.promql.values import Scalar
from services.evaluator.rules.alerting import AlertingRule, AlertState
from services.evaluator.rules.files import load_rule_files
from services.evaluator.rules.group import EvalContext, RuleGroup
from services.evaluator.series import SeriesStore
from shared.durations import Duration
from shared.gofloat import format_go_exponent_upper
from shared.matchers import go_quote, labels_string
from shared.yamlfile import ConfigError, ConfigErrors, parse_yaml, read_text

SUCCESS_EXIT = 0
FAILURE_EXIT = 1

DEFAULT_EVALUATION_INTERVAL = 60.0
LOOKBACK = 300.0  # promtool's engine uses Prometheus' default lookback delta
RESEND_DELAY = 60.0

LabelSet = tuple[tuple[str, str], ...]


# --- the test file --------------------------------------------------------------------------------------


class _RawLoader(yaml.SafeLoader):
    """Plain scalars stay text (only `null` and merge keys are resolved). Go's YAML decoder fills a string
    field with the scalar's own text, so `values: 0x10` is "0x10" (0, ten times), not 16; typed fields
    (durations, floats, booleans) are converted by the schema below."""


_RawLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx) for tag, rx in resolvers if tag in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:merge")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _null_as(default: Callable[[], Any]) -> BeforeValidator:
    # Go leaves a field that is present but null (`exp_alerts:`) at its zero value.
    return BeforeValidator(lambda value: default() if value is None else value)


def _go_float(value: Any) -> Any:
    """A YAML float as Go reads it: `3`, `1e3`, `0x10`, `.inf`, `-.Inf`, `.nan`."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    if text.lower() in special:
        return special[text.lower()]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float(int(text.replace("_", ""), 0))
    except ValueError:
        return value  # let the schema report it


def parse_timestamp(text: str) -> float:
    """promtool's parseTime: Unix seconds (fractions allowed) or RFC 3339."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(f"cannot parse {go_quote(text)} to a valid timestamp")
    return parsed.timestamp()


def _timestamp(value: Any) -> Any:
    if isinstance(value, str):
        return parse_timestamp(value)
    return value


_Str = Annotated[str, _null_as(str)]
_Float = Annotated[float, BeforeValidator(_go_float)]
_StrMap = Annotated[dict[str, _Str], _null_as(dict)]
_NullDuration = Annotated[Duration, _null_as(float)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeriesSpec(_Strict):
    series: _Str = ""
    values: _Str = ""


class ExpAlert(_Strict):
    exp_labels: _StrMap = Field(default_factory=dict)
    exp_annotations: _StrMap = Field(default_factory=dict)


class AlertTestCase(_Strict):
    eval_time: _NullDuration = 0.0
    alertname: _Str = ""
    exp_alerts: Annotated[list[ExpAlert], _null_as(list)] = Field(default_factory=list)


class SampleSpec(_Strict):
    labels: _Str = ""
    value: _Float = 0.0
    histogram: _Str = ""  # native histograms: accepted by the schema, refused when compared


class PromQLTestCase(_Strict):
    expr: _Str = ""
    eval_time: _NullDuration = 0.0
    exp_samples: Annotated[list[SampleSpec], _null_as(list)] = Field(default_factory=list)


class UnitTestGroup(_Strict):
    interval: _NullDuration = 0.0
    input_series: Annotated[list[SeriesSpec], _null_as(list)] = Field(default_factory=list)
    alert_rule_test: Annotated[list[AlertTestCase], _null_as(list)] = Field(default_factory=list)
    promql_expr_test: Annotated[list[PromQLTestCase], _null_as(list)] = Field(default_factory=list)
    external_labels: _StrMap = Field(default_factory=dict)
    external_url: _Str = ""
    name: _Str = ""
    start_timestamp: Annotated[float | None, BeforeValidator(_timestamp)] = None


class UnitTestFile(_Strict):
    rule_files: Annotated[list[_Str], _null_as(list)] = Field(default_factory=list)
    evaluation_interval: _NullDuration = 0.0
    group_eval_order: Annotated[list[_Str], _null_as(list)] = Field(default_factory=list)
    tests: Annotated[list[UnitTestGroup], _null_as(list)] = Field(default_factory=list)
    fuzzy_compare: Annotated[bool, _null_as(bool)] = False


def load_test_file(path: Path) -> UnitTestFile:
    """Read and validate a unit-test file; raises ConfigError / ConfigErrors with `file:line:col`."""
    text = read_text(path)
    # The shared loader checks syntax and duplicate keys and knows every key's position; the raw loader
    # gives the scalars as text, with the same structure.
    doc = parse_yaml(text, str(path))
    doc.data = yaml.load(text, Loader=_RawLoader)  # noqa: S506 - a SafeLoader subclass
    if doc.data is None:
        return UnitTestFile()
    try:
        return UnitTestFile.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigErrors(doc.validation_errors(exc, model=UnitTestFile)) from None


def resolve_rule_files(base: Path, patterns: list[str], err: TextIO) -> list[Path]:
    """Rule file patterns relative to the test file's directory, globbed (sorted, as Go's filepath.Glob);
    a pattern matching nothing is a warning, as in promtool."""
    files: list[Path] = []
    for pattern in patterns:
        full = pattern if not pattern or Path(pattern).is_absolute() else str(base / pattern)
        matches = sorted(glob.glob(full)) if full else []
        if not matches:
            print(f"  WARNING: no file match pattern {full}", file=err)
        for match in matches:
            if Path(match) not in files:  # the same file twice would be the same groups (keyed by file)
                files.append(Path(match))
    return files


# --- formatting, as promtool prints ----------------------------------------------------------------------

_MODEL_UNITS = (
    ("y", 365 * 86_400_000, True),
    ("w", 7 * 86_400_000, True),
    ("d", 86_400_000, False),
    ("h", 3_600_000, False),
    ("m", 60_000, False),
    ("s", 1000, False),
    ("ms", 1, False),
)


def format_model_duration(seconds: float) -> str:
    """A duration as Prometheus' model.Duration prints it (`5m`, `1d`, `2m59s999ms`, `0s`): years and weeks
    only when exact."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size, exact in _MODEL_UNITS:
        if exact and ms % size:
            continue
        count, ms = divmod(ms, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def format_go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it (`0s`, `5m0s`, `1h0m0s`, `1.5s`, `250ms`)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    if ms < 1000:
        return f"{sign}{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, frac = divmod(rest, 1000)
    sec_text = f"{secs}.{frac:03d}".rstrip("0") if frac else str(secs)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return f"{out}{sec_text}s"


def format_labels(labels: LabelSet) -> str:
    """labels.Labels.String(): `{__name__="up", job="x"}` (Prometheus label sets are always sorted)."""
    return labels_string(dict(labels))


def _indent_lines(text: str, indent: str) -> str:
    return ("\n" + indent).join(text.split("\n"))


def _format_alerts(alerts: list[tuple[LabelSet, LabelSet]]) -> str:
    if not alerts:
        return "[]"
    items = [
        f"{i}:"
        + _indent_lines(f"\nLabels:{format_labels(labels)}\nAnnotations:{format_labels(annotations)}", "  ")
        for i, (labels, annotations) in enumerate(alerts)
    ]
    return "[\n" + ",\n".join(items) + "\n]"


def _format_samples(samples: list[tuple[LabelSet, float]]) -> str:
    if not samples:
        return "nil"
    return ", ".join(
        f"{format_labels(labels)} {format_go_exponent_upper(value)}" for labels, value in samples
    )


# --- running the tests -----------------------------------------------------------------------------------


def _exact(a: float, b: float) -> bool:
    return a == b  # as Go's cmp.Equal: NaN equals nothing


def _fuzzy(a: float, b: float) -> bool:
    # promtool's fuzzy_compare: equal, or one representable float (ULP) apart.
    return a == b or math.nextafter(a, -math.inf) == b or math.nextafter(a, math.inf) == b


def parse_metric(text: str) -> dict[str, str]:
    """Prometheus' ParseMetric: `name{label="value", …}`, `{…}` or empty (no labels)."""
    if not text.strip():
        return {}
    try:
        labels, end = parse_labels(text)
    except NotationError as exc:
        raise ValueError(str(exc)) from None
    if text[end:].strip():
        raise ValueError(f"unexpected {text[end:].strip()!r} after the labels")
    return labels


def _label_set(labels: dict[str, str]) -> LabelSet:
    return tuple(sorted(labels.items()))


@dataclass
class _Input:
    """The input series' samples in time order, moved into storage as evaluation reaches them."""

    samples: list[tuple[float, dict[str, str], float]]
    next: int = 0

    def load_till(self, store: SeriesStore, ts_ms: int) -> None:
        # Compared in whole milliseconds: float seconds computed two ways may differ in the last bit.
        while self.next < len(self.samples) and round(self.samples[self.next][0] * 1000) <= ts_ms:
            t, labels, value = self.samples[self.next]
            store.series_for(labels).add(t, value)
            self.next += 1


def _load_input(tg: UnitTestGroup, start_ms: int, step_ms: int) -> tuple[_Input | None, list[str]]:
    staging = SeriesStore(retention=math.inf)
    errors: list[str] = []
    for i, spec in enumerate(tg.input_series):
        try:
            labels, values = parse_series_description(f"{spec.series} {spec.values}")
            if load_series(staging, labels, values, start_ms, step_ms):
                raise NotationError(
                    "native histogram values are not supported by tripwire (float samples only)"
                )
        except NotationError as exc:
            errors.append(f"    input_series[{i}]: series {go_quote(spec.series)}: {exc}")
    if errors:
        return None, errors
    samples = [
        (t, series.labels, v)
        for series in staging
        for t, v in zip(series.timestamps, series.values, strict=True)
    ]
    samples.sort(key=lambda s: s[0])
    return _Input(samples), []


def _ordered(groups: list[RuleGroup], order: list[str]) -> list[RuleGroup]:
    # As promtool: groups named in group_eval_order run in that order; unnamed ones sort as position 0.
    # A stable sort keeps file order among equals (promtool's is map order, i.e. unspecified).
    position = {name: i for i, name in enumerate(order)}
    return sorted(groups, key=lambda g: position.get(g.name, 0))


def _firing(groups: list[RuleGroup], names: set[str]) -> dict[str, list[tuple[LabelSet, LabelSet]]]:
    got: dict[str, list[tuple[LabelSet, LabelSet]]] = {}
    for group in groups:
        for rule in group.rules:
            if not isinstance(rule, AlertingRule) or rule.name not in names:
                continue
            bucket = got.setdefault(rule.name, [])
            for record in rule.active.values():
                if record.state == AlertState.FIRING:
                    bucket.append((_label_set(record.labels), _label_set(record.annotations)))
    return got


def run_test_group(
    tg: UnitTestGroup,
    eval_interval: float,
    group_order: list[str],
    fuzzy: bool,
    rule_files: list[Path],
) -> list[str]:
    """Run one test group; returns its failures and errors as promtool words them (empty: passed)."""
    interval = tg.interval or eval_interval
    start = tg.start_timestamp or 0.0
    start_ms = round(start * 1000)
    step_ms = round(eval_interval * 1000)
    compare = _fuzzy if fuzzy else _exact

    data, errors = _load_input(tg, start_ms, round(interval * 1000))
    if data is None:
        return errors
    try:
        groups = _ordered(load_rule_files(rule_files, interval), group_order)
    except ConfigErrors as exc:
        return [str(e) for e in exc.errors]
    except ConfigError as exc:
        return [str(exc)]

    alert_tests: dict[int, list[AlertTestCase]] = {}
    for case in tg.alert_rule_test:
        if not case.alertname:
            where = f" (in TestGroup {tg.name})" if tg.name else ""
            return [
                "an item under alert_rule_test misses required attribute alertname at eval_time "
                f"{format_model_duration(case.eval_time)}{where}"
            ]
        alert_tests.setdefault(round(case.eval_time * 1000), []).append(case)
    alert_times = sorted(alert_tests)
    eval_times_ms = [round(c.eval_time * 1000) for c in (*tg.alert_rule_test, *tg.promql_expr_test)]
    max_ms = max(eval_times_ms, default=0)

    store = SeriesStore(retention=math.inf)
    ctx = EvalContext(
        lookback=LOOKBACK,
        resend_delay=RESEND_DELAY,
        external_labels=dict(tg.external_labels),
        external_url=tg.external_url,
        subquery_step=eval_interval,
    )
    failures: list[str] = []
    curr = 0
    rel_ms = 0
    while rel_ms <= max_ms:
        ts = (start_ms + rel_ms) / 1000
        data.load_till(store, start_ms + rel_ms)
        eval_errors = []
        for group in groups:
            outcome = group.evaluate(store, ts, ctx)
            group.commit(outcome, ctx)  # as if notified: keeps the alerts' send bookkeeping realistic
            for rule in group.rules:
                if rule.health == "err":
                    eval_errors.append(
                        f"    rule: {rule.name}, time: {format_go_duration(ts)}, err: {rule.last_error}"
                    )
        if eval_errors:
            # As promtool: evaluation errors end the test group; earlier failures are kept.
            return failures + eval_errors
        # Alert tests whose eval_time falls in [ts, ts + evaluation_interval) are checked against this tick.
        while curr < len(alert_times) and rel_ms <= alert_times[curr] < rel_ms + step_ms:
            cases = alert_tests[alert_times[curr]]
            got = _firing(groups, {c.alertname for c in cases})
            for case in cases:
                failures.extend(_check_alerts(tg, case, got.get(case.alertname, [])))
            curr += 1
        rel_ms += step_ms

    engine = Engine(lookback_ms=round(LOOKBACK * 1000), subquery_step_ms=step_ms)
    for case in tg.promql_expr_test:
        failures.extend(_check_expr(case, engine, store, start_ms, compare))
    return failures


def _check_alerts(
    tg: UnitTestGroup, case: AlertTestCase, got_alerts: list[tuple[LabelSet, LabelSet]]
) -> list[str]:
    expected = sorted(
        (
            _label_set({**alert.exp_labels, "alertname": case.alertname}),
            _label_set(alert.exp_annotations),
        )
        for alert in case.exp_alerts
    )
    got = sorted(got_alerts)
    if expected == got:
        return []
    name = f"    name: {tg.name},\n" if tg.name else ""
    indent = " " * 12
    return [
        f"{name}    alertname: {case.alertname}, time: {format_model_duration(case.eval_time)}, \n"
        f"        exp:{_indent_lines(_format_alerts(expected), indent)}, \n"
        f"        got:{_indent_lines(_format_alerts(got), indent)}"
    ]


def _check_expr(
    case: PromQLTestCase,
    engine: Engine,
    store: SeriesStore,
    start_ms: int,
    compare: Callable[[float, float], bool],
) -> list[str]:
    head = f"    expr: {go_quote(case.expr)}, time: {format_model_duration(case.eval_time)}"
    try:
        node = compile_expr(case.expr)
        if type_of(node) not in ("vector", "scalar"):
            return [f"{head}, err: rule result is not a vector or scalar"]
        value = engine.instant(node, store, start_ms + round(case.eval_time * 1000))
    except (PromQLError, EvalError) as exc:
        return [f"{head}, err: {exc}"]
    except Exception as exc:  # an engine bug: still this test's result, named, not a traceback
        return [f"{head}, err: unexpected {type(exc).__name__}: {exc}"]
    if isinstance(value, Scalar):
        got = [((), value.value)]
    else:
        got = [(_label_set(s.labels), s.value) for s in value]  # type: ignore[union-attr]

    expected: list[tuple[LabelSet, float]] = []
    for sample in case.exp_samples:
        try:
            labels = parse_metric(sample.labels)
            if sample.histogram:
                raise ValueError("native histogram samples are not supported by tripwire")
        except ValueError as exc:
            return [f"{head}, err: labels {go_quote(sample.labels)}: {exc}"]
        expected.append((_label_set(labels), sample.value))

    expected.sort(key=lambda s: s[0])
    got.sort(key=lambda s: s[0])
    same = len(expected) == len(got) and all(
        el == gl and compare(ev, gv) for (el, ev), (gl, gv) in zip(expected, got, strict=True)
    )
    if same:
        return []
    return [f"{head},\n        exp: {_format_samples(expected)}\n        got: {_format_samples(got)}"]


def run_test_file(path: Path, run: re.Pattern[str] | None, err: TextIO) -> list[str]:
    """Run every selected test group of one file; returns all failures (empty: the file passed)."""
    try:
        spec = load_test_file(path)
    except ConfigErrors as exc:
        return [str(e) for e in exc.errors]
    except ConfigError as exc:
        return [str(exc)]
    eval_interval = spec.evaluation_interval or DEFAULT_EVALUATION_INTERVAL
    seen: set[str] = set()
    for name in spec.group_eval_order:
        if name in seen:
            return [f"group name repeated in evaluation order: {name}"]
        seen.add(name)
    rule_files = resolve_rule_files(path.parent, spec.rule_files, err)
    failures: list[str] = []
    for tg in spec.tests:
        if run is not None and not run.search(tg.name):
            continue
        failures.extend(
            run_test_group(tg, eval_interval, spec.group_eval_order, spec.fuzzy_compare, rule_files)
        )
    return failures


def compile_run(patterns: list[str] | None) -> re.Pattern[str] | None:
    """promtool's `--run`: the patterns joined with `|`, matched anywhere in a test group's name."""
    if not patterns:
        return None
    return re.compile("|".join(patterns))


def run_unit_tests(
    paths: list[Path], run: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the unit tests of every file, printing promtool's report; 0 if all passed, else 1."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        pattern = compile_run(run)
    except re.error as exc:
        print(f"tripwire rules test: invalid --run regular expression: {exc}", file=err)
        return FAILURE_EXIT
    failed = False
    for path in paths:
        print(f"Unit Testing: {path}", file=out)
        try:
            failures = run_test_file(path, pattern, err)
        except Exception as exc:  # a bug must still name the file, never print a traceback
            failures = [f"{path}: unexpected error: {type(exc).__name__}: {exc}"]
        if failures:
            failed = True
            out.flush()  # keep the report in order when both streams go to one terminal
            print("  FAILED:", file=err)
            for failure in failures:
                print(failure, file=err)
                print(file=err)
            err.flush()
        else:
            print("  SUCCESS", file=out)
        print(file=out)
    return FAILURE_EXIT if failed else SUCCESS_EXIT
