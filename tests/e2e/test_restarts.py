"""SIGKILL of the evaluator while an alert is firing, and while it is held by keep_firing_for: after a restart
the alert's timeline is the one an uninterrupted run gives (same startsAt, no duplicate firing notification,
resolved exactly when keep_firing_for runs out)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from shared.codec import decode_entry
from tests.e2e.system import System
from tests.e2e.test_pipeline import evaluator_alerts, notifier_caught_up
from tests.fakes.webhook import FakeWebhook
from tests.polling import eventually

pytestmark = pytest.mark.e2e

KEEP_FIRING = 4.0
OUTAGE = 1.0  # how long the evaluator stays dead
RULES = f"""\
groups:
  - name: checkout
    rules:
      - alert: HighErrorRate
        expr: checkout_error_ratio{{service="checkout"}} > 0.02
        for: 1s
        keep_firing_for: {int(KEEP_FIRING)}s
"""


@pytest.fixture
async def system(tmp_path: Path, redis_server, webhook: FakeWebhook) -> AsyncIterator[System]:
    routing = {
        "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook.url}]}],
    }
    sys_ = System(tmp_path, redis_server.url, f"e2e-{uuid.uuid4().hex[:8]}", RULES, routing)
    async with sys_.running():
        yield sys_


async def post_ratio(system: System, value: float) -> None:
    sample = {"name": "checkout_error_ratio", "labels": {"service": "checkout"}, "value": value}
    async with (
        aiohttp.ClientSession() as session,
        session.post(system.url("collector", "/api/v1/metrics"), json={"samples": [sample]}) as response,
    ):
        assert response.status == 202, await response.text()


async def restart_evaluator(system: System) -> None:
    system.kill("evaluator")
    await asyncio.sleep(OUTAGE)  # a deliberate outage, not a wait for a condition
    system.start("evaluator")
    await system.wait_ready("evaluator")


async def alert_entries(redis, system: System) -> list[dict]:
    entries = await redis.xrange(f"{system.prefix}:{{alerts}}")
    return [item for _, fields in entries for item in decode_entry(fields).items]


async def test_sigkill_while_firing_keeps_the_alert_firing_once(system: System, webhook, redis):
    await post_ratio(system, 0.05)
    await eventually(lambda: _async(webhook.delivered), timeout=30, what="the firing notification")
    await restart_evaluator(system)
    restarted = time.time()
    await eventually(
        lambda: _sent_after(redis, system, restarted, 2), timeout=30, what="re-sends after restart"
    )
    await eventually(lambda: notifier_caught_up(system, redis), timeout=15, what="the notifier to catch up")
    assert [b["status"] for b in webhook.delivered] == ["firing"]
    entries = await alert_entries(redis, system)
    assert {e["status"] for e in entries} == {"firing"}, "a firing alert was resolved by the crash"
    assert len({e["startsAt"] for e in entries}) == 1, "the alert restarted"


async def test_sigkill_during_keep_firing_for_resolves_on_time(system: System, webhook, redis):
    await post_ratio(system, 0.05)
    await eventually(lambda: _async(webhook.delivered), timeout=30, what="the firing notification")
    await post_ratio(system, 0.0)  # the condition clears: keep_firing_for holds the alert
    (held,) = await eventually(lambda: _held(system), timeout=15, what="keep_firing_for to start")
    since = datetime.fromisoformat(held["keepFiringSince"]).timestamp()
    await restart_evaluator(system)
    back = time.time()  # ready again; on a loaded machine that can be after keep_firing_for ran out
    await eventually(
        lambda: _async(len(webhook.delivered) >= 2), timeout=30, what="the resolved notification"
    )
    await eventually(lambda: notifier_caught_up(system, redis), timeout=15, what="the notifier to catch up")
    assert [b["status"] for b in webhook.delivered] == ["firing", "resolved"]
    (resolved,) = webhook.delivered[1]["alerts"]
    resolved_at = datetime.fromisoformat(resolved["endsAt"]).timestamp()
    # Resolved at the first tick once keep_firing_for (counted from before the crash) has run out, or at
    # the first tick after the restart if the evaluator came back later than that.
    assert since + KEEP_FIRING <= resolved_at <= max(since + KEEP_FIRING, back) + 1.0, {
        "since": since,
        "back": back,
        "at": resolved_at,
    }


async def _held(system: System) -> list[dict]:
    return [a for a in await evaluator_alerts(system) if a.get("keepFiringSince")]


async def _sent_after(redis, system: System, after: float, count: int) -> bool:
    entries = await redis.xrange(f"{system.prefix}:{{alerts}}", min=f"{int(after * 1000)}-0")
    return len(entries) >= count


async def _async(value: object) -> object:
    return value
