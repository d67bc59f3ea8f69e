"""How a service stops: loops, consumers and leases first, then HTTP requests in flight finish, then what they
use (a client session, Redis) is closed."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from services.local_redis import free_port
from shared.clock import FakeClock
from shared.service import ACCEPT_FAILED, AcceptErrors, Service
from tests.polling import eventually


async def test_stop_releases_leases_before_http_drains_and_closes_what_handlers_use_after(make_config):
    # The lease was held until a slow request finished (up to aiohttp's 60 s), so a standby waited; and
    # closing Redis under a request in flight failed its write.
    port = free_port()
    service = Service("test", make_config(), FakeClock(0.0))
    events: list[str] = []
    release_request = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        events.append("request started")
        await release_request.wait()
        await service.redis.ping()  # Redis is still open for a request finishing during the drain
        events.append("request finished")
        return web.Response(text="done")

    async def stop_hook() -> None:
        events.append("on_stop")

    async def close_hook() -> None:
        events.append("on_close")

    service.web.router.add_get("/slow", slow)
    service.on_stop(stop_hook)
    service.on_close(close_hook)
    running = asyncio.create_task(service.run(f"127.0.0.1:{port}", service.start))
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(ready, timeout=10, what="the service to be ready")
            request = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/slow"))
            await eventually(lambda: _has(events, "request started"), timeout=5, what="the request")
            service.request_stop()
            await eventually(lambda: _has(events, "on_stop"), timeout=5, what="on_stop during the request")
            assert "on_close" not in events
            release_request.set()
            response = await request
            assert (response.status, await response.text()) == (200, "done")
        await asyncio.wait_for(running, timeout=10)
    finally:
        running.cancel()
    assert events == ["request started", "on_stop", "request finished", "on_close"]


async def _has(events: list[str], event: str) -> bool:
    return event in events


async def test_a_start_that_fails_still_runs_every_stop_hook_and_closes_redis(make_config):
    # run() raised straight out of a failed start: a lease taken before the failure stayed for its TTL, and
    # Redis and the on_close hooks were left open. A hook that fails does not skip the next ones either.
    port = free_port()
    service = Service("test", make_config(), FakeClock(0.0))
    events: list[str] = []

    async def failing_start() -> None:
        await service.start()
        raise RuntimeError("restore failed")

    async def broken_hook() -> None:
        events.append("broken on_stop")
        raise OSError("cleanup failed")

    async def release_lease() -> None:
        events.append("lease released")

    async def close_hook() -> None:
        events.append("on_close")

    async def finish_work_using_the_session() -> None:
        events.append("work drained")

    service.on_stop(broken_hook)
    service.on_stop(release_lease)
    service.on_close(close_hook)
    # Registered later, run first: the notifier drains Slack re-enables before closing their session.
    service.on_close(finish_work_using_the_session)
    with pytest.raises(RuntimeError, match="restore failed"):
        await asyncio.wait_for(service.run(f"127.0.0.1:{port}", failing_start), timeout=20)
    assert events == ["broken on_stop", "lease released", "work drained", "on_close"]


async def test_readyz_says_the_service_waits_for_redis_without_its_address(make_config):
    # It said only "starting" while the log said why.
    port, dead = free_port(), free_port()
    config = make_config(redis={"url": f"redis://127.0.0.1:{dead}/0", "connect_timeout": "100ms"})
    service = Service("test", config, FakeClock(0.0))
    running = asyncio.create_task(service.run(f"127.0.0.1:{port}", service.start))
    try:
        async with aiohttp.ClientSession() as session:

            async def problems() -> list[str] | None:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return (await response.json()).get("problems")
                except aiohttp.ClientConnectionError:
                    return None

            async def waiting() -> bool:
                return (await problems() or [""])[0].startswith("waiting for redis (ConnectionError")

            await eventually(waiting, timeout=10, what="/readyz to name Redis")
            assert str(dead) not in str(await problems())
    finally:
        service.request_stop()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


class _Loop:
    def __init__(self) -> None:
        self.defaulted: list[dict[str, object]] = []

    def default_exception_handler(self, context: dict[str, object]) -> None:
        self.defaulted.append(context)


def test_failed_accepts_are_logged_once_a_minute_with_a_count(caplog):
    # helper-45's review: with the descriptors used up by idle connections, asyncio logged a traceback
    # for every failed accept(): 308,223 lines in about a minute.
    now = [0.0]
    handler = AcceptErrors(every=60.0, now=lambda: now[0])
    loop = _Loop()
    failed = {"message": ACCEPT_FAILED, "exception": OSError(24, "Too many open files")}
    for second in range(120):
        now[0] = float(second)
        handler(loop, failed)  # type: ignore[arg-type]
    records = [r for r in caplog.records if "cannot accept connections" in r.getMessage()]
    assert [r.failed_accepts for r in records] == [1, 60]  # type: ignore[attr-defined]
    handler(loop, {"message": "something else"})  # type: ignore[arg-type]
    assert loop.defaulted == [{"message": "something else"}]


async def test_serving_installs_the_accept_error_handler(make_config):
    service = Service("test", make_config(), FakeClock(0.0))
    async with service.serving("127.0.0.1", 0):
        assert isinstance(asyncio.get_running_loop().get_exception_handler(), AcceptErrors)
    await service.redis.aclose()
