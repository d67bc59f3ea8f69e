"""SIGKILL of the notifier after the vendor received its request but before the notifier could record it:
after the restart there is still exactly one Slack message / one PagerDuty incident (real processes, real
Redis, the vendor fakes)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.e2e.system import System
from tests.fakes.http import FakeServer
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlackApi, FakeSlackWebhook
from tests.polling import eventually

pytestmark = pytest.mark.e2e

ROUTING_KEY = "0123456789abcdef0123456789abcdef"
ALERT = {"labels": {"alertname": "Down", "service": "checkout", "severity": "critical"}}
LEASE = 2.0  # notifier.claim_lease: how soon the restarted notifier takes the interrupted group back


async def fake_and_integration(kind: str, tmp_path: Path) -> tuple[FakeServer, dict]:
    if kind == "slack-webhook":
        hook = await FakeSlackWebhook().start()
        (tmp_path / "slack-url").write_text(hook.webhook_url)
        return hook, {"slack_configs": [{"api_url_file": str(tmp_path / "slack-url")}]}
    if kind == "slack-bot":
        api = await FakeSlackApi().start()
        (tmp_path / "slack-token").write_text(api.token)
        bot = {"token_file": str(tmp_path / "slack-token"), "channel": "#alerts", "api_url": api.base_url}
        return api, {"slack_configs": [bot]}
    pd = await FakePagerDuty().start()
    (tmp_path / "pd-key").write_text(ROUTING_KEY)
    return pd, {"pagerduty_configs": [{"routing_key_file": str(tmp_path / "pd-key"), "url": pd.enqueue_url}]}


def delivered(fake: FakeServer) -> int:
    """Messages/incidents the vendor holds (what on-call people would see)."""
    if isinstance(fake, FakeSlackWebhook):
        return len(fake.messages)
    if isinstance(fake, FakeSlackApi):
        return len(fake.messages("alerts"))
    assert isinstance(fake, FakePagerDuty)
    return len(fake.incidents)


@pytest.mark.parametrize("kind", ["slack-webhook", "slack-bot", "pagerduty"])
async def test_sigkill_after_the_vendor_got_the_request_still_one_message(
    kind: str, tmp_path: Path, redis_server
):
    fake, integration = await fake_and_integration(kind, tmp_path)
    routing = {
        "route": {
            "receiver": "oncall",
            "group_by": ["alertname"],
            "group_wait": "0s",
            "group_interval": "1s",
        },
        "receivers": [{"name": "oncall", **integration}],
    }
    system = System(
        tmp_path,
        redis_server.url,
        f"e2e-{uuid.uuid4().hex[:8]}",
        "groups: []\n",
        routing,
        overrides={"notifier": {"claim_lease": f"{LEASE:g}s", "startup_wait": "2s"}},
    )
    try:
        async with system.running("notifier"):
            fake.hang_next(1)  # the vendor does the work, then the answer never comes
            async with aiohttp.ClientSession() as session:
                response = await session.post(system.url("notifier", "/api/v2/alerts"), json=[ALERT])
                assert response.status == 200
            await eventually(lambda: _value(delivered(fake) == 1), timeout=15, what="the vendor to get it")
            system.kill("notifier")  # before the notifier could record it as sent
            system.start("notifier")
            await system.wait_ready("notifier")
            # The restarted notifier re-claims the group once the dead one's lease lapses and reconciles.
            await asyncio.sleep(LEASE * 3)  # a deliberate window (absence cannot be polled): three leases
            assert delivered(fake) == 1, [r for r in fake.requests]
            # ...and it did look again: the delivery is now recorded as sent and its intent is gone.
            integration_name = "pagerduty[0]" if kind == "pagerduty" else "slack[0]"
            log = f"{system.prefix}:{{alerts}}:nflog:oncall/{integration_name}"
            async with Redis.from_url(redis_server.url) as redis:
                assert await redis.hlen(log) == 1
                assert await redis.hlen(f"{log}:intent") == 0
            if isinstance(fake, FakeSlackApi):
                assert fake.calls("conversations.history"), "the bot looked for its message before re-posting"
            if isinstance(fake, FakePagerDuty):
                # PagerDuty's replay is the reconciliation: same dedup_key, still one incident.
                assert len({e["dedup_key"] for e in fake.events}) == 1
    finally:
        await fake.stop()


async def _value(value: object) -> object:
    return value
