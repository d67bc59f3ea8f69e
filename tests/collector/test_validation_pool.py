"""The validation threads: how many run, how long a request waits for one, what a stop does to the rest."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry

from services.collector.publish import Unavailable
from services.collector.validation_pool import ValidationPool
from tests.polling import eventually

LONG = 30.0  # a wait no test reaches: work is released by events, never by time


class Work:
    """A function for the pool that blocks until released, and says when it started."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        self.log.append(self.name)
        assert self.release.wait(LONG)
        return self.name


async def started(work: Work) -> None:
    async def probe() -> bool:
        return work.started.is_set()

    await eventually(probe, what=f"{work.name} to start")


@pytest.fixture
async def pools():
    made: list[ValidationPool] = []

    def make(threads: int = 1, max_wait: float = LONG) -> ValidationPool:
        pool = ValidationPool(threads, max_wait, 1.0, CollectorRegistry())
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


async def test_at_most_threads_run_at_once_and_the_rest_wait_in_order(pools):
    pool = pools(threads=2)
    log: list[str] = []
    works = [Work(f"w{i}", log) for i in range(4)]
    tasks = [asyncio.create_task(pool.run(work)) for work in works]
    await started(works[0])
    await started(works[1])
    await eventually(lambda: _true(waiting_count(pool) == 2), what="two requests to wait")
    assert not works[2].started.is_set() and not works[3].started.is_set()
    works[1].release.set()
    assert await tasks[1] == "w1"
    await started(works[2])  # the freed thread goes to the first in line
    assert not works[3].started.is_set()
    for work in works:
        work.release.set()
    assert await asyncio.gather(*tasks) == ["w0", "w1", "w2", "w3"]
    assert sorted(log[:2]) == ["w0", "w1"] and log[2:] == ["w2", "w3"]


async def test_a_request_that_waits_past_max_wait_is_told_the_collector_is_busy(pools):
    pool = pools(threads=1, max_wait=0.2)
    log: list[str] = []
    first, second, third = Work("first", log), Work("second", log), Work("third", log)
    running = asyncio.create_task(pool.run(first))
    await started(first)
    with pytest.raises(Unavailable, match=r"busy.*collector\.validation_threads") as refused:
        await pool.run(second)
    assert refused.value.retry_after_header == "1"
    assert not second.started.is_set()  # refused before it ran: nothing of it was done
    assert pool.busy._value.get() == 1
    first.release.set()
    assert await running == "first"
    third.release.set()
    assert await pool.run(third) == "third"  # the refused request left no trace in the line


async def test_a_stop_refuses_those_waiting_at_once_and_lets_the_running_work_end(pools):
    pool = pools(threads=1)
    log: list[str] = []
    running, waiting = Work("running", log), Work("waiting", log)
    first = asyncio.create_task(pool.run(running))
    await started(running)
    second = asyncio.create_task(pool.run(waiting))
    await eventually(lambda: _true(waiting_count(pool) == 1), what="the second request to wait")
    pool.close()
    with pytest.raises(Unavailable, match="stopping"):
        await second
    with pytest.raises(Unavailable, match="stopping"):
        await pool.run(Work("late", log))
    running.release.set()
    assert await first == "running"  # its request still gets its result
    assert log == ["running"]


async def test_work_a_stop_drops_before_it_started_is_answered_as_stopping_not_cancelled(pools):
    # Submitted, then dropped by close() before a thread took it: its request is not the one cancelled.
    pool = pools(threads=1)
    log: list[str] = []
    occupier, dropped = Work("occupier", log), Work("dropped", log)
    pool._executor.submit(occupier)  # the executor's one thread, taken behind the pool's back
    await started(occupier)
    async with pool.slot() as slot:
        request = asyncio.create_task(slot.run(dropped))
        await asyncio.sleep(0)  # submitted: queued behind the occupier
        pool.close()
        with pytest.raises(Unavailable, match="stopping"):
            await request
    occupier.release.set()
    assert log == ["occupier"]


async def test_a_cancelled_request_keeps_its_thread_until_its_work_ends(pools):
    # A thread cannot be stopped: handing its slot on at once would run more work than there are threads.
    pool = pools(threads=1)
    log: list[str] = []
    abandoned, next_in_line = Work("abandoned", log), Work("next", log)
    first = asyncio.create_task(pool.run(abandoned))
    await started(abandoned)
    second = asyncio.create_task(pool.run(next_in_line))
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert waiting_count(pool) == 1  # still waiting for the slot, not queued behind the thread with its data
    assert not next_in_line.started.is_set()
    abandoned.release.set()
    await started(next_in_line)
    next_in_line.release.set()
    assert await second == "next"


async def test_a_slot_holds_its_thread_across_its_steps(pools):
    pool = pools(threads=1)
    log: list[str] = []
    step1, step2, other = Work("step1", log), Work("step2", log), Work("other", log)
    step1.release.set()
    entered = asyncio.Event()
    proceed = asyncio.Event()

    async def two_steps() -> list[str]:
        async with pool.slot() as slot:
            first = await slot.run(step1)
            entered.set()
            await proceed.wait()
            return [first, await slot.run(step2)]

    holder = asyncio.create_task(two_steps())
    await entered.wait()
    waiting = asyncio.create_task(pool.run(other))
    await eventually(lambda: _true(waiting_count(pool) == 1), what="the other request to wait")
    proceed.set()
    step2.release.set()
    assert await holder == ["step1", "step2"]
    other.release.set()
    assert await waiting == "other"
    assert log == ["step1", "step2", "other"]


async def test_a_slot_handed_to_a_request_just_as_it_is_cancelled_goes_to_the_next(pools):
    pool = pools(threads=1)
    await pool._acquire()  # the only slot
    gives_up = asyncio.create_task(pool._acquire())
    next_in_line = asyncio.create_task(pool._acquire())
    await eventually(lambda: _true(waiting_count(pool) == 2), what="two requests to wait")
    pool._release()  # handed to the first in line...
    gives_up.cancel()  # ...which is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await gives_up
    await asyncio.wait_for(next_in_line, 5)


async def _true(value: bool) -> bool:
    return value


def waiting_count(pool: ValidationPool) -> float:
    """tripwire_ingest_validation_waiting, as /metrics shows it."""
    (family,) = pool.waiting.collect()
    return family.samples[0].value
