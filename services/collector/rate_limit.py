"""Per-client request rate limits for the ingest endpoints (collector.rate_limit, collector.rate_limit_burst).

A token bucket per client: per bearer token when ingest takes a token (TRIPWIRE_INGEST_TOKEN), else per client
address. A request takes one token; a client may burst `burst` requests and then sustain `rate` per second.
Refusal is cheap on purpose: it is decided from the request line and headers, before the body is read, and
answered 429 with a Retry-After (whole seconds, at least 1) and the usual error JSON.

Memory is bounded whatever clients do: a bucket left idle long enough to be full again is forgotten (a new
bucket would be identical), and at most `max_clients` buckets are tracked; past that the least recently seen
client's bucket is dropped (it starts full again next time: under a flood of distinct clients the limit
leaks a little rather than memory growing). Keys are fixed-size digests, so long tokens cost nothing extra.

Every ingest route shares one limiter per service, so a client's budget covers the JSON API and OTLP alike:

    limiter = rate_limiter_for(service)
    if (refused := limiter.check(request)) is not None:
        return refused
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.clock import Clock
from shared.config import ingest_credentials
from shared.service import Service
from shared.webapp import CLIENT, error_response

DEFAULT_MAX_CLIENTS = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by client; `rate` 0 disables limiting (every check passes, nothing is tracked)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Clock,
        *,
        by_token: bool,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if rate < 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be >= 0, burst and max_clients >= 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.by_token = by_token
        self.max_clients = max_clients
        # A bucket idle this long has refilled completely: forgetting it changes nothing.
        self._refill_time = burst / rate if rate > 0 else math.inf
        # Least recently used first, so idle and evictable buckets are found at the front.
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()
        self._refused: Counter | None = None
        if registry is not None:
            self._refused = Counter(
                "tripwire_ingest_rate_limited",
                "Ingest requests refused with 429 by the per-client rate limit, by endpoint.",
                ["endpoint"],
                registry=registry,
            )
            tracked = Gauge(
                "tripwire_ingest_rate_limit_clients",
                "Clients (tokens or addresses) the ingest rate limiter currently tracks.",
                registry=registry,
            )
            tracked.set_function(lambda: len(self._buckets))

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        """Buckets tracked right now."""
        return len(self._buckets)

    def acquire(self, client: str) -> float:
        """Take a token for `client`: 0.0 if its request may go ahead, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock.now()
        key = hashlib.blake2b(client.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        buckets = self._buckets
        # Forget buckets that have been idle long enough to be full: amortised O(1) per call.
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest.updated < self._refill_time:
                break
            buckets.popitem(last=False)
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_clients:
                buckets.popitem(last=False)
            bucket = buckets[key] = _Bucket(float(self.burst), now)
        else:
            buckets.move_to_end(key)
            # max(): a wall clock stepped backwards refills nothing, and must not lock the client out either.
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def client_of(self, request: web.Request) -> str:
        """Whose budget `request` spends: its bearer token when ingest takes tokens, else its peer address.
        (Behind a proxy every client shares the proxy's address; put the limit on the proxy there.)"""
        if self.by_token:
            client = request.get(CLIENT)  # set by the token check: the client's name, never its token
            if client:
                return "client:" + str(client)
        return "address:" + client_network(request.remote or "")

    def check(self, request: web.Request) -> web.Response | None:
        """None if `request` may proceed, else the 429 response to send. Call it before reading the body."""
        if self.rate <= 0:
            return None
        wait = self.acquire(self.client_of(request))
        if wait <= 0:
            return None
        if self._refused is not None:
            self._refused.labels(request.path).inc()
        retry_after = max(1, math.ceil(wait))
        per = "ingest token" if self.by_token else "client address"
        return error_response(
            429,
            "rate_limited",
            f"too many requests: the limit is {self.rate:g} requests/s per {per} with bursts of "
            f"{self.burst} (collector.rate_limit, collector.rate_limit_burst); retry in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )


_LIMITER = web.AppKey("tripwire_ingest_rate_limiter", RateLimiter)


def rate_limiter_for(service: Service) -> RateLimiter:
    """The service's one ingest rate limiter (made from its config on first use), shared by every ingest
    route so that a client's budget covers all of them."""
    app = service.web
    limiter = app.get(_LIMITER)
    if limiter is None:
        collector = service.config.collector
        limiter = RateLimiter(
            collector.rate_limit,
            collector.rate_limit_burst,
            service.clock,
            by_token=bool(ingest_credentials(service.config)),
            registry=service.registry,
        )
        app[_LIMITER] = limiter
    return limiter


def client_network(address: str) -> str:
    """The unit a client address is limited by: the IPv4 address, or the IPv6 /64 (one host holds a whole
    /64 and could otherwise take a fresh burst from every address in it)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
