"""SIGKILL of the notifier while a group waits for its first flush: after the restart the group is notified
exactly once, on its original schedule (real processes, real Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.system import System
from tests.fakes.webhook import FakeWebhook
from tests.polling import eventually

pytestmark = pytest.mark.e2e

GROUP_WAIT = 4.0
ALERT = {"labels": {"alertname": "Down", "service": "checkout"}}


@pytest.fixture
async def system(tmp_path: Path, redis_server, webhook: FakeWebhook) -> AsyncIterator[System]:
    routing = {
        "route": {
            "receiver": "hook",
            "group_by": ["alertname"],
            "group_wait": f"{int(GROUP_WAIT)}s",
            "group_interval": "1s",
        },
        "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook.url}]}],
    }
    sys_ = System(tmp_path, redis_server.url, f"e2e-{uuid.uuid4().hex[:8]}", "groups: []\n", routing)
    async with sys_.running("notifier"):
        yield sys_


async def post_alert(system: System) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(system.url("notifier", "/api/v2/alerts"), json=[ALERT]) as response,
    ):
        assert response.status == 200, await response.text()


async def test_sigkill_during_group_wait_notifies_once_on_schedule(system: System, webhook, redis):
    posted = time.monotonic()
    await post_alert(system)
    schedule = f"{system.prefix}:{{alerts}}:group-schedule"
    await eventually(lambda: redis.zcard(schedule), timeout=10, what="the group to be scheduled")
    system.kill("notifier")
    await asyncio.sleep(1.0)  # a deliberate outage, not a wait for a condition
    system.start("notifier")
    await system.wait_ready("notifier")
    restarted = time.monotonic()
    await eventually(lambda: _async(webhook.delivered), timeout=30, what="the group's notification")
    delivered = webhook.received[0].at
    # On the original schedule (posted + group_wait), not group_wait after the restart.
    assert posted + GROUP_WAIT - 0.5 <= delivered < restarted + GROUP_WAIT - 0.5, {
        "posted": 0.0,
        "restarted": restarted - posted,
        "delivered": delivered - posted,
    }
    # The alert is re-sent (as the evaluator would) and a few group_intervals pass: still one notification.
    await post_alert(system)
    await asyncio.sleep(3.0)  # a deliberate window (absence cannot be polled): three group_intervals
    assert len(webhook.received) == 1, [r.body for r in webhook.received]


async def _async(value: object) -> object:
    return value
