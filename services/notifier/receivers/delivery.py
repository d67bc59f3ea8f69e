"""How an integration gets one notification through: attempts, retries, Retry-After and rate limits.

Every integration's `notify` runs `deliver`: take a token from the destination's bucket, make one attempt,
classify its answer (delivered, worth retrying, permanent), and back off with full jitter under a deadline,
never sooner than a Retry-After asks. Each attempt is journalled (see `Journal`) so that a crash in the middle
can be reconciled instead of guessed.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from services.notifier.receivers import DeliveryError
from shared.clock import Clock

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.25
BACKOFF_CAP = 10.0
RETRY_AFTER_CAP = 300.0  # a server asking for more than this is treated as asking for this
USER_AGENT = "tripwire-notifier/0.1"


@dataclass(frozen=True)
class Attempt:
    """The outcome of one try. `uncertain`: the request may have reached the service (e.g. a read timeout)."""

    delivered: bool
    reason: str = ""
    permanent: bool = False
    retry_after: float | None = None
    uncertain: bool = False

    @classmethod
    def ok(cls) -> Attempt:
        return cls(True)

    @classmethod
    def retry(cls, reason: str, retry_after: float | None = None, uncertain: bool = False) -> Attempt:
        return cls(False, reason, retry_after=retry_after, uncertain=uncertain)

    @classmethod
    def refused(cls, reason: str) -> Attempt:
        """A permanent error: the receiver is misconfigured or refuses the payload; retrying cannot help."""
        return cls(False, reason, permanent=True)


def http_attempt(status: int, body: str, retry_after: str | None, now: float) -> Attempt:
    """The usual classification of an HTTP answer: 2xx delivered; 429, 408 and 5xx retried (after
    Retry-After when given); any other 4xx permanent."""
    if 200 <= status < 300:
        return Attempt.ok()
    reason = f"HTTP {status}: {body[:200]}".rstrip(": ")
    if status in (408, 429) or status >= 500:
        return Attempt.retry(reason, parse_retry_after(retry_after, now))
    return Attempt.refused(reason)


def redact(text: str, url: str) -> str:
    """`text` with `url` (and its path) replaced by scheme://host/<redacted>."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname or '?'}/<redacted>"
    text = text.replace(url, shown)
    if parts.path not in ("", "/"):
        text = text.replace(parts.path, "/<redacted>")
    return text


def client_error_attempt(exc: Exception, url: str) -> Attempt:
    """An aiohttp failure as an Attempt: a URL aiohttp cannot use is permanent; a refused connection certainly
    did not deliver; a timeout or a dropped connection may have (uncertain). Reasons never hold the URL, whose
    path is often the secret (Slack-style webhook URLs)."""
    reason = redact(f"{type(exc).__name__}: {exc}", url)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError | ValueError):
        return Attempt.refused(reason)
    return Attempt.retry(reason, uncertain=not isinstance(exc, aiohttp.ClientConnectorError))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110). A fractional
    delta ("1.5"), which the RFC does not allow but servers send, is honoured rather than crashing on it (as
    slack-sdk's own retry handler does); anything unreadable is None. Never negative, at most
    RETRY_AFTER_CAP."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)]."""
    return rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * (2**attempt)))


class Journal(Protocol):
    """Where a delivery writes down each attempt before and after it (the notification log's intent)."""

    @property
    def id(self) -> str:
        """Stable for one notification across retries and restarts: an idempotency key."""
        ...

    async def sending(self) -> None:
        """A request is about to go out: if we die now, nobody knows whether it arrived."""
        ...

    async def not_sent(self, reason: str) -> None:
        """The last request certainly did not deliver (an error answer, a refused connection)."""
        ...


class NoJournal:
    """For deliveries nobody reconciles (`tripwire receivers test`, unit tests)."""

    def __init__(self, id: str = "test") -> None:
        self._id = id

    @property
    def id(self) -> str:
        return self._id

    async def sending(self) -> None:
        return None

    async def not_sent(self, reason: str) -> None:
        return None


class TokenBucket:
    """At most `rate` messages per second to one destination, with bursts of `burst`. A 429 holds the whole
    bucket until its Retry-After, so the other groups bound for the same channel wait too instead of each
    earning its own 429."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.updated = clock.now()
        self.held_until = 0.0

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self) -> float:
        """Wait for a token; returns how long it waited (seconds, by the clock)."""
        started = self.clock.now()
        while True:
            now = self.clock.now()
            if now < self.held_until:
                await self.clock.sleep_until(self.held_until)
                continue
            self._refill(now)
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return now - started
            await self.clock.sleep_until(now + (1.0 - self.tokens) / self.rate)

    def hold(self, until: float) -> None:
        self.held_until = max(self.held_until, until)


class RateLimits:
    """One token bucket per destination (a Slack channel or webhook), shared by every integration and group
    in this process, so two receivers posting to one channel share its budget."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}

    def bucket(self, destination: str, rate: float, burst: float) -> TokenBucket:
        bucket = self.buckets.get(destination)
        if bucket is None or (bucket.rate, bucket.burst) != (rate, burst):
            bucket = self.buckets[destination] = TokenBucket(rate, burst, self.clock)
        return bucket


async def deliver(
    name: str,
    attempt: Callable[[], Awaitable[Attempt]],
    *,
    clock: Clock,
    deadline: float,
    journal: Journal,
    rng: random.Random,
    bucket: TokenBucket | None = None,
) -> int:
    """Attempt until delivered, a permanent error, or `deadline` (a time by `clock`) would pass before the
    next try. Returns the number of attempts; raises DeliveryError otherwise (permanent or not)."""
    tries = 0
    maybe_sent = False  # an earlier attempt may have arrived: never journal "certainly not sent" after it
    while True:
        if bucket is not None:
            await bucket.acquire()
        await journal.sending()
        outcome = await attempt()
        tries += 1
        if outcome.delivered:
            return tries
        maybe_sent = maybe_sent or outcome.uncertain
        if not maybe_sent:
            await journal.not_sent(outcome.reason)
        if outcome.permanent:
            raise DeliveryError(f"{name}: {outcome.reason}", permanent=True)
        delay = backoff_delay(tries - 1, rng)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
            if bucket is not None:
                bucket.hold(clock.now() + outcome.retry_after)
        if clock.now() + delay > deadline:
            raise DeliveryError(f"{name}: gave up after {tries} attempts: {outcome.reason}", permanent=False)
        log.warning(
            "delivery failed; retrying",
            extra={"integration": name, "reason": outcome.reason, "retry_in": round(delay, 3)},
        )
        await clock.sleep_until(clock.now() + delay)
