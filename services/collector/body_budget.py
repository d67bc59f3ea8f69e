"""How many bytes of request data the collector holds at once (`collector.max_buffered_bytes`).

A body is counted as its bytes arrive (decoded). Once it is parsed, what the request holds is what it will
store: its items and, from when their append starts, the stream envelope that copies them (`stored_bytes`);
the body is dropped and the count swapped for that, held until the batch is in Redis or refused. While Redis
is slow, requests wait for a publish slot (or for Redis) with their items in memory; the publisher bounds
the appends in flight, not the requests waiting, so without this bound enough concurrent senders could make
the collector hold any amount. (Counting the body alone, helper-45 measured about 4x the budget in memory:
the body, its items and their envelope were all held while a request waited.)

A request that would pass the budget is answered 503 with Retry-After (at once when its Content-Length says
so, else at the chunk that would pass it): the same answer as Redis being slow, which is what it almost
always means. One whose items alone could never fit is answered 413 (`NeverFits`): a 503 would be retried
for ever.

Bytes are counted as they arrive, not reserved from the headers: a connection that announces a large body
and sends nothing (or a chunked one) holds nothing, so idle connections cannot starve everyone else.

One budget per collector, shared by the JSON API and OTLP:

    try:
        held = budget.hold(request)
    except Unavailable as exc:
        return unavailable_response(exc)
    with held:
        body = await read_body(request, limit, take=held.take)  # may raise Unavailable
        ...
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.collector.publish import Unavailable


def stored_bytes(items: int) -> int:
    """What a batch of `items` bytes of encoded items holds until it is in Redis: the items, and their stream
    envelope (a copy of them, made when the append starts)."""
    return 2 * items


class NeverFits(Exception):
    """A request would hold more than the whole budget: it can only ever be refused."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the request's items, once encoded, would hold {size} bytes (with their stream envelope), more "
            f"than the collector holds at once ({limit}, collector.max_buffered_bytes): send smaller batches"
        )


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
            "Bytes of request bodies held (read, parsed or waiting on Redis), counted as they arrive.",
            registry=registry,
        ).set_function(lambda: self.held)
        self.refused = Counter(
            "tripwire_ingest_buffer_full",
            "Requests answered 503 because collector.max_buffered_bytes of bodies were already held.",
            registry=registry,
        )

    def hold(self, request: web.Request) -> Held:
        """A hold for the request's body, released when the returned context exits. Raises Unavailable at
        once when an uncompressed body's Content-Length will not fit (a longer one than the body limit is
        left for read_body to refuse with 413)."""
        length = request.content_length
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if length is not None and length <= self.max_body and encoding in ("", "identity"):
            self._check(length)
        return Held(self)

    def _check(self, size: int) -> None:
        if self.held + size > self.limit:
            self.refused.inc()
            raise Unavailable(
                "the collector is holding as many request bodies as it may (collector.max_buffered_bytes): "
                "redis is slow or the collector is overloaded; nothing was stored",
                self.retry_after,
            )


class Held:
    """The bytes one request's body holds of its budget."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        """Count `size` more bytes in, or raise Unavailable when they would pass the budget."""
        self.budget._check(size)
        self.budget.held += size
        self.size += size

    def swap(self, size: int) -> None:
        """Count `size` bytes instead of what is counted now (a parsed body is dropped for its items). Raises
        NeverFits when `size` is more than the whole budget, and Unavailable when growing would pass what
        is left of it; either way the count is unchanged."""
        if size > self.budget.limit:
            raise NeverFits(size, self.budget.limit)
        if size > self.size:
            self.take(size - self.size)
        else:
            self.budget.held -= self.size - size
            self.size = size

    def __enter__(self) -> Held:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.budget.held -= self.size
        self.size = 0
