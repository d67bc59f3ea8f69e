"""Reloading the routing file (POST /-/reload): only a fully valid config that the notifier can run applies,
the previous one keeps running otherwise, and groups of routes that went away are re-routed, not lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from services.notifier.app import NotifierApp
from tests.fakes.webhook import FakeWebhook
from tests.notifier.running import running_notifier
from tests.polling import eventually

ADMIN = {"Authorization": "Bearer ad"}


def routing_text(url: str, *, child: str = "") -> str:
    return (
        "route:\n  receiver: first\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n"
        + child
        + f"receivers:\n  - name: first\n    webhook_configs: [{{url: '{url}/first'}}]\n"
        f"  - name: second\n    webhook_configs: [{{url: '{url}/second'}}]\n"
    )


@pytest.fixture
async def notifier(
    make_config, tmp_path: Path, webhook: FakeWebhook
) -> AsyncIterator[tuple[NotifierApp, TestClient, Path]]:
    path = tmp_path / "am.yml"
    path.write_text(routing_text(webhook.url))
    config = make_config(alerting={"config_file": str(path)})
    config.admin_token = SecretStr("ad")
    async with running_notifier(config) as (app, client):
        yield app, client, path


async def test_an_invalid_routing_file_keeps_the_running_one(notifier, webhook):
    _, client, path = notifier
    path.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: first\n")
    assert (await client.post("/-/reload")).status == 401
    response = await client.post("/-/reload", headers=ADMIN)
    assert response.status == 400
    body = await response.json()
    assert "previous routing keeps running" in body["error"]
    assert any(f"{path}:2:3:" in e and "undefined receiver" in e for e in body["errors"]), body
    metrics = await (await client.get("/metrics")).text()
    assert "tripwire_routing_reload_success 0.0" in metrics
    # An integration the notifier cannot deliver to is refused the same way.
    path.write_text("route: {receiver: s}\nreceivers: [{name: s, slack_configs: [{channel: '#x'}]}]\n")
    assert (await client.post("/-/reload", headers=ADMIN)).status == 400
    # Still routing with the old file.
    await client.post("/api/v2/alerts", json=[{"labels": {"alertname": "Down"}}])
    await eventually(lambda: _delivered(webhook, 1), what="delivery through the old routing")
    assert webhook.received[0].path == "/hook/first"


async def test_a_valid_reload_applies_and_re_routes_waiting_groups(notifier, webhook):
    app, client, path = notifier
    await client.post("/api/v2/alerts", json=[{"labels": {"alertname": "Down", "team": "b"}}])
    schedule = f"{app.service.config.redis.prefix}:{{alerts}}:group-schedule"
    await eventually(lambda: app.service.redis.zcard(schedule), what="the group to be waiting")
    # While its group waits (group_wait 1s), a route for team=b appears: the group's old route is gone.
    path.write_text(
        routing_text(webhook.url, child="  routes:\n    - matchers: [team=b]\n      receiver: second\n")
    )
    response = await client.post("/-/reload", headers=ADMIN)
    assert response.status == 200, await response.text()
    assert {r["name"] for r in await (await client.get("/api/v2/receivers")).json()} == {"first", "second"}
    await eventually(lambda: _delivered(webhook, 1), what="the waiting group's delivery")
    assert [r.path for r in webhook.received] == ["/hook/second"]


async def _delivered(webhook: FakeWebhook, n: int) -> bool:
    return len(webhook.delivered) >= n
