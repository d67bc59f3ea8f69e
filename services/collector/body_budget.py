"""How many bytes of request bodies the collector holds at once (`collector.max_buffered_bytes`).

A body is held from before it is read until its batch is in Redis or refused. While Redis is slow, requests
wait for a publish slot (or for Redis) with their bodies and parsed items in memory; the publisher bounds the
appends in flight, not the requests waiting, so without this bound enough concurrent senders could make the
collector hold any amount. A request that does not fit is answered 503 with Retry-After before its body is
read: the same answer as Redis being slow, which is what it almost always means.

One budget per collector, shared by the JSON API and OTLP:

    try:
        held = budget.hold(request)
    except Unavailable as exc:
        return unavailable_response(exc)
    with held:
        body = await read_body(request, limit)
        ...
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.collector.publish import Unavailable


class BodyBudget:
    def __init__(
        self, limit: int, max_body: int, retry_after: float, registry: CollectorRegistry | None = None
    ) -> None:
        self.limit = limit
        self.max_body = max_body
        self.retry_after = retry_after
        self.held = 0
        registry = registry if registry is not None else CollectorRegistry()
        Gauge(
            "tripwire_ingest_buffered_bytes",
            "Bytes of request bodies held (read, parsed or waiting on Redis), as reserved before reading.",
            registry=registry,
        ).set_function(lambda: self.held)
        self.refused = Counter(
            "tripwire_ingest_buffer_full",
            "Requests answered 503 because collector.max_buffered_bytes of bodies were already held.",
            registry=registry,
        )

    def size_of(self, request: web.Request) -> int:
        """The most a request's body may take once read: its Content-Length when sent uncompressed (read_body
        refuses more), else the body limit (a compressed body may decode to that much)."""
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        length = request.content_length
        if length is None or encoding not in ("", "identity"):
            return self.max_body
        return min(length, self.max_body)  # a longer one is refused unread

    def hold(self, request: web.Request) -> _Held:
        """Reserve room for the request's body until the returned context exits; raises Unavailable when
        there is none."""
        size = self.size_of(request)
        if self.held + size > self.limit:
            self.refused.inc()
            raise Unavailable(
                "the collector is holding as many request bodies as it may (collector.max_buffered_bytes): "
                "redis is slow or the collector is overloaded; nothing was stored",
                self.retry_after,
            )
        self.held += size
        return _Held(self, size)


class _Held:
    def __init__(self, budget: BodyBudget, size: int) -> None:
        self.budget = budget
        self.size = size

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.budget.held -= self.size
