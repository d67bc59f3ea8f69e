"""Prometheus' series notation (promqltest `load`, promtool `input_series`)."""

from __future__ import annotations

import math

import pytest

from services.evaluator.promql.notation import (
    HISTOGRAM,
    NotationError,
    load_series,
    parse_series_description,
)
from services.evaluator.promql.values import is_stale
from services.evaluator.series import SeriesStore


def test_expansions_follow_prometheus_grammar():
    labels, values = parse_series_description(
        'http_requests{job="api", instance="0"} 0+10x3 _ 1 -2x2 _x2 1-2x2 1e3 Inf -Inf'
    )
    assert labels == {"__name__": "http_requests", "job": "api", "instance": "0"}
    assert values == [0, 10, 20, 30, None, 1, -2, -2, -2, None, None, 1, -1, -3, 1000, math.inf, -math.inf]


def test_0x59_is_a_repetition_not_hex():
    assert parse_series_description("m 0x59 60")[1] == [0.0] * 60 + [60.0]


def test_stale_markers_nan_and_escapes():
    labels, values = parse_series_description('{__name__="m", path="a\\"b\\n"} stale NaN stalex1')
    assert labels == {"__name__": "m", "path": 'a"b\n'}
    assert is_stale(values[0]) and math.isnan(values[1]) and not is_stale(values[1])
    assert len(values) == 4 and all(is_stale(v) for v in values[2:])


def test_native_histograms_are_recognised_not_evaluated():
    _, values = parse_series_description("h {{schema:0 sum:1 count:1}}x2 1 {{schema:0 sum:2 count:2}}")
    assert values == [HISTOGRAM, HISTOGRAM, HISTOGRAM, 1.0, HISTOGRAM]
    store = SeriesStore(float("inf"))
    assert load_series(store, {"__name__": "h"}, values, start_ms=0, step_ms=60_000) is True
    (series,) = list(store)
    assert list(series.timestamps) == [180.0] and list(series.values) == [1.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("m 1 two", "column 5: unexpected 'two'"),
        ('m{a="b} 1', "unterminated label value"),
        ("{} 1 {{schema:0", "unterminated histogram"),
        ('m{1a="x"} 1', "expected a label name"),
    ],
)
def test_errors_say_what_and_where(text: str, message: str):
    with pytest.raises(NotationError, match=message):
        parse_series_description(text)


def test_load_series_places_values_on_the_step_grid():
    store = SeriesStore(float("inf"))
    _, values = parse_series_description("m 1 _ 3")
    assert load_series(store, {"__name__": "m"}, values, start_ms=10_000, step_ms=5_000) is False
    (series,) = list(store)
    assert list(series.timestamps) == [10.0, 20.0] and list(series.values) == [1.0, 3.0]
