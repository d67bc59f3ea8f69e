"""SIGKILL of the collector in the middle of concurrent ingest: every request it answered 202, and every one
it died under once retried, is counted by the evaluator exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.system import System
from tests.polling import eventually

pytestmark = pytest.mark.e2e

RULES = """\
groups:
  - name: jobs
    rules:
      - record: jobs:total
        expr: sum(jobs_total)
"""


@pytest.fixture
async def system(tmp_path: Path, redis_server) -> AsyncIterator[System]:
    routing = {"route": {"receiver": "none"}, "receivers": [{"name": "none"}]}
    sys_ = System(tmp_path, redis_server.url, f"e2e-{uuid.uuid4().hex[:8]}", RULES, routing)
    async with sys_.running("collector", "evaluator"):
        yield sys_


async def send_increments(system: System, requests: list[int], answered: dict[int, int]) -> None:
    """One-sample requests, 8 at a time, each with its own X-Request-Id; the status of each one answered goes
    into `answered` (a request the collector died under gets none)."""
    slots = asyncio.Semaphore(8)
    sample = {"name": "jobs_total", "labels": {"src": "crash"}, "value": 1, "kind": "increment"}

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        async with slots:
            try:
                async with session.post(
                    system.url("collector", "/api/v1/metrics"),
                    json={"samples": [sample]},
                    headers={"X-Request-Id": f"request-{n}"},
                ) as response:
                    answered[n] = response.status
            except aiohttp.ClientError:
                pass  # no answer: stored or not, the sender cannot know

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, n) for n in requests))


async def counted(system: System) -> float | None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(system.url("evaluator", "/api/v1/query"), params={"query": "jobs_total"}) as r,
    ):
        result = (await r.json())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def test_sigkill_of_the_collector_loses_nothing_and_retries_double_nothing(system: System):
    # A request the collector died under may or may not be in Redis (killed after its XADD, before its
    # answer): the sender retries it with the same X-Request-Id, and it is counted once either way.
    answered: dict[int, int] = {}
    sending = asyncio.create_task(send_increments(system, list(range(300)), answered))

    async def fifty_accepted() -> bool:
        return len(answered) >= 50

    await eventually(fifty_accepted, timeout=30, what="50 requests answered")
    system.kill("collector")
    await sending
    unanswered = [n for n in range(300) if n not in answered]
    assert len(answered) >= 50 and unanswered, len(answered)  # it died in the middle
    system.start("collector")
    await system.wait_ready("collector")
    await send_increments(system, unanswered, answered)
    assert sorted(answered) == list(range(300)) and set(answered.values()) == {202}

    async def all_counted_once() -> bool:
        return await counted(system) == 300

    await eventually(all_counted_once, timeout=30, what="the evaluator to count 300 increments")
