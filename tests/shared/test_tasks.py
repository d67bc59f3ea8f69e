"""cancel_and_wait ends tasks that swallow a cancel (as redis-py 8.1 pipelines do) and never hangs."""

from __future__ import annotations

import asyncio
import contextlib

from shared.tasks import cancel_and_wait


async def _swallows_first_cancel(ticks: list[int]) -> None:
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True  # what a library that eats a CancelledError mid-call leaves behind
        ticks.append(1)


async def test_a_task_that_swallows_a_cancel_is_cancelled_again():
    ticks: list[int] = []
    task = asyncio.create_task(_swallows_first_cancel(ticks))
    await asyncio.sleep(0.02)
    assert await cancel_and_wait([task], give_up_after=2.0)
    assert task.cancelled()


async def test_plain_cancel_then_await_would_hang_on_such_a_task():
    # The pattern cancel_and_wait replaces: one cancel, then wait. It never ends.
    task = asyncio.create_task(_swallows_first_cancel([]))
    await asyncio.sleep(0.02)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done
    assert await cancel_and_wait([task])


async def test_gives_up_and_reports_a_task_that_never_ends(caplog):
    released = asyncio.Event()

    async def ignores_cancels() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    task = asyncio.create_task(ignores_cancels(), name="ignores-cancels")
    await asyncio.sleep(0)
    assert not await cancel_and_wait([task], give_up_after=0.2)
    assert "did not stop" in caplog.text
    released.set()  # let it end, so the event loop can close
    await task


async def test_a_failed_task_does_not_stop_the_others():
    async def fails() -> None:
        raise RuntimeError("boom")

    failing = asyncio.create_task(fails())
    sleeping = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    assert await cancel_and_wait([failing, sleeping])
    assert sleeping.cancelled() and isinstance(failing.exception(), RuntimeError)
