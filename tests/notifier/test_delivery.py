"""Delivery semantics alone: Retry-After parsing, answer classification, the retry loop, the token bucket."""

from __future__ import annotations

import asyncio
import itertools
import random
from email.utils import format_datetime

import pytest

from services.notifier.receivers import DeliveryError
from services.notifier.receivers.delivery import (
    RETRY_AFTER_CAP,
    Attempt,
    NoJournal,
    RateLimits,
    TokenBucket,
    deliver,
    http_attempt,
    parse_retry_after,
)
from shared.alerts import from_unix
from shared.clock import FakeClock

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),  # not RFC 9110, but sent in the wild; slack-sdk's handler crashes on it
        ("0", 0.0),
        ("-3", 0.0),
        ("999999", RETRY_AFTER_CAP),
        (format_datetime(from_unix(NOW + 30), usegmt=True), 30.0),
        (format_datetime(from_unix(NOW - 30), usegmt=True), 0.0),  # a date in the past: go now
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_takes_seconds_fractions_and_http_dates(header: str | None, seconds: float | None):
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "delivered", "permanent"),
    [(200, True, False), (202, True, False), (204, True, False)]
    + [(s, False, False) for s in (408, 429, 500, 502, 503)]
    + [(s, False, True) for s in (400, 401, 403, 404, 410, 413)],
)
def test_http_answers_are_delivered_retryable_or_permanent(status: int, delivered: bool, permanent: bool):
    outcome = http_attempt(status, "body", "3", NOW)
    assert (outcome.delivered, outcome.permanent) == (delivered, permanent)
    if status == 429:
        assert outcome.retry_after == 3.0


class Journal(NoJournal):
    def __init__(self) -> None:
        super().__init__("id-1")
        self.events: list[str] = []

    async def sending(self) -> None:
        self.events.append("sending")

    async def not_sent(self, reason: str) -> None:
        self.events.append(f"not_sent:{reason}")


async def run_with_clock(clock: FakeClock, coro, step: float = 0.25, limit: float = 600.0):
    """Run `coro` while moving the fake clock forward until it finishes."""
    task = asyncio.create_task(coro)
    for _ in range(5):
        await asyncio.sleep(0)  # let it start (and take what it can) before time moves
    moved = 0.0
    while not task.done() and moved < limit:
        await clock.advance(step)
        moved += step
    return await task


async def test_a_429_waits_at_least_retry_after_then_delivers_once():
    clock = FakeClock(NOW)
    answers = [Attempt.retry("HTTP 429", retry_after=2.0), Attempt.ok()]
    times: list[float] = []

    async def attempt() -> Attempt:
        times.append(clock.now())
        return answers.pop(0)

    journal = Journal()
    tries = await run_with_clock(
        clock, deliver("x", attempt, clock=clock, deadline=NOW + 60, journal=journal, rng=random.Random(1))
    )
    assert tries == 2
    assert times[1] - times[0] >= 2.0
    assert journal.events == ["sending", "not_sent:HTTP 429", "sending"]


async def test_permanent_errors_are_not_retried():
    clock = FakeClock(NOW)
    calls = 0

    async def attempt() -> Attempt:
        nonlocal calls
        calls += 1
        return Attempt.refused("HTTP 404: no_service")

    with pytest.raises(DeliveryError) as caught:
        await deliver("x", attempt, clock=clock, deadline=NOW + 60, journal=NoJournal(), rng=random.Random())
    assert caught.value.permanent and calls == 1
    assert "no_service" in str(caught.value)


async def test_retries_stop_at_the_deadline_with_the_last_reason():
    clock = FakeClock(NOW)
    calls = 0

    async def attempt() -> Attempt:
        nonlocal calls
        calls += 1
        return Attempt.retry(f"HTTP 503 #{calls}")

    with pytest.raises(DeliveryError) as caught:
        await run_with_clock(
            clock,
            deliver("x", attempt, clock=clock, deadline=NOW + 20, journal=NoJournal(), rng=random.Random(7)),
        )
    assert not caught.value.permanent
    assert calls > 3 and f"#{calls}" in str(caught.value)
    assert clock.now() <= NOW + 20 + 1


async def test_an_uncertain_attempt_is_not_journalled_as_not_sent():
    clock = FakeClock(NOW)
    answers = [Attempt.retry("read timeout", uncertain=True), Attempt.ok()]

    async def attempt() -> Attempt:
        return answers.pop(0)

    journal = Journal()
    await run_with_clock(
        clock, deliver("x", attempt, clock=clock, deadline=NOW + 60, journal=journal, rng=random.Random(1))
    )
    assert journal.events == ["sending", "sending"]  # may have arrived: reconcile must look, not assume


async def test_token_bucket_allows_a_burst_then_one_per_interval():
    clock = FakeClock(NOW)
    bucket = TokenBucket(rate=1.0, burst=3, clock=clock)
    granted: list[float] = []

    async def take(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()
            granted.append(clock.now())

    await run_with_clock(clock, take(6), step=0.1)
    assert granted[:3] == [NOW] * 3
    gaps = [b - a for a, b in itertools.pairwise(granted[2:])]
    assert all(gap == pytest.approx(1.0, abs=0.11) for gap in gaps)


async def test_a_held_bucket_makes_every_sender_wait_for_retry_after():
    clock = FakeClock(NOW)
    limits = RateLimits(clock)
    bucket = limits.bucket("slack-channel:#alerts", 1.0, 3)
    assert limits.bucket("slack-channel:#alerts", 1.0, 3) is bucket  # shared by destination
    bucket.hold(NOW + 5)
    waited = await run_with_clock(clock, bucket.acquire(), step=0.5)
    assert waited >= 5.0


async def test_after_an_uncertain_attempt_later_failures_do_not_claim_nothing_arrived():
    clock = FakeClock(NOW)
    answers = [Attempt.retry("read timeout", uncertain=True), Attempt.retry("HTTP 503"), Attempt.ok()]

    async def attempt() -> Attempt:
        return answers.pop(0)

    journal = Journal()
    await run_with_clock(
        clock, deliver("x", attempt, clock=clock, deadline=NOW + 60, journal=journal, rng=random.Random(1))
    )
    assert journal.events == ["sending", "sending", "sending"]
