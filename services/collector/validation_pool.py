"""The threads that validate ingest bodies off the event loop, and how many requests may wait for them.

Validating a big JSON body item by item, or decoding and mapping an OTLP request, is CPU work of tens of
milliseconds to seconds. Done on the event loop, a burst of such requests held it for seconds: Redis replies
sat unread until redis-py's timeouts fired, healthy Redis was reported down, and /healthz took 7 s
(helper-52). Handed to asyncio's default executor, every request of a burst was mapped at once, each holding
its decoded tree, and then mostly refused: 3 GB for a 256 MiB budget, 503s after 70 s, and a stop that waited
for the whole backlog.

So the work runs in a few threads of its own (`collector.validation_threads`), a request waits for one at most
`collector.validation_wait`, and past that it is refused at once with 503 + Retry-After: the collector is
busy, which is not the same as Redis being down and is counted apart. The threads share the GIL with the
event loop, which gets it back within the interpreter's switch interval, so the loop keeps answering
(health checks, Redis replies, bodies arriving) while they work. When the service stops, requests still
waiting are refused at once, and work not started is dropped: a stop waits for the running work alone.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.collector.publish import Unavailable
from shared.service import Service

T = TypeVar("T")


class ValidationPool:
    """`threads` worker threads; at most that many requests hold one (a `slot`) at a time, the rest wait in
    order, each for at most `max_wait` seconds."""

    def __init__(
        self,
        threads: int,
        max_wait: float,
        retry_after: float,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.max_wait = max_wait
        self.retry_after = retry_after
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="ingest-validate")
        self._free = threads
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        registry = registry if registry is not None else CollectorRegistry()
        self.busy = Counter(
            "tripwire_ingest_busy",
            "Ingest requests refused with 503 because every validation thread stayed busy for "
            "collector.validation_wait (or the collector was stopping).",
            registry=registry,
        )
        self.waiting = Gauge(
            "tripwire_ingest_validation_waiting",
            "Ingest requests waiting for a validation thread now.",
            registry=registry,
        )
        self.waiting.set_function(lambda: len(self._waiters))

    def slot(self) -> Slot:
        """A thread for one request's work (`async with pool.slot() as slot: await slot.run(...)`); entering
        raises Unavailable when none came free within `max_wait` or the pool is closed."""
        return Slot(self)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a slot of its own."""
        async with self.slot() as slot:
            return await slot.run(function, *args)

    def close(self) -> None:
        """Refuse every request waiting and every one to come; drop the work not started yet. Work running in
        a thread goes on to its end (a thread cannot be stopped), and its request gets the result."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._stopping())
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _acquire(self) -> None:
        if self._closed:
            self.busy.inc()
            raise self._stopping()
        if self._free and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.max_wait):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # handed over just as this request gave up (or was cancelled): pass it on
            if isinstance(exc, TimeoutError):
                self.busy.inc()
                raise Unavailable(
                    f"the collector is busy: every validation thread stayed taken for {self.max_wait:g}s "
                    "(collector.validation_threads, collector.validation_wait)",
                    self.retry_after,
                ) from None
            if isinstance(exc, Unavailable):
                self.busy.inc()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the next in line
                return
        self._free += 1

    def _stopping(self) -> Unavailable:
        return Unavailable("the collector is stopping", self.retry_after)


def validation_pool_for(service: Service) -> ValidationPool:
    """The service's validation threads (collector.validation_threads, validation_wait), closed when it
    stops: requests still waiting for one are refused then, and a stop waits for the running work alone."""
    collector = service.config.collector
    pool = ValidationPool(
        collector.validation_threads, collector.validation_wait, collector.retry_after, service.registry
    )

    async def close() -> None:
        pool.close()

    service.on_stop(close)
    return pool


class Slot:
    """One thread of a ValidationPool, held by one request for one or more steps of its work: what a step
    builds (an OTLP request's mapping) is alive in at most `threads` requests at once."""

    def __init__(self, pool: ValidationPool) -> None:
        self._pool = pool
        self._last: concurrent.futures.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Slot:
        await self._pool._acquire()
        self._loop = asyncio.get_running_loop()
        return self

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in the slot's thread; raises Unavailable if the pool was closed meanwhile."""
        try:
            future = self._pool._executor.submit(function, *args)
        except RuntimeError:  # shut down
            raise self._pool._stopping() from None
        self._last = future
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # A stop drops work no thread has picked up yet: that cancels the future, not this request,
            # which is told so rather than having its connection dropped unanswered (helper-53).
            task = asyncio.current_task()
            if future.cancelled() and self._pool._closed and task is not None and not task.cancelling():
                raise self._pool._stopping() from None
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        last, loop = self._last, self._loop
        if last is None or last.done():
            self._pool._release()
            return
        # Left while its work still runs (the request was cancelled): the thread stays taken until it ends.
        assert loop is not None

        def release(_future: concurrent.futures.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(self._pool._release)

        last.add_done_callback(release)
