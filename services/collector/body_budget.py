"""How many bytes of request data the collector holds at once (`collector.max_buffered_bytes`).

A body is counted as its bytes arrive (decoded): a JSON API body at what it will be stored as, its items and,
from when their append starts, the stream envelope that copies them (`stored_bytes`, twice the bytes); an
OTLP body as it is, its items from an estimate once mapped. Once parsed, the body is dropped and the count
swapped for its encoded items' `stored_bytes`, held until the batch is in Redis or refused. Reserving at
arrival makes that swap a small correction: admitted at its body's size, a JSON request grew 2.4x after
parsing and was refused then, its upload and parse wasted (helper-49: a third less data through). While Redis
is slow, requests wait for a publish slot (or for Redis) with their items in memory; the publisher bounds
the appends in flight, not the requests waiting, so without this bound enough concurrent senders could make
the collector hold any amount. (Counting the body alone, helper-45 measured about 4x the budget in memory:
the body, its items and their envelope were all held while a request waited.)

A request that would pass the budget is answered 503 with Retry-After (at once when its Content-Length says
so, else at the chunk that would pass it): the same answer as Redis being slow, which is what it almost
always means. A request bigger than the whole budget is taken while it is the only one holding any: a 503
would otherwise be retried for ever for a body within max_body_bytes. So memory may pass the budget by one
such request: its items and envelope, up to about 7x a body of the smallest samples (helper-50: a 5 MiB
body held 38 MB), more while it is parsed. OTLP requests are bounded by the budget itself (see
otlp._hold_stored).

Bytes are counted as they arrive, not reserved from the headers: a connection that announces a large body
and sends nothing (or a chunked one) holds nothing, so idle connections cannot starve everyone else.

One budget per collector, shared by the JSON API and OTLP:

    try:
        held = budget.hold(request)
    except Unavailable as exc:
        return unavailable_response(exc)
    with held:
        body = await read_body(request, limit, take=held.take_body)  # may raise Unavailable
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.collector.publish import Unavailable


def stored_bytes(items: int) -> int:
    """What a batch of `items` bytes of encoded items holds until it is in Redis: the items, and their stream
    envelope (a copy of them, made when the append starts)."""
    return 2 * items


def _as_is(size: int) -> int:
    return size


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
            "Bytes of request data held (bodies as they arrive, then the items they are stored as).",
            registry=registry,
        ).set_function(lambda: self.held)
        self.refused = Counter(
            "tripwire_ingest_buffer_full",
            "Requests answered 503 because collector.max_buffered_bytes of request data were already held.",
            registry=registry,
        )

    def hold(self, request: web.Request, reserve: Callable[[int], int] = _as_is) -> Held:
        """A hold for the request, released when the returned context exits; its body's bytes count as
        `reserve` says (the JSON API: what they will be stored as). Raises Unavailable at once when an
        uncompressed body's Content-Length will not fit (a longer one than the body limit is left for
        read_body to refuse with 413)."""
        length = request.content_length
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if length is not None and length <= self.max_body and encoding in ("", "identity"):
            self._check(reserve(length), 0)
        return Held(self, reserve)

    def _check(self, size: int, mine: int) -> None:
        """Refuse `size` more bytes for a request holding `mine` if they would pass the limit, unless that
        request holds everything held: one bigger than the whole budget (items can be several times their
        body) is then taken while it is alone, so no body within max_body_bytes is refused for good."""
        if self.held + size > self.limit and self.held > mine:
            self.refused.inc()
            raise Unavailable(
                "the collector is holding as much request data as it may (collector.max_buffered_bytes): "
                "redis is slow or the collector is overloaded; nothing was stored",
                self.retry_after,
            )


class Held:
    """The bytes one request holds of its budget."""

    def __init__(self, budget: BodyBudget, reserve: Callable[[int], int] = _as_is) -> None:
        self.budget = budget
        self.reserve = reserve
        self.size = 0

    def take(self, size: int) -> None:
        """Count `size` more bytes in, or raise Unavailable when they would pass the budget."""
        self.budget._check(size, self.size)
        self.budget.held += size
        self.size += size

    def take_body(self, size: int) -> None:
        """`take` for `size` bytes of body, counted as `reserve` says (read_body's `take`)."""
        self.take(self.reserve(size))

    def swap(self, size: int) -> None:
        """Count `size` bytes instead of what is counted now (a parsed body is dropped for its items).
        Raises Unavailable, the count unchanged, when growing would pass the budget."""
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
