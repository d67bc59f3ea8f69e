"""OTLP data points keep their attributes serialized (otlp_wire), and each attribute set is mapped to labels
once per receiver (otlp_metrics.LabelSetCache): both must change nothing but the cost.

- The raw-attributes schema reads every request the real one reads, and writes it back byte for byte.
- Mapping a run of requests through one shared cache gives, request by request, what mapping each with an
  empty cache gives: the same items, rejections and reasons, across resources, scopes, point kinds and
  limits (a hit must never carry another series' labels).
- The cache's estimated memory stays bounded, whatever the sizes of attributes, labels and series
  labels; a token is never handed out twice, even to threads mapping at once.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
    Summary,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from services.collector.ingest import IngestLimits
from services.collector.otlp_metrics import (
    CONTEXT_LIMIT,
    ENTRY_LIMIT_BYTES,
    LabelSetCache,
    Mapping,
    OtlpOptions,
    map_metrics,
)
from services.collector.otlp_wire import RawAttributesRequest, decode_attributes, raw_attributes_request

NOW = 1_763_800_000.0
NOW_NS = int(NOW * 1e9)
CUMULATIVE, DELTA = 2, 1
WIDE = IngestLimits(
    max_labels=30, max_label_name_length=1024, max_label_value_length=2048, max_name_length=200
)
NARROW = IngestLimits(max_labels=4, max_label_name_length=8, max_label_value_length=6, max_name_length=200)

# A small pool of keys and values, so that attribute sets repeat across points, scopes and requests; with
# keys that clash with labels we set (job, le, quantile), keys that sanitise alike (a.b, a-b), values of
# every scalar type, and values too long for NARROW.
_KEYS = ("route", "method", "job", "le", "quantile", "a.b", "a-b", "2xx", "instance", "otel_scope_name")
_VALUES = st.one_of(
    st.sampled_from(("GET", "/items", "", "x" * 7, "ü")).map(lambda s: AnyValue(string_value=s)),
    st.integers(-3, 3).map(lambda i: AnyValue(int_value=i)),
    st.sampled_from((0.5, 1.0, float("inf"))).map(lambda f: AnyValue(double_value=f)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
)
# Drawn mostly from a few fixed sets, so that one set turns up in gauges, histograms and summaries alike.
_COMMON_SETS = tuple(
    [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in pairs]
    for pairs in ((), (("le", "1"),), (("quantile", "q"), ("route", "/")), (("route", "/"), ("job", "j")))
)
_ATTRIBUTES = st.one_of(
    st.sampled_from(_COMMON_SETS),
    st.lists(st.builds(KeyValue, key=st.sampled_from(_KEYS), value=_VALUES), max_size=4),
)


@st.composite
def _number_points(draw: st.DrawFn) -> list[NumberDataPoint]:
    return [
        NumberDataPoint(
            as_double=draw(st.sampled_from((1.0, -2.0, 3.5))),
            time_unix_nano=NOW_NS,
            attributes=draw(_ATTRIBUTES),
        )
        for _ in range(draw(st.integers(1, 3)))
    ]


@st.composite
def _metric(draw: st.DrawFn) -> Metric:
    name = draw(st.sampled_from(("requests", "latency.seconds", "queue-depth")))
    kind = draw(st.sampled_from(("gauge", "sum", "delta", "histogram", "summary")))
    if kind == "gauge":
        return Metric(name=name, gauge=Gauge(data_points=draw(_number_points())))
    if kind in ("sum", "delta"):
        temporality = CUMULATIVE if kind == "sum" else DELTA
        sum_ = Sum(aggregation_temporality=temporality, is_monotonic=True, data_points=draw(_number_points()))
        return Metric(name=name, sum=sum_)
    if kind == "histogram":
        point = HistogramDataPoint(
            time_unix_nano=NOW_NS,
            count=3,
            sum=1.5,
            explicit_bounds=[0.1, 1.0],
            bucket_counts=[1, 1, 1],
            attributes=draw(_ATTRIBUTES),
        )
        return Metric(name=name, histogram=Histogram(aggregation_temporality=CUMULATIVE, data_points=[point]))
    point = SummaryDataPoint(
        time_unix_nano=NOW_NS,
        count=2,
        sum=1.0,
        quantile_values=[SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.4)],
        attributes=draw(_ATTRIBUTES),
    )
    return Metric(name=name, summary=Summary(data_points=[point]))


@st.composite
def _requests(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    resources = []
    for _ in range(draw(st.integers(1, 2))):
        service = draw(st.sampled_from(("api", "worker", "")))
        attributes = [KeyValue(key="service.name", value=AnyValue(string_value=service))] if service else []
        attributes.append(KeyValue(key="region", value=AnyValue(string_value=draw(st.sampled_from("ab")))))
        scopes = [
            ScopeMetrics(
                scope=InstrumentationScope(name=draw(st.sampled_from(("http", "db")))),
                metrics=draw(st.lists(_metric(), min_size=1, max_size=3)),
            )
            for _ in range(draw(st.integers(1, 2)))
        ]
        resources.append(ResourceMetrics(resource=Resource(attributes=attributes), scope_metrics=scopes))
    return ExportMetricsServiceRequest(resource_metrics=resources)


def _outcome(mapping: Mapping) -> tuple[Any, ...]:
    points = [(p.where, p.resource, p.counted, p.items) for p in mapping.points]
    return points, mapping.rejected, mapping.reasons, mapping.skipped, mapping.warnings


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(_requests(), st.sampled_from((WIDE, NARROW)), st.booleans(), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_a_shared_cache_maps_every_request_as_an_empty_one_does(
    runs: list[tuple[ExportMetricsServiceRequest, IngestLimits, bool, bool]],
):
    shared = LabelSetCache()
    for request, limits, scope_labels, promote in runs:
        promoted = frozenset({"region"}) if promote else frozenset()
        options = OtlpOptions(scope_labels=scope_labels, promote_resource_attributes=promoted)
        expected = map_metrics(request, NOW, limits, options, LabelSetCache())
        assert _outcome(map_metrics(request, NOW, limits, options, shared)) == _outcome(expected)


def _points(request: Any) -> list[Any]:
    """Every data point of a metrics request, of either schema."""
    return [
        point
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in getattr(metric, metric.WhichOneof("data")).data_points
    ]


@settings(max_examples=200, deadline=None, database=None)
@given(_requests())
def test_the_raw_attributes_schema_reads_and_writes_every_request_as_the_real_one(
    request: ExportMetricsServiceRequest,
):
    body = request.SerializeToString()
    raw = RawAttributesRequest.FromString(body)
    assert raw.SerializeToString() == body
    assert [decode_attributes(p.attributes) for p in _points(raw)] == [
        list(p.attributes) for p in _points(request)
    ]
    assert raw_attributes_request(request).SerializeToString() == body
    assert raw_attributes_request(raw) is raw


@pytest.mark.parametrize(
    "attribute",
    [
        b"\x0a\x02\xff\xfe",  # key: not UTF-8, which proto3 refuses for a string
        b"\x0a\x05ab",  # key: 5 bytes announced, 2 there
        b"\x12\x03\x0a\x01",  # value: an AnyValue cut short
    ],
)
def test_a_malformed_attribute_is_a_decode_error_as_in_the_real_schema(attribute: bytes):
    raw = RawAttributesRequest()
    metric = raw.resource_metrics.add().scope_metrics.add().metrics.add(name="up")
    metric.gauge.data_points.add(as_double=1, time_unix_nano=NOW_NS).attributes.append(attribute)
    body = raw.SerializeToString()
    with pytest.raises(DecodeError):
        ExportMetricsServiceRequest.FromString(body)
    with pytest.raises(DecodeError):
        map_metrics(RawAttributesRequest.FromString(body), NOW, WIDE, OtlpOptions(), LabelSetCache())


def _gauge_request(service: str, *attribute_sets: dict[str, str]) -> ExportMetricsServiceRequest:
    points = [
        NumberDataPoint(
            as_double=1,
            time_unix_nano=NOW_NS,
            attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes.items()],
        )
        for attributes in attribute_sets
    ]
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    metric = Metric(name="up", gauge=Gauge(data_points=points))
    scope = ScopeMetrics(scope=InstrumentationScope(name="s"), metrics=[metric])
    return ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope])]
    )


def _labels(mapping: Mapping) -> list[dict[str, str]]:
    return [item["labels"] for point in mapping.points for item in point.items if item["name"] == "up"]


def test_the_cache_starts_over_when_full():
    options = OtlpOptions(target_info=False)
    sets = [{"route": f"/{i}"} for i in range(3)]  # alike: each costs the same
    probe = LabelSetCache()
    map_metrics(_gauge_request("api", sets[0]), NOW, WIDE, options, probe)
    cache = LabelSetCache(max_bytes=2 * probe._bytes)
    first = _labels(map_metrics(_gauge_request("api", *sets), NOW, WIDE, options, cache))
    assert len(cache._entries) == 1  # the third set found it full
    assert 0 < cache._bytes <= cache.max_bytes
    assert _labels(map_metrics(_gauge_request("api", *sets), NOW, WIDE, options, cache)) == first


def test_a_token_is_never_handed_out_twice():
    # A series keeps its tokens while the cache starts over. Here the histogram's context (its points add
    # `le`) finds the cache full: were its token the gauges' old one, the second gauge would get the
    # histogram's labels for the same attributes (exported_le instead of le).
    attributes = [KeyValue(key="le", value=AnyValue(string_value="x"))]
    point = NumberDataPoint(as_double=1, time_unix_nano=NOW_NS, attributes=attributes)
    histogram = HistogramDataPoint(time_unix_nano=NOW_NS, count=1, attributes=attributes)
    metrics = [
        Metric(name="first", gauge=Gauge(data_points=[point])),
        Metric(name="h", histogram=Histogram(aggregation_temporality=CUMULATIVE, data_points=[histogram])),
        Metric(name="second", gauge=Gauge(data_points=[point])),
    ]
    scope = ScopeMetrics(scope=InstrumentationScope(name="s"), metrics=metrics)
    request = ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(scope_metrics=[scope])])
    options = OtlpOptions(target_info=False)
    probe = LabelSetCache()
    map_metrics(_scope_request("s", attributes), NOW, WIDE, options, probe)  # one context, one entry
    cache = LabelSetCache(max_bytes=probe._bytes)
    outcome = _outcome(map_metrics(request, NOW, WIDE, options, cache))
    assert outcome == _outcome(map_metrics(request, NOW, WIDE, options, LabelSetCache()))
    [second] = [
        item
        for p in map_metrics(request, NOW, WIDE, options, cache).points
        for item in p.items
        if item["name"] == "second"
    ]
    assert second["labels"]["le"] == "x"


def _scope_request(scope: str, attributes: list[KeyValue]) -> ExportMetricsServiceRequest:
    point = NumberDataPoint(as_double=1, time_unix_nano=NOW_NS, attributes=attributes)
    metric = Metric(name="up", gauge=Gauge(data_points=[point]))
    scopes = [ScopeMetrics(scope=InstrumentationScope(name=scope), metrics=[metric])]
    return ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(scope_metrics=scopes)])


def _string(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


@pytest.mark.parametrize(
    ("why", "scope", "attributes"),
    [
        ("long value", "s", [_string("route", "x" * ENTRY_LIMIT_BYTES)]),
        # Empty attributes are 2 bytes on the wire and map to no label: the key's objects still cost.
        ("many empty attributes", "s", [KeyValue()] * 500),
        # 3 KB on the wire, an 18,000-character label (a control character is 1 byte, `\u0001` in an array's
        # JSON): what the labels' text costs counts too.
        (
            "expanding escapes",
            "s",
            [
                KeyValue(
                    key="a",
                    value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="\x01" * 3000)])),
                )
            ],
        ),
        # Counted at their worst per character: a str of emoji holds 4 bytes each, and its UTF-8 form too.
        ("non-ASCII values", "s", [_string(f"e{i}", "\U0001f600" * 500) for i in range(4)]),
        # Series labels (here the scope name) are held by every entry and by the series' token.
        ("long scope name", "s" * (CONTEXT_LIMIT + 1), [_string("route", "/")]),
    ],
)
def test_what_would_cost_much_memory_is_mapped_every_time(why: str, scope: str, attributes: list[KeyValue]):
    cache = LabelSetCache()
    request = _scope_request(scope, attributes)
    expected = _outcome(map_metrics(request, NOW, WIDE, OtlpOptions(), LabelSetCache()))
    for _ in range(2):
        assert _outcome(map_metrics(request, NOW, WIDE, OtlpOptions(), cache)) == expected, why
    assert cache._entries == {}, why
    assert cache._bytes < 1000  # at most the series context


def test_small_attribute_sets_are_remembered_at_their_estimated_cost():
    cache = LabelSetCache()
    map_metrics(_scope_request("s", [_string("route", "/items")]), NOW, WIDE, OtlpOptions(), cache)
    [(_token, attributes)] = cache._entries
    assert decode_attributes(attributes) == [_string("route", "/items")]
    # Measured with tracemalloc: such an entry takes about 0.8x of its estimate; the estimate errs high.
    assert 500 < cache._bytes < ENTRY_LIMIT_BYTES


def test_requests_mapped_in_threads_at_once_each_get_their_own_labels():
    # The receiver maps requests in worker threads, all on one cache. With the GIL switching threads every
    # microsecond, a token handed to two contexts at once shows up as a point with another service's job.
    services = [f"svc-{i}" for i in range(1500)]
    requests = {service: _gauge_request(service, {"route": "/"}) for service in services}
    cache = LabelSetCache()
    options = OtlpOptions(target_info=False)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            jobs = list(
                pool.map(
                    lambda s: _labels(map_metrics(requests[s], NOW, WIDE, options, cache))[0]["job"],
                    services * 3,
                )
            )
    finally:
        sys.setswitchinterval(interval)
    assert jobs == services * 3
    assert len(set(cache._tokens.values())) == len(cache._tokens)
