"""Regression tests for the PromQL review findings: parser crashes on `@`, label_replace's regex, eager vs
delayed `__name__` removal, float overflow, absent() labels, histogram_quantile grouping and `le` parsing,
date functions beyond datetime's range, UTF-8 label names, and RE2's ASCII and POSIX classes."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from services.evaluator.promql import functions
from services.evaluator.promql import parse as rule_parse
from services.evaluator.promql.engine import Engine, EvalError
from services.evaluator.promql.nodes import Call, PromQLError, compile_expr
from shared.gofloat import go_parse_float
from shared.matchers import Matcher, go_regex


@dataclass
class _Series:
    labels: dict[str, str]
    timestamps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


class _Store:
    """The engine's Storage protocol over a list of series (seconds, ascending)."""

    def __init__(self, *series: tuple[dict[str, str], list[tuple[float, float]]]) -> None:
        self.series = [
            _Series(labels, [t for t, _ in points], [v for _, v in points]) for labels, points in series
        ]

    def select(self, matchers):  # type: ignore[no-untyped-def]
        matchers = list(matchers)
        return [s for s in self.series if all(m.matches(s.labels) for m in matchers)]


def _vector(expr: str, store: _Store, ts: float = 60.0, **options: bool) -> dict[tuple, float]:
    result = Engine(**options).instant(expr, store, round(ts * 1000))
    return {tuple(sorted(s.labels.items())): s.value for s in result}  # type: ignore[union-attr]


def _one(expr: str, store: _Store | None = None, ts: float = 60.0) -> float:
    (value,) = _vector(expr, store or _Store(), ts).values()
    return value


# 1. `@` values the parser cannot represent --------------------------------------------------------------
@pytest.mark.parametrize("text", ["foo @ -60", "rate(foo[5m] @ -0.5)", "foo @ 1e16", "foo @ -1e20"])
def test_at_modifier_out_of_bounds_is_a_promql_error(text: str):
    with pytest.raises(PromQLError, match="timestamp out of bounds for @ modifier"):
        compile_expr(text)
    with pytest.raises(PromQLError, match="timestamp out of bounds for @ modifier"):
        rule_parse.compile_expr(text)


def test_at_modifier_beyond_datetime_range_compiles():
    # Beyond the year 9999 (Python's datetime) but within Prometheus' int64 milliseconds.
    assert compile_expr("foo @ 1e12").at == 10**15  # type: ignore[union-attr]
    assert compile_expr("foo @ 1e15").at == 10**18  # type: ignore[union-attr]
    assert compile_expr("foo[1m:] @ 253402300800").at == 253402300800000  # type: ignore[union-attr]


def test_durations_the_parser_cannot_convert_are_a_promql_error():
    with pytest.raises(PromQLError, match="could not parse expression"):
        compile_expr("foo offset 1000000000y")


# 2. label_replace's regex: RE2 syntax, compiled once with the expression -----------------------------------
def test_label_replace_regex_is_compiled_with_the_expression(monkeypatch: pytest.MonkeyPatch):
    node = compile_expr('label_replace(up, "digits", "$1", "src", "[^[:digit:]]*(\\\\d+)")')
    assert isinstance(node, Call) and node.regex is not None

    def no_compiling(pattern: str):  # type: ignore[no-untyped-def]
        raise AssertionError("label_replace compiled its regex while evaluating")

    monkeypatch.setattr(functions, "_replace_regex", no_compiling)
    store = _Store(
        ({"__name__": "up", "src": "abc42"}, [(0, 1)]), ({"__name__": "up", "src": "x٣"}, [(0, 1)])
    )
    for ts in (0, 30):
        got = _vector_from(node, store, ts)
        # \d is ASCII in RE2: the Arabic-Indic digit does not match, so that series is unchanged.
        assert got == {
            (("__name__", "up"), ("digits", "42"), ("src", "abc42")): 1.0,
            (("__name__", "up"), ("src", "x٣")): 1.0,
        }


def _vector_from(node, store: _Store, ts: float) -> dict[tuple, float]:  # type: ignore[no-untyped-def]
    result = Engine().instant(node, store, round(ts * 1000))
    return {tuple(sorted(s.labels.items())): s.value for s in result}  # type: ignore[union-attr]


def test_label_replace_invalid_regex_is_a_compile_error():
    with pytest.raises(PromQLError, match=r"^invalid regular expression in label_replace\(\): \(\.\*$"):
        compile_expr('label_replace(up, "dst", "$1", "src", "(.*")')
    with pytest.raises(PromQLError, match="invalid regular expression in label_replace"):
        rule_parse.compile_expr('label_replace(up, "dst", "$1", "src", "a\\\\")')


def test_label_replace_refuses_to_make_series_alike():
    store = _Store(({"__name__": "m", "src": "a"}, [(0, 1)]), ({"__name__": "m", "src": "b"}, [(0, 2)]))
    # Prometheus checks right in label_replace, so even an aggregation above it does not hide the clash.
    with pytest.raises(EvalError, match="same labelset"):
        _vector('count(label_replace(m, "src", "", "", ""))', store)


# 3. `__name__` removal: eager by default (Prometheus server, promtool), delayed as an option ---------------
_TWO_METRICS = _Store(
    ({"__name__": "a_total", "job": "x"}, [(0, 0), (30, 30), (60, 60)]),
    ({"__name__": "b_total", "job": "x"}, [(0, 0), (30, 60), (60, 120)]),
)


def test_engines_default_to_eager_name_removal():
    assert Engine().delayed_name_removal is False
    assert rule_parse._engine(300.0, 60.0).delayed_name_removal is False
    expr = 'label_replace(rate(a_total[1m]), "was", "$1", "__name__", "(.+)")'
    assert _vector(expr, _TWO_METRICS) == {(("job", "x"),): 1.0}
    assert _vector(expr, _TWO_METRICS, delayed_name_removal=True) == {(("job", "x"), ("was", "a_total")): 1.0}
    # The rule path (Expression.evaluate) is eager too.
    got = rule_parse.compile_expr(expr).evaluate(_TWO_METRICS, 60.0, 300.0)
    assert got == [({"job": "x"}, 1.0)]


def test_eager_removal_refuses_series_left_alike_where_the_name_is_dropped():
    expr = 'sum(rate({__name__=~"a_total|b_total"}[1m]))'
    with pytest.raises(EvalError, match="same labelset"):
        _vector(expr, _TWO_METRICS)
    assert _vector(expr, _TWO_METRICS, delayed_name_removal=True) == {(): 3.0}
    # Eagerly, `by (__name__)` no longer sees the names rate() dropped.
    with pytest.raises(EvalError, match="same labelset"):
        _vector('sum by (__name__) (rate({__name__=~"a_total|b_total"}[1m]))', _TWO_METRICS)


# 4. Go float semantics instead of Python exceptions ---------------------------------------------------------
@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("round(vector(1e308), 0.1)", math.inf),
        ("round(vector(5), 1e-320)", math.nan),  # 1/1e-320 is +Inf: Floor(Inf)/Inf
        ("round(vector(5), 0)", math.nan),
        ("round(vector(5), 1/0)", math.nan),  # inverse 0: Floor(0.5)/0 is 0/0
        ("round(vector(-1/0))", -math.inf),
        ("round(vector(0/0), 2)", math.nan),
        ("round(vector(2.5), 0/0)", math.nan),
        ("round(vector(12.34), 0.1)", 12.3),
        ("sinh(vector(-1000))", -math.inf),
        ("sinh(vector(1000))", math.inf),
    ],
)
def test_math_on_huge_or_special_values_never_raises(expr: str, expected: float):
    got = _one(expr)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_histogram_quantile_with_an_empty_first_bucket_at_q0_is_nan():
    store = _Store(
        ({"__name__": "h_bucket", "le": "1"}, [(0, 0)]),
        ({"__name__": "h_bucket", "le": "+Inf"}, [(0, 0)]),
    )
    assert math.isnan(_one("histogram_quantile(0, h_bucket)", store, ts=0))


# 5. absent() ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("selector", "labels"),
    [
        ('nothing{a=""}', {}),
        ('nothing{a="", b="x"}', {"b": "x"}),
        ('nothing{a="x", a="y"}', {}),
        ('nothing{a="x", a="x"}', {}),
        ('nothing{a="x", b=~"y", c!="z", d!~"w"}', {"a": "x"}),
        ('nothing{a=~"y", a="x"}', {"a": "x"}),
        ('nothing{a="x", a=~"y"}', {}),
    ],
)
def test_absent_labels_come_only_from_single_nonempty_equality_matchers(selector: str, labels: dict):
    assert _vector(f"absent({selector})", _Store()) == {tuple(sorted(labels.items())): 1.0}
    assert _vector(f"absent_over_time({selector}[5m])", _Store()) == {tuple(sorted(labels.items())): 1.0}


# 6. histogram_quantile ------------------------------------------------------------------------------------
def _buckets(name: str, extra: dict[str, str], bounds: list[tuple[str, float]]):  # type: ignore[no-untyped-def]
    return [({"__name__": name, **extra, "le": le}, [(0, count)]) for le, count in bounds]


def test_histogram_quantile_groups_by_name_too_and_drops_it():
    alike = _Store(
        *_buckets("a_bucket", {"job": "x"}, [("1", 1), ("+Inf", 2)]),
        *_buckets("b_bucket", {"job": "x"}, [("1", 1), ("+Inf", 2)]),
    )
    # Two histograms, not one merged: once their names are dropped they clash, in both modes.
    for delayed in (False, True):
        with pytest.raises(EvalError, match="same labelset"):
            _vector(
                'histogram_quantile(0.5, {__name__=~"a_bucket|b_bucket"})',
                alike,
                0,
                delayed_name_removal=delayed,
            )
    distinct = _Store(
        *_buckets("a_bucket", {"job": "x"}, [("1", 2), ("+Inf", 2)]),
        *_buckets("b_bucket", {"job": "y"}, [("2", 2), ("+Inf", 2)]),
    )
    got = _vector('histogram_quantile(0.5, {__name__=~"a_bucket|b_bucket"})', distinct, 0)
    assert got == {(("job", "x"),): 0.5, (("job", "y"),): 1.0}


def test_histogram_quantile_reads_le_with_go_parse_float():
    store = _Store(
        *_buckets(
            "h_bucket",
            {},
            [("0x1p1", 1), ("1_0", 2), ("1e2", 3), ("Inf", 4), ("0x10", 100), ("bogus", 100), ("1e400", 100)],
        ),
    )
    # Buckets 2, 10, 100, +Inf; `0x10` (a hex float needs a p exponent), `bogus` and `1e400` are ignored.
    assert _one("histogram_quantile(0.5, h_bucket)", store, ts=0) == pytest.approx(10.0)
    assert _one("histogram_quantile(0.7, h_bucket)", store, ts=0) == pytest.approx(82.0)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("+Inf", math.inf),
        ("Inf", math.inf),
        ("-infinity", -math.inf),
        ("1e3", 1000.0),
        ("0x1p4", 16.0),
        ("1_000", 1000.0),  # Go's ParseFloat allows underscores between digits, base prefix or not
        (".5", 0.5),
        ("5.", 5.0),
        ("1e-400", 0.0),
        ("0X1.8P1", 3.0),
    ],
)
def test_go_parse_float_accepts(text: str, value: float):
    assert go_parse_float(text) == value


@pytest.mark.parametrize(
    "text", ["0x10", "1e400", "_1", "1_", "1__0", "+nan", "infin", "", ".", " 1", "١", "1e"]
)
def test_go_parse_float_refuses(text: str):
    with pytest.raises(ValueError):
        go_parse_float(text)


# 7. Date functions ------------------------------------------------------------------------------------------
_DATE_FUNCTIONS = (
    "year",
    "month",
    "day_of_month",
    "day_of_year",
    "day_of_week",
    "days_in_month",
    "hour",
    "minute",
)


def _dates(value: str) -> dict[str, float]:
    return {fn: _one(f"{fn}(vector({value}))") for fn in _DATE_FUNCTIONS}


def test_date_functions_beyond_datetime_range():
    # 10000-01-01T00:00:00Z, a Saturday (weekdays repeat every 400 years: 2000-01-01 was one).
    assert _dates("253402300800") == {
        "year": 10000, "month": 1, "day_of_month": 1, "day_of_year": 1,
        "day_of_week": 6, "days_in_month": 31, "hour": 0, "minute": 0,
    }  # fmt: skip
    # 0000-12-31T23:59:59Z (1 BC, a leap year in the proleptic Gregorian calendar).
    assert _dates("-62135596801") == {
        "year": 0, "month": 12, "day_of_month": 31, "day_of_year": 366,
        "day_of_week": 0, "days_in_month": 31, "hour": 23, "minute": 59,
    }  # fmt: skip
    assert _one("year(vector(1e13))") == 318857


def test_date_functions_truncate_toward_zero_as_go_int64():
    assert _dates("-0.5")["year"] == 1970  # int64(-0.5) is 0: 1970-01-01T00:00:00Z
    assert _dates("-1.5")["minute"] == 59
    # No argument: time.Unix(enh.Ts/1000, 0), Go's integer division truncating toward zero too.
    assert _one("year()", ts=-0.5) == 1970
    assert _one("hour()", ts=-1.5) == 23


@pytest.mark.parametrize("value", ["0/0", "1/0", "-1/0", "1e300", "-1e19"])
def test_date_functions_of_values_go_cannot_convert_are_nan(value: str):
    assert all(math.isnan(v) for v in _dates(value).values())


def test_civil_time_agrees_with_datetime_where_it_works():
    rng = random.Random(7)
    for seconds in [0, -1, 86399, 86400, 951782400, 4107542400] + [
        rng.randrange(-62135596800, 253402300800) for _ in range(2000)
    ]:
        d = datetime.fromtimestamp(seconds, UTC)
        c = functions.civil_time(seconds)
        assert (c.year, c.month, c.day, c.hour, c.minute) == (d.year, d.month, d.day, d.hour, d.minute)
        assert (c.weekday, c.yearday) == ((d.weekday() + 1) % 7, d.timetuple().tm_yday)


# 8. UTF-8 label names ---------------------------------------------------------------------------------------
def test_utf8_destination_label_names():
    store = _Store(({"__name__": "m", "a": "x", "b": "y"}, [(0, 1)]))
    assert _vector('label_replace(m, "über", "$1", "a", "(.*)")', store, 0) == {
        (("__name__", "m"), ("a", "x"), ("b", "y"), ("über", "x")): 1.0
    }
    assert _vector('label_join(m, "ラベル", "-", "a", "b")', store, 0) == {
        (("__name__", "m"), ("a", "x"), ("b", "y"), ("ラベル", "x-y")): 1.0
    }
    assert _vector('count_values("värde", m)', store, 0) == {(("värde", "1"),): 1.0}
    # Byte escapes as Go decodes them: "\xc3\xa9" is "é".
    assert _vector('label_replace(m, "e", "\\xc3\\xa9", "a", ".*")', store, 0) == {
        (("__name__", "m"), ("a", "x"), ("b", "y"), ("e", "é")): 1.0
    }


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('label_replace(m, "", "x", "a", ".*")', "invalid destination label name in label_replace(): "),
        (
            'label_replace(m, "\\xff", "x", "a", ".*")',
            "invalid destination label name in label_replace(): \\xff",
        ),
        ('label_join(m, "", "-", "a")', "invalid destination label name in label_join(): "),
        ('label_join(m, "d", "-", "\\xc5")', "invalid source label name in label_join(): \\xc5"),
    ],
)
def test_empty_or_invalid_utf8_label_names_are_errors(expr: str, message: str):
    with pytest.raises(PromQLError) as raised:
        compile_expr(expr)
    assert str(raised.value) == message


def test_count_values_invalid_utf8_label():
    store = _Store(({"__name__": "m"}, [(0, 1)]))
    with pytest.raises(EvalError) as raised:
        _vector('count_values("a\\xc5z", m)', store, 0)
    assert str(raised.value) == 'invalid label name "a\\xc5z"'


# 9. RE2 classes in matchers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("regex", "value", "matches"),
    [
        ("\\d+", "123", True),
        ("\\d+", "١٢٣", False),  # Arabic-Indic digits: Unicode \d, not RE2's
        ("\\w+", "abc_9", True),
        ("\\w+", "été", False),
        ("\\s", " ", True),
        ("\\s", "\v", False),  # RE2's \s is [\t\n\f\r ]
        ("\\D", "١", True),
        ("[\\d.]+", "1.5", True),
        ("[^\\s]+", "a\u00a0b", True),  # a no-break space is not RE2 \s
        ("[[:alpha:]]+", "abcXYZ", True),
        ("[[:alpha:]]+", "é", False),
        ("[[:upper:][:digit:]]+", "AB12", True),
        ("[[:^digit:]]+", "ab", True),
        ("[[:^digit:]]+", "a1", False),
        ("[[:xdigit:]]+", "0fA", True),
        ("[[:punct:]]", "!", True),
        ("a\\b.*", "a-b", True),
        ("a\\b.*", "aé", True),  # RE2's \b is ASCII: é is not a word character, so a boundary follows a
        ("(?i)[[:lower:]]+", "ABC", True),
        ("x\\z", "x", True),
    ],
)
def test_matchers_use_re2_classes(regex: str, value: str, matches: bool):
    assert Matcher.create("l", "=~", regex).matches({"l": value}) is matches


def test_go_regex_posix_class_is_not_a_nested_set():
    assert go_regex("[[:digit:]]") == "[\\x30-\\x39]"
    assert go_regex("[[]") == "[\\[]"
