"""Two evaluator replicas as real processes: one holds the lease and evaluates, the other stands by and takes
over when the active one is SIGKILLed, with no duplicate notification and no gap longer than the lease."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from shared.codec import decode_entry
from tests.e2e.system import System
from tests.e2e.test_pipeline import notifier_caught_up, post_breach
from tests.fakes.webhook import FakeWebhook
from tests.polling import eventually

pytestmark = pytest.mark.e2e

LEASE_TTL = 1.0
RESEND = 1.0
RULES = """\
groups:
  - name: checkout
    rules:
      - alert: HighErrorRate
        expr: checkout_error_ratio{service="checkout"} > 0.02
        for: 1s
"""


@pytest.fixture
async def system(tmp_path: Path, redis_server, webhook: FakeWebhook) -> AsyncIterator[System]:
    routing = {
        "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook.url}]}],
    }
    overrides = {"evaluator": {"lease_ttl": f"{LEASE_TTL:g}s", "resend_delay": f"{RESEND:g}s"}}
    sys_ = System(tmp_path, redis_server.url, f"e2e-{uuid.uuid4().hex[:8]}", RULES, routing, overrides)
    async with sys_.running("collector", "notifier"):
        yield sys_


async def _status(system: System, replica: str) -> int:
    try:
        async with aiohttp.ClientSession() as s, s.get(system.url(replica, "/readyz")) as r:
            return r.status
    except aiohttp.ClientError:
        return 0


async def _standing_by(system: System, replica: str) -> bool:
    return "standing by" in (system.dir / f"{replica}.log").read_text(errors="replace")


async def _alert_entries(redis, system: System) -> list[tuple[float, dict]]:
    entries = await redis.xrange(f"{system.prefix}:{{alerts}}")
    return [(int(i.split(b"-")[0]) / 1000, item) for i, f in entries for item in decode_entry(f).items]


async def test_standby_takes_over_without_duplicate_or_long_gap(system: System, webhook: FakeWebhook, redis):
    system.start("evaluator", replica="eval-a")
    await system.wait_ready("eval-a")
    system.start("evaluator", replica="eval-b")
    await eventually(lambda: _standing_by(system, "eval-b"), timeout=30, what="eval-b to stand by")
    assert await _status(system, "eval-b") == 503  # a standby is not ready: it does not evaluate

    await post_breach(system)
    await eventually(lambda: _async(webhook.delivered), timeout=30, what="the notification")
    fired = await _alert_entries(redis, system)

    system.kill("eval-a")
    killed_at = time.time()
    await eventually(lambda: _eq(_status(system, "eval-b"), 200), timeout=30, what="eval-b to take over")
    took_over = time.time() - killed_at
    # Two re-sends from the new active replica, then everything read by the notifier.
    await eventually(lambda: _more(redis, system, killed_at, 2), timeout=30, what="re-sends from eval-b")
    await eventually(lambda: notifier_caught_up(system, redis), timeout=15, what="the notifier to catch up")

    assert len(webhook.received) == 1, [r.body for r in webhook.received]
    entries = await _alert_entries(redis, system)
    starts = {item["startsAt"] for _, item in entries}
    assert len(starts) == 1, f"the alert restarted: {starts}"  # same alert, its state carried over
    times = [t for t, _ in entries]
    gap = max(b - a for a, b in itertools.pairwise(times))
    assert took_over <= LEASE_TTL + 5, took_over
    # Re-sends every second; the kill costs at most the lease's ttl (plus a tick and the takeover's replay).
    assert gap <= RESEND + LEASE_TTL + 2.5, {"gap": gap, "took_over": took_over, "before": len(fired)}


async def _more(redis, system: System, after: float, count: int) -> bool:
    return sum(1 for t, _ in await _alert_entries(redis, system) if t > after) >= count


async def _eq(value_coro, expected: object) -> bool:
    return (await value_coro) == expected


async def _async(value: object) -> object:
    return value
