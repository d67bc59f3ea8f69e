"""Publishing a validated batch onto its stream, with backpressure.

Every ingest path (JSON API, OTLP, scrapes) ends here: one XADD per request or scrape. Nothing is
acknowledged that is not in Redis, and nothing queues without bound: at most `max_in_flight` appends wait on
Redis at once; past that, or when Redis is down or slow (the client's socket timeout), the caller is told
`Unavailable` with a Retry-After, and answers 503 (ingest) or backs off (scrapes).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.streams import append_batch, append_batch_once
from shared.webapp import CLIENT

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """The batch was not stored; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Publisher:
    def __init__(
        self, redis: Redis, maxlen: int, retry_after: float, max_in_flight: int = 64, queue_wait: float = 1.0
    ) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self.retry_after = retry_after
        self.queue_wait = queue_wait
        self._slots = asyncio.Semaphore(max_in_flight)

    async def publish(
        self,
        stream: str,
        kind: str,
        items_json: bytes,
        request_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> str:
        """Append one batch; returns its entry id. Raises Unavailable (nothing stored, as far as we know).
        With an `idempotency_key` (the caller's X-Request-Id, scoped to the client), a retry of a request
        whose answer was lost (a timeout after Redis wrote it) gets the same entry, not a second one."""
        try:
            async with asyncio.timeout(self.queue_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise Unavailable(
                "events were not stored: redis is slow (too many appends waiting)", self.retry_after
            ) from None
        try:
            if idempotency_key is not None:
                entry_id, _ = await append_batch_once(
                    self.redis, stream, kind, items_json, request_id, idempotency_key, self.maxlen
                )
                return entry_id
            return await append_batch(self.redis, stream, kind, items_json, request_id, self.maxlen)
        except RedisError as exc:
            log.warning("redis unavailable; refusing ingest", extra={"error": str(exc), "stream": stream})
            # The reason stays in our log: Redis' address and errors are none of the sender's business.
            raise Unavailable(
                f"events were not stored: redis is unavailable ({type(exc).__name__})", self.retry_after
            ) from None
        finally:
            self._slots.release()


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_identity(request: web.Request, body: bytes) -> tuple[str, str | None]:
    """The batch's request id and idempotency key. A caller's X-Request-Id travels with the batch (for
    tracing) if it is a sane token, and is its idempotency key, scoped to the client and to the body, so a
    retry whose first answer was lost is stored once; without one, a fresh id and no idempotency promise.

    The body (as sent, decompressed) is part of the key: an id used again for other data, by a sender that
    numbers its requests from 1 after a restart or by another client sharing a token, must not get a 202
    for data that was never stored. Its request is stored as new."""
    given = request.headers.get("X-Request-Id", "")
    if _REQUEST_ID.fullmatch(given) is None:
        return uuid.uuid4().hex, None
    client = request.get(CLIENT, "anonymous")
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    # The client's length first: client names and ids may both hold ':', and must not run into each other.
    return given, f"{len(client)}:{client}:{given}:{digest}"
