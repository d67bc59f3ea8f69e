"""POST/GET /api/v2/alerts and /api/v2/receivers on a running notifier (real Redis, its stream consumer
running), and the real `amtool alert query` against it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from services.notifier.app import NotifierApp
from tests.notifier.running import AMTOOL, NO_AMTOOL, amtool, running_notifier
from tests.polling import eventually

ALERT = {"labels": {"alertname": "HighErrorRate", "service": "checkout"}, "annotations": {"summary": "5%"}}


@pytest.fixture
async def notifier(make_config) -> AsyncIterator[tuple[NotifierApp, TestClient]]:
    config = make_config()
    config.ingest_token = SecretStr("in")
    config.admin_token = SecretStr("ad")
    async with running_notifier(config) as running:
        yield running


INGEST, ADMIN = {"Authorization": "Bearer in"}, {"Authorization": "Bearer ad"}


async def _listed(client: TestClient, **params: str) -> list[dict]:
    response = await client.get("/api/v2/alerts", params=params)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_posted_alerts_flow_through_the_stream_and_are_listed(notifier):
    _, client = notifier
    assert (await client.post("/api/v2/alerts", json=[ALERT])).status == 401
    assert (await client.post("/api/v2/alerts", json=[ALERT], headers=INGEST)).status == 200
    (listed,) = await eventually(lambda: _listed(client), what="the posted alert to be dispatched")
    assert listed["labels"] == ALERT["labels"] and listed["annotations"] == ALERT["annotations"]
    assert listed["receivers"] == [{"name": "console"}]
    assert listed["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": [], "mutedBy": []}
    assert listed["endsAt"] > listed["startsAt"]  # resolve_timeout applied, as Alertmanager
    assert set(listed) >= {"fingerprint", "updatedAt", "generatorURL"}
    assert await _listed(client, filter='service="payments"') == []
    assert await (await client.get("/api/v2/receivers")).json() == [{"name": "console"}]


async def test_a_silenced_alert_is_listed_as_suppressed(notifier):
    _, client = notifier
    await client.post("/api/v2/alerts", json=[ALERT], headers=INGEST)
    await eventually(lambda: _listed(client), what="the posted alert to be dispatched")
    silence = {
        "matchers": [{"name": "service", "value": "checkout", "isRegex": False}],
        "startsAt": "2020-01-01T00:00:00Z",
        "endsAt": "2999-01-01T00:00:00Z",
        "createdBy": "oncall",
        "comment": "known",
    }
    sid = (await (await client.post("/api/v2/silences", json=silence, headers=ADMIN)).json())["silenceID"]
    (listed,) = await _listed(client)
    assert listed["status"]["state"] == "suppressed" and listed["status"]["silencedBy"] == [sid]
    assert await _listed(client, silenced="false") == []
    assert len(await _listed(client, active="false")) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([{"labels": {}}], "at least 1 item"),
        ([{"labels": {"service": "x"}}], "alertname"),
        ([{"labels": {"alertname": "A", "0bad": "x"}}], "labels.0bad"),
        ([{**ALERT, "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2029-01-01T00:00:00Z"}], "before end"),
        ({"labels": {"alertname": "A"}}, "valid array"),
    ],
)
async def test_invalid_alerts_are_refused_with_the_reason(notifier, body: object, reason: str):
    _, client = notifier
    response = await client.post("/api/v2/alerts", json=body, headers=INGEST)
    assert response.status == 400
    assert reason in await response.json()


@pytest.mark.skipif(AMTOOL is None, reason=NO_AMTOOL)
async def test_the_real_amtool_queries_alerts(make_config):
    async with running_notifier(make_config()) as (_, client):
        await client.post("/api/v2/alerts", json=[ALERT])
        await eventually(lambda: _listed(client), what="the posted alert to be dispatched")
        code, out, err = await amtool(client.server.port, "alert", "query", "service=checkout")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split()[:2] == ["Alertname", "Starts"] and "HighErrorRate" in lines[1], out


async def test_alert_groups_and_status(make_config, tmp_path, webhook):
    routing = tmp_path / "am.yml"
    routing.write_text(
        "route: {receiver: hook, group_by: [service]}\n"
        f"receivers: [{{name: hook, webhook_configs: [{{url: '{webhook.url}'}}]}}]\n"
    )
    async with running_notifier(make_config(alerting={"config_file": str(routing)})) as (_, client):
        body = [ALERT, {"labels": {"alertname": "Slow", "service": "checkout"}}]
        assert (await client.post("/api/v2/alerts", json=body)).status == 200
        await eventually(lambda: _count(_listed(client), 2), what="both alerts dispatched")
        (group,) = await (await client.get("/api/v2/alerts/groups")).json()
        assert group["labels"] == {"service": "checkout"} and group["receiver"] == {"name": "hook"}
        assert sorted(a["labels"]["alertname"] for a in group["alerts"]) == ["HighErrorRate", "Slow"]
        status = await (await client.get("/api/v2/status")).json()
        assert status["cluster"]["status"] == "disabled" and status["versionInfo"]["version"]
        assert webhook.url not in status["config"]["original"] and "<secret>" in status["config"]["original"]
        if AMTOOL is not None:
            code, out, err = await amtool(client.server.port, "config", "show")
            assert code == 0 and "receiver: hook" in out, err


async def _count(pending, n: int) -> bool:
    return len(await pending) == n
