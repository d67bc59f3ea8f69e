"""Inhibition: Alertmanager's rule semantics with plain calls, then muting in the dispatcher and the API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from services.notifier.alert_store import AlertStore
from services.notifier.config import InhibitRuleConfig
from services.notifier.inhibition import Inhibitor, InhibitRule
from shared.alerts import Alert, from_unix, rfc3339
from shared.clock import FakeClock
from shared.streams import append_batch
from tests.notifier.running import running_notifier
from tests.notifier.test_dispatcher import T0, deliver, dispatcher_for
from tests.polling import eventually


def alert(**labels: str) -> Alert:
    return Alert(labels={"alertname": "A", **labels}, startsAt=from_unix(T0), endsAt=from_unix(T0 + 240))


RULE = InhibitRuleConfig(
    source_matchers=["severity=critical"], target_matchers=["severity=warning"], equal=["cluster"]
)


def test_a_firing_source_inhibits_targets_with_equal_labels():
    inhibitor = Inhibitor([InhibitRule(RULE)])
    source = alert(severity="critical", cluster="eu")
    assert inhibitor.inhibited_by({"alertname": "B", "severity": "warning", "cluster": "eu"}, [source]) == [
        source.fingerprint
    ]
    # Another cluster, or a target that does not match: not inhibited.
    assert inhibitor.inhibited_by({"alertname": "B", "severity": "warning", "cluster": "us"}, [source]) == []
    assert inhibitor.inhibited_by({"alertname": "B", "severity": "info", "cluster": "eu"}, [source]) == []


def test_a_label_missing_on_both_sides_counts_as_equal():
    inhibitor = Inhibitor([InhibitRule(RULE)])
    source = alert(severity="critical")
    assert inhibitor.inhibited_by({"alertname": "B", "severity": "warning"}, [source]) == [source.fingerprint]
    assert inhibitor.inhibited_by({"alertname": "B", "severity": "warning", "cluster": "eu"}, [source]) == []


def test_alerts_matching_both_sides_do_not_inhibit_each_other():
    both = InhibitRuleConfig(
        source_match_re={"severity": "critical|warning"}, target_match={"severity": "warning"}
    )
    inhibitor = Inhibitor([InhibitRule(both)])
    one, other = alert(severity="warning", x="1"), alert(severity="warning", x="2")
    assert inhibitor.inhibited_by(one.labels, [one, other]) == []
    # A source that matches only the source side still inhibits it.
    critical = alert(severity="critical")
    assert inhibitor.inhibited_by(one.labels, [one, other, critical]) == [critical.fingerprint]


async def test_an_inhibited_alert_is_not_delivered_while_its_source_fires(redis, keys, webhook):
    clock = FakeClock(T0 + 10)
    async with aiohttp.ClientSession() as session:
        d = dispatcher_for(redis, keys, webhook.url, session, clock)
        d.alert_store = AlertStore(redis, keys)
        d.inhibitor = Inhibitor([InhibitRule(RULE)])
        source = Alert(
            labels={"alertname": "Down", "severity": "critical"},
            startsAt=from_unix(T0),
            endsAt=from_unix(T0 + 240),
        )
        target = Alert(
            labels={"alertname": "Slow", "severity": "warning"},
            startsAt=from_unix(T0),
            endsAt=from_unix(T0 + 240),
        )
        await deliver(d, "1-0", [source, target])
        assert [b["commonLabels"]["alertname"] for b in webhook.delivered] == ["Down"]
        # The source resolves: the target is no longer inhibited. Its group is due in the same flush pass as
        # the source's (both one group_interval on), so it is notified there, alongside the resolved source;
        # the two groups flush concurrently, so their order is not fixed.
        await deliver(
            d, "2-0", [source.model_copy(update={"status": "resolved", "ends_at": from_unix(T0 + 5)})]
        )
        sent = [(b["commonLabels"]["alertname"], b["status"]) for b in webhook.delivered]
        assert sent[0] == ("Down", "firing")
        assert sorted(sent[1:]) == [("Down", "resolved"), ("Slow", "firing")]
        # Its next re-send changes nothing: already notified.
        await deliver(d, "3-0", [target])
        assert len(webhook.delivered) == 3


@pytest.fixture
async def notifier(make_config, tmp_path) -> AsyncIterator[TestClient]:
    routing = tmp_path / "am.yml"
    routing.write_text(
        "route: {receiver: console}\n"
        "receivers: [{name: console, console_configs: [{}]}]\n"
        "inhibit_rules: [{source_matchers: [severity=critical], target_matchers: [severity=warning]}]\n"
    )
    async with running_notifier(make_config(alerting={"config_file": str(routing)})) as (_, client):
        yield client


async def test_the_api_lists_an_inhibited_alert_as_suppressed(notifier):
    client = notifier
    body = [
        {"labels": {"alertname": "Down", "severity": "critical"}},
        {"labels": {"alertname": "Slow", "severity": "warning"}},
    ]
    assert (await client.post("/api/v2/alerts", json=body)).status == 200

    async def listed() -> list[dict]:
        return await (await client.get("/api/v2/alerts")).json()

    alerts = await eventually(lambda: _two(listed()), what="both alerts dispatched")
    by_name = {a["labels"]["alertname"]: a["status"] for a in alerts}
    assert by_name["Down"]["state"] == "active"
    assert by_name["Slow"]["state"] == "suppressed" and len(by_name["Slow"]["inhibitedBy"]) == 1
    hidden = await (await client.get("/api/v2/alerts", params={"inhibited": "false"})).json()
    assert [a["labels"]["alertname"] for a in hidden] == ["Down"]


async def _two(pending) -> list[dict] | None:
    alerts = await pending
    return alerts if len(alerts) == 2 else None


async def test_at_startup_inhibiting_alerts_in_the_backlog_are_known_before_sending(
    make_config, tmp_path, redis, keys, webhook
):
    """Alertmanager #4064: after a restart, a target must not be sent just because its inhibiting alert
    sits further down the backlog. Target first, source later, one entry per read."""
    routing = tmp_path / "am.yml"
    routing.write_text(
        "route: {receiver: hook, group_by: [alertname], group_wait: 0s, group_interval: 1s}\n"
        f"receivers: [{{name: hook, webhook_configs: [{{url: '{webhook.url}'}}]}}]\n"
        "inhibit_rules: [{source_matchers: [severity=critical], target_matchers: [severity=warning]}]\n"
    )
    now = time.time()
    for i, labels in enumerate(
        [{"alertname": "Slow", "severity": "warning"}, {"alertname": "Down", "severity": "critical"}]
    ):
        item = {"labels": labels, "startsAt": rfc3339(now - 60), "endsAt": rfc3339(now + 600)}
        await append_batch(redis, keys.alerts, "alerts", orjson.dumps([item]), f"c{i}", 1000)
    config = make_config(alerting={"config_file": str(routing)}, streams={"read_count": 1})
    async with running_notifier(config):
        await eventually(
            lambda: _has(webhook, "Down"), timeout=15, what="the inhibiting alert's notification"
        )
        await asyncio.sleep(1.5)  # a deliberate window (absence cannot be polled): a group_interval more
        assert [b["commonLabels"]["alertname"] for b in webhook.delivered] == ["Down"]


async def _has(webhook, name: str) -> bool:
    return any(b["commonLabels"]["alertname"] == name for b in webhook.delivered)
