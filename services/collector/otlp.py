"""The collector's OTLP/HTTP receiver: `POST /v1/metrics` and `POST /v1/logs`, protobuf or JSON.

Protocol (https://opentelemetry.io/docs/specs/otlp/#otlphttp): the body is an Export*ServiceRequest in binary
protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`), optionally gzip-compressed; the answer
uses the request's encoding. 200 carries an Export*ServiceResponse, with `partial_success` set when some
points were rejected (or, with 0 rejected, as a warning); failures carry a `google.rpc.Status`: 400 bad data
(nothing usable), 401, 413 too large, 415 unknown Content-Type, 503 + Retry-After when Redis cannot take the
batch (OTLP clients retry 503 only).

Unlike the JSON API, which refuses a request with any invalid item, OTLP semantics apply: invalid points are
dropped and reported, the rest is stored. Mapping to items: `otlp_metrics` and `otlp_logs`. Validation is
the JSON API's (`validate_items`), and an accepted request is one batch on its stream (one XADD), or, past
collector.max_items items, several batches of whole points appended together in one round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.collector.body_budget import BodyBudget, Held, stored_bytes
from services.collector.ingest import (
    LOGS,
    METRICS,
    Accepted,
    IngestKind,
    IngestLimits,
    ItemError,
    Rejected,
    limits_from,
    validate_items,
)
from services.collector.otlp_logs import map_logs
from services.collector.otlp_metrics import (
    LISTED_REASONS,
    LabelSetCache,
    MappedPoint,
    Mapping,
    OtlpOptions,
    histogram_items,
    map_metrics,
    summary_items,
)
from services.collector.otlp_wire import RawAttributesRequest
from services.collector.publish import (
    Published,
    Publisher,
    StoreRefused,
    Unavailable,
    request_id_problem,
    request_identity,
)
from services.collector.rate_limit import rate_limiter_for
from services.collector.validation_pool import ValidationPool, validation_pool_for
from shared.config import CollectorConfig, ingest_credentials
from shared.service import Service
from shared.streams import Keys
from shared.webapp import (
    CLIENT,
    BodyRefused,
    BodyTimeout,
    add_body_route,
    error_response,
    read_body,
    token_client,
    unmatched_reason,
)

__all__ = ["OtlpOptions", "add_otlp_routes"]

log = logging.getLogger(__name__)

METRICS_PATH, LOGS_PATH = "/v1/metrics", "/v1/logs"
PROTOBUF = "protobuf"
JSON = "json"
_CONTENT_TYPES = {
    "application/x-protobuf": PROTOBUF,
    "application/protobuf": PROTOBUF,  # the registered name; some clients send it
    "application/json": JSON,
}
_RESPONSE_TYPES = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}
# Reasons spelled out in a message; a 400's BadRequest detail lists up to LISTED_REASONS.
SUMMARISED_REASONS = 10
# Longest partial_success message in UTF-8 bytes: it is kept with the request's X-Request-Id for
# request_id_ttl.
MAX_MESSAGE = 4096
# Items estimated at no more than this (or 1/256 of collector.max_buffered_bytes) are encoded before their
# bytes are taken from the body budget: one trip to a worker thread instead of two, for 1 MiB at most at
# the default budget (32 worker threads at once: 12% past it).
ENCODE_AT_ONCE = 4 * 1024 * 1024

# google.rpc.Code values for Status.code (informational: OTLP clients go by the HTTP status).
INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED = 3, 5, 8
UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 12, 13, 14, 16
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
# The google.rpc.Code of each status read_body refuses a body with.
_BODY_CODES = {400: INVALID_ARGUMENT, 413: RESOURCE_EXHAUSTED, 415: UNIMPLEMENTED}


class OtlpMetrics:
    """Self-metrics of the receiver, in the service registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tripwire_otlp_requests",
            "OTLP/HTTP requests by signal, encoding and HTTP status.",
            ["signal", "encoding", "code"],
            registry=registry,
        )
        self.points = Counter(
            "tripwire_otlp_points",
            "OTLP data points and log records by outcome: accepted (stored), rejected (dropped and "
            "reported), skipped (flagged as having no recorded value), replayed (a retry of a stored "
            "request, same X-Request-Id and body: not stored again).",
            ["signal", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "tripwire_otlp_request_duration_seconds",
            "Time to decode, map, validate and store one OTLP request.",
            ["signal"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class _Signal:
    name: str
    path: str
    spec: IngestKind
    stream: str
    noun: str
    request_type: type[ProtoMessage]
    mapper: Callable[[Any, float, IngestLimits, OtlpOptions], Mapping]
    response: Callable[[int, str], ProtoMessage]
    # What the mapper reads a protobuf body as, once request_type has accepted it and it is not too big:
    # request_type, or a wire-compatible type that maps faster.
    protobuf_type: type[ProtoMessage]


def _metrics_response(rejected: int, message: str) -> ProtoMessage:
    if not rejected and not message:
        return ExportMetricsServiceResponse()
    return ExportMetricsServiceResponse(
        partial_success=ExportMetricsPartialSuccess(rejected_data_points=rejected, error_message=message)
    )


def _logs_response(rejected: int, message: str) -> ProtoMessage:
    if not rejected and not message:
        return ExportLogsServiceResponse()
    return ExportLogsServiceResponse(
        partial_success=ExportLogsPartialSuccess(rejected_log_records=rejected, error_message=message)
    )


class _Refused(Exception):
    """The request is answered with an OTLP failure (a Status body)."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        violations: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.violations = violations or []
        self.headers = headers


def add_otlp_routes(
    service: Service,
    publisher: Publisher,
    options: OtlpOptions | None = None,
    budget: BodyBudget | None = None,
    pool: ValidationPool | None = None,
) -> None:
    """Register `POST /v1/metrics` and `POST /v1/logs` on the service: same bearer token as the JSON ingest
    (`ingest_token`), same body limit and per-request limits (`collector.*`), same Publisher and (given the
    JSON API's) the same budget of bodies held."""
    config = service.config.collector
    if budget is None:
        budget = BodyBudget(config.max_buffered_bytes, config.max_body_bytes, config.retry_after)
    if options is None:
        options = OtlpOptions(metric_suffixes=config.otlp_metric_suffixes)
    if pool is None:
        pool = validation_pool_for(service)
    receiver = _Receiver(service, publisher, options, budget, pool)
    keys = Keys(service.config.redis.prefix)
    signals = (
        _Signal(
            "metrics",
            METRICS_PATH,
            METRICS,
            keys.metrics,
            "data points",
            ExportMetricsServiceRequest,
            # One cache per receiver: an SDK's attribute sets are mapped once, not on every export.
            partial(map_metrics, cache=LabelSetCache()),
            _metrics_response,
            RawAttributesRequest,
        ),
        _Signal(
            "logs",
            LOGS_PATH,
            LOGS,
            keys.logs,
            "log records",
            ExportLogsServiceRequest,
            map_logs,
            _logs_response,
            ExportLogsServiceRequest,
        ),
    )
    for signal in signals:
        add_body_route(service.web.router, "POST", signal.path, receiver.handler(signal))
    # Tried after the routes above (a path's own resource first): the rest of OTLP's paths.
    service.web.router.add_route("*", "/v1/{rest:.*}", partial(_unmatched, {s.path for s in signals}))


async def _unmatched(paths: set[str], request: web.Request) -> web.Response:
    """A request under /v1/ that no OTLP route takes, answered as a Status in its encoding, as OTLP wants
    of every failure: an exporter of a signal tripwire does not take (traces, profiles) then logs why. A
    request in neither encoding (a browser, curl) gets the API's JSON error shape."""
    allowed = "POST" if request.path in paths else None
    error_type, message, headers = unmatched_reason(request, allowed)
    status = 404 if allowed is None else 405
    encoding = _CONTENT_TYPES.get(request.content_type)
    if encoding is None:
        return error_response(status, error_type, message, headers)
    if allowed is None:
        message += f"; tripwire takes OTLP metrics ({METRICS_PATH}) and logs ({LOGS_PATH})"
    refused = _Refused(status, NOT_FOUND if allowed is None else UNIMPLEMENTED, message, headers=headers)
    response = _status_response(refused, encoding)
    response.content_type = request.content_type
    return response


class _Receiver:
    def __init__(
        self,
        service: Service,
        publisher: Publisher,
        options: OtlpOptions,
        budget: BodyBudget,
        pool: ValidationPool,
    ) -> None:
        self.service = service
        self.pool = pool
        self.publisher = publisher
        self.budget = budget
        self.options = options
        self.config: CollectorConfig = service.config.collector
        self.limits = limits_from(self.config)  # one object per config: the fast path relies on it
        self.rate_limiter = rate_limiter_for(service)  # shared with the JSON API: one budget per client
        self.metrics = OtlpMetrics(service.registry)
        self.tokens = ingest_credentials(service.config)

    def _map(self, body: bytes, encoding: str, signal: _Signal, now: float) -> Mapping:
        """Decode and map one request, refusing it past the limits (runs in a worker thread)."""
        message = _decode(body, encoding, signal)
        points, samples = _size_of(message, signal.name)
        # OTLP exporters batch by data point or log record (max_export_batch_size), a histogram point being
        # one: max_items counts those. What a request expands to is bounded too, as a small body can describe
        # millions of items (empty log records, histograms with huge bucket lists).
        if points > self.config.max_items:
            raise _Refused(
                413,
                RESOURCE_EXHAUSTED,
                f"request carries {points} {signal.noun}; the limit is {self.config.max_items} per request "
                "(collector.max_items): send smaller batches (the exporter's max_export_batch_size)",
            )
        max_samples = self._max_samples(signal)
        if samples > max_samples:
            raise _Refused(
                413,
                RESOURCE_EXHAUSTED,
                f"request maps to {samples} {signal.spec.noun} or more (a histogram point is one per bucket "
                f"plus _sum and _count); the limit is {max_samples} per request "
                "(collector.otlp_max_samples): send smaller batches (the exporter's max_export_batch_size)",
            )
        if encoding == PROTOBUF and signal.protobuf_type is not signal.request_type:
            # Read again, now that the real schema has accepted it and it is not too big, through the type
            # the mapper reads faster; one tree at a time, so a request's peak memory stays as it was.
            del message
            message = signal.protobuf_type.FromString(body)
        mapping = signal.mapper(message, now, self.limits, self.options)
        if mapping.stored > self.config.otlp_max_stored_bytes:
            raise _Refused(
                413,
                RESOURCE_EXHAUSTED,
                f"request would be stored as about {mapping.stored} bytes (its points' attributes are stored "
                "on each of their samples and log records); the limit is "
                f"{self.config.otlp_max_stored_bytes} (collector.otlp_max_stored_bytes): send smaller "
                "batches or fewer, shorter attributes",
            )
        total = sum(len(point.items) for point in mapping.points)
        if total > max_samples:
            raise _Refused(
                413,
                RESOURCE_EXHAUSTED,
                f"request maps to {total} {signal.spec.noun}; the limit is {max_samples} per request "
                "(collector.otlp_max_samples): send smaller batches",
            )
        return mapping

    def _map_small(
        self, body: bytes, encoding: str, signal: _Signal, now: float, at_once: int
    ) -> tuple[Mapping, _Outcome | None]:
        """`_map`, and `_encode` too when the items are estimated at no more than `at_once` bytes."""
        mapping = self._map(body, encoding, signal, now)
        return mapping, self._encode(mapping, signal, now) if mapping.stored <= at_once else None

    def _encode(self, mapping: Mapping, signal: _Signal, now: float) -> _Outcome:
        """Validate and encode the mapped items (runs in a worker thread)."""
        outcome = _validate(signal.spec, mapping, now, self.config, self.limits, self._max_samples(signal))
        outcome.skipped = mapping.skipped
        return outcome

    def _hold_stored(self, stored: int, held: Held) -> None:
        """Count the request's items (`stored` bytes, encoded or about to be) and their envelope in the body
        budget until they are in Redis: unlike a JSON API body, an OTLP body can stand for many times its
        size, and requests waiting on a slow Redis hold them. Taken before encoding, beside the body still
        held, so the budget bounds what is allocated: 503 when they do not fit now. Items and envelope
        bigger than the whole budget are 413: unlike a body, bounded by max_body_bytes, they are bounded
        only by collector.otlp_max_stored_bytes, which a config may set past half the budget (helper-50: a
        2 MB body held 14x a 16 MiB budget). A body with items that fit is taken alone if need be."""
        if stored_bytes(stored) > self.budget.limit:
            raise _Refused(
                413,
                RESOURCE_EXHAUSTED,
                f"request's samples would be stored as about {stored} bytes, held twice until stored (with "
                f"their envelope): more than the collector holds at once ({self.budget.limit}, "
                "collector.max_buffered_bytes): send smaller batches",
            )
        try:
            held.take(stored_bytes(stored))
        except Unavailable as exc:
            raise _unavailable(exc) from None

    def _max_samples(self, signal: _Signal) -> int:
        """The most items one request of this signal may map to: a log record is one item, so max_items."""
        return self.config.max_items if signal.name == "logs" else self.config.otlp_max_samples

    def handler(self, signal: _Signal) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            started = time.perf_counter()
            encoding = _CONTENT_TYPES.get(request.content_type)
            try:
                response = await self._export(request, signal, encoding)
            except _Refused as refused:
                response = _status_response(refused, encoding or JSON)
            if encoding is not None:
                # "The server MUST use the same Content-Type in the response as it received in the request":
                # application/protobuf is answered as such, not as x-protobuf.
                response.content_type = request.content_type
            self.metrics.requests.labels(signal.name, encoding or "unsupported", str(response.status)).inc()
            self.metrics.latency.labels(signal.name).observe(time.perf_counter() - started)
            return response

        return handle

    async def _export(self, request: web.Request, signal: _Signal, encoding: str | None) -> web.Response:
        # The JSON ingest's token, checked here rather than with shared.webapp.require_token so that the 401
        # is an OTLP Status in the request's encoding. Constant-time: the token must not leak through timing.
        client = token_client(request.headers.get("Authorization", ""), self.tokens) if self.tokens else None
        if self.tokens and client is None:
            raise _Refused(
                401,
                UNAUTHENTICATED,
                "a valid bearer token is required for the ingest API",
                headers={"WWW-Authenticate": 'Bearer realm="ingest"'},
            )
        if client is not None:
            request[CLIENT] = client  # the rate limiter's key
        limited = self.rate_limiter.check(request)  # before the body is read: cheap to refuse
        if limited is not None:
            raise _Refused(
                429,
                RESOURCE_EXHAUSTED,
                "too many requests for this ingest token or client (collector.rate_limit)",
                headers={"Retry-After": limited.headers["Retry-After"]},
            )
        if encoding is None:
            raise _Refused(
                415,
                UNIMPLEMENTED,
                f"unsupported Content-Type {request.content_type!r}: OTLP/HTTP takes application/x-protobuf "
                "or application/json",
            )
        problem = request_id_problem(request)
        if problem is not None:
            raise _Refused(400, INVALID_ARGUMENT, problem)
        try:
            held = self.budget.hold(request)
        except Unavailable as exc:
            raise _unavailable(exc) from None
        with held:
            return await self._export_body(request, signal, encoding, held)

    async def _export_body(
        self, request: web.Request, signal: _Signal, encoding: str, held: Held
    ) -> web.Response:
        try:
            body = await read_body(
                request, self.config.max_body_bytes, self.config.body_timeout, held.take_body
            )
        except BodyTimeout as exc:
            # OTLP exporters retry 429, 502, 503 and 504 only: a 408 would drop the export for a slow link.
            raise _unavailable(Unavailable(str(exc), self.config.retry_after)) from None
        except BodyRefused as exc:
            raise _Refused(exc.status, _BODY_CODES[exc.status], str(exc)) from None
        except Unavailable as exc:  # the body budget ran out while it arrived
            raise _unavailable(exc) from None
        request_id, once = request_identity(request, body)
        now = self.service.clock.now()
        # Decoding, mapping and validating a 5 MB request is CPU work of seconds: in a validation thread, so
        # other requests and health checks are answered meanwhile. The thread is held from decoding to
        # encoding: a decoded request and its mapping, several times its body, are alive in at most
        # collector.validation_threads requests at once; the rest wait with their bodies (counted), or are
        # refused once they waited collector.validation_wait.
        # The estimate (never below the encoded size) is taken from the budget before a big request is
        # encoded; a small one is encoded in the same step, which costs less than a second.
        at_once = min(ENCODE_AT_ONCE, self.budget.limit // 256)
        try:
            async with self.pool.slot() as slot:
                mapping, outcome = await slot.run(self._map_small, body, encoding, signal, now, at_once)
                self._hold_stored(mapping.stored, held)
                if outcome is None:
                    outcome = await slot.run(self._encode, mapping, signal, now)
                # From here the request holds its items (and, once appended, their envelope), not its body.
                del mapping, body
        except Unavailable as exc:  # every validation thread busy, or the collector stopping
            raise _unavailable(exc) from None
        accepted = outcome.accepted
        try:  # a shrink: the estimate taken above is never below the encoded size
            held.swap(stored_bytes(len(accepted.items_json) + sum(map(len, accepted.rest))))
        except Unavailable as exc:
            raise _unavailable(exc) from None
        points = self.metrics.points
        message = _partial_message(outcome, signal.noun)
        answer = {"points": outcome.points, "rejected": outcome.rejected, "message": message}
        if outcome.points == 0 and outcome.rejected:
            # A retry of a stored request whose points have since aged out of the window is a replay,
            # answered as its first attempt was. (One with some points left is found so by publish.) With
            # no point too old, the first attempt was refused as this one is, and stored nothing.
            stored = await self.publisher.recall(
                signal.stream, signal.spec.kind, once if outcome.aged_out else None
            )
            if stored is not None:
                return self._replayed(stored, answer, signal, encoding)
            points.labels(signal.name, "rejected").inc(outcome.rejected)
            raise _Refused(
                400,
                INVALID_ARGUMENT,
                f"all {outcome.rejected} {signal.noun} were rejected: "
                + _summary(outcome.reasons, outcome.rejected),
                violations=outcome.reasons,
            )
        if outcome.accepted.count:
            try:
                published = await self.publisher.publish(
                    signal.stream,
                    signal.spec.kind,
                    outcome.accepted.items_json,
                    request_id,
                    idempotency_key=once,
                    answer=orjson.dumps(answer),
                    more=outcome.accepted.rest,
                )
            except Unavailable as exc:
                raise _unavailable(exc) from None
            except StoreRefused as exc:
                raise _Refused(500, INTERNAL, str(exc)) from None
            if not published.appended:  # a retry of a stored request: its points were counted then
                return self._replayed(published, answer, signal, encoding)
        if outcome.rejected:
            log.debug(
                "otlp points rejected",
                extra={"signal": signal.name, "rejected": outcome.rejected, "accepted": outcome.points},
            )
        # Counted once the answer is final: a 503 is retried, and its points would count twice.
        points.labels(signal.name, "accepted").inc(outcome.points)
        points.labels(signal.name, "rejected").inc(outcome.rejected)
        points.labels(signal.name, "skipped").inc(outcome.skipped)
        return _message_response(signal.response(outcome.rejected, message), encoding)

    def _replayed(
        self, published: Published, this_attempt: dict[str, Any], signal: _Signal, encoding: str
    ) -> web.Response:
        """A replay's answer: the one its first attempt was given, kept with the entry it stored (this
        attempt's for a record from before answers were kept)."""
        first = orjson.loads(published.answer) if published.answer else this_attempt
        self.metrics.points.labels(signal.name, "replayed").inc(first["points"])
        return _message_response(signal.response(first["rejected"], first["message"]), encoding)


# Decoding ---------------------------------------------------------------------------------------------------
def _decode(body: bytes, encoding: str, signal: _Signal) -> Any:
    message = signal.request_type()
    what = f"{signal.request_type.__name__} ({'protobuf' if encoding == PROTOBUF else 'OTLP/JSON'})"
    try:
        if encoding == PROTOBUF:
            # The real schema judges the body, as it always did (same errors, same limits), even when the
            # mapping then reads it through a faster wire-compatible type (`_process`): that one checks less.
            message.ParseFromString(body)
        else:
            document = orjson.loads(body)
            if not isinstance(document, dict):
                raise ValueError(f"expected a JSON object, got {type(document).__name__}")
            _drop_trace_ids(document)
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise _Refused(400, INVALID_ARGUMENT, f"request body is not a valid {what}: {exc}") from None
    return message


_ID_KEYS = ("traceId", "spanId", "trace_id", "span_id")


def _drop_trace_ids(document: dict[str, Any]) -> None:
    """OTLP/JSON writes trace and span ids in hex where proto3 JSON expects base64; we map neither, so they
    are removed before parsing instead of being mis-decoded (or refused) as base64."""

    def each(container: Any, key: str) -> list[Any]:
        value = container.get(key) if isinstance(container, dict) else None
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    def strip(record: dict[str, Any]) -> None:
        for key in _ID_KEYS:
            record.pop(key, None)

    for resource in each(document, "resourceLogs") + each(document, "resource_logs"):
        for scope in each(resource, "scopeLogs") + each(resource, "scope_logs"):
            for record in each(scope, "logRecords") + each(scope, "log_records"):
                strip(record)
    for resource in each(document, "resourceMetrics") + each(document, "resource_metrics"):
        for scope in each(resource, "scopeMetrics") + each(resource, "scope_metrics"):
            for metric in each(scope, "metrics"):
                for kind in ("sum", "gauge", "histogram", "exponentialHistogram", "exponential_histogram"):
                    data = metric.get(kind)
                    for point in each(data, "dataPoints") + each(data, "data_points"):
                        for exemplar in each(point, "exemplars"):
                            strip(exemplar)


# Validation -------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Outcome:
    accepted: Accepted  # the items of the points kept, ready for the stream
    points: int  # the sender's points stored
    rejected: int
    reasons: list[tuple[str, str]]  # (which point, why), the first LISTED_REASONS
    warnings: dict[str, int]
    skipped: int = 0  # points with no recorded value: neither stored nor rejected
    aged_out: bool = False  # some point was rejected for a timestamp older than collector.max_age


def _size_of(message: ProtoMessage, signal_name: str) -> tuple[int, int]:
    """A request's data points (or log records), and how many stream items they will map to at least,
    counted on the decoded message before any mapping."""
    if signal_name == "logs":
        records = 0
        for resource in message.resource_logs:  # type: ignore[attr-defined]
            records += sum(len(scope.log_records) for scope in resource.scope_logs)
        return records, records
    points = samples = 0
    for resource in message.resource_metrics:  # type: ignore[attr-defined]
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data_points = getattr(metric, kind).data_points
                points += len(data_points)
                if kind == "histogram":
                    samples += sum(histogram_items(p) for p in data_points)
                elif kind == "summary":
                    samples += sum(summary_items(p) for p in data_points)
                else:
                    samples += len(data_points)
    return points, samples


def _validate(
    spec: IngestKind,
    mapping: Mapping,
    now: float,
    config: CollectorConfig,
    limits: IngestLimits,
    max_samples: int,
) -> _Outcome:
    """Validate the mapped items as the JSON API does, but drop the points of invalid items (each point
    whole) and keep the rest. validate_items reports every bad item of a pass: drop their points and
    validate again, which the rest passes (each pass removes at least one point, so this ends).

    The items are validated, and stored, in batches of whole points of at most collector.max_items items
    (a bigger point alone), each its own stream entry: a request may expand to otlp_max_samples items, and
    an entry stays the size a JSON API request makes, for whoever reads the stream."""
    rejected, reasons = mapping.rejected, list(mapping.reasons)
    warnings = dict(mapping.warnings)
    alive = mapping.points
    aged_out = False
    while True:
        alive = _without_orphans(alive)
        bad: dict[int, str] = {}
        batches: list[bytes] = []
        count = 0
        for first, last in _batches(alive, config.max_items):
            items: list[dict[str, Any]] = []
            owners: list[int] = []
            for index in range(first, last):
                items.extend(alive[index].items)
                owners.extend([index] * len(alive[index].items))
            try:
                accepted = validate_items(
                    spec,
                    items,
                    now,
                    max_samples,
                    config.max_age,
                    config.max_skew,
                    limits=limits,
                    listed=len(items),  # all of them: listed 1,000 at a time, 10,000 points took minutes
                )
            except Rejected as exc:
                if exc.status != 400 or not exc.errors or any(e.index is None for e in exc.errors):
                    raise _Refused(exc.status, INVALID_ARGUMENT, exc.message) from None
                for error in exc.errors:
                    bad.setdefault(owners[error.index], _reason(error))
                    aged_out = aged_out or (error.aged_out and alive[owners[error.index]].counted)
                continue
            if accepted.count:
                batches.append(accepted.items_json)
                count += accepted.count
        if bad:
            for index, reason in sorted(bad.items()):
                point = alive[index]
                if not point.counted:
                    warnings[f"{point.where} dropped: {reason}"] = 1
                    continue
                rejected += 1
                if len(reasons) < LISTED_REASONS:
                    reasons.append((point.where, reason))
            alive = [point for index, point in enumerate(alive) if index not in bad]
            continue
        return _Outcome(
            accepted=Accepted(batches[0], count, tuple(batches[1:])) if batches else Accepted(b"[]", 0),
            points=sum(1 for point in alive if point.counted),
            rejected=rejected,
            reasons=reasons,
            warnings=warnings,
            aged_out=aged_out,
        )


def _batches(points: list[MappedPoint], size: int) -> list[tuple[int, int]]:
    """`points` cut into runs (first, end) of whole points holding at most `size` items each (a point with
    more on its own): a histogram's buckets never land in two stream entries."""
    runs: list[tuple[int, int]] = []
    first = held = 0
    for index, point in enumerate(points):
        if held and held + len(point.items) > size:
            runs.append((first, index))
            first, held = index, 0
        held += len(point.items)
    if first < len(points):
        runs.append((first, len(points)))
    return runs


def _reason(error: ItemError) -> str:
    # "timestamp is 7200s in the past" names its field already; "Input should be ..." does not.
    if not error.field or error.reason.startswith(error.field.split(".")[0]):
        return error.reason
    return f"{error.field}: {error.reason}"


def _without_orphans(points: list[MappedPoint]) -> list[MappedPoint]:
    """Synthesised points (target_info) only while their resource still has points of its own."""
    live = {point.resource for point in points if point.counted}
    if all(point.counted or point.resource in live for point in points):
        return points
    return [point for point in points if point.counted or point.resource in live]


def _summary(reasons: list[tuple[str, str]], count: int) -> str:
    """The first reasons in a sentence: `metric 'x' point 2: why; ... (and N more)`."""
    shown = reasons[:SUMMARISED_REASONS]
    text = "; ".join(f"{where}: {why}" for where, why in shown)
    if count > len(shown):
        text += f" (and {count - len(shown)} more)"
    return text


def _partial_message(outcome: _Outcome, noun: str) -> str:
    """partial_success.error_message: the rejected `noun` (data points, log records) and why, then the
    warnings, each list cut short with a count."""
    parts = []
    if outcome.rejected:
        total = outcome.rejected + outcome.points
        summary = _summary(outcome.reasons, outcome.rejected)
        parts.append(f"{outcome.rejected} of {total} {noun} rejected: {summary}")
    # A warning per resource can come 10,000 times: the first ones, then a count, as for the reasons.
    warnings = list(outcome.warnings.items())
    for warning, count in warnings[:SUMMARISED_REASONS]:
        parts.append(f"warning: {warning}" + (f" ({count}x)" if count > 1 else ""))
    if len(warnings) > SUMMARISED_REASONS:
        parts.append(f"and {len(warnings) - SUMMARISED_REASONS} more warnings")
    message = ". ".join(parts)
    encoded = message.encode()
    if len(encoded) <= MAX_MESSAGE:
        return message
    # Cut in bytes, what the record in Redis holds, not in characters (an emoji is four).
    return encoded[: MAX_MESSAGE - 3].decode(errors="ignore") + "..."


# Responses --------------------------------------------------------------------------------------------------
def _unavailable(exc: Unavailable) -> _Refused:
    return _Refused(503, UNAVAILABLE, str(exc), headers={"Retry-After": exc.retry_after_header})


def _message_response(message: ProtoMessage, encoding: str, status: int = 200) -> web.Response:
    if encoding == JSON:
        # OTLP/JSON: lowerCamelCase keys, int64 as decimal strings (proto3 JSON mapping), {} when empty.
        body = orjson.dumps(json_format.MessageToDict(message))
    else:
        body = message.SerializeToString()
    return web.Response(body=body, status=status, headers={"Content-Type": _RESPONSE_TYPES[encoding]})


def _status_response(refused: _Refused, encoding: str) -> web.Response:
    """A google.rpc.Status (with a google.rpc.BadRequest detail listing rejected points, if any). Encoded by
    hand: the runtime depends on opentelemetry-proto only, which does not ship the google.rpc types."""
    violations = refused.violations
    if encoding == JSON:
        document: dict[str, Any] = {"code": refused.code, "message": refused.message}
        if violations:
            document["details"] = [
                {
                    "@type": _BAD_REQUEST_TYPE,
                    "fieldViolations": [{"field": f, "description": d} for f, d in violations],
                }
            ]
        body = orjson.dumps(document)
    else:
        body = _field_varint(1, refused.code) + _field_bytes(2, refused.message.encode())
        if violations:
            bad_request = b"".join(
                _field_bytes(1, _field_bytes(1, f.encode()) + _field_bytes(2, d.encode()))
                for f, d in violations
            )
            body += _field_bytes(
                3, _field_bytes(1, _BAD_REQUEST_TYPE.encode()) + _field_bytes(2, bad_request)
            )
    headers = {"Content-Type": _RESPONSE_TYPES[encoding], **(refused.headers or {})}
    return web.Response(body=body, status=refused.status, headers=headers)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value
