"""Injected time.

Every component takes a `Clock` instead of calling `time.time()` or `asyncio.sleep()`, so that tests can
drive a 5-minute `for:` in milliseconds with `FakeClock` while services run on `SystemClock`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time in Unix seconds, and a way to wait for it."""

    def now(self) -> float:
        """Current Unix time in seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `now() >= deadline` (immediately if it already is)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.time()
        if delay > 0:
            await asyncio.sleep(delay)


class FakeClock:
    """A clock that moves only when told to; sleepers wake in deadline order as it passes them."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        await future

    def set(self, now: float) -> None:
        """Jump to `now` without waking anyone (use `advance` to run the sleepers)."""
        self._now = now

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own deadline and letting it run before the next."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            # Let the woken task run up to its next await before time moves on.
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
        await asyncio.sleep(0)

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock (tests use it to know a loop is parked)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())
