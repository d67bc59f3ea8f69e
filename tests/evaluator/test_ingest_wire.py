"""The evaluator's one-pass ingest of metric batches (msgspec WireSamples) against the item-by-item path it
stands in for: the same store, the same drop counts, the same invalid items with the same reasons."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from services.evaluator import series as series_module
from services.evaluator.ingest import IngestMetrics, Ingestor
from services.evaluator.series import SeriesLimits, SeriesStore
from shared.codec import PoisonEntry, decode_items, encode_batch
from shared.consumers import Entry
from tests.evaluator.test_ingest_rules import _items as odd_items

NOW = 1_800_000_000.0
REASONS = (
    "invalid",
    "too_old",
    "too_far_in_future",
    "series_limit",
    "metric_series_limit",
    "series_samples_limit",
)


def _ingestor(limits: SeriesLimits | None = None) -> Ingestor:
    return Ingestor(
        SeriesStore(retention=300, limits=limits), lambda: NOW, IngestMetrics(CollectorRegistry())
    )


def _entry(entry_id: str, body: bytes) -> Entry:
    return Entry(entry_id.encode(), asyncio.run(encode_batch("metrics", body, "t")))


def _contents(ingestor: Ingestor) -> dict[tuple[tuple[str, str], ...], tuple[list[float], list[float]]]:
    return {tuple(sorted(s.labels.items())): (list(s.timestamps), list(s.values)) for s in ingestor.store}


def _counts(ingestor: Ingestor) -> dict[str, float]:
    metrics = ingestor.metrics
    counts = {r: metrics.dropped.labels("s", r)._value.get() for r in REASONS}
    counts["applied"] = metrics.samples.labels("s")._value.get()
    return counts


def _both_ways(*bodies: bytes, limits: SeriesLimits | None = None) -> tuple[Ingestor, Any]:
    """Apply `bodies` in turn through the entry path (one-pass decode first) and item by item (orjson, then
    fast_sample/MetricSample per item), each on its own ingestor carried across the bodies; assert both
    leave the same trace after each. Returns the first ingestor and the last body's invalid items, or the
    PoisonEntry both raised for it."""
    wire, items = _ingestor(limits), _ingestor(limits)
    outcome: Any = None
    for n, body in enumerate(bodies, start=1):
        try:
            (applied,) = wire.apply_entry("s", "metrics", _entry(f"{n}-0", body)) or ()
            outcome = applied.bad
        except PoisonEntry as exc:
            outcome = exc
            with pytest.raises(PoisonEntry):
                decode_items(body)
        else:
            assert outcome == items.apply_items("s", "metrics", decode_items(body))
        assert _contents(wire) == _contents(items)
        assert _counts(wire) == _counts(items)
    return wire, outcome


_valid = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["up", "http_requests_total", "errors_total"]),
        "value": st.one_of(st.integers(-5, 5), st.floats(-1e6, 1e6, allow_nan=False)),
    },
    optional={
        "labels": st.dictionaries(
            st.sampled_from(["job", "instance", "path"]), st.text(max_size=3), max_size=3
        ),
        "kind": st.sampled_from(["sample", "increment"]),
        "timestamp": st.one_of(
            st.floats(NOW - 400, NOW + 700, allow_nan=False), st.integers(int(NOW) - 400, int(NOW) + 700)
        ),
    },
)


def _body(items: list[Any]) -> bytes:
    try:
        return orjson.dumps(items)
    except orjson.JSONEncodeError:  # ints beyond 64 bits: the stdlib writes them (and NaN, as bare NaN)
        return json.dumps(items).encode()


_batches = st.one_of(
    st.lists(_valid, min_size=1, max_size=12),  # all valid: the one-pass path applies them
    st.lists(st.one_of(_valid, _valid, _valid, odd_items), max_size=12),
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.lists(_batches, min_size=1, max_size=4))
def test_the_one_pass_path_leaves_the_same_trace_as_item_by_item(batches: list[list[Any]]):
    _both_ways(*(_body(items) for items in batches))


# Raw label objects the one-pass path keeps as bytes: valid, valid in other spellings, and ones an
# item-by-item parse refuses (bad UTF-8, a number out of range, a lone surrogate, deep nesting).
_RAW_LABELS = [
    b'{"job":"a"}',
    b'{ "job" : "a" }',
    b'{"job":"\\u0061"}',
    b"{}",
    b'{"job":1}',
    b'{"job":"\xff"}',
    b'{"job":1e999}',
    b'{"job":"\\ud800"}',
    b"[" * 1200 + b"]" * 1200,
    b'{"bad name":"a"}',
]


@st.composite
def _raw_bodies(draw: st.DrawFn) -> bytes:
    """A batch written byte by byte: samples with raw label objects from _RAW_LABELS, sometimes twice."""
    parts = []
    for i in range(draw(st.integers(1, 5))):
        labels = [draw(st.sampled_from(_RAW_LABELS)) for _ in range(draw(st.integers(0, 2)))]
        fields = [b'"name":"errors_total"', b'"value":%d' % i, b'"kind":"increment"', b'"timestamp":%d' % NOW]
        fields += [b'"labels":' + raw for raw in labels]
        parts.append(b"{" + b",".join(draw(st.permutations(fields))) + b"}")
    return b"[" + b",".join(parts) + b"]"


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.lists(_raw_bodies(), min_size=1, max_size=3))
def test_raw_label_bytes_are_judged_as_an_item_by_item_parse_would(bodies: list[bytes]):
    _both_ways(*bodies)


@pytest.mark.parametrize(
    "second_labels",
    [b'{"a":"\xff"}', b'{"a":1e999}', b"[" * 1200 + b"]" * 1200, b'{"a":"x"},"labels":{"a":"\xff"}'],
    ids=["bad-utf8", "number-out-of-range", "deep-nesting", "second-labels-key"],
)
def test_a_bad_raw_label_object_applies_nothing_of_its_batch(second_labels: bytes):
    body = b'[{"name":"c","value":1,"kind":"increment","timestamp":%d},' % NOW
    body += b'{"name":"c","labels":%s,"value":1,"timestamp":%d}]' % (second_labels, NOW)
    ingestor, outcome = _both_ways(body, body)  # and delivered again: still nothing applied
    assert isinstance(outcome, PoisonEntry)
    assert _contents(ingestor) == {}


@settings(max_examples=100)
@given(st.lists(_valid, min_size=1, max_size=20), st.integers(0, 3))
def test_limits_are_applied_the_same_way(items: list[Any], cap: int):
    limits = SeriesLimits(max_series=2, max_series_per_metric=1, max_samples_per_series=cap)
    _both_ways(orjson.dumps(items), orjson.dumps(items[::-1]), limits=limits)


def test_an_invalid_name_mid_batch_applies_the_rest_once_and_names_its_index():
    items = [
        {"name": "errors_total", "value": 1, "kind": "increment", "timestamp": NOW},
        {"name": "bad name", "value": 1, "timestamp": NOW},
        {"name": "errors_total", "value": 2, "kind": "increment", "timestamp": NOW},
    ]
    ingestor, bad = _both_ways(orjson.dumps(items))
    assert [i for i, _ in bad] == [1] and "invalid metric name" in bad[0][1]
    ((_, (_, values)),) = _contents(ingestor).items()
    assert values == [3.0]


def test_spellings_of_one_label_set_are_one_series():
    body = (
        b'[{"name":"up","labels":{"job":"a","instance":"x"},"value":1,"timestamp":%(t)d},'
        b'{"name":"up","labels": {"instance": "x", "job": "a"},"value":2,"timestamp":%(t2)d},'
        b'{"name":"up","labels":{"job":"\\u0061","instance":"x"},"value":3,"timestamp":%(t3)d}]'
    ) % {b"t": int(NOW) - 2, b"t2": int(NOW) - 1, b"t3": int(NOW)}
    ingestor, bad = _both_ways(body)
    assert bad == []
    assert _contents(ingestor) == {
        (("__name__", "up"), ("instance", "x"), ("job", "a")): ([NOW - 2, NOW - 1, NOW], [1.0, 2.0, 3.0])
    }


def test_the_arrival_cache_starts_over_when_spellings_pile_up(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(series_module, "ARRIVAL_CACHE_MIN", 4)
    ingestor = _ingestor()
    for spaces in range(10):  # ten spellings of one label set, as a careless producer might send
        labels = b'{"job":' + b" " * spaces + b'"a"}'
        body = b'[{"name":"up","labels":%s,"value":%d,"timestamp":%d}]' % (
            labels,
            spaces,
            int(NOW) - 10 + spaces,
        )
        (applied,) = ingestor.apply_entry("s", "metrics", _entry(f"{spaces + 1}-0", body)) or ()
        assert applied.bad == []
        assert len(ingestor.store.by_arrival) <= 4
    ((_, (_, values)),) = _contents(ingestor).items()
    assert values == [float(v) for v in range(10)]


def test_long_label_spellings_are_not_remembered_by_their_bytes():
    ingestor = _ingestor()
    for n in range(3):
        labels = b'{"job":"a"' + b" " * (1000 + n) + b"}"
        body = b'[{"name":"up","labels":%s,"value":%d,"timestamp":%d}]' % (labels, n, int(NOW) - 10 + n)
        _both_ways(body)
        (applied,) = ingestor.apply_entry("s", "metrics", _entry(f"{n + 1}-0", body)) or ()
        assert applied.bad == []
    assert all(len(repr(key)) < 200 for key in ingestor.store.by_arrival)
    ((_, (_, values)),) = _contents(ingestor).items()
    assert values == [0.0, 1.0, 2.0]
