"""Publishing a validated batch onto its stream, with backpressure.

Every ingest path (JSON API, OTLP, scrapes) ends here: one XADD per request or scrape (an OTLP request past
collector.max_items items: several, all or none, in one round trip). Nothing is
acknowledged that is not in Redis, and nothing queues without bound: at most `max_in_flight` appends wait on
Redis at once; past that, or when Redis is down or slow (the client's socket timeout), the caller is told
`Unavailable` with a Retry-After, and answers 503 (ingest) or backs off (scrapes).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import uuid
from collections.abc import Sequence
from typing import NamedTuple

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from shared.streams import append_batch, append_batch_once, recall_batch
from shared.webapp import CLIENT

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """The batch may not have been stored (a write that timed out may still land); try again after
    `retry_after` seconds, with the same X-Request-Id so that it is stored once either way."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """`retry_after` as a Retry-After value: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


class StoreRefused(Exception):
    """Redis refused the batch for good (a key of the wrong type, an ACL without XADD): nothing was stored,
    and retrying will not help until an operator fixes Redis. Answered 500, not 503."""


# WRONGTYPE or NOPERM as Redis' error code, also where redis-py wraps a command of a MULTI ("... of pipeline
# caused error: WRONGTYPE ..."), and an ACL refusing a command inside our Lua script.
_PERMANENT = re.compile(r"(?:^|caused error: )(?:WRONGTYPE|NOPERM)\b|can't run this command or subcommand")


def _permanent(exc: RedisError) -> bool:
    """Whether Redis refused the write for good: a key of another type, an ACL without the command. Any other
    error (an outage, a full memory, a failover, a script running, one not known here) may pass: retry."""
    if isinstance(exc, NoPermissionError):
        return True
    return isinstance(exc, ResponseError) and _PERMANENT.search(str(exc)) is not None


class Published(NamedTuple):
    entry_id: str
    appended: bool  # False: a replay, answered with the entry an earlier request with this key appended
    answer: bytes = b""  # a replay: what the request that stored it asked to remember (see publish)


class PublishMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.replays = Counter(
            "tripwire_publish_replays",
            "Batches not stored again: a retry (same X-Request-Id and body) got its earlier entry, by kind.",
            ["kind"],
            registry=registry,
        )
        self.refusals = Counter(
            "tripwire_publish_refusals",
            "Batches refused with 503, by kind and reason (queue_full: max_in_flight appends already "
            "waiting; redis_error: Redis down, or slower than its socket timeout).",
            ["kind", "reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "tripwire_publish_in_flight", "Appends waiting on Redis now.", registry=registry
        )


class Publisher:
    def __init__(
        self,
        redis: Redis,
        maxlen: int,
        retry_after: float,
        max_in_flight: int = 64,
        queue_wait: float = 1.0,
        registry: CollectorRegistry | None = None,
        remember_ids_for: float = 3600.0,
    ) -> None:
        self.redis = redis
        self.remember_ids_for = remember_ids_for
        self.maxlen = maxlen
        self.retry_after = retry_after
        self.queue_wait = queue_wait
        self._slots = asyncio.Semaphore(max_in_flight)
        self.metrics = PublishMetrics(registry if registry is not None else CollectorRegistry())

    async def publish(
        self,
        stream: str,
        kind: str,
        items_json: bytes,
        request_id: str,
        *,
        idempotency_key: str | None = None,
        answer: bytes = b"",
        more: Sequence[bytes] = (),
    ) -> Published:
        """Append one batch (and the `more` batches of the same request after it, all or none, in one round
        trip; the entry id is the last one's). Raises Unavailable (stored or not, unknown: the sender
        retries). With an `idempotency_key` (the caller's X-Request-Id, scoped to its sender and body), a
        retry of a request whose answer was lost (a timeout after Redis wrote it) gets the same entry, not a
        second one, and the `answer` the first request kept with it (its counts, say): the retry is answered
        as the first was."""
        if not await self._take_slot():
            self.metrics.refusals.labels(kind, "queue_full").inc()
            raise Unavailable(
                "events were not stored: redis is slow (too many appends waiting)", self.retry_after
            ) from None
        self.metrics.in_flight.inc()
        try:
            if idempotency_key is None:
                return Published(
                    await append_batch(self.redis, stream, kind, items_json, request_id, self.maxlen, more),
                    True,
                )
            published = Published(
                *await append_batch_once(
                    self.redis,
                    stream,
                    kind,
                    items_json,
                    request_id,
                    idempotency_key,
                    self.maxlen,
                    self.remember_ids_for,
                    answer,
                    more,
                )
            )
            if not published.appended:
                self.metrics.replays.labels(kind).inc()
            return published
        except RedisError as exc:
            if _permanent(exc):
                self.metrics.refusals.labels(kind, "redis_refused").inc()
                log.error(
                    "redis refused the write; fix redis (nothing was stored)",
                    extra={"error": str(exc)[:1000], "stream": stream},
                )
                raise StoreRefused(
                    "events were not stored: redis refused the write with an error that retrying will not "
                    "fix (the collector's log says which); tell the collector's operator"
                ) from None
            self.metrics.refusals.labels(kind, "redis_error").inc()
            log.warning("redis unavailable; refusing ingest", extra={"error": str(exc), "stream": stream})
            # The reason stays in our log: Redis' address and errors are none of the sender's business. A
            # write that timed out may still be applied: "may not", so that the sender retries with its id.
            raise Unavailable(
                f"events may not have been stored: redis is unavailable ({type(exc).__name__}); retry with "
                "the same X-Request-Id to store them once",
                self.retry_after,
            ) from None
        finally:
            self.metrics.in_flight.dec()
            self._slots.release()

    async def _take_slot(self) -> bool:
        """One of the max_in_flight slots, waiting at most queue_wait; False if none came free (the caller
        releases a slot it got)."""
        try:
            async with asyncio.timeout(self.queue_wait):
                await self._slots.acquire()
        except TimeoutError:
            return False
        return True

    async def recall(self, stream: str, kind: str, idempotency_key: str | None) -> Published | None:
        """The batch a request with this key stored, if it is still remembered; None otherwise, and when Redis
        cannot say. For a request about to be refused for what time did to it (a timestamp that aged past
        collector.max_age while the sender retried): if its first attempt was stored, the retry is a replay,
        not an error. None on a Redis error is safe: the refusal then stands, and data that was stored stays
        stored."""
        if idempotency_key is None:
            return None
        # One of the appends' slots, and no longer than they wait for one: refused requests must not pile up
        # on a stalled Redis, past max_in_flight, while appends are being turned away.
        if not await self._take_slot():
            return None
        try:
            async with asyncio.timeout(self.queue_wait):
                stored = await recall_batch(self.redis, stream, idempotency_key)
        except (TimeoutError, RedisError) as exc:
            log.warning(
                "redis unavailable; could not check for an earlier attempt of a refused request",
                extra={"error": str(exc) or type(exc).__name__, "stream": stream},
            )
            return None
        finally:
            self._slots.release()
        if stored is None or not stored.answer:  # no answer: a record from before answers were kept
            return None
        self.metrics.replays.labels(kind).inc()
        return Published(stored.entry_id, False, stored.answer)


# Printable ASCII: what proxies and clients put there (nginx's hex, UUIDs with or without braces, Kong's
# uuid#counter, Heroku's up to 200 characters), and nothing that could forge a log line.
_REQUEST_ID = re.compile(r"[\x20-\x7e]{1,256}")
REQUEST_ID_RULE = "X-Request-Id must be 1-256 printable ASCII characters (a UUID, say)"


def request_id_problem(request: web.Request) -> str | None:
    """Why the request's X-Request-Id cannot be honoured (None: it can, or there is none). Refused, not
    ignored: a sender that sets one counts on its retry being stored once, and a fresh id would break that
    without a word."""
    given = request.headers.get("X-Request-Id", "")
    if not given or _REQUEST_ID.fullmatch(given):
        return None
    return f"{REQUEST_ID_RULE}; nothing was stored"


def request_identity(request: web.Request, body: bytes) -> tuple[str, str | None]:
    """The batch's request id and idempotency key. A caller's X-Request-Id travels with the batch (for
    tracing) if it is a sane token, and is its idempotency key, scoped to the token's client (every sender
    without a token shares one scope) and to the body, so a retry whose first answer was lost is stored once;
    without one, a fresh id and no idempotency promise.

    Not scoped to the sender's address: a retry may come from another one (another proxy replica, a NAT
    pool, IPv4 after IPv6) and must still be a replay. So ids must be unique among the senders that share a
    token, as idempotency keys are (a UUID). The body is part of the key too: an id used again for other data
    must not get a 202 for data that was never stored. Its request is stored as new."""
    given = request.headers.get("X-Request-Id", "")
    if _REQUEST_ID.fullmatch(given) is None:
        return uuid.uuid4().hex, None
    client = request.get(CLIENT, "anonymous")
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    # The client's length first: client names and ids may both hold ':', and must not run into each other.
    return given, f"{len(client)}:{client}:{given}:{digest}"
