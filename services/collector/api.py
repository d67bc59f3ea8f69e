"""The collector's HTTP routes: JSON ingest of metric samples and log events.

Cheapest refusals come first: the bearer token, then the per-client rate limit (both before the body is
read), then the body's size, then validation; only a batch valid as a whole is published.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.collector.body_budget import BodyBudget, Held, stored_bytes
from services.collector.ingest import (
    LOGS,
    METRICS,
    Accepted,
    IngestKind,
    IngestLimits,
    Rejected,
    limits_from,
    parse_common,
    parse_items,
)
from services.collector.publish import (
    Published,
    Publisher,
    StoreRefused,
    Unavailable,
    request_id_problem,
    request_identity,
)
from services.collector.rate_limit import rate_limiter_for
from services.collector.validation_pool import ValidationPool
from shared.config import CollectorConfig, ingest_credentials
from shared.service import Service
from shared.streams import Keys
from shared.webapp import (
    BODY_ERROR_TYPES,
    BodyRefused,
    add_body_route,
    error_response,
    json_response,
    read_body,
    require_token,
)

log = logging.getLogger(__name__)

JSON = "application/json"
# A body that takes the item-by-item path is validated in a validation thread past this size (a few ms of
# work at most here, less than handing it over costs).
VALIDATE_INLINE_BYTES = 64 * 1024


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tripwire_ingest_requests",
            "Ingest requests by endpoint and HTTP status.",
            ["endpoint", "code"],
            registry=registry,
        )
        self.items = Counter(
            "tripwire_ingest_items",
            "Items accepted into Redis, by endpoint.",
            ["endpoint"],
            registry=registry,
        )
        self.rejected_items = Counter(
            "tripwire_ingest_rejected_items",
            "Invalid items in rejected requests.",
            ["endpoint"],
            registry=registry,
        )
        self.latency = Histogram(
            "tripwire_ingest_request_duration_seconds",
            "Time to validate and store one request.",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )


def _not_stored(exc: Unavailable | StoreRefused) -> web.Response:
    """503 + Retry-After while Redis may come back; 500 when it refused the batch for good."""
    if isinstance(exc, StoreRefused):
        return error_response(500, "store_refused", str(exc))
    return unavailable_response(exc)


def unavailable_response(exc: Unavailable) -> web.Response:
    return error_response(503, "unavailable", str(exc), headers={"Retry-After": exc.retry_after_header})


def _wrong_type(request: web.Request) -> web.Response | None:
    if request.content_type == JSON:
        return None
    # Not only tidiness: a web page can make a browser POST text/plain, a form or a body without a type to any
    # address it can reach, with no CORS check, but never application/json.
    return error_response(
        415,
        "unsupported_media_type",
        f"Content-Type must be {JSON}, not {request.headers.get('Content-Type', '(none)')!r}",
    )


def _rejected(exc: Rejected) -> web.Response:
    extra = {"errors": [e.to_json() for e in exc.errors]} if exc.errors else {}
    if exc.total_errors > len(exc.errors):
        extra["errors_truncated"] = exc.total_errors - len(exc.errors)
    return error_response(exc.status, "bad_data" if exc.status == 400 else "too_large", exc.message, **extra)


def _accepted(published: Published, count: int | None = None) -> web.Response:
    """The 202 of a stored batch; a replay's counts are those its first request was answered with."""
    if published.answer:
        count = orjson.loads(published.answer)["accepted"]
    return json_response({"status": "success", "accepted": count, "entry": published.entry_id}, 202)


def _hold_items(held: Held, items_json: bytes) -> web.Response | None:
    """Count a parsed request's items in the budget instead of its body; the 503 if they do not fit."""
    try:
        held.swap(stored_bytes(len(items_json)))
    except Unavailable as exc:
        return unavailable_response(exc)
    return None


async def parse_request(
    spec: IngestKind,
    body: bytes,
    now: float,
    collector: CollectorConfig,
    limits: IngestLimits,
    pool: ValidationPool,
) -> Accepted:
    """The body's batch (raises Rejected): the one-pass path on the event loop, which costs under a
    microsecond a sample; the item-by-item path, several times that, in a validation thread for a big body,
    so that a burst of them does not hold the loop (helper-52: Redis replies went unread for seconds, and
    healthy Redis was reported down). Raises Unavailable when no thread came free in time."""
    args = (spec, body, now, collector.max_items, collector.max_age, collector.max_skew)
    accepted = parse_common(*args, limits=limits)
    if accepted is not None:
        return accepted
    if len(body) <= VALIDATE_INLINE_BYTES:
        return parse_items(*args, limits=limits)
    return await pool.run(partial(parse_items, *args, limits=limits))


def add_routes(service: Service, publisher: Publisher, budget: BodyBudget, pool: ValidationPool) -> None:
    config = service.config
    keys = Keys(config.redis.prefix)
    metrics = IngestMetrics(service.registry)
    auth = require_token(ingest_credentials(config), "ingest")
    limiter = rate_limiter_for(service)
    # One instance for the service's lifetime: it caches the names it has seen valid under these limits.
    limits = limits_from(config)

    def endpoint(spec: IngestKind, stream: str, path: str) -> None:
        latency = metrics.latency.labels(path)

        async def ingest(request: web.Request) -> web.Response:
            refused = limiter.check(request)
            if refused is None:
                refused = _wrong_type(request)
            if refused is not None:
                return refused
            problem = request_id_problem(request)
            if problem is not None:
                return error_response(400, "bad_data", problem)
            try:
                held = budget.hold(request, stored_bytes)  # a body counts as what it will be stored as
            except Unavailable as exc:
                return unavailable_response(exc)
            with held:
                return await _ingest(request, spec, stream, held)

        checked = auth(ingest)

        async def handle(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            response = await checked(request)  # 401s counted too, as OTLP counts them
            metrics.requests.labels(path, str(response.status)).inc()
            latency.observe(time.perf_counter() - started)
            return response

        add_body_route(service.web.router, "POST", path, handle)

    async def _ingest(request: web.Request, spec: IngestKind, stream: str, held: Held) -> web.Response:
        collector = config.collector
        try:
            body = await read_body(request, collector.max_body_bytes, collector.body_timeout, held.take_body)
            request_id, once = request_identity(request, body)
            accepted = await parse_request(spec, body, service.clock.now(), collector, limits, pool)
        except BodyRefused as exc:
            return error_response(exc.status, BODY_ERROR_TYPES[exc.status], str(exc))
        except Unavailable as exc:
            # The body budget ran out while the body arrived, or no validation thread came free in time.
            return unavailable_response(exc)
        except Rejected as exc:  # raised by parse_request alone, so `once` is set
            # A retry of a stored request whose timestamps have since aged out of the window: a replay.
            # Refused for anything else, the first attempt was refused the same way and stored nothing.
            stored = await publisher.recall(stream, spec.kind, once) if exc.only_aged_out else None
            # Only a record this API stored: OTLP writes the same stream with another answer's shape.
            if stored is not None and "accepted" in orjson.loads(stored.answer):
                return _accepted(stored)
            metrics.rejected_items.labels(request.path).inc(len({e.index for e in exc.errors}))
            return _rejected(exc)
        if accepted.count == 0:
            return json_response({"status": "success", "accepted": 0}, 202)
        # From here the request holds its items, not its body: the budget counts them (and their envelope).
        del body
        if (refused := _hold_items(held, accepted.items_json)) is not None:
            return refused
        try:
            published = await publisher.publish(
                stream,
                spec.kind,
                accepted.items_json,
                request_id,
                idempotency_key=once,
                answer=orjson.dumps({"accepted": accepted.count}),
            )
        except (Unavailable, StoreRefused) as exc:
            return _not_stored(exc)
        if published.appended:  # a replay's items were counted when they were stored
            metrics.items.labels(request.path).inc(accepted.count)
        return _accepted(published, accepted.count)

    endpoint(METRICS, keys.metrics, "/api/v1/metrics")
    endpoint(LOGS, keys.logs, "/api/v1/logs")
