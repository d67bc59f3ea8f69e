"""Bounds on the connections a service's HTTP server holds (`http.max_connections`, `http.idle_timeout`).

Left to itself, aiohttp accepts every connection the kernel hands it and keeps each until its keep-alive
timer fires, 3630 s after it opened or last answered, whether the client sends nothing, trickles a request's
headers a byte at a time or has simply gone quiet. A few thousand such connections use up the process's file
descriptors, and then every accept() fails and so can Redis and scrapes. Two bounds:

- `idle_timeout` is that keep-alive timer. It runs until a request's headers are complete, so it closes idle
  connections and slow headers alike (a body's own bound is http.body_timeout, or on the collector's
  ingest collector.body_timeout).
- `max_connections` caps the connections open at once. Past it, a new connection is answered 503 with
  Retry-After and closed: the client hears why, rather than waiting in the accept queue. A refused
  connection lingers up to `REFUSED_LINGER` to read what the client sent, so the close is a FIN the client
  reads the 503 before, not a reset that may discard it; at most `max_lingering` at once (past that, closed
  at once).

The default cap is half the open-file limit, at most 10,000; a service first raises its soft limit to the
hard one, as the Go runtime does for every program.
"""

from __future__ import annotations

import asyncio
import logging
import resource

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.counted_log import CountedLog

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 10_000
REFUSED_LINGER = 1.0
MAX_LINGERING = 256
REFUSED_RETRY_AFTER = 1


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (where the system allows) and return the soft
    limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:  # a container may refuse; the old limit still works
            log.warning("could not raise the open-file limit", extra={"soft": soft, "error": str(exc)})
    return soft


def default_max_connections() -> int:
    """Half the open-file limit, leaving the rest to Redis, scrapes and outgoing requests; at most 10,000."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(1, min(DEFAULT_MAX_CONNECTIONS, soft // 2))


class ConnectionLimit:
    """The protocol factory the listening socket uses: aiohttp's handler while fewer than `limit`
    connections are open, else one that answers 503 and closes."""

    def __init__(self, server: web.Server, limit: int, registry: CollectorRegistry) -> None:
        self.server = server
        self.limit = limit
        # Counted from the factory call, not connection_made: asyncio accepts a burst of connections (up to
        # the backlog) before any of them is made, and all of them must see the count.
        self.open = 0
        self.lingering = 0
        # Refused connections reading out what their client sent: few, so that open and lingering together
        # stay well inside the half of the descriptors the default cap leaves to Redis and scrapes (up to
        # `limit` of them, a flood of clients that never close used them all: helper-49).
        self.max_lingering = min(limit, MAX_LINGERING, max(8, limit // 8))
        body = orjson.dumps(
            {
                "status": "error",
                "errorType": "unavailable",
                "error": "the server has as many connections open as it may "
                f"(http.max_connections, {limit}); retry later",
            }
        )
        self.response = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (REFUSED_RETRY_AFTER, len(body), body)
        )
        Gauge(
            "tripwire_http_connections",
            "HTTP connections open (refused ones not counted).",
            registry=registry,
        ).set_function(lambda: self.open)
        self.refused = Counter(
            "tripwire_http_connections_refused",
            "Connections answered 503 and closed because http.max_connections were already open.",
            registry=registry,
        )
        self.refusals = CountedLog(
            log,
            "refusing connections: http.max_connections are open (too many clients, or clients that keep "
            "connections without using them; a proxy can limit them per client)",
            "refused_connections",
        )

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.limit:
            self.refused.inc()
            self.refusals.note(max_connections=self.limit)
            return _Refused(self)
        self.open += 1
        return _Counted(self, self.server())


class _Counted(asyncio.Protocol):
    """aiohttp's handler, and the count of open connections taken down when it closes."""

    def __init__(self, limit: ConnectionLimit, handler: asyncio.Protocol) -> None:
        self._limit = limit
        self._handler = handler
        # Bound straight to the handler, so a chunk of a body costs no extra call on its way in.
        self.connection_made = handler.connection_made  # type: ignore[method-assign]
        self.data_received = handler.data_received  # type: ignore[method-assign]
        self.eof_received = handler.eof_received  # type: ignore[method-assign]
        self.pause_writing = handler.pause_writing  # type: ignore[method-assign]
        self.resume_writing = handler.resume_writing  # type: ignore[method-assign]

    def connection_lost(self, exc: Exception | None) -> None:
        self._limit.open -= 1
        self._handler.connection_lost(exc)


class _Refused(asyncio.Protocol):
    """Answers 503 at once, reads and drops what the client sends for up to REFUSED_LINGER, then closes."""

    def __init__(self, limit: ConnectionLimit) -> None:
        self._limit = limit
        self._lingering = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self._limit.response)
        if self._limit.lingering >= self._limit.max_lingering:  # a flood: no descriptors held to refuse
            transport.close()
            return
        self._lingering = True
        self._limit.lingering += 1
        transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # read so that closing sends a FIN, not a reset

    def eof_received(self) -> bool:
        return False  # the client is done too: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._lingering:
            self._limit.lingering -= 1
