"""Prometheus' series notation (promqltest `load`, promtool `input_series`), as its lexer and grammar
read it."""

from __future__ import annotations

import math
import re
import struct

import pytest

from services.evaluator.promql.notation import (
    HISTOGRAM,
    NotationError,
    go_number,
    load_series,
    parse_labels,
    parse_series_description,
    parse_values,
)
from services.evaluator.promql.values import is_stale
from services.evaluator.series import SeriesStore


def test_expansions_follow_prometheus_grammar():
    labels, values = parse_series_description(
        'http_requests{job="api", instance="0"} 0+10x3 _ 1 -2x2 _x2 1-2x2 1e3 Inf -Inf'
    )
    assert labels == {"__name__": "http_requests", "job": "api", "instance": "0"}
    assert values == [0, 10, 20, 30, None, 1, -2, -2, -2, None, None, 1, -1, -3, 1000, math.inf, -math.inf]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("1+1x3", [1, 2, 3, 4]),  # a+bxn: n+1 values
        ("5x2", [5, 5, 5]),  # axn: n+1 copies
        ("1x0", [1]),
        ("_x3", [None, None, None]),  # _xn: n blanks, not n+1
        ("_x0", []),
        ("_", [None]),
        ("-1-1x2", [-1, -2, -3]),
        ("+3 -3", [3, -3]),
        ("1 +2x1", [1, 2, 2]),
    ],
)
def test_repetition_counts(values: str, expected: list[float | None]):
    assert parse_values(values) == expected


def test_increments_accumulate_like_go():
    # Prometheus adds the step once per value (`$1 += $2`), so float rounding accumulates.
    values = parse_values("0+0.1x3")
    assert values == [0.0, 0.1, 0.1 + 0.1, 0.1 + 0.1 + 0.1]
    assert values[3] != 0.3


def test_0x59_is_a_repetition_not_hex():
    assert parse_values("0x59 60") == [0.0] * 60 + [60.0]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("010", 8.0),  # Go's ParseInt(s, 0, 64): a leading zero means octal
        ("08", 8.0),  # not octal: ParseFloat
        ("1_000", 1000.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e3", 1000.0),
        ("INF", math.inf),
        ("iNf", math.inf),
        ("99999999999999999999", 1e20),
    ],
)
def test_numbers_as_prometheus_parses_them(word: str, expected: float):
    assert parse_values(word) == [expected]


def test_nan_in_any_case_and_signed_infinities():
    values = parse_values("NaN nan -Inf +Inf")
    assert math.isnan(values[0]) and math.isnan(values[1]) and values[2:] == [-math.inf, math.inf]


def test_stale_markers():
    values = parse_values("stale 1 stale")
    assert is_stale(values[0]) and values[1] == 1 and is_stale(values[2])  # type: ignore[arg-type]
    assert not is_stale(float("nan"))


def test_incrementing_a_stale_marker_gives_plain_nans_as_in_go():
    first, *rest = parse_values("stale+1x2")
    assert is_stale(first)  # type: ignore[arg-type]
    assert len(rest) == 2 and all(math.isnan(v) and not is_stale(v) for v in rest)  # type: ignore[arg-type]


def test_staleness_marker_bits_survive_loading():
    store = SeriesStore(float("inf"))
    labels, values = parse_series_description("m 1 stale")
    load_series(store, labels, values, 0, 1000)
    (series,) = list(store)
    assert struct.pack("<d", series.values[1]) == struct.pack("<Q", 0x7FF0000000000002)


def test_label_forms():
    assert parse_series_description('{__name__="m", a="b"} 1')[0] == {"__name__": "m", "a": "b"}
    assert parse_series_description('{a="b",} 1')[0] == {"a": "b"}
    assert parse_series_description("m{} 1")[0] == {"__name__": "m"}
    assert parse_series_description("m") == ({"__name__": "m"}, [])
    assert parse_series_description("job:rate:sum5m 1")[0] == {"__name__": "job:rate:sum5m"}
    # Prometheus 3: quoted (UTF-8) names, and a bare quoted metric name.
    assert parse_series_description('{"my.metric", "a.b"="c"} 1')[0] == {"__name__": "my.metric", "a.b": "c"}
    # The name outside the braces wins over __name__ inside, as Prometheus' label builder does.
    assert parse_series_description('m{__name__="x"} 1')[0] == {"__name__": "m"}


def test_go_quoted_label_values():
    labels, _ = parse_series_description(r"""m{a="x\n\"\u00e9\xc3\xa9\101", b='q\'', c=`raw\n`} 1""")
    assert labels == {"__name__": "m", "a": 'x\n"ééA', "b": "q'", "c": "raw\\n"}


def test_parse_labels_reports_where_values_start():
    assert parse_labels('m{a="b"} 1 2') == ({"__name__": "m", "a": "b"}, 8)


def test_native_histograms_are_recognised_not_evaluated():
    _, values = parse_series_description(
        "h {{schema:0 sum:1 count:1}}x2 1 {{schema:0 sum:2 count:2}} {{sum:1}}+{{sum:2}}x1 {{}}-{{}}x0"
    )
    assert values == [HISTOGRAM] * 3 + [1.0] + [HISTOGRAM] * 4
    store = SeriesStore(float("inf"))
    assert load_series(store, {"__name__": "h"}, values, start_ms=0, step_ms=60_000) is True
    (series,) = list(store)
    assert list(series.timestamps) == [180.0] and list(series.values) == [1.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("m 1 two", "column 5: unexpected identifier 'two' in series values, expected a number or \"stale\""),
        # The lexer reads `stalex2`, `Infx2` as one identifier: not a repetition.
        ("m stalex2", "column 3: unexpected identifier 'stalex2'"),
        ("m Infx2", "column 3: unexpected identifier 'Infx2'"),
        ("m 1+2", "column 6: unexpected end of input in series values, expected 'x' and a repetition count"),
        ("m 1x", "column 5: unexpected end of input in series values, expected a repetition count"),
        ("m 1x1.5", "column 5: invalid repetition in series values: '1.5'"),
        ("m 1m", "column 3: bad number syntax: '1m'"),
        ("m 1__0", "column 3: bad number syntax"),
        ("m 0x1F", "column 5: bad number syntax"),  # no hex here: `0`, `x`, then `1F`
        ("m _1", "column 4: unexpected number '1' in series values, expected a space between values"),
        ("m 1e400", "column 3: error parsing number '1e400'"),
        ("m{} 1 {{schema:0", "column 7: unterminated native histogram"),
        ('m{a="b} 1', "column 5: unterminated quoted string"),
        ('m{1a="x"} 1', "column 3: unexpected '1' in label set, expected a label name"),
        ('m{a=~"x"} 1', "column 4: unexpected '=~' after label name 'a', expected '='"),
        ('m{a="1",a="2"} 1', "column 9: duplicate label name 'a'"),
        (r'm{a="\q"} 1', r"column 6: unknown escape sequence '\q'"),
        (r'm{a="\xff"} 1', "column 5: label value is not valid UTF-8"),
        ('m {a="b"} 1', "column 3: unexpected character in series values: '{'"),
        ("on 1", "column 1: 'on' cannot be a metric name"),
        ("1 2", "column 1: expected a metric name or '{'"),
    ],
)
def test_errors_say_what_and_where(text: str, message: str):
    with pytest.raises(NotationError, match=f"^{re.escape(message)}"):
        parse_series_description(text)


def test_parse_values_columns_count_from_the_full_line():
    with pytest.raises(NotationError, match=r"^column 13: "):
        parse_values("1 zz", 10)


def test_go_number_accepts_what_parse_int_and_parse_float_accept():
    assert go_number("0x10") == 16.0 and go_number("-0o17") == -15.0 and go_number("0b11") == 3.0
    assert go_number("-Infinity") == -math.inf and go_number("+1.5e3") == 1500.0
    with pytest.raises(ValueError, match="invalid number"):
        go_number("1_")
    with pytest.raises(ValueError, match="invalid number"):
        go_number("{} 1")


def test_load_series_places_values_on_the_step_grid():
    store = SeriesStore(float("inf"))
    _, values = parse_series_description("m 1 _ 3")
    assert load_series(store, {"__name__": "m"}, values, start_ms=10_000, step_ms=5_000) is False
    (series,) = list(store)
    assert list(series.timestamps) == [10.0, 20.0] and list(series.values) == [1.0, 3.0]


def test_load_series_timestamps_come_from_integer_milliseconds():
    store = SeriesStore(float("inf"))
    load_series(store, {"__name__": "m"}, [1.0] * 4, start_ms=100, step_ms=100)
    (series,) = list(store)
    assert list(series.timestamps) == [0.1, 0.2, 0.3, 0.4]  # 300 / 1000, not 0.1 + 0.1 + 0.1
