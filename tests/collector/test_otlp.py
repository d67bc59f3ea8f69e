"""The collector's OTLP/HTTP receiver against a real Redis, fed by the real OpenTelemetry Python SDK.

The SDK's OTLP/HTTP exporters speak protobuf only, so the OTLP/JSON tests build their bodies with
`google.protobuf.json_format` (plus OTLP/JSON's own deviations: hex trace ids, integer enums) and post them
with aiohttp. The SDK exports from its own threads with a blocking HTTP client, so flushes and shutdowns run
in a worker thread (`asyncio.to_thread`) while this loop serves the collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import math
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
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
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import Counter as SdkCounter
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality as SdkTemporality
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from pydantic import SecretStr
from redis.asyncio import Redis

from services.collector import otlp as otlp_module
from services.collector.app import build
from services.collector.body_budget import stored_bytes
from services.collector.ingest import DEFAULT_LIMITS, LOGS, METRICS, Accepted, limits_from
from services.collector.ingest import IngestLimits as Limits
from services.collector.otlp import _Outcome, _partial_message, add_otlp_routes
from services.collector.otlp_logs import level_of, map_logs
from services.collector.otlp_metrics import (
    COUNTER,
    GAUGE,
    OtlpOptions,
    attribute_text,
    format_float,
    histogram_items,
    map_metrics,
    metric_name,
    summary_items,
)
from services.collector.otlp_wire import RawAttributesRequest
from services.collector.publish import Publisher
from services.local_redis import free_port
from shared.clock import Clock, FakeClock
from shared.codec import decode_entry, decode_envelope
from shared.config import CollectorConfig, Config
from shared.service import Service
from shared.streams import Keys
from tests.busy_redis import BUSY_FOR_600_MS, redis_is_busy
from tests.polling import eventually

NOW = 1_763_800_000.0
NOW_NS = int(NOW * 1e9)
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
LIMITS = limits_from(CollectorConfig())
SDK_RESOURCE = {
    "service.name": "checkout",
    "service.namespace": "shop",
    "service.instance.id": "pod-1",
    "deployment.environment": "test",
}


# Running a collector ---------------------------------------------------------------------------------------
@dataclass
class Collector:
    service: Service
    client: TestClient

    @property
    def url(self) -> str:
        """Base URL for the SDK's exporters (they run in other threads, so they need a real socket)."""
        return str(self.client.make_url("")).rstrip("/")


@contextlib.asynccontextmanager
async def running(
    config: Config, clock: Clock | None = None, publisher: Publisher | None = None
) -> AsyncIterator[Collector]:
    """The collector app with the OTLP routes, on a free port. With `publisher`, a bare Service carries only
    the OTLP routes (app.build makes its own Publisher)."""
    if publisher is None:
        service = build(config, clock)
        # Once app.build registers the OTLP routes itself, its wiring is what gets tested.
        if not any(r.resource and r.resource.canonical == "/v1/metrics" for r in service.web.router.routes()):
            add_otlp_routes(
                service,
                Publisher(
                    service.redis,
                    config.streams.maxlen,
                    config.collector.retry_after,
                    config.collector.max_in_flight,
                ),
            )
    else:
        service = Service("collector", config, clock or FakeClock(NOW))
        add_otlp_routes(service, publisher)
    await service.start()
    client = TestClient(TestServer(service.web))
    await client.start_server()
    try:
        yield Collector(service, client)
    finally:
        await client.close()
        await service.stop()


@pytest.fixture
async def collector(make_config) -> AsyncIterator[Collector]:
    """Real time: the SDK stamps points with the wall clock, which must fall in the accepted window."""
    async with running(make_config()) as c:
        yield c


@pytest.fixture
async def faked(make_config) -> AsyncIterator[Collector]:
    """A fake clock at NOW, for hand-built requests."""
    async with running(make_config(), FakeClock(NOW)) as c:
        yield c


async def stream_items(redis: Redis, stream: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for _, fields in await redis.xrange(stream):
        items.extend(decode_entry(fields).items)
    return items


def named(items: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [item for item in items if item["name"] == name]


# Building OTLP requests -----------------------------------------------------------------------------------
def kv(key: str, value: str | int | float | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def attrs(**values: str | int | float | bool) -> list[KeyValue]:
    return [kv(k.replace("__", "."), v) for k, v in values.items()]


def metrics_request(*metrics: Metric, resource: dict[str, str] | None = None) -> ExportMetricsServiceRequest:
    res = resource if resource is not None else {"service.name": "api"}
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=ProtoResource(attributes=[kv(k, v) for k, v in res.items()]),
                scope_metrics=[ScopeMetrics(scope=InstrumentationScope(name="test"), metrics=list(metrics))],
            )
        ]
    )


def gauge(name: str, *points: NumberDataPoint) -> Metric:
    return Metric(name=name, gauge=Gauge(data_points=list(points)))


def counter(
    name: str, *points: NumberDataPoint, temporality: int = CUMULATIVE, monotonic: bool = True
) -> Metric:
    return Metric(
        name=name,
        sum=Sum(aggregation_temporality=temporality, is_monotonic=monotonic, data_points=list(points)),
    )


def _histogram(*points: HistogramDataPoint, name: str = "latency") -> Metric:
    return Metric(
        name=name, histogram=Histogram(aggregation_temporality=CUMULATIVE, data_points=list(points))
    )


def _sdk_point(**labels: str) -> HistogramDataPoint:
    """A point with the SDKs' default 15 bounds (16 buckets, 18 items)."""
    return HistogramDataPoint(
        time_unix_nano=NOW_NS,
        count=16,
        sum=3.0,
        bucket_counts=[1] * 16,
        explicit_bounds=[0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000],
        attributes=attrs(**labels),
    )


def point(value: float, ts: float = NOW, **labels: str | int | float | bool) -> NumberDataPoint:
    return NumberDataPoint(as_double=value, time_unix_nano=int(ts * 1e9), attributes=attrs(**labels))


def logs_request(*records: LogRecord, service: str = "agent") -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=ProtoResource(attributes=[kv("service.name", service)]),
                scope_logs=[
                    ScopeLogs(scope=InstrumentationScope(name="app.logger"), log_records=list(records))
                ],
            )
        ]
    )


def record(message: str = "hello", severity: int = 9, ts: float = NOW, **labels: str | int) -> LogRecord:
    return LogRecord(
        time_unix_nano=int(ts * 1e9),
        severity_number=severity,  # type: ignore[arg-type]
        body=AnyValue(string_value=message),
        attributes=attrs(**labels),
    )


def status_of(body: bytes) -> tuple[status_pb2.Status, list[tuple[str, str]]]:
    """A protobuf google.rpc.Status and its BadRequest field violations."""
    status = status_pb2.Status.FromString(body)
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        violations.extend((v.field, v.description) for v in bad.field_violations)
    return status, violations


async def post_proto(c: Collector, path: str, message: Any, **headers: str) -> ClientResponse:
    return await c.client.post(path, data=message.SerializeToString(), headers={**PROTOBUF, **headers})


# The real SDK, protobuf ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def meter_provider(url: str, **exporter: Any) -> AsyncIterator[MeterProvider]:
    # The reader exports only when flushed (an hour's interval), so each test decides when points travel.
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{url}/v1/metrics", **exporter), export_interval_millis=3_600_000
    )
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create(SDK_RESOURCE), shutdown_on_exit=False
    )
    try:
        yield provider
    finally:
        # Shutting down exports once more, over HTTP to this loop's server: from a thread, or it would hang.
        await asyncio.to_thread(provider.shutdown)


async def flush(provider: MeterProvider | LoggerProvider) -> None:
    assert await asyncio.to_thread(provider.force_flush)


async def test_sdk_counter_arrives_with_job_instance_and_scope(
    collector: Collector, redis: Redis, keys: Keys
):
    async with meter_provider(collector.url) as provider:
        orders = provider.get_meter("orders", "1.2.3").create_counter("orders.placed")
        orders.add(3, {"payment.method": "card", "retry": False})
        await flush(provider)
        assert await redis.xlen(keys.metrics) == 1  # one request, one batch
        items = await stream_items(redis, keys.metrics)

    [sample] = named(items, "orders_placed_total")
    assert sample["labels"] == {
        "job": "shop/checkout",
        "instance": "pod-1",
        "otel_scope_name": "orders",
        "otel_scope_version": "1.2.3",
        "payment_method": "card",
        "retry": "false",
    }
    assert (sample["value"], sample["kind"]) == (3.0, "sample")
    # The other resource attributes travel once, on target_info, not on every series.
    [info] = named(items, "target_info")
    assert info["labels"]["job"] == "shop/checkout"
    assert info["labels"]["instance"] == "pod-1"
    assert info["labels"]["deployment_environment"] == "test"
    assert info["labels"]["telemetry_sdk_language"] == "python"
    assert "service_name" not in info["labels"]


async def test_sdk_log_record_arrives_as_a_log_event(collector: Collector, redis: Redis, keys: Keys):
    provider = LoggerProvider(resource=Resource.create(SDK_RESOURCE), shutdown_on_exit=False)
    processor = BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{collector.url}/v1/logs"))
    provider.add_log_record_processor(processor)
    try:
        logger = provider.get_logger("agent.budget", "0.4")
        logger.emit(
            severity_number=SeverityNumber.ERROR,
            severity_text="ERROR",
            body="Budget exceeded",
            attributes={"agent_type": "planner", "tokens": 1200},
        )
        try:
            raise ValueError("card declined")
        except ValueError as exc:
            logger.emit(severity_number=SeverityNumber.WARN, body="payment failed", exception=exc)
        await flush(provider)
    finally:
        await asyncio.to_thread(provider.shutdown)

    events = await stream_items(redis, keys.logs)
    assert [(e["service"], e["level"], e["message"]) for e in events] == [
        ("checkout", "error", "Budget exceeded"),
        ("checkout", "warn", "payment failed"),
    ]
    first, second = events
    assert first["labels"] == {
        "instance": "pod-1",
        "service_namespace": "shop",
        "otel_scope_name": "agent.budget",
        "otel_scope_version": "0.4",
        "agent_type": "planner",
        "tokens": "1200",
    }
    assert first["timestamp"] == pytest.approx(collector.service.clock.now(), abs=60)
    # The exception's type is a fine label; its message and stack trace are unbounded and stay out.
    assert second["labels"]["exception_type"] == "ValueError"
    assert not {"exception_message", "exception_stacktrace"} & second["labels"].keys()


async def test_cumulative_sums_are_samples_and_delta_sums_increments(
    collector: Collector, redis: Redis, keys: Keys
):
    delta = {SdkCounter: SdkTemporality.DELTA, SdkHistogram: SdkTemporality.DELTA}
    async with (
        meter_provider(collector.url) as cumulative_provider,
        meter_provider(collector.url, preferred_temporality=delta) as delta_provider,
    ):
        running_total = cumulative_provider.get_meter("m").create_counter("jobs_total")
        deltas = delta_provider.get_meter("m").create_counter("events")
        for amount in (2, 3):
            running_total.add(amount)
            deltas.add(amount)
            await flush(cumulative_provider)
            await flush(delta_provider)
        items = await stream_items(redis, keys.metrics)

    assert [(s["value"], s["kind"]) for s in named(items, "jobs_total")] == [(2.0, "sample"), (5.0, "sample")]
    assert [(s["value"], s["kind"]) for s in named(items, "events_total")] == [
        (2.0, "increment"),
        (3.0, "increment"),
    ]


async def test_histogram_buckets_are_cumulative_with_inf_sum_and_count(
    collector: Collector, redis: Redis, keys: Keys
):
    delta = {SdkHistogram: SdkTemporality.DELTA}
    async with (
        meter_provider(collector.url) as provider,
        meter_provider(collector.url, preferred_temporality=delta) as delta_provider,
    ):
        for p in (provider, delta_provider):
            duration = p.get_meter("http").create_histogram(
                "http.server.duration", unit="s", explicit_bucket_boundaries_advisory=[0.1, 0.5, 1.0]
            )
            for value in (0.05, 0.3, 0.7, 2.0):
                duration.record(value, {"route": "/pay"})
            await flush(p)
        items = await stream_items(redis, keys.metrics)

    for kind in ("sample", "increment"):
        buckets = [s for s in named(items, "http_server_duration_seconds_bucket") if s["kind"] == kind]
        assert [(b["labels"]["le"], b["value"]) for b in buckets] == [
            ("0.1", 1.0),
            ("0.5", 2.0),
            ("1", 3.0),
            ("+Inf", 4.0),
        ]
        assert all(b["labels"]["route"] == "/pay" for b in buckets)
        [total] = [s for s in named(items, "http_server_duration_seconds_sum") if s["kind"] == kind]
        [count] = [s for s in named(items, "http_server_duration_seconds_count") if s["kind"] == kind]
        assert total["value"] == pytest.approx(3.05)
        assert count["value"] == 4.0


async def test_gzip_from_the_sdk_and_by_hand(collector: Collector, redis: Redis, keys: Keys):
    async with meter_provider(collector.url, compression=Compression.Gzip) as provider:
        provider.get_meter("m").create_up_down_counter("queue.depth").add(7)
        await flush(provider)
    body = metrics_request(gauge("temperature", point(21.5, ts=collector.service.clock.now())))
    response = await collector.client.post(
        "/v1/metrics",
        data=gzip.compress(body.SerializeToString()),
        headers={**PROTOBUF, "Content-Encoding": "gzip"},
    )
    assert response.status == 200, await response.read()
    items = await stream_items(redis, keys.metrics)
    # A non-monotonic sum (UpDownCounter) is a gauge: no _total.
    assert named(items, "queue_depth")[0]["value"] == 7.0
    assert named(items, "temperature")[0]["value"] == 21.5


# OTLP/JSON -------------------------------------------------------------------------------------------------
async def test_json_metrics_and_response_in_json(faked: Collector, redis: Redis, keys: Keys):
    request = metrics_request(counter("http.requests", point(5, **{"http__status_code": 500})))
    response = await faked.client.post("/v1/metrics", data=json_format.MessageToJson(request), headers=JSON)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert await response.json() == {}
    [sample] = named(await stream_items(redis, keys.metrics), "http_requests_total")
    assert sample["labels"] == {"job": "api", "otel_scope_name": "test", "http_status_code": "500"}
    assert sample["timestamp"] == NOW


async def test_json_logs_with_hex_ids_int_enums_and_structured_body(
    faked: Collector, redis: Redis, keys: Keys
):
    body = AnyValue(kvlist_value=KeyValueList(values=[kv("event", "login"), kv("ok", True)]))
    request = logs_request(
        LogRecord(time_unix_nano=NOW_NS, severity_number=13, body=body, attributes=attrs(user__tier="gold"))
    )
    document = json_format.MessageToDict(request)
    log_record = document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    # OTLP/JSON deviations from proto3 JSON: ids in hex, enums as integers, int64 as strings.
    log_record["traceId"] = "5B8EFFF798038103D269B633813FC60C"
    log_record["spanId"] = "EEE19B7EC3C1B174"
    log_record["severityNumber"] = 13
    log_record["timeUnixNano"] = str(NOW_NS)
    log_record["someFutureField"] = {"ignored": True}
    response = await faked.client.post("/v1/logs", data=orjson.dumps(document), headers=JSON)
    assert response.status == 200, await response.text()
    assert await response.json() == {}
    [event] = await stream_items(redis, keys.logs)
    assert event == {
        "service": "agent",
        "level": "warn",
        "message": '{"event":"login","ok":true}',
        "labels": {"otel_scope_name": "app.logger", "user_tier": "gold"},
        "timestamp": NOW,
    }


# Partial success and rejections ----------------------------------------------------------------------------
async def test_invalid_points_are_dropped_and_reported_the_rest_is_stored(
    make_config, redis: Redis, keys: Keys
):
    async with running(make_config(collector={"max_labels": 4}), FakeClock(NOW)) as c:
        request = metrics_request(
            gauge(
                "temperature",
                point(20.0, room="a"),
                point(21.0, ts=NOW - 7200, room="b"),  # older than collector.max_age
                point(22.0, a="1", b="2", c="3", d="4"),  # job + scope + 4 attributes > 4 labels
            ),
            Metric(
                name="latency",
                exponential_histogram=ExponentialHistogram(
                    aggregation_temporality=CUMULATIVE,
                    data_points=[ExponentialHistogramDataPoint(time_unix_nano=NOW_NS, count=1)],
                ),
            ),
        )
        response = await post_proto(c, "/v1/metrics", request)
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-protobuf"
        reply = ExportMetricsServiceResponse.FromString(await response.read())
        assert reply.HasField("partial_success")
        assert reply.partial_success.rejected_data_points == 3
        message = reply.partial_success.error_message
        assert message.startswith("3 of 4 data points rejected")
        assert "collector.max_age" in message
        assert "collector.max_labels" in message
        assert "exponential histograms are not supported" in message

        # The same in JSON: partialSuccess, int64 as a string.
        response = await c.client.post("/v1/metrics", data=json_format.MessageToJson(request), headers=JSON)
        reply_json = await response.json()
        assert reply_json["partialSuccess"]["rejectedDataPoints"] == "3"
        assert reply_json["partialSuccess"]["errorMessage"] == message

    items = await stream_items(redis, keys.metrics)
    assert [(s["labels"].get("room"), s["value"]) for s in named(items, "temperature")] == [("a", 20.0)] * 2


async def test_nothing_valid_is_400_with_a_status_and_stores_nothing(
    faked: Collector, redis: Redis, keys: Keys
):
    request = logs_request(record(ts=NOW + 3600), record(ts=NOW - 7200))
    response = await post_proto(faked, "/v1/logs", request)
    assert response.status == 400
    assert response.headers["Content-Type"] == "application/x-protobuf"
    status, violations = status_of(await response.read())
    assert status.code == 3  # INVALID_ARGUMENT
    assert status.message.startswith("all 2 log records were rejected")
    assert [field for field, _ in violations] == [
        "log record 0 (service 'agent')",
        "log record 1 (service 'agent')",
    ]
    assert "in the future" in violations[0][1]
    assert "in the past" in violations[1][1]

    response = await faked.client.post("/v1/logs", data=json_format.MessageToJson(request), headers=JSON)
    assert response.status == 400
    reply = await response.json()
    assert reply["code"] == 3
    assert reply["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert len(reply["details"][0]["fieldViolations"]) == 2
    assert await redis.exists(keys.logs) == 0


async def test_other_otlp_paths_and_methods_answer_with_a_status_in_the_request_encoding(faked: Collector):
    # An SDK that also exports traces to the same endpoint: its exporter decodes the Status and logs why.
    protobuf = {"Content-Type": "application/protobuf"}
    response = await faked.client.post("/v1/traces", data=b"", headers=protobuf)
    assert (response.status, response.headers["Content-Type"]) == (404, "application/protobuf")
    status, _ = status_of(await response.read())
    assert status.code == 5
    assert status.message.startswith("no endpoint POST /v1/traces; tripwire takes OTLP metrics (/v1/metrics)")

    response = await faked.client.put("/v1/logs", data=b"{}", headers=JSON)
    assert (response.status, response.headers["Allow"]) == (405, "POST")
    reply = await response.json()
    assert reply == {"code": 12, "message": "PUT is not allowed on /v1/logs (allowed: POST)"}

    # Anyone else (a browser, curl without a Content-Type) gets the API's JSON error, as on every path.
    for method, path, status_code in (("GET", "/v1/metrics", 405), ("GET", "/v1/profiles", 404)):
        response = await faked.client.request(method, path)
        assert response.status == status_code
        assert (await response.json())["errorType"] in {"not_found", "method_not_allowed"}


async def test_bad_content_type_garbage_and_bad_gzip(faked: Collector, redis: Redis, keys: Keys):
    response = await faked.client.post("/v1/metrics", data=b"x", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    assert "application/x-protobuf" in (await response.json())["message"]

    response = await faked.client.post("/v1/metrics", data=b"\xff\xff\xff\xff garbage", headers=PROTOBUF)
    assert response.status == 400
    status, _ = status_of(await response.read())
    assert "not a valid ExportMetricsServiceRequest (protobuf)" in status.message

    for junk in (b"{not json", b"[1, 2]", b'{"resourceLogs": "nope"}'):
        response = await faked.client.post("/v1/logs", data=junk, headers=JSON)
        assert response.status == 400, junk
        assert "not a valid ExportLogsServiceRequest (OTLP/JSON)" in (await response.json())["message"]

    response = await faked.client.post(
        "/v1/logs", data=b"not gzip", headers={**PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert response.status == 400
    assert await redis.exists(keys.metrics) + await redis.exists(keys.logs) == 0


async def test_a_stalled_body_is_503_which_exporters_retry(make_config, redis: Redis, keys: Keys):
    # It was the JSON API's 408, which OTLP exporters never retry: an export over a slow link was dropped.
    async with running(make_config(collector={"body_timeout": "300ms", "retry_after": "2s"})) as c:
        body = metrics_request(gauge("up", point(1))).SerializeToString()
        reader, writer = await asyncio.open_connection(c.client.server.host, c.client.server.port)
        writer.write(
            b"POST /v1/metrics HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:5]  # and never the rest
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        status = status_pb2.Status.FromString(await reader.readexactly(length))
        writer.close()
    assert head.startswith(b"HTTP/1.1 503"), head
    assert b"Retry-After: 2\r\n" in head
    assert (status.code, status.message) == (14, "request body did not arrive within 0.3s")
    assert await redis.exists(keys.metrics) == 0


async def test_the_answer_has_the_requests_content_type(faked: Collector):
    # application/protobuf (the registered name) was answered as application/x-protobuf; the spec says the
    # response MUST use the request's Content-Type.
    body = metrics_request(gauge("up", point(1))).SerializeToString()
    for content_type in ("application/protobuf", "application/x-protobuf"):
        response = await faked.client.post("/v1/metrics", data=body, headers={"Content-Type": content_type})
        assert (response.status, response.content_type) == (200, content_type)
        refused = await faked.client.post("/v1/metrics", data=b"\xff", headers={"Content-Type": content_type})
        assert (refused.status, refused.content_type) == (400, content_type)
        assert status_of(await refused.read())[0].code == 3


def _with_bad_attribute(request: ExportMetricsServiceRequest, metric: int) -> bytes:
    """`request` with one malformed attribute (a key that is not UTF-8) on the first point of a metric."""
    raw = RawAttributesRequest.FromString(request.SerializeToString())
    data = raw.resource_metrics[0].scope_metrics[0].metrics[metric]
    getattr(data, data.WhichOneof("data")).data_points[0].attributes.append(b"\x0a\x02\xff\xfe")
    return raw.SerializeToString()


_EXPONENTIAL = Metric(
    name="sizes",
    exponential_histogram=ExponentialHistogram(
        aggregation_temporality=CUMULATIVE, data_points=[ExponentialHistogramDataPoint(time_unix_nano=NOW_NS)]
    ),
)


@pytest.mark.parametrize(
    "broken",
    [
        gauge("down", point(2)),  # a point that would be stored
        gauge("stale", NumberDataPoint(time_unix_nano=NOW_NS, as_double=1, flags=1)),  # skipped
        gauge("empty", NumberDataPoint(time_unix_nano=NOW_NS)),  # rejected: no value
        _EXPONENTIAL,  # rejected whole
    ],
    ids=["stored", "skipped", "no-value", "exponential"],
)
async def test_a_malformed_attribute_is_400_and_stores_nothing(
    faked: Collector, redis: Redis, keys: Keys, broken: Metric
):
    # The mapping reads attributes as raw bytes (otlp_wire); the real schema still judges the whole body
    # first, wherever the broken attribute is and whatever would become of its point.
    body = _with_bad_attribute(metrics_request(gauge("up", point(1, route="/")), broken), metric=1)
    response = await faked.client.post("/v1/metrics", data=body, headers=PROTOBUF)
    assert response.status == 400
    status, _ = status_of(await response.read())
    assert status.message.startswith("request body is not a valid ExportMetricsServiceRequest (protobuf): ")
    assert "ExportMetricsServiceRequest" in status.message.split(": ", 1)[1]  # the parser's own words
    assert await redis.exists(keys.metrics) == 0


async def test_empty_request_is_success(faked: Collector, redis: Redis, keys: Keys):
    response = await post_proto(faked, "/v1/logs", ExportLogsServiceRequest())
    assert response.status == 200
    assert ExportLogsServiceResponse.FromString(await response.read()) == ExportLogsServiceResponse()
    assert await redis.exists(keys.logs) == 0


async def test_limits_body_size_and_item_count_are_413(make_config, redis: Redis, keys: Keys):
    config = make_config(collector={"max_body_bytes": 2048, "max_items": 4, "otlp_max_samples": 4})
    async with running(config, FakeClock(NOW)) as c:
        big = logs_request(*(record("x" * 100) for _ in range(40)))
        response = await post_proto(c, "/v1/logs", big)
        assert response.status == 413
        assert "limit of 2048 bytes" in status_of(await response.read())[0].message
        # One histogram point with 2 bounds is 5 items: _bucket x3, _sum, _count.
        histogram = Metric(
            name="latency",
            histogram=Histogram(
                aggregation_temporality=CUMULATIVE,
                data_points=[
                    HistogramDataPoint(
                        time_unix_nano=NOW_NS,
                        count=3,
                        sum=1.0,
                        bucket_counts=[1, 1, 1],
                        explicit_bounds=[0.1, 1],
                    )
                ],
            ),
        )
        response = await post_proto(c, "/v1/metrics", metrics_request(histogram))
        assert response.status == 413
        message = status_of(await response.read())[0].message
        assert "request maps to 5 samples" in message and "collector.otlp_max_samples" in message
        # Data points are what max_items counts, a histogram point being one.
        response = await post_proto(c, "/v1/metrics", metrics_request(gauge("up", *[point(1)] * 5)))
        assert response.status == 413
        message = status_of(await response.read())[0].message
        assert "request carries 5 data points; the limit is 4" in message
        assert "max_export_batch_size" in message
        # Malformed and too big: malformed first, as the body is parsed before it is counted.
        response = await c.client.post(
            "/v1/metrics", data=_with_bad_attribute(metrics_request(histogram), metric=0), headers=PROTOBUF
        )
        assert response.status == 400
    assert await redis.exists(keys.metrics) + await redis.exists(keys.logs) == 0


async def test_a_write_redis_refuses_for_good_is_an_internal_status(
    faked: Collector, redis: Redis, keys: Keys
):
    await redis.set(keys.metrics, "not a stream")
    response = await post_proto(faked, "/v1/metrics", metrics_request(gauge("up", point(1))))
    assert response.status == 500  # not 503: an exporter would retry it for ever
    status, _ = status_of(await response.read())
    assert status.code == 13 and "retrying will not" in status.message


def _wide_histograms(points: int, buckets: int, attribute_bytes: int) -> ExportMetricsServiceRequest:
    """Histogram points whose few long attributes are sent once a point but stored on every bucket."""
    bounds = [float(b) for b in range(1, buckets)]
    return metrics_request(
        _histogram(
            *(
                HistogramDataPoint(
                    time_unix_nano=NOW_NS,
                    count=buckets,
                    sum=1.0,
                    bucket_counts=[1] * buckets,
                    explicit_bounds=bounds,
                    attributes=attrs(a=f"{i}" + "a" * attribute_bytes, b="b" * attribute_bytes),
                )
                for i in range(points)
            ),
        )
    )


async def test_a_small_request_that_would_be_stored_as_far_more_is_413(make_config, redis: Redis, keys: Keys):
    # helper-45's review: a 0.19 MB body of histograms with 4 KB attributes was stored as 130 MB (674x), with
    # 657 MB more RSS; every budget counted only the body. Now the items' size is estimated before they are
    # encoded, and the request refused past collector.otlp_max_stored_bytes.
    config = make_config(collector={"otlp_max_stored_bytes": 2 * 1024 * 1024})
    async with running(config, FakeClock(NOW)) as c:
        request = _wide_histograms(points=40, buckets=60, attribute_bytes=4000)
        assert len(request.SerializeToString()) < 400_000  # about 0.3 MB, to be stored as 20 MB
        response = await post_proto(c, "/v1/metrics", request)
        assert response.status == 413
        message = status_of(await response.read())[0].message
        assert "collector.otlp_max_stored_bytes" in message and "would be stored as about" in message
        # One in ten of those points fits, and is stored whole.
        fits = _wide_histograms(points=4, buckets=60, attribute_bytes=4000)
        response = await post_proto(c, "/v1/metrics", fits)
        assert response.status == 200
    assert len(await stream_items(redis, keys.metrics)) == 4 * 62


def _estimate_cases() -> dict[str, Any]:
    """Requests whose items encode to very different sizes per byte of body."""
    quoted_ = '"\\' * 500  # each character escaped: two bytes
    control = "\x01" * 4000  # each character written \u0001: six bytes
    quantiles = [SummaryDataPoint.ValueAtQuantile(quantile=q, value=q) for q in (0.5, 0.9, 0.99)]
    summary = Metric(
        name="rpc_latency",
        summary=Summary(
            data_points=[
                SummaryDataPoint(
                    time_unix_nano=NOW_NS,
                    count=7,
                    sum=1.5,
                    quantile_values=quantiles,
                    attributes=attrs(q=quoted_),
                )
            ]
        ),
    )
    odd_bounds = metrics_request(
        _histogram(
            HistogramDataPoint(
                time_unix_nano=NOW_NS,
                count=3,
                bucket_counts=[1] * 31,
                explicit_bounds=[0.1 * i + 1e-17 for i in range(1, 31)],  # long `le` values
            ),
        )
    )
    scoped = ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=ProtoResource(
                    attributes=[
                        kv("service.name", "api"),
                        kv("service.instance.id", "i"),
                        kv("host.name", control),
                    ]
                ),
                scope_metrics=[
                    ScopeMetrics(
                        scope=InstrumentationScope(name=control),
                        metrics=[
                            gauge("up", *[point(1.0, n=str(n)) for n in range(50)]),
                            counter("requests", point(3.0, q=quoted_)),
                        ],
                    )
                ],
            )
        ]
    )
    return {
        "histograms": (map_metrics, _wide_histograms(5, 16, 300)),
        "long le values": (map_metrics, odd_bounds),
        "summaries, escaped quotes": (map_metrics, metrics_request(summary)),
        "control characters in scope and target_info": (map_metrics, scoped),
        "logs": (map_logs, logs_request(*(record("é" * 200, user="u" * 50) for _ in range(20)))),
        "logs with control characters": (
            map_logs,
            logs_request(record(control, user=quoted_), service="\x01" * 150),
        ),
    }


@pytest.mark.parametrize("case", list(_estimate_cases()))
def test_the_stored_size_estimate_is_close_above_the_encoded_size(case: str):
    # The estimate decides a 413 before anything is encoded: never below what the items encode to (or a
    # request past the limit could pass: helper-46 stored 241 MB past a 64 MiB limit with control
    # characters, which JSON writes in six bytes), and not far above (or good ones would be refused).
    mapper, request = _estimate_cases()[case]
    mapping = mapper(request, NOW, DEFAULT_LIMITS, OtlpOptions())
    estimate, points = mapping.stored, len(mapping.points)
    spec = LOGS if mapper is map_logs else METRICS
    outcome = otlp_module._validate(spec, mapping, NOW, CollectorConfig(), DEFAULT_LIMITS, 200_000)
    assert outcome.points + (1 if "target_info" in case else 0) == points  # every point stored
    encoded = len(outcome.accepted.items_json) + sum(map(len, outcome.accepted.rest))  # what Redis gets
    assert encoded <= estimate <= 1.5 * encoded


async def test_a_request_whose_body_and_samples_cannot_fit_together_is_taken_alone(
    make_config, redis: Redis, keys: Keys
):
    # The body is held until the samples are stored: a request whose samples would not fit the budget beside
    # its own body is taken while it is alone. A 503 would have the exporter retry it for ever; a 413 (as
    # before) dropped an export within every per-request limit, for a budget a config may set as low as
    # max_body_bytes.
    config = make_config(collector={"max_body_bytes": 160 * 1024, "max_buffered_bytes": 200 * 1024})
    padding = Metric(  # body bytes that map to nothing: exponential histograms are rejected
        name="padding",
        exponential_histogram=ExponentialHistogram(
            aggregation_temporality=CUMULATIVE,
            data_points=[
                ExponentialHistogramDataPoint(
                    time_unix_nano=NOW_NS,
                    count=1,
                    positive=ExponentialHistogramDataPoint.Buckets(bucket_counts=[1] * 130_000),
                )
            ],
        ),
    )
    request = _wide_histograms(points=2, buckets=20, attribute_bytes=800)
    request.resource_metrics[0].scope_metrics[0].metrics.append(padding)
    body = len(request.SerializeToString())
    assert 130_000 < body < 160 * 1024
    async with running(config, FakeClock(NOW)) as c:
        response = await post_proto(c, "/v1/metrics", request)
        assert response.status == 200  # a partial success: the padding is rejected
        assert c.service.registry.get_sample_value("tripwire_ingest_buffered_bytes") == 0
    assert len(await stream_items(redis, keys.metrics)) == 2 * 22


@pytest.mark.parametrize(
    ("stored_limit", "setting"),
    [(None, "collector.otlp_max_stored_bytes"), (64 * 1024 * 1024, "collector.max_buffered_bytes")],
)
async def test_one_otlp_request_never_holds_more_than_the_budget(
    make_config, redis: Redis, keys: Keys, stored_limit: int | None, setting: str
):
    # helper-50: taken alone, a 2 MB body of histograms with long attributes held 14x a 16 MiB budget
    # (otlp_max_stored_bytes stayed at 128 MiB whatever the budget). Unset, that limit is now half the
    # budget; set past it, the budget refuses the request with 413 before encoding it.
    budget = 1024 * 1024
    collector: dict[str, object] = {"max_body_bytes": budget, "max_buffered_bytes": budget}
    if stored_limit is not None:
        collector["otlp_max_stored_bytes"] = stored_limit
    config = make_config(collector=collector)
    assert config.collector.otlp_max_stored_bytes == (stored_limit or budget // 2)
    async with running(config, FakeClock(NOW)) as c:
        request = _wide_histograms(points=40, buckets=60, attribute_bytes=4000)
        assert len(request.SerializeToString()) < budget
        response = await post_proto(c, "/v1/metrics", request)
        assert response.status == 413
        assert setting in status_of(await response.read())[0].message
        assert c.service.registry.get_sample_value("tripwire_ingest_buffered_bytes") == 0
    assert await redis.xlen(keys.metrics) == 0


def test_a_full_batch_of_sdk_histograms_fits_the_default_limits():
    # helper-46: at the first default (64 MiB) a normal export was refused, and a 413 is dropped, not retried:
    # 10,000 histogram points, the SDKs' 16 buckets, 10 short attributes, stored as 74.5 MB. Measured on a
    # tenth of it (the estimate grows with the points), against the defaults it must pass.
    points = [_sdk_point(**{f"attribute_{a}": f"value-{p % 7}-{a}" for a in range(10)}) for p in range(1000)]
    duration = _histogram(*points, name="http.server.duration")
    duration.unit = "ms"
    request = metrics_request(duration)
    mapping = map_metrics(request, NOW, DEFAULT_LIMITS, OtlpOptions())
    defaults = CollectorConfig()
    full_batch = 10 * mapping.stored
    assert 60_000_000 < full_batch < defaults.otlp_max_stored_bytes
    assert 10 * len(request.SerializeToString()) + stored_bytes(full_batch) <= defaults.max_buffered_bytes


async def test_encoded_items_count_in_the_body_budget(make_config, redis: Redis, keys: Keys, monkeypatch):
    # A body stands for many times its size once encoded, and a request waiting on Redis holds both: the
    # budget counts the encoded items too, from the estimate, before they are encoded (helper-46: taken
    # after, eight requests at once had allocated 1.6 GB against a 256 MiB budget). One that does not fit
    # now is 503, and not encoded.
    encoded = []
    real_validate = otlp_module._validate

    def counting(*args: Any, **kwargs: Any) -> Any:
        encoded.append(True)
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(otlp_module, "_validate", counting)
    config = make_config(collector={"max_body_bytes": 160 * 1024, "max_buffered_bytes": 200 * 1024})
    async with running(config, FakeClock(NOW)) as c:
        # A JSON API body still arriving holds 150 KB of the shared budget meanwhile (twice that counted:
        # what it will be stored as).
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield b"[" + b" " * (150 * 1024)
            await release.wait()
            yield b"]"

        def held() -> float | None:
            return c.service.registry.get_sample_value("tripwire_ingest_buffered_bytes")

        slow = asyncio.create_task(
            c.client.post("/api/v1/metrics", data=slow_body(), headers={"Content-Type": "application/json"})
        )
        try:

            async def holding() -> bool:
                return (held() or 0) >= 150 * 1024

            await eventually(holding, what="the JSON body's first 150 KB held")
            small = _wide_histograms(points=2, buckets=20, attribute_bytes=800)
            response = await post_proto(c, "/v1/metrics", small)
            assert (response.status, response.headers["Retry-After"]) == (503, "1")
        finally:
            release.set()
            await slow
        assert encoded == []
        response = await post_proto(c, "/v1/metrics", small)
        assert response.status == 200
        assert encoded == [True]
        assert held() == 0
    assert len(await stream_items(redis, keys.metrics)) == 2 * 22


async def test_a_request_waiting_on_redis_holds_its_items_and_their_envelope_not_its_body(
    make_config, redis_server, redis: Redis, keys: Keys
):
    # Counting the body and the items once, the collector held about 4x its budget: body, items and their
    # stream envelope were all in memory while a request waited (measured: 400 MB RSS at a 64 MiB budget).
    request = _wide_histograms(points=2, buckets=20, attribute_bytes=800)
    probe = Redis.from_url(redis_server.url, socket_timeout=0.1)
    async with running(make_config(), FakeClock(NOW)) as c:

        def sample(name: str) -> float:
            return c.service.registry.get_sample_value(name) or 0.0

        async def appending() -> bool:
            return sample("tripwire_publish_in_flight") == 1

        busy = asyncio.create_task(redis.eval(BUSY_FOR_600_MS, 0))
        await eventually(lambda: redis_is_busy(probe), timeout=5, what="Redis to be running the script")
        posting = asyncio.create_task(post_proto(c, "/v1/metrics", request))
        await eventually(appending, timeout=5, what="the request's append to wait on Redis")
        waiting = sample("tripwire_ingest_buffered_bytes")
        assert (await posting).status == 200
        await busy
        assert sample("tripwire_ingest_buffered_bytes") == 0
    await probe.aclose()
    encoded = sum(len(decode_envelope(fields)[0]) for _id, fields in await redis.xrange(keys.metrics))
    assert waiting == stored_bytes(encoded)


async def test_a_batch_of_default_bucket_histograms_is_not_refused_for_its_buckets(
    faked: Collector, redis: Redis, keys: Keys
):
    # max_items counted expanded items: 600 points of the SDKs' default 16 buckets (10,800 items) got a 413,
    # which exporters never retry, so a service with 600 latency series lost every export.
    points = [_sdk_point(route=f"/r{i}") for i in range(600)]
    response = await post_proto(faked, "/v1/metrics", metrics_request(_histogram(*points)))
    assert response.status == 200, status_of(await response.read())[0].message
    assert ExportMetricsServiceResponse.FromString(await response.read()) == ExportMetricsServiceResponse()
    stored = await stream_items(redis, keys.metrics)
    assert len(named(stored, "latency_bucket")) == 600 * 16
    assert len(named(stored, "latency_count")) == 600


def _histogram_point(ts: float = NOW, **labels: str) -> HistogramDataPoint:
    """Two bounds: five items (_bucket x3, _sum, _count)."""
    return HistogramDataPoint(
        time_unix_nano=int(ts * 1e9),
        count=3,
        sum=1.0,
        bucket_counts=[1, 1, 1],
        explicit_bounds=[0.1, 1],
        attributes=attrs(**labels),
    )


async def test_a_request_bigger_than_max_items_is_stored_in_entries_of_whole_points(
    make_config, redis: Redis, keys: Keys
):
    # A request may now expand to otlp_max_samples items: in one entry that was 32 MB, 20x what a JSON API
    # request makes, and a consumer reads read_count entries at once. Entries hold at most max_items items,
    # and never split a point (a rule must not see half a histogram).
    config = make_config(collector={"max_items": 8, "otlp_max_samples": 100})
    request = metrics_request(
        _histogram(_histogram_point(route="a"), _histogram_point(route="b")),
        gauge("up", point(1)),
        _histogram(_histogram_point(route="c")),
    )
    async with running(config, FakeClock(NOW)) as c:
        for attempt in range(2):  # the retry is a replay: no entry more
            response = await post_proto(c, "/v1/metrics", request, **{"X-Request-Id": "big-1"})
            assert response.status == 200
            assert (
                ExportMetricsServiceResponse.FromString(await response.read())
                == ExportMetricsServiceResponse()
            )
            entries = [decode_entry(fields).items for _, fields in await redis.xrange(keys.metrics)]
            assert [len(items) for items in entries] == [5, 6, 5], attempt  # a, b + up, c
        # Without an id, the same split, in one MULTI.
        assert (await post_proto(c, "/v1/metrics", request)).status == 200
    entries = [decode_entry(fields).items for _, fields in await redis.xrange(keys.metrics)]
    assert [len(items) for items in entries] == [5, 6, 5, 5, 6, 5]
    routes = [sorted({i["labels"].get("route", "-") for i in items}) for items in entries[:3]]
    assert routes == [["a"], ["-", "b"], ["c"]]


async def test_a_point_rejected_in_a_later_batch_is_the_one_rejected_and_full_batches_stay_whole(
    make_config, redis: Redis, keys: Keys
):
    # Each batch's errors must fall on its own points (an index within the batch taken for one in the
    # request dropped others), and a batch of exactly max_items items is one entry.
    config = make_config(collector={"max_items": 8, "otlp_max_samples": 100})
    points = [_histogram_point(route=r) for r in "ab"] + [_histogram_point(NOW - 7200, route="c")]
    request = metrics_request(
        _histogram(*points, _histogram_point(route="d")), gauge("up", point(1), point(2), point(3))
    )
    async with running(config, FakeClock(NOW)) as c:
        response = await post_proto(c, "/v1/metrics", request)
        assert response.status == 200
        answer = ExportMetricsServiceResponse.FromString(await response.read()).partial_success
    assert answer.rejected_data_points == 1
    assert answer.error_message.startswith("1 of 7 data points rejected: metric 'latency' point 2: timestamp")
    entries = [decode_entry(fields).items for _, fields in await redis.xrange(keys.metrics)]
    assert [sorted({i["labels"].get("route", "-") for i in items}) for items in entries] == [
        ["a"],
        ["b"],
        ["-", "d"],  # 5 + 3 = 8 items: one entry
    ]


async def test_rejected_points_are_found_in_one_pass_not_a_thousand_errors_at_a_time(
    make_config, monkeypatch: pytest.MonkeyPatch
):
    # validate_items listed 1,000 errors a pass, so each pass dropped ~55 aged-out histogram points and the
    # rest were validated again: 10,000 of them took 158 s of a worker thread (measured by review).
    from services.collector import otlp

    calls: list[int] = []
    real = otlp.validate_items

    def counted(spec: Any, items: list[Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(len(items))
        return real(spec, items, *args, **kwargs)

    monkeypatch.setattr(otlp, "validate_items", counted)
    aged = [_histogram_point(ts=NOW - 7200, route=f"r{i}") for i in range(600)]
    fresh = [_histogram_point(route="ok")]
    async with running(make_config(), FakeClock(NOW)) as c:
        response = await post_proto(c, "/v1/metrics", metrics_request(_histogram(*aged, *fresh)))
        assert response.status == 200
        answer = ExportMetricsServiceResponse.FromString(await response.read())
    assert answer.partial_success.rejected_data_points == 600
    assert calls == [3000 + 5, 5]  # every point, then the one left


@pytest.mark.parametrize(
    "shape",
    [
        {"count": 3, "sum": 1.0, "bucket_counts": [1, 1, 1], "explicit_bounds": [0.1, 1]},
        {"count": 3, "bucket_counts": [2, 1], "explicit_bounds": [0.5]},  # no sum: no _sum item
        {"count": 3, "sum": 2.0, "explicit_bounds": [0.1, 1]},  # no counts: only the +Inf bucket
        {"count": 3, "bucket_counts": [1, 2], "explicit_bounds": [0.1, 1]},  # refused for its shape
        {"count": 3, "bucket_counts": [1, 1, 1], "explicit_bounds": [1, 0.1]},  # bounds out of order
        {"count": 0, "flags": 1},  # no recorded value: skipped
    ],
)
def test_a_histogram_points_items_are_counted_as_the_mapping_makes_them(shape: dict[str, Any]):
    # The 413 pre-count took every point as bounds + 3: a point without a sum was refused at max_items
    # although it fitted.
    data_point = HistogramDataPoint(time_unix_nano=NOW_NS, **shape)
    metric = Metric(
        name="latency", histogram=Histogram(aggregation_temporality=CUMULATIVE, data_points=[data_point])
    )
    assert histogram_items(data_point) == len(mapped_items(metrics_request(metric)))


def test_the_name_limit_is_checked_on_the_name_stored():
    # Every sum was checked as if `_total` were added: a counter already named `…_total` and an up-down
    # counter were refused at a length the JSON API takes.
    limits = limits_from(CollectorConfig(max_name_length=20))

    def stored(metric: Metric) -> list[str]:
        mapping = map_metrics(metrics_request(metric), NOW, limits, OtlpOptions(target_info=False))
        return [item["name"] for p in mapping.points for item in p.items]

    assert stored(counter("a" * 14 + "_total", point(1))) == ["a" * 14 + "_total"]
    assert stored(counter("b" * 20, point(1), monotonic=False)) == ["b" * 20]
    assert stored(counter("c" * 15, point(1))) == []  # c…_total is 21
    assert stored(gauge("d" * 21, point(1))) == []


async def test_bearer_token_is_required_when_configured(make_config, redis: Redis, keys: Keys):
    config = make_config()
    config.ingest_token = SecretStr("s3cret")
    async with running(config) as c:
        body = metrics_request(gauge("up", point(1, ts=c.service.clock.now())))
        missing = await post_proto(c, "/v1/metrics", body)
        wrong = await post_proto(c, "/v1/metrics", body, Authorization="Bearer nope")
        assert (missing.status, wrong.status) == (401, 401)
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert status_of(await missing.read())[0].code == 16  # UNAUTHENTICATED
        # The SDK sends the token as a header.
        async with meter_provider(c.url, headers={"Authorization": "Bearer s3cret"}) as provider:
            provider.get_meter("m").create_counter("logins").add(1)
            await flush(provider)
    assert named(await stream_items(redis, keys.metrics), "logins_total")


async def test_redis_down_is_503_with_retry_after(make_config, redis: Redis, keys: Keys):
    # A Publisher whose Redis is a closed port: nothing listens there.
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    config = make_config(collector={"retry_after": "3s"})
    try:
        async with running(config, publisher=Publisher(dead, 1000, retry_after=3.0)) as c:
            response = await post_proto(c, "/v1/metrics", metrics_request(gauge("up", point(1))))
            assert response.status == 503
            assert response.headers["Retry-After"] == "3"
            status, _ = status_of(await response.read())
            assert status.code == 14  # UNAVAILABLE
            assert "redis is unavailable" in status.message
            text = await (await c.client.get("/metrics")).text()
            assert 'tripwire_otlp_requests_total{code="503",encoding="protobuf",signal="metrics"} 1.0' in text
            # Not counted as accepted or rejected: the client will send the points again.
            assert "tripwire_otlp_points_total{" not in text
    finally:
        await dead.aclose()
    assert await redis.exists(keys.metrics) == 0


async def test_an_export_waits_for_a_validation_thread_and_is_told_busy_past_the_wait(
    make_config, redis: Redis, keys: Keys, monkeypatch
):
    # helper-52: every request of a burst was decoded and mapped at once in asyncio's default executor, each
    # holding its tree (3 GB for a 256 MiB budget), and answered 503 after up to 87 s. Now a request holds
    # a validation thread from decoding to encoding, and waits for one at most collector.validation_wait.
    entered, release = threading.Event(), threading.Event()
    real = otlp_module._Receiver._map_small

    def held_map(self, *args):
        if not entered.is_set():
            entered.set()
            assert release.wait(30)
        return real(self, *args)

    monkeypatch.setattr(otlp_module._Receiver, "_map_small", held_map)
    config = make_config(collector={"validation_threads": 1, "validation_wait": "200ms"})
    async with running(config, FakeClock(NOW)) as c:
        first = asyncio.create_task(post_proto(c, "/v1/metrics", metrics_request(gauge("a", point(1)))))
        await eventually(lambda: _now(entered.is_set()), what="the first export to be in its thread")
        assert (await asyncio.wait_for(c.client.get("/healthz"), 5)).status == 200
        busy = await post_proto(c, "/v1/metrics", metrics_request(gauge("b", point(1))))
        assert busy.status == 503
        assert busy.headers["Retry-After"] == "1"
        status, _ = status_of(await busy.read())
        assert status.code == 14  # UNAVAILABLE: the SDK retries it
        assert "busy" in status.message
        release.set()
        assert (await first).status == 200
    assert [item["name"] for item in await stream_items(redis, keys.metrics)] == ["a"]


async def _now(value: bool) -> bool:
    return value


async def test_a_retry_with_the_same_request_id_is_stored_once_and_counted_as_replayed(
    faked: Collector, redis: Redis, keys: Keys
):
    body = metrics_request(gauge("up", point(1), point(1, ts=NOW - 7200))).SerializeToString()
    for _ in range(2):
        response = await faked.client.post(
            "/v1/metrics", data=body, headers={**PROTOBUF, "X-Request-Id": "export-1"}
        )
        assert response.status == 200
    assert await redis.xlen(keys.metrics) == 1
    text = await (await faked.client.get("/metrics")).text()
    # The retry's points were counted when they were stored: not again, as accepted or as rejected.
    assert 'tripwire_otlp_points_total{outcome="accepted",signal="metrics"} 1.0' in text
    assert 'tripwire_otlp_points_total{outcome="rejected",signal="metrics"} 1.0' in text
    assert 'tripwire_otlp_points_total{outcome="replayed",signal="metrics"} 1.0' in text


async def test_a_retry_whose_points_aged_out_is_answered_as_its_first_attempt(
    faked: Collector, redis: Redis, keys: Keys
):
    # The retry was validated before its id was looked up: an exporter retrying after max_age was told that
    # all its points were rejected (400), or a partial success it never had, though the first was stored.
    clock = faked.service.clock
    assert isinstance(clock, FakeClock)
    body = metrics_request(
        gauge("up", point(1), point(2, ts=NOW - 3000), point(3, ts=NOW - 7200))
    ).SerializeToString()

    async def export(request_id: str) -> ClientResponse:
        return await faked.client.post(
            "/v1/metrics", data=body, headers={**PROTOBUF, "X-Request-Id": request_id}
        )

    first = await export("export-7")
    assert first.status == 200
    first_reply = ExportMetricsServiceResponse.FromString(await first.read())
    assert first_reply.partial_success.rejected_data_points == 1
    for later in (1000, 7200):  # one more point out of the window, then all of them
        clock.set(NOW + later)
        retry = await export("export-7")
        assert retry.status == 200
        assert ExportMetricsServiceResponse.FromString(await retry.read()) == first_reply
    assert await redis.xlen(keys.metrics) == 1
    # The same body under an id that was never stored is refused, as before.
    assert (await export("export-8")).status == 400
    assert await redis.xlen(keys.metrics) == 1
    text = await (await faked.client.get("/metrics")).text()
    assert 'tripwire_otlp_points_total{outcome="accepted",signal="metrics"} 2.0' in text
    assert 'tripwire_otlp_points_total{outcome="replayed",signal="metrics"} 4.0' in text  # 2 retries
    assert 'tripwire_otlp_points_total{outcome="rejected",signal="metrics"} 4.0' in text  # 1 + export-8's 3


async def test_the_answer_kept_with_a_request_id_stays_small_whatever_the_names(
    faked: Collector, redis: Redis, keys: Keys
):
    # Rejection reasons quoted whole metric names, and the answer is kept with the request's id for an hour:
    # ten 400 KB names made a 4 MB Redis key per request.
    long_names = [gauge(f"m{i}_" + "x" * 400_000, point(1)) for i in range(10)]
    request = metrics_request(gauge("up", point(1)), *long_names)
    response = await post_proto(faked, "/v1/metrics", request, **{"X-Request-Id": "big-names"})
    assert response.status == 200
    answer = ExportMetricsServiceResponse.FromString(await response.read()).partial_success
    assert answer.rejected_data_points == 10
    assert "metric 'm0_" + "x" * 97 + "'...: metric name is longer than" in answer.error_message
    assert len(answer.error_message) <= 4096
    [key] = [key async for key in redis.scan_iter(match=f"{keys.metrics}:request:*")]
    assert await redis.memory_usage(key) < 8192


async def test_an_all_rejected_export_is_looked_up_only_when_a_point_aged_out(
    faked: Collector, recall_lookups: list[str]
):

    async def export(*metrics: Metric) -> None:
        response = await post_proto(
            faked, "/v1/metrics", metrics_request(*metrics), **{"X-Request-Id": "e-1"}
        )
        assert response.status == 400

    await export(gauge("x" * 300, point(1)))  # a name too long at any time
    await export(gauge("up", point(1, ts=NOW + 3600)))  # too new
    assert recall_lookups == []
    await export(gauge("x" * 300, point(1)), gauge("up", point(1, ts=NOW - 7200)))  # one point too old
    assert len(recall_lookups) == 1


def test_a_partial_success_message_is_cut_at_4_kib_of_utf8_not_4096_characters():
    # Emoji names made a 3,749-character message of 6,719 bytes, all of it kept with the request's id.
    name = "\U0001f600" * 100
    reasons = [(f"metric '{name}' point {i}", "why") for i in range(10)]
    outcome = _Outcome(Accepted(b"[]", 0), points=1, rejected=10, reasons=reasons, warnings={})
    message = _partial_message(outcome, "data points")
    assert len(message) < 4096 < len("; ".join(f"{w}: {r}" for w, r in reasons).encode())
    assert len(message.encode()) <= 4096 and message.endswith("...")


def test_warnings_in_a_partial_success_are_listed_up_to_ten_then_counted():
    # One warning per resource: 10,000 resources made a message of a megabyte, kept an hour with its id.
    warnings = {f"target_info of resource {i} dropped: why": 1 for i in range(30)}
    outcome = _Outcome(Accepted(b"[]", 0), points=30, rejected=0, reasons=[], warnings=warnings)
    message = _partial_message(outcome, "data points")
    assert message.count("warning: target_info of resource") == 10
    assert message.endswith("and 20 more warnings")


async def test_a_resource_attribute_too_long_for_a_label_is_dropped_not_target_info(
    faked: Collector, redis: Redis, keys: Keys
):
    # One attribute over max_label_value_length (a Java process.command_line) dropped the whole target_info
    # of its resource, and warned once per resource on every export.
    request = ExportMetricsServiceRequest()
    for i in range(30):
        resource = {"service.name": f"s{i}", "process.command_line": "x" * 5000, "host.name": f"h{i}"}
        request.resource_metrics.extend(
            metrics_request(gauge("up", point(1)), resource=resource).resource_metrics
        )
    response = await post_proto(faked, "/v1/metrics", request)
    assert response.status == 200
    message = ExportMetricsServiceResponse.FromString(await response.read()).partial_success.error_message
    assert message == (
        "warning: resource attributes longer than collector.max_label_name_length / max_label_value_length "
        "were dropped from labels (30x)"
    )
    items = await stream_items(redis, keys.metrics)
    assert len(named(items, "up")) == 30
    infos = named(items, "target_info")
    assert sorted(info["labels"]["host_name"] for info in infos) == sorted(f"h{i}" for i in range(30))
    assert all("process_command_line" not in info["labels"] for info in infos)


async def test_a_request_id_that_cannot_be_honoured_is_refused_not_ignored(
    faked: Collector, redis: Redis, keys: Keys
):
    body = metrics_request(gauge("up", point(1))).SerializeToString()
    response = await faked.client.post(
        "/v1/metrics", data=body, headers={**PROTOBUF, "X-Request-Id": "r" * 257}
    )
    assert response.status == 400
    status, _ = status_of(await response.read())
    assert "X-Request-Id must be 1-256 printable ASCII characters" in status.message
    assert await redis.exists(keys.metrics) == 0


async def test_self_metrics(faked: Collector):
    await post_proto(faked, "/v1/metrics", metrics_request(gauge("up", point(1), point(1, ts=NOW - 7200))))
    await faked.client.post("/v1/logs", data=b"{}", headers=JSON)

    text = await (await faked.client.get("/metrics")).text()
    assert 'tripwire_otlp_requests_total{code="200",encoding="protobuf",signal="metrics"} 1.0' in text
    assert 'tripwire_otlp_requests_total{code="200",encoding="json",signal="logs"} 1.0' in text
    assert 'tripwire_otlp_points_total{outcome="accepted",signal="metrics"} 1.0' in text
    assert 'tripwire_otlp_points_total{outcome="rejected",signal="metrics"} 1.0' in text


# The mapping, without HTTP ---------------------------------------------------------------------------------
def mapped_items(
    request: ExportMetricsServiceRequest, options: OtlpOptions | None = None
) -> list[dict[str, Any]]:
    mapping = map_metrics(request, NOW, LIMITS, options or OtlpOptions(target_info=False))
    return [item for p in mapping.points for item in p.items]


def test_names_and_keys_are_sanitised_and_clashes_joined_in_key_order():
    request = metrics_request(
        gauge(
            "http.server.active-requests",
            point(1, **{"a.b": "dot", "a-b": "dash", "2xx": "x", "job": "mine"}),
        )
    )
    [item] = mapped_items(request)
    assert item["name"] == "http_server_active_requests"
    # "a-b" sorts before "a.b": values joined with ";" in that order (spec: Metric Attributes).
    assert item["labels"] == {
        "a_b": "dash;dot",
        "key_2xx": "x",
        "exported_job": "mine",
        "job": "api",
        "otel_scope_name": "test",
    }


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        # The examples in Prometheus' otlptranslator (MetricNamer with suffixes, its OTLP default).
        ("http.server.duration", "s", "histogram", "http_server_duration_seconds"),
        ("requests.count", "1", COUNTER, "requests_count_total"),
        ("memory.usage", "By", GAUGE, "memory_usage_bytes"),
        # Its rules, one each.
        ("cpu.utilization", "1", GAUGE, "cpu_utilization_ratio"),  # unit 1: _ratio on gauges only
        ("cpu.utilization", "1", "sum", "cpu_utilization"),
        ("queue.size", "{message}", GAUGE, "queue_size"),  # an annotation is no unit
        ("net.throughput", "By/s", GAUGE, "net_throughput_bytes_per_second"),
        ("disk.io", "KiBy/min", COUNTER, "disk_io_kibibytes_per_min_total"),  # unknown per-unit as written
        ("jobs", "requests", COUNTER, "jobs_requests_total"),  # unknown unit as written
        ("request_duration_seconds", "s", "histogram", "request_duration_seconds"),  # has the word
        ("total.requests", "", COUNTER, "requests_total"),  # total moves to the end
        ("__leading..trailing__", "", GAUGE, "leading_trailing"),
        ("2xx.responses", "", COUNTER, "_2xx_responses_total"),
        ("temp", "Cel", GAUGE, "temp_celsius"),
        ("...", "s", GAUGE, ""),  # no name to speak of: refused, not called "seconds"
    ],
)
def test_metric_names_get_prometheus_unit_and_type_suffixes(name, unit, kind, expected):
    assert metric_name(name, unit, kind) == expected


def test_without_suffixes_names_stay_as_sent_with_total_on_counters():
    assert metric_name("http.server.duration", "s", "histogram", suffixes=False) == "http_server_duration"
    assert metric_name("cpu.utilization", "1", GAUGE, suffixes=False) == "cpu_utilization"
    assert metric_name("jobs", "", COUNTER, suffixes=False) == "jobs_total"
    assert metric_name("jobs_total", "", COUNTER, suffixes=False) == "jobs_total"
    ratio = Metric(name="cpu.utilization", unit="1", gauge=Gauge(data_points=[point(0.5)]))
    assert [i["name"] for i in mapped_items(metrics_request(ratio))] == ["cpu_utilization_ratio"]
    plain = OtlpOptions(target_info=False, metric_suffixes=False)
    assert [i["name"] for i in mapped_items(metrics_request(ratio), plain)] == ["cpu_utilization"]


async def test_collector_otlp_metric_suffixes_false_turns_them_off(make_config, redis: Redis, keys: Keys):
    ratio = Metric(name="cpu.utilization", unit="1", gauge=Gauge(data_points=[point(0.5)]))
    for suffixes, expected in ((True, "cpu_utilization_ratio"), (False, "cpu_utilization")):
        config = make_config(collector={"otlp_metric_suffixes": suffixes, "max_age": "100000d"})
        async with running(config) as c:
            response = await post_proto(c, "/v1/metrics", metrics_request(ratio))
            assert response.status == 200, await response.read()
        [stored] = named(await stream_items(redis, keys.metrics), expected)
        assert stored["value"] == 0.5


def test_total_suffix_only_where_missing_and_scope_labels_optional():
    request = metrics_request(counter("requests_total", point(1)), counter("bytes", point(2)))
    items = mapped_items(request, OtlpOptions(scope_labels=False, target_info=False))
    assert [(i["name"], i["labels"]) for i in items] == [
        ("requests_total", {"job": "api"}),
        ("bytes_total", {"job": "api"}),
    ]


def test_target_info_needs_a_job_or_instance_and_scope_labels_a_scope_name():
    # As Prometheus' translator: a target_info without job or instance joins to nothing, and a scope version
    # without a name was written as otel_scope_version alone.
    anonymous = metrics_request(gauge("up", point(1)), resource={"host.name": "h"})
    assert [item["name"] for item in mapped_items(anonymous, OtlpOptions())] == ["up"]
    named_only = metrics_request(gauge("up", point(1)), resource={"service.name": "api", "host.name": "h"})
    assert [item["name"] for item in mapped_items(named_only, OtlpOptions())] == ["up", "target_info"]
    unnamed_scope = metrics_request(gauge("up", point(1)))
    unnamed_scope.resource_metrics[0].scope_metrics[0].scope.CopyFrom(InstrumentationScope(version="1.0"))
    [item] = mapped_items(unnamed_scope, OtlpOptions(target_info=False))
    assert item["labels"] == {"job": "api"}


def test_scope_schema_url_and_attributes_are_labels_as_prometheus_promotes_scope_metadata():
    # Only otel_scope_name and otel_scope_version were written: two scopes told apart by an attribute
    # (a meter per tenant, say) merged into one series.
    request = metrics_request(gauge("up", point(1, tier="gold")))
    scope_metrics = request.resource_metrics[0].scope_metrics[0]
    scope_metrics.schema_url = "https://opentelemetry.io/schemas/1.24.0"
    scope_metrics.scope.CopyFrom(
        InstrumentationScope(
            name="orders",
            version="2.0",
            attributes=[kv("tenant.id", "acme"), kv("1shard", 7), kv("empty", ""), kv("version", "")],
        )
    )
    [item] = mapped_items(request)
    assert item["labels"] == {
        "job": "api",
        "otel_scope_name": "orders",
        "otel_scope_version": "2.0",  # an empty attribute is no label, and removes none
        "otel_scope_schema_url": "https://opentelemetry.io/schemas/1.24.0",
        "otel_scope_tenant_id": "acme",
        "otel_scope_1shard": "7",  # sanitised whole, as Prometheus: no key_ prefix inside the name
        "tier": "gold",
    }
    # As in Prometheus' translator (since it set them last, "not overwritten by attributes"), attributes
    # keyed like the scope's own fields neither spoof nor remove them (helper-50).
    scope_metrics.scope.attributes.extend([kv("name", "fake"), kv("schema.url", "zz")])
    labels = mapped_items(request)[0]["labels"]
    assert (labels["otel_scope_name"], labels["otel_scope_version"]) == ("orders", "2.0")
    assert labels["otel_scope_schema_url"] == "https://opentelemetry.io/schemas/1.24.0"
    scope_metrics.scope.version = ""
    scope_metrics.scope.attributes.append(kv("version", "9.9"))
    assert "otel_scope_version" not in mapped_items(request)[0]["labels"]
    assert "otel_scope_tenant_id" not in mapped_items(request, OtlpOptions(scope_labels=False))[0]["labels"]

    logs = logs_request(record())
    scope_logs = logs.resource_logs[0].scope_logs[0]
    scope_logs.schema_url = "https://example.com/s"
    scope_logs.scope.attributes.append(kv("team", "core"))
    [event] = [i for p in map_logs(logs, NOW, LIMITS, OtlpOptions()).points for i in p.items]
    assert event["labels"] == {
        "otel_scope_name": "app.logger",
        "otel_scope_schema_url": "https://example.com/s",
        "otel_scope_team": "core",
    }


def test_resource_attributes_can_be_promoted():
    request = metrics_request(
        gauge("up", point(1)),
        resource={"service.name": "api", "deployment.environment": "prod", "host.name": "h"},
    )
    [item] = mapped_items(
        request,
        OtlpOptions(target_info=False, promote_resource_attributes=frozenset({"deployment.environment"})),
    )
    assert item["labels"]["deployment_environment"] == "prod"
    assert "host_name" not in item["labels"]


def test_unmappable_points_are_rejected_or_skipped_with_reasons():
    no_value = NumberDataPoint(time_unix_nano=NOW_NS)
    stale = NumberDataPoint(time_unix_nano=NOW_NS, as_double=1, flags=1)  # NO_RECORDED_VALUE
    request = metrics_request(
        counter("updown", point(1), temporality=DELTA, monotonic=False),
        counter("decreasing", point(-1), temporality=DELTA),
        counter("unspecified", point(1), temporality=0),
        gauge("empty", no_value),
        gauge("stale", stale),
    )
    mapping = map_metrics(request, NOW, LIMITS, OtlpOptions())
    assert mapping.points == []
    assert mapping.skipped == 1
    assert mapping.rejected == 4
    reasons = dict(mapping.reasons)
    assert "non-monotonic sums with delta temporality" in reasons["metric 'updown'"]
    assert "cannot decrease" in reasons["metric 'decreasing' point 0"]
    assert "unspecified" in reasons["metric 'unspecified'"]
    assert reasons["metric 'empty' point 0"] == "data point has no value"


async def test_a_summary_with_nan_quantiles_keeps_its_sum_and_count(
    faked: Collector, redis: Redis, keys: Keys
):
    # A summary over an idle sliding window has NaN quantiles: the whole point was rejected, its real _sum
    # and _count with it.
    idle = [
        SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=math.nan),
        SummaryDataPoint.ValueAtQuantile(quantile=0.9, value=0.25),
        SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=math.inf),
    ]
    summary = Metric(
        name="rpc_latency",
        summary=Summary(
            data_points=[SummaryDataPoint(time_unix_nano=NOW_NS, count=7, sum=1.5, quantile_values=idle)]
        ),
    )
    response = await post_proto(faked, "/v1/metrics", metrics_request(summary))
    assert response.status == 200
    answer = ExportMetricsServiceResponse.FromString(await response.read())
    assert answer.partial_success.rejected_data_points == 0
    assert "summary quantiles without a finite value" in answer.partial_success.error_message
    stored = {
        (item["name"], item["labels"].get("quantile")): item["value"]
        for item in await stream_items(redis, keys.metrics)
        if item["name"] != "target_info"
    }
    assert stored == {
        ("rpc_latency", "0.9"): 0.25,
        ("rpc_latency_sum", None): 1.5,
        ("rpc_latency_count", None): 7.0,
    }
    assert summary_items(summary.summary.data_points[0]) == 3


def test_summary_and_attribute_value_types():
    summary = Metric(
        name="rpc.latency",
        summary=Summary(
            data_points=[
                SummaryDataPoint(
                    time_unix_nano=NOW_NS,
                    count=10,
                    sum=4.5,
                    quantile_values=[
                        SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=0.9),
                        SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.3),
                    ],
                    attributes=[
                        kv("ratio", 1.0),
                        kv("count", 3),
                        KeyValue(
                            key="tags",
                            value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="a")])),
                        ),
                        KeyValue(key="raw", value=AnyValue(bytes_value=b"\x01\x02")),
                    ],
                )
            ]
        ),
    )
    items = mapped_items(metrics_request(summary))
    assert [(i["name"], i["labels"].get("quantile"), i["value"]) for i in items] == [
        ("rpc_latency", "0.5", 0.3),
        ("rpc_latency", "0.99", 0.9),
        ("rpc_latency_sum", None, 4.5),
        ("rpc_latency_count", None, 10.0),
    ]
    assert {k: items[0]["labels"][k] for k in ("ratio", "count", "tags", "raw")} == {
        "ratio": "1",
        "count": "3",
        "tags": '["a"]',
        "raw": "AQI=",
    }


def test_attribute_values_are_written_as_go_pdata_as_string_writes_them():
    # Doubles were written as `le` is (never an exponent) and arrays and maps by orjson (1.0, keys as sent),
    # so a label differed from the one Prometheus stores for the same attribute. Expected: Go's output, as
    # current pdata writes it (marshalJSONNoHTMLEscape: `<`, `>` and `&` as they are).
    def text(**value: Any) -> str:
        return attribute_text(AnyValue(**value))

    def kvlist(**members: AnyValue) -> KeyValueList:
        return KeyValueList(values=[KeyValue(key=k, value=v) for k, v in members.items()])

    assert [text(double_value=v) for v in (1.0, -0.0, 0.5, 1e20, 1e21, 1.5e-7, 1e-6, 5e-324)] == [
        "1",
        "-0",
        "0.5",
        "100000000000000000000",
        "1e+21",
        "1.5e-7",
        "0.000001",
        "5e-324",
    ]
    values = [
        AnyValue(double_value=2.0),
        AnyValue(bytes_value=b"\x01"),
        AnyValue(),
        AnyValue(bool_value=True),
    ]
    assert text(array_value=ArrayValue(values=values)) == '[2,"AQ==",null,true]'
    mixed = kvlist(
        b=AnyValue(int_value=-3), a=AnyValue(string_value='<x>&\u2028\n"'), c=AnyValue(double_value=1e22)
    )
    assert text(kvlist_value=mixed) == '{"a":"<x>&\\u2028\\n\\"","b":-3,"c":1e+22}'
    # Go's json.Marshal refuses NaN: AsString gives "", which is no label.
    assert text(array_value=ArrayValue(values=[AnyValue(double_value=math.nan)])) == ""
    assert text(double_value=math.inf) == "+Inf"


def test_le_and_quantile_values_are_written_as_prometheus_writes_them():
    assert [format_float(v) for v in (1.0, 0.005, 2.5e-7, 1e21, 250.0)] == [
        "1",
        "0.005",
        "0.00000025",
        "1000000000000000000000",
        "250",
    ]


def test_log_levels_and_limits():
    assert [level_of(n, "") for n in (1, 5, 9, 12, 13, 17, 21, 24)] == [
        "trace",
        "debug",
        "info",
        "info",
        "warn",
        "error",
        "fatal",
        "fatal",
    ]
    assert [level_of(0, t) for t in ("WARNING", "Error", "CRITICAL", "notice", "WARN2", "", "whatever")] == [
        "warn",
        "error",
        "fatal",
        "info",
        "warn",
        "info",
        "info",
    ]
    limits = Limits(max_labels=3, max_label_name_length=256, max_label_value_length=10, max_name_length=256)
    request = logs_request(record(a="1", b="2", c="3", d="4", long="x" * 11, service="svc"), service="agent")
    mapping = map_logs(request, NOW, limits, OtlpOptions(scope_labels=False))
    [event] = [item for p in mapping.points for item in p.items]
    # A record is never dropped over its labels: the excess is, with a warning.
    assert event["labels"] == {"a": "1", "b": "2", "c": "3"}
    assert len(mapping.warnings) == 2
    # A clash with the event's own fields is renamed like a target-label clash.
    mapping = map_logs(logs_request(record(service="svc")), NOW, LIMITS, OtlpOptions())
    assert mapping.points[0].items[0]["labels"]["exported_service"] == "svc"


def test_log_attributes_with_a_value_per_record_are_not_labels():
    # What the Python SDK's LoggingHandler and logging instrumentation attach to every record.
    per_record = {
        "code.file.path": "/app/pay.py",
        "code.function.name": "charge",
        "code.line.number": 42,
        "code.lineno": 42,
        "otelTraceID": "5b8aa5a2d2c872e8321cf37308d69df2",
        "otelSpanID": "051581bf3cb55c13",
        "trace_id": "abc",
    }
    request = logs_request(record())
    request.resource_logs[0].scope_logs[0].log_records[0].attributes.extend(
        kv(key, value) for key, value in per_record.items()
    )
    mapping = map_logs(request, NOW, LIMITS, OtlpOptions(scope_labels=False))
    assert mapping.points[0].items[0]["labels"] == {
        "code_file_path": "/app/pay.py",
        "code_function_name": "charge",
    }


async def test_a_small_body_describing_many_items_is_refused_before_it_is_expanded(make_config):
    """200,000 empty log records fit in a few hundred KB: counted on the decoded message, refused with 413
    before any mapping (which would take seconds and gigabytes at scale)."""
    from aiohttp.test_utils import TestClient, TestServer

    from services.collector.app import build

    scope = ScopeLogs(log_records=[LogRecord() for _ in range(200_000)])
    body = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[scope])]).SerializeToString()
    service = build(make_config())
    async with TestClient(TestServer(service.web)) as client:
        response = await client.post(
            "/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
        )
        assert response.status == 413
        assert "request carries 200000 log records" in status_of(await response.read())[0].message
    await service.redis.aclose()
