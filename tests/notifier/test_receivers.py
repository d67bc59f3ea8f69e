"""Slack and PagerDuty delivery through the dispatcher, against real Redis and the vendor fakes: retries,
Retry-After, permanent errors, one message per group updated on resolution, reconciliation of interrupted
deliveries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from services.notifier.app import ReceiverDeps, build_receivers
from services.notifier.config import RoutingConfig, load_routing
from services.notifier.dispatcher import Dispatcher, DispatchMetrics
from services.notifier.health import IntegrationHealth
from services.notifier.nflog import Intent, NotifierState
from services.notifier.receivers.delivery import RateLimits
from services.notifier.receivers.pagerduty import dedup_key
from services.notifier.routing import Route
from shared.alerts import Alert, from_unix
from shared.clock import Clock, FakeClock, SystemClock
from shared.yamlfile import ConfigErrors
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlackApi, FakeSlackWebhook
from tests.notifier.running import running_notifier

T0 = 1_800_000_000.0
ROUTE = {"receiver": "oncall", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s"}
ROUTING_KEY = "0123456789abcdef0123456789abcdef"


def alert(name: str = "HighErrorRate", status: str = "firing", at: float = T0, **labels: str) -> Alert:
    return Alert(
        labels={"alertname": name, "service": "checkout", "severity": "critical", **labels},
        annotations={"summary": "Error rate is 5.3%", "runbook_url": "https://runbooks/errors"},
        startsAt=from_unix(at),
        endsAt=from_unix(at + 3600 if status == "firing" else at + 60),
        generatorURL="http://evaluator:9401/graph?g0.expr=x",
        status=status,  # type: ignore[arg-type]
    )


@pytest.fixture
async def slack_hook() -> AsyncIterator[FakeSlackWebhook]:
    fake = await FakeSlackWebhook().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def slack_api() -> AsyncIterator[FakeSlackApi]:
    fake = await FakeSlackApi().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def pagerduty() -> AsyncIterator[FakePagerDuty]:
    fake = await FakePagerDuty().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    return str(path)


def dispatcher(
    redis,
    keys,
    session,
    clock: Clock,
    integrations: dict[str, Any],
    registry: CollectorRegistry | None = None,
) -> Dispatcher:
    routing = RoutingConfig.model_validate(
        {"route": ROUTE, "receivers": [{"name": "oncall", **integrations}]}
    )
    registry = registry or CollectorRegistry()
    state = NotifierState(redis, keys)
    deps = ReceiverDeps(
        session, clock, state, RateLimits(clock), "http://notifier:9402", "http://am/#/silences/new"
    )
    return Dispatcher(
        tree=Route.build(routing.route),
        receivers=build_receivers(routing, deps),
        state=state,
        clock=clock,
        external_url="http://notifier:9402",
        resolve_timeout=300.0,
        metrics=DispatchMetrics(registry),
        health=IntegrationHealth(registry),
    )


async def test_a_429_with_retry_after_2_is_delivered_once_after_2_seconds(
    redis, keys, session, slack_hook, tmp_path
):
    slack_hook.fail_next(1, status=429, headers={"Retry-After": "2"}, body="rate_limited")
    hook = {"api_url_file": secret_file(tmp_path, "url", slack_hook.webhook_url), "send_resolved": True}
    d = dispatcher(redis, keys, session, SystemClock(), {"slack_configs": [hook]})
    await d.dispatch("1-0", [alert()])
    await d.flush_due()
    statuses = [r.status for r in slack_hook.requests]
    assert statuses == [429, 200]
    assert slack_hook.requests[1].at - slack_hook.requests[0].at >= 2.0
    assert len(slack_hook.messages) == 1


async def test_5xx_for_10_seconds_is_delivered_once_after_recovery(
    redis, keys, session, slack_hook, tmp_path
):
    clock = FakeClock(T0)
    slack_hook.fail_next(10_000, status=500, body="rollup_error")
    hook = {"api_url_file": secret_file(tmp_path, "url", slack_hook.webhook_url), "retry_deadline": "60s"}
    d = dispatcher(redis, keys, session, clock, {"slack_configs": [hook]})
    await d.dispatch("1-0", [alert()])
    flush = asyncio.create_task(d.flush_due())
    recovered_at = None
    while not flush.done():
        await clock.advance(0.25)
        if recovered_at is None and clock.now() >= T0 + 10:
            slack_hook.failures.clear()  # the outage ends after 10 s
            recovered_at = time.monotonic()
        await asyncio.sleep(0.001)  # let the HTTP round trip happen in real time
    await flush
    assert recovered_at is not None
    delivered = [r for r in slack_hook.requests if r.status == 200]
    assert len(delivered) == 1 and delivered[0].at >= recovered_at
    assert len([r for r in slack_hook.requests if r.status == 500]) >= 3
    assert len(slack_hook.messages) == 1


async def test_404_no_service_is_not_retried_and_marks_the_receiver_unhealthy(
    redis, keys, session, slack_hook, tmp_path
):
    slack_hook.disable("no_service")
    registry = CollectorRegistry()
    hook = {"api_url_file": secret_file(tmp_path, "url", slack_hook.webhook_url)}
    d = dispatcher(redis, keys, session, SystemClock(), {"slack_configs": [hook]}, registry)
    await d.dispatch("1-0", [alert()])
    await d.flush_due()
    assert [r.status for r in slack_hook.requests] == [404]
    assert (
        registry.get_sample_value(
            "tripwire_notifier_integration_healthy", {"receiver": "oncall", "integration": "slack[0]"}
        )
        == 0
    )
    [unhealthy] = d.health.details()["unhealthy_integrations"]  # type: ignore[union-attr,index]
    assert unhealthy["integration"] == "slack[0]" and "no_service" in unhealthy["reason"]
    assert slack_hook.webhook_url not in unhealthy["reason"]  # the URL is the secret
    dead = await redis.xrange(keys.notifications_dlq)
    assert len(dead) == 1 and dead[0][1][b"permanent"] == b"true"
    # Fixed (say, the channel was restored): the next flush delivers and the receiver is healthy again.
    slack_hook.enable()
    d.clock = SystemClock()
    await d.schedule.retry_at(await _only_group(d), 0)
    await d.flush_due()
    assert len(slack_hook.messages) == 1
    assert d.health.details() == {"unhealthy_integrations": []}  # type: ignore[union-attr]


async def _only_group(d: Dispatcher):
    [group] = await d.schedule.claim_due(float("inf"), 0.0)  # whatever its time (claimed or not)
    return group


async def test_bot_token_posts_once_then_updates_the_same_message_and_replies_when_resolved(
    redis, keys, session, slack_api, tmp_path
):
    clock = FakeClock(T0)
    bot = {
        "token_file": secret_file(tmp_path, "token", slack_api.token),
        "channel": "#alerts",
        "api_url": slack_api.base_url,
    }
    d = dispatcher(redis, keys, session, clock, {"slack_configs": [bot]})
    await d.dispatch("1-0", [alert(instance="a"), alert(instance="b"), alert(instance="c")])
    await d.flush_due()
    [message] = slack_api.messages("alerts")
    assert "FIRING" in message["text"] and message["metadata"]["event_type"] == "tripwire_notification"
    clock.set(T0 + 60)
    await d.dispatch("2-0", [alert(status="resolved", at=T0, instance=i) for i in "abc"])
    await d.flush_due()
    [updated] = slack_api.messages("alerts")  # still one top-level message
    assert updated["ts"] == message["ts"]
    assert "RESOLVED" in updated["text"] and updated["text"] != message["text"]
    [update_call] = slack_api.calls("chat.update")
    assert update_call.json["ts"] == message["ts"]
    assert any("Resolved" in reply["text"] for reply in updated["replies"])
    # The group fires again later: a new story, a new message.
    clock.set(T0 + 600)
    await d.dispatch("3-0", [alert(at=T0 + 600, instance="a")])
    await d.flush_due()
    assert len(slack_api.messages("alerts")) == 2


async def test_pagerduty_triggers_and_resolves_one_incident_keyed_by_the_group(
    redis, keys, session, pagerduty, tmp_path
):
    clock = FakeClock(T0)
    pd = {"routing_key_file": secret_file(tmp_path, "key", ROUTING_KEY), "url": pagerduty.enqueue_url}
    d = dispatcher(redis, keys, session, clock, {"pagerduty_configs": [pd]})
    await d.dispatch("1-0", [alert(instance="a"), alert(instance="b")])
    await d.flush_due()
    [trigger] = pagerduty.events
    group_key = '{}:{alertname="HighErrorRate"}'
    assert trigger["dedup_key"] == dedup_key(group_key)
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["class"] == "HighErrorRate" and trigger["payload"]["component"] == "checkout"
    assert {"href": "https://runbooks/errors", "text": "Runbook"} in trigger["links"]
    clock.set(T0 + 60)
    await d.dispatch("2-0", [alert(status="resolved", instance=i) for i in "ab"])
    await d.flush_due()
    assert [e["event_action"] for e in pagerduty.events] == ["trigger", "resolve"]
    [incident] = pagerduty.incidents.values()
    assert incident.status == "resolved"


async def test_pagerduty_400_is_permanent(redis, keys, session, pagerduty, tmp_path):
    pd = {"routing_key_file": secret_file(tmp_path, "key", "too-short"), "url": pagerduty.enqueue_url}
    d = dispatcher(redis, keys, session, SystemClock(), {"pagerduty_configs": [pd]})
    await d.dispatch("1-0", [alert()])
    await d.flush_due()
    assert [r.status for r in pagerduty.requests] == [400]
    assert d.health.unhealthy  # type: ignore[union-attr]


async def test_an_interrupted_bot_post_found_in_the_channel_is_not_posted_again(
    redis, keys, session, slack_api, tmp_path
):
    """The crash case without the crash: an intent left 'sending' whose message Slack did store."""
    clock = FakeClock(T0)
    bot = {
        "token_file": secret_file(tmp_path, "token", slack_api.token),
        "channel": "#alerts",
        "api_url": slack_api.base_url,
    }
    d = dispatcher(redis, keys, session, clock, {"slack_configs": [bot]})
    slack_api.hang_next(1)
    await d.dispatch("1-0", [alert()])
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await d.flush_due()  # the post hangs: as good as a crash mid-request
    [message] = slack_api.messages("alerts")
    group_key = '{}:{alertname="HighErrorRate"}'
    intent = await d.state.intent("oncall/slack[0]", group_key)
    assert isinstance(intent, Intent) and intent.state == "sending"
    d2 = dispatcher(redis, keys, session, clock, {"slack_configs": [bot]})  # "after the restart"
    await d2.schedule.retry_at(await _only_group(d2), 0)
    await d2.flush_due()
    assert len(slack_api.messages("alerts")) == 1
    assert len(slack_api.calls("chat.postMessage")) == 1
    assert await d2.state.intent("oncall/slack[0]", group_key) is None
    ref = await d2.state.message_ref("oncall/slack[0]", group_key)
    assert ref is not None and ref["ts"] == message["ts"]  # found, and kept for the resolution's update


def test_literal_secrets_are_refused_with_file_and_line(tmp_path: Path):
    path = tmp_path / "am.yml"
    path.write_text(
        orjson.dumps(
            {
                "route": {"receiver": "oncall"},
                "receivers": [
                    {
                        "name": "oncall",
                        "slack_configs": [{"api_url": "https://hooks.slack.com/services/T/B/secret"}],
                        "pagerduty_configs": [{"routing_key": "${PD_KEY}"}],
                    }
                ],
            }
        ).decode()
    )
    routing = load_routing(path)  # loads: `routes test` works on any Alertmanager file

    async def build() -> None:
        async with aiohttp.ClientSession() as s:
            build_receivers(routing, ReceiverDeps(s, SystemClock()))

    with pytest.raises(ConfigErrors) as caught:
        asyncio.run(build())
    text = str(caught.value)
    assert f"{path}:1" in text and "api_url_file" in text
    assert "hooks.slack.com" not in text  # the value is not echoed
    assert "routing_key" not in text  # an ${ENV} reference is fine


async def test_an_unreadable_secret_is_reported_at_start_on_readyz(make_config, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("TRIPWIRE_TEST_PD_KEY", raising=False)
    routing = tmp_path / "am.yml"
    routing.write_text(
        orjson.dumps(
            {
                "route": {"receiver": "oncall"},
                "receivers": [
                    {"name": "oncall", "pagerduty_configs": [{"routing_key": "${TRIPWIRE_TEST_PD_KEY}"}]}
                ],
            }
        ).decode()
    )
    config = make_config(alerting={"config_file": str(routing)}, notifier={"startup_wait": "0s"})
    async with running_notifier(config) as (_, client):
        response = await client.get("/readyz")
        body = await response.json()
    assert response.status == 200  # the API and the other receivers work
    [unhealthy] = body["details"]["unhealthy_integrations"]
    assert unhealthy["integration"] == "pagerduty[0]"
    assert "TRIPWIRE_TEST_PD_KEY is not set" in unhealthy["reason"]


async def test_a_request_we_gave_up_on_is_sent_again_not_assumed_delivered(
    redis, keys, session, slack_hook, tmp_path
):
    """Every attempt times out (the request may or may not have arrived), the process gives up: at the next
    flush a Slack webhook delivery is sent again. Only a crash mid-request counts as delivered."""

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # accept, never answer
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url_file = Path(secret_file(tmp_path, "url", f"http://127.0.0.1:{port}/services/T/B/x"))
    hook = {"api_url_file": str(url_file), "timeout": "200ms", "retry_deadline": "500ms"}
    d = dispatcher(redis, keys, session, SystemClock(), {"slack_configs": [hook]})
    try:
        await d.dispatch("1-0", [alert()])
        await d.flush_due()
        intent = await d.state.intent("oncall/slack[0]", '{}:{alertname="HighErrorRate"}')
        assert intent is not None and intent.state == "abandoned"
        secret_file(tmp_path, "url", slack_hook.webhook_url)  # Slack is reachable again
        await d.schedule.retry_at(await _only_group(d), 0)
        await d.flush_due()
        assert len(slack_hook.messages) == 1
    finally:
        server.close()


async def test_a_new_incident_in_a_group_whose_resolution_was_not_sent_gets_a_new_message(
    redis, keys, session, slack_api, tmp_path
):
    clock = FakeClock(T0)
    bot = {
        "token_file": secret_file(tmp_path, "token", slack_api.token),
        "channel": "#alerts",
        "api_url": slack_api.base_url,
        "send_resolved": False,
    }
    d = dispatcher(redis, keys, session, clock, {"slack_configs": [bot]})
    await d.dispatch("1-0", [alert(instance="a")])
    await d.flush_due()
    clock.set(T0 + 60)
    await d.dispatch("2-0", [alert(status="resolved", instance="a")])
    await d.flush_due()
    clock.set(T0 + 600)
    await d.dispatch("3-0", [alert(at=T0 + 600, instance="b")])
    await d.flush_due()
    messages = slack_api.messages("alerts")
    assert len(messages) == 2, messages  # seen in the channel, not buried in the old thread
    assert not slack_api.calls("chat.update")
