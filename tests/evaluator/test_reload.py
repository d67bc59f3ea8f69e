"""Reloading rules (POST /-/reload, file changes) and the query API, on a real Redis and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from redis.asyncio import Redis

from services.evaluator import reload as reload_module
from services.evaluator.app import EvaluatorApp, build
from services.evaluator.rules.alerting import AlertState
from shared.clock import FakeClock
from shared.streams import Keys, append_batch
from shared.tasks import cancel_and_wait
from tests.polling import eventually

T0 = 1_800_000_000.0
RULES = """\
groups:
  - name: checkout
    rules:
      - alert: HighErrorRate
        expr: checkout_error_ratio > 0.02
        for: 5m
"""
MORE_RULES = (
    RULES
    + """\
      - record: checkout:error_ratio:max
        expr: max(checkout_error_ratio)
"""
)


@pytest.fixture
async def app(make_config, tmp_path: Path) -> AsyncIterator[tuple[EvaluatorApp, TestClient, Path]]:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    config = make_config(rule_files=[str(rules)])
    config.admin_token = SecretStr("s3cret")
    evaluator_app = build(config, FakeClock(T0))
    await evaluator_app.start()
    client = TestClient(TestServer(evaluator_app.service.web))
    await client.start_server()
    try:
        yield evaluator_app, client, rules
    finally:
        await client.close()
        await evaluator_app.service.stop()


ADMIN = {"Authorization": "Bearer s3cret"}


async def _pending_alert(app: EvaluatorApp, redis: Redis, keys: Keys) -> None:
    samples = [{"name": "checkout_error_ratio", "value": 0.05, "timestamp": T0 - 15}]
    await append_batch(redis, keys.metrics, "metrics", orjson.dumps(samples), "t", 1000)
    await eventually(lambda: _has_series(app), what="the sample applied")
    await app.evaluator.tick(app.evaluator.groups[0], T0)


async def _has_series(app: EvaluatorApp) -> bool:
    return len(app.evaluator.store) > 0


def _alert(app: EvaluatorApp):
    (rule,) = [r for r in app.evaluator.groups[0].rules if r.name == "HighErrorRate"]
    (alert,) = rule.active.values()
    return alert


async def test_invalid_reload_keeps_the_running_rules(app, redis, keys):
    evaluator_app, client, rules = app
    await _pending_alert(evaluator_app, redis, keys)
    rules.write_text(RULES.replace("> 0.02", "> "))  # bad PromQL
    response = await client.post("/-/reload", headers=ADMIN)
    assert response.status == 400
    body = await response.json()
    assert "previous rules keep running" in body["error"]
    assert any("rules.yml:5:" in e and "could not parse expression" in e for e in body["errors"]), body
    assert [r.name for r in evaluator_app.evaluator.groups[0].rules] == ["HighErrorRate"]
    assert _alert(evaluator_app).state == AlertState.PENDING
    metrics = await (await client.get("/metrics")).text()
    assert "tripwire_rules_reload_success 0.0" in metrics
    assert 'tripwire_rules_last_reload_error_info{error="' in metrics and "could not parse" in metrics


async def test_valid_reload_applies_and_keeps_state(app, redis, keys):
    evaluator_app, client, rules = app
    await _pending_alert(evaluator_app, redis, keys)
    before = _alert(evaluator_app)
    rules.write_text(MORE_RULES)
    response = await client.post("/-/reload", headers=ADMIN)
    assert response.status == 200, await response.text()
    assert (await response.json())["data"] == {"groups": 1, "rules": 2, "rules_kept_state": 1}
    assert [r.name for r in evaluator_app.evaluator.groups[0].rules] == [
        "HighErrorRate",
        "checkout:error_ratio:max",
    ]
    after = _alert(evaluator_app)
    # The pending alert's `for` keeps counting from its original start.
    assert after.state == AlertState.PENDING and after.active_at == before.active_at == T0
    # Still breaching 5 minutes after the start: it fires on time, as if no reload had happened.
    evaluator_app.evaluator.store.add("checkout_error_ratio", {}, T0 + 285, 0.05)
    await evaluator_app.evaluator.tick(evaluator_app.evaluator.groups[0], T0 + 300)
    assert _alert(evaluator_app).state == AlertState.FIRING
    assert "tripwire_rules_reload_success 1.0" in await (await client.get("/metrics")).text()


async def test_reload_needs_the_admin_token(app):
    _, client, _ = app
    assert (await client.post("/-/reload")).status == 401


async def test_a_changed_rule_file_is_picked_up(app, monkeypatch):
    evaluator_app, _, rules = app
    monkeypatch.setattr(reload_module, "WATCH_INTERVAL", 0.05)
    watcher = asyncio.create_task(evaluator_app.reloader.watch())
    try:
        rules.write_text(MORE_RULES + "\n")
        await eventually(
            lambda: _async(len(evaluator_app.evaluator.groups[0].rules) == 2), what="the changed file applied"
        )
    finally:
        assert await cancel_and_wait([watcher])


async def test_query_api_answers_in_prometheus_shape(app, redis, keys):
    evaluator_app, client, _ = app
    await _pending_alert(evaluator_app, redis, keys)
    response = await client.get(
        "/api/v1/query", params={"query": "checkout_error_ratio * 2", "time": str(T0)}
    )
    assert await response.json() == {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [T0, "0.1"]}]},
    }
    scalar = await (await client.get("/api/v1/query", params={"query": "1 + 1", "time": str(T0)})).json()
    assert scalar["data"] == {"resultType": "scalar", "result": [T0, "2"]}
    bad = await client.get("/api/v1/query", params={"query": "rate(x[5m]"})
    assert bad.status == 400 and (await bad.json())["errorType"] == "bad_data"
    alerts = await (await client.get("/api/v1/alerts")).json()
    assert alerts["data"]["alerts"][0]["value"] == "5e-02"  # strconv.FormatFloat(v, 'e', -1, 64)


async def _async(value: object) -> object:
    return value


async def test_the_api_shows_an_alert_state_only_once_it_is_persisted(app, redis, keys):
    evaluator_app, client, _ = app
    evaluator = evaluator_app.evaluator
    samples = [{"name": "checkout_error_ratio", "value": 0.05, "timestamp": T0 - 15}]
    await append_batch(redis, keys.metrics, "metrics", orjson.dumps(samples), "t", 1000)
    await eventually(lambda: _has_series(evaluator_app), what="the sample applied")
    saving, release = asyncio.Event(), asyncio.Event()
    real_save = evaluator.state.save

    async def slow_save(*args, **kwargs):
        saving.set()
        await release.wait()
        await real_save(*args, **kwargs)

    evaluator.state.save = slow_save
    tick = asyncio.create_task(evaluator.tick(evaluator.groups[0], T0))
    await saving.wait()  # evaluated in memory (pending), not yet in Redis
    reading = asyncio.create_task(client.get("/api/v1/alerts"))
    done, _ = await asyncio.wait({reading}, timeout=0.3)
    assert not done, "the API answered with a state that a crash now would lose"
    release.set()
    await tick
    alerts = (await (await reading).json())["data"]["alerts"]
    assert [a["state"] for a in alerts] == ["pending"]
