"""Ingest's per-item rules with plain calls: log metrics, series limits, and the validation fast path."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services.evaluator.ingest import IngestMetrics, Ingestor
from services.evaluator.log_metrics import LogMetrics
from services.evaluator.series import SeriesLimits, SeriesStore
from shared.config import LogMetricConfig
from shared.events import MetricSample, fast_sample

NOW = 1_800_000_000.0


def _ingestor(limits: SeriesLimits | None = None, log_metrics: list[dict] | None = None) -> Ingestor:
    configs = [LogMetricConfig.model_validate(m) for m in log_metrics or []]
    return Ingestor(
        SeriesStore(retention=300, limits=limits),
        lambda: NOW,
        IngestMetrics(CollectorRegistry()),
        log_metrics=LogMetrics(configs),
    )


def _values(ingestor: Ingestor, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for series in ingestor.store:
        if series.labels["__name__"] == name:
            labels = tuple(sorted((k, v) for k, v in series.labels.items() if k != "__name__"))
            out[labels] = series.latest(NOW, 300)[1]
    return out


def _dropped(ingestor: Ingestor, stream: str, reason: str) -> float:
    return ingestor.metrics.dropped.labels(stream, reason)._value.get()


def test_log_metrics_count_matching_events_with_chosen_labels():
    ingestor = _ingestor(
        log_metrics=[
            {
                "name": "budget_exceeded_total",
                "match": {"level": "error"},
                "message_regex": r"Budget exceeded for (?P<tenant>\w+)",
                "labels": ["service", "tenant", "region"],
            },
            {"name": "checkout_logs_total", "match": {"service": "checkout", "region": ""}},
        ]
    )
    events = [
        {"service": "checkout", "level": "error", "message": "Budget exceeded for acme", "timestamp": NOW},
        {"service": "checkout", "level": "ERROR", "message": "x: Budget exceeded for acme", "timestamp": NOW},
        {
            "service": "api",
            "level": "error",
            "message": "Budget exceeded for zeta",
            "labels": {"region": "eu"},
        },
        {"service": "api", "level": "warn", "message": "Budget exceeded for zeta"},  # level does not match
        {
            "service": "api",
            "level": "error",
            "message": "budget exceeded for zeta",
        },  # regex is case-sensitive
    ]
    assert ingestor.apply_items("logs", "logs", events) == []
    assert _values(ingestor, "budget_exceeded_total") == {
        (("service", "checkout"), ("tenant", "acme")): 2.0,
        (("region", "eu"), ("service", "api"), ("tenant", "zeta")): 1.0,
    }
    # A missing label equals "": only the checkout events without a region count.
    assert _values(ingestor, "checkout_logs_total") == {(): 2.0}
    # Every event still counts into log_events_total.
    assert sum(_values(ingestor, "log_events_total").values()) == 5


def test_new_series_beyond_the_limits_are_dropped_and_counted():
    ingestor = _ingestor(SeriesLimits(max_series=3, max_series_per_metric=2))
    items = [{"name": "a", "labels": {"i": str(i)}, "value": 1, "timestamp": NOW} for i in range(3)]
    items += [{"name": "b", "labels": {"i": str(i)}, "value": 1, "timestamp": NOW} for i in range(3)]
    assert ingestor.apply_items("metrics", "metrics", items) == []
    assert len(ingestor.store) == 3
    assert _dropped(ingestor, "metrics", "metric_series_limit") == 1  # a{i="2"}
    assert _dropped(ingestor, "metrics", "series_limit") == 2  # b{i="1"}, b{i="2"}
    # Known series still take new samples at the limit.
    ingestor.apply_items("metrics", "metrics", [{"name": "a", "labels": {"i": "0"}, "value": 7}])
    assert _values(ingestor, "a")[(("i", "0"),)] == 7


def test_samples_beyond_the_per_series_cap_are_dropped_until_the_window_moves():
    ingestor = _ingestor(SeriesLimits(max_samples_per_series=3))
    items = [{"name": "a", "value": i, "timestamp": NOW - 10 + i} for i in range(5)]
    ingestor.apply_items("metrics", "metrics", items)
    (series,) = list(ingestor.store)
    assert list(series.values) == [0, 1, 2]
    assert _dropped(ingestor, "metrics", "series_samples_limit") == 2
    ingestor.store.trim(NOW - 10 + 301.5)  # the first two samples leave the window
    ingestor.apply_items("metrics", "metrics", [{"name": "a", "value": 9, "timestamp": NOW}])
    assert list(series.values)[-1] == 9


def test_invalid_items_are_reported_and_the_rest_applied():
    ingestor = _ingestor()
    items = [
        {"name": "ok", "value": 1, "timestamp": NOW},
        {"name": "bad name", "value": 1},
        {"name": "ok", "value": float("nan")},
        {"name": "ok", "value": 2, "labels": {"__x": "1"}},
        {"name": "ok", "value": 3, "timestamp": "2027-01-15T08:00:00Z", "labels": {"k": "v"}},
    ]
    bad = ingestor.apply_items("metrics", "metrics", items)
    assert [i for i, _ in bad] == [1, 2, 3]
    assert "invalid metric name" in bad[0][1] and "reserved" in bad[2][1]
    assert _dropped(ingestor, "metrics", "invalid") == 3


_label_names = st.sampled_from(["job", "instance", "__x", "0bad", "le"])
_values_st = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
_items = st.one_of(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["up", "bad name", "http_requests_total", ""]), "value": _values_st},
        optional={
            "labels": st.dictionaries(_label_names, st.one_of(st.text(max_size=5), st.integers())),
            "kind": st.sampled_from(["sample", "increment", "gauge", ["x"]]),
            "timestamp": st.one_of(_values_st, st.just("2027-01-15T08:00:00Z")),
            "extra": st.integers(),
        },
    ),
    st.lists(st.integers(), max_size=2),
)


@given(_items)
def test_the_fast_path_agrees_with_the_model(item: Any):
    # Warm the name caches as real traffic does, then compare verdicts and parsed values.
    for name in ("up", "http_requests_total"):
        MetricSample.model_validate(
            {"name": name, "value": 1, "labels": {"job": "a", "instance": "b", "le": "1"}}
        )
    fast = fast_sample(item)
    try:
        model = MetricSample.model_validate(item)
    except ValidationError:
        assert fast is None
        return
    if fast is not None:
        name, labels, value, increment, ts = fast
        assert (name, labels, increment) == (model.name, model.labels, model.kind == "increment")
        assert value == model.value and not math.isnan(value)
        assert ts == model.timestamp


def test_the_fast_path_takes_the_common_shape():
    MetricSample.model_validate({"name": "up", "value": 1, "labels": {"job": "a"}})
    assert fast_sample({"name": "up", "value": 1, "labels": {"job": "a"}, "timestamp": NOW}) == (
        "up",
        {"job": "a"},
        1.0,
        False,
        NOW,
    )


@pytest.mark.parametrize("level", ["error", "ERROR"])
def test_levels_are_matched_after_lowercasing(level: str):
    ingestor = _ingestor(log_metrics=[{"name": "errors_total", "match": {"level": "error"}}])
    ingestor.apply_items("logs", "logs", [{"service": "s", "level": level}])
    assert _values(ingestor, "errors_total") == {(): 1.0}
