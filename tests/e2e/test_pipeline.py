"""The whole pipeline as real processes: collector -> evaluator -> notifier -> a webhook, over a real Redis.

Run three times in a row for the walking-skeleton acceptance: `pytest tests/e2e --count`-free, simply
`for i in 1 2 3; do pytest tests/e2e -q || break; done`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.system import System
from tests.fakes.webhook import FakeWebhook
from tests.polling import eventually

pytestmark = pytest.mark.e2e

FOR_SECONDS = 5.0
OUTAGE = 1.5  # how long the evaluator stays dead
INTERVAL = 0.25
RULES = f"""\
groups:
  - name: checkout
    rules:
      - alert: HighErrorRate
        expr: checkout_error_ratio{{service="checkout"}} > 0.02
        for: {int(FOR_SECONDS)}s
        labels:
          severity: page
        annotations:
          summary: "Checkout error ratio is {{{{ $value }}}}"
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


async def post_breach(system: System) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            system.url("collector", "/api/v1/metrics"),
            json={
                "samples": [
                    {"name": "checkout_error_ratio", "labels": {"service": "checkout"}, "value": 0.05}
                ]
            },
        ) as response,
    ):
        assert response.status == 202, await response.text()


async def evaluator_alerts(system: System) -> list[dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(system.url("evaluator", "/api/v1/alerts")) as r,
    ):
        return (await r.json())["data"]["alerts"]


async def published_total(system: System) -> float:
    async with aiohttp.ClientSession() as session, session.get(system.url("evaluator", "/metrics")) as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tripwire_alerts_published_total{")
    )


async def notifier_caught_up(system: System, redis) -> bool:
    stream = f"{system.prefix}:{{alerts}}"
    groups = await redis.xinfo_groups(stream)
    info = next(g for g in groups if g["name"] == b"notifier")
    return info["pending"] == 0 and info["lag"] == 0


async def assert_exactly_one_notification_after_resends(system: System, webhook: FakeWebhook, redis) -> dict:
    """Wait for the first notification, then for the evaluator to re-send the firing alert at least twice and
    the notifier to have read everything: there must still be exactly one notification."""
    await eventually(lambda: _async(webhook.delivered), timeout=30, what="the webhook notification")
    baseline = await published_total(system)
    await eventually(
        lambda: _ge(published_total(system), baseline + 2),
        timeout=15,
        what="two re-sends of the firing alert",
    )
    await eventually(lambda: notifier_caught_up(system, redis), timeout=15, what="the notifier to catch up")
    assert len(webhook.received) == 1, [r.body for r in webhook.received]
    (body,) = webhook.delivered
    return body


async def test_breaking_a_rule_gives_exactly_one_webhook_notification(system: System, webhook, redis):
    await post_breach(system)
    body = await assert_exactly_one_notification_after_resends(system, webhook, redis)
    assert body["status"] == "firing"
    (alert,) = body["alerts"]
    assert alert["labels"] == {"alertname": "HighErrorRate", "service": "checkout", "severity": "page"}
    assert alert["annotations"] == {"summary": "Checkout error ratio is 0.05"}


async def test_evaluator_sigkill_while_pending_still_fires_once_on_time(system: System, webhook, redis):
    await post_breach(system)
    (pending,) = await eventually(lambda: _pending(system), timeout=15, what="the alert to be pending")
    active_at = datetime.fromisoformat(pending["activeAt"]).timestamp()

    system.kill("evaluator")
    killed_at = time.time()
    # A deliberate outage (not a wait for a condition): the evaluator stays dead for a while.
    await asyncio.sleep(OUTAGE)
    system.start("evaluator")
    await system.wait_ready("evaluator")
    ready_at = time.time()
    assert ready_at < active_at + FOR_SECONDS - 0.5, "the restart must complete while the alert is pending"

    body = await assert_exactly_one_notification_after_resends(system, webhook, redis)
    (alert,) = body["alerts"]
    fired_at = datetime.fromisoformat(alert["startsAt"]).timestamp()
    # The `for` timer survived the crash: it fired FOR_SECONDS after it went pending (at the next tick),
    # which is well before a timer restarted at the restart could have fired.
    timeline = {"active": active_at, "killed": killed_at, "ready": ready_at, "fired": fired_at}
    assert active_at + FOR_SECONDS <= fired_at <= active_at + FOR_SECONDS + 2 * INTERVAL + 0.2, timeline
    assert fired_at < ready_at + FOR_SECONDS - 1.0, timeline


async def _pending(system: System) -> list[dict]:
    return [a for a in await evaluator_alerts(system) if a["state"] == "pending"]


async def _ge(value_coro, target: float) -> bool:
    return (await value_coro) >= target


async def _async(value: object) -> object:
    return value
