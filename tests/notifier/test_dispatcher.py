"""Route -> group -> dedup -> deliver -> record, against a real Redis and a fake webhook receiver."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from services.notifier.app import ReceiverDeps, build_receivers
from services.notifier.config import RoutingConfig, WebhookConfig
from services.notifier.dispatcher import Dispatcher, DispatchMetrics
from services.notifier.nflog import LogEntry, NotifierState
from services.notifier.notification import Notification
from services.notifier.receivers import DeliveryError
from services.notifier.receivers.console import ConsoleIntegration, format_line
from services.notifier.receivers.delivery import NoJournal
from services.notifier.receivers.webhook import WebhookIntegration
from services.notifier.routing import Route
from services.notifier.stages import dedup as needs_update
from shared.alerts import Alert, from_unix
from shared.clock import FakeClock, SystemClock

T0 = 1_800_000_000.0


def alert(name: str = "HighErrorRate", status: str = "firing", **labels: str) -> Alert:
    return Alert(
        labels={"alertname": name, "service": "checkout", **labels},
        annotations={"summary": "error ratio 0.05"},
        startsAt=from_unix(T0),
        endsAt=from_unix(T0 + 240 if status == "firing" else T0 + 100),
        generatorURL="http://eval/graph",
        status=status,  # type: ignore[arg-type]
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


FAST_ROUTE = {
    "receiver": "team",
    "group_by": ["alertname"],
    "group_wait": "0s",
    "group_interval": "1s",
    "repeat_interval": "4h",
}


def dispatcher_for(redis, keys, url: str, session, clock, route: dict | None = None, **hook) -> Dispatcher:
    """A dispatcher with one webhook receiver `team` at `url`; `route` defaults to FAST_ROUTE."""
    routing = RoutingConfig.model_validate(
        {
            "route": route or FAST_ROUTE,
            "receivers": [
                {"name": "team", "webhook_configs": [{"url": url, "retry_deadline": "5s", **hook}]}
            ],
        }
    )
    return Dispatcher(
        tree=Route.build(routing.route),
        receivers=build_receivers(routing, ReceiverDeps(session, SystemClock())),
        state=NotifierState(redis, keys),
        clock=clock,
        external_url="http://notifier:9402",
        resolve_timeout=300.0,
        metrics=DispatchMetrics(CollectorRegistry()),
    )


async def deliver(d: Dispatcher, source: str, alerts: list[Alert]) -> None:
    """Dispatch an entry, flush what is due, then let one group_interval (1 s here) pass."""
    await d.dispatch(source, alerts)
    await d.flush_due()
    d.clock.set(d.clock.now() + 1.0)  # type: ignore[attr-defined]


async def test_firing_then_resent_then_resolved(redis, keys, webhook, session):
    clock = FakeClock(T0 + 10)
    d = dispatcher_for(redis, keys, webhook.url, session, clock)
    await deliver(d, "1-0", [alert()])
    (body,) = webhook.delivered
    assert body["status"] == "firing"
    assert body["groupKey"] == '{}:{alertname="HighErrorRate"}'
    assert body["groupLabels"] == {"alertname": "HighErrorRate"}
    assert body["commonLabels"] == {"alertname": "HighErrorRate", "service": "checkout"}
    assert body["receiver"] == "team" and body["externalURL"] == "http://notifier:9402"
    (a,) = body["alerts"]
    assert a["endsAt"] == "0001-01-01T00:00:00Z" and a["startsAt"] == "2027-01-15T08:00:00Z"
    assert a["fingerprint"] == alert().fingerprint

    # The evaluator re-sends the firing alert every minute: no new notification.
    await deliver(d, "2-0", [alert()])
    assert len(webhook.delivered) == 1

    await deliver(d, "3-0", [alert(status="resolved")])
    assert [b["status"] for b in webhook.delivered] == ["firing", "resolved"]
    # The resolved alert has left the group; a new firing one starts a fresh notification.
    assert await d.state.upsert("team", body["groupKey"], [], clock.now()) == {}
    # An older firing entry re-claimed late does not bring the forgotten alert back.
    await deliver(d, "2-0", [alert()])
    assert [b["status"] for b in webhook.delivered] == ["firing", "resolved"]
    # A newer firing one does.
    await deliver(d, "4-0", [alert()])
    assert [b["status"] for b in webhook.delivered] == ["firing", "resolved", "firing"]


async def test_a_stored_firing_alert_whose_end_passed_is_resolved(redis, keys, webhook, session):
    clock = FakeClock(T0 + 10)
    d = dispatcher_for(redis, keys, webhook.url, session, clock)
    await deliver(d, "1-0", [alert(), alert(service="payments")])  # both end at T0 + 240
    # The source stopped re-sending the checkout alert; when the group is next flushed (the payments alert
    # is re-sent with a later end), the checkout alert's end has passed: it is resolved.
    clock.set(T0 + 300)
    await deliver(d, "2-0", [alert(service="payments").model_copy(update={"ends_at": from_unix(T0 + 900)})])
    last = webhook.delivered[-1]
    assert {a["labels"]["service"]: a["status"] for a in last["alerts"]} == {
        "checkout": "resolved",
        "payments": "firing",
    }


async def test_an_older_entry_never_overwrites_a_newer_alert_state(redis, keys, webhook, session):
    d = dispatcher_for(redis, keys, webhook.url, session, FakeClock(T0 + 10))
    await deliver(d, "5-0", [alert(), alert("Other")])
    group_key = '{}:{alertname="HighErrorRate"}'
    # A re-claimed older entry (4-0) says firing again after a newer one (6-0) said resolved.
    members = await d.state.upsert("team", group_key, [("6-0", alert(status="resolved"))], T0)
    assert next(iter(members.values())).status == "resolved"
    members = await d.state.upsert("team", group_key, [("4-0", alert())], T0)
    assert next(iter(members.values())).status == "resolved"


async def test_repeat_interval_renotifies(redis, keys, webhook, session):
    clock = FakeClock(T0 + 10)
    d = dispatcher_for(redis, keys, webhook.url, session, clock)
    await deliver(d, "1-0", [alert()])
    clock.set(T0 + 10 + 4 * 3600 + 1)
    await deliver(d, "2-0", [alert().model_copy(update={"ends_at": from_unix(T0 + 5 * 3600)})])
    assert len(webhook.delivered) == 2


async def test_5xx_is_retried_until_delivered_once(redis, keys, webhook, session):
    webhook.fail_next(2, status=503)
    d = dispatcher_for(redis, keys, webhook.url, session, FakeClock(T0 + 10))
    await deliver(d, "1-0", [alert()])
    assert [r.status for r in webhook.received] == [503, 503, 200]
    assert len(webhook.delivered) == 1


async def test_4xx_is_permanent_and_not_retried(redis, keys, webhook, session):
    webhook.fail_next(1, status=404)
    d = dispatcher_for(redis, keys, webhook.url, session, FakeClock(T0 + 10))
    await deliver(d, "1-0", [alert()])  # does not raise: retrying later would not help
    assert [r.status for r in webhook.received] == [404]


async def test_giving_up_after_the_deadline_leaves_it_for_later(redis, keys, webhook, session):
    webhook.fail_next(1000, status=500)
    d = dispatcher_for(redis, keys, webhook.url, session, FakeClock(T0 + 10), retry_deadline="1s")
    await deliver(d, "1-0", [alert()])  # the integration retries until its deadline, then gives up
    assert len(webhook.received) >= 2
    # Nothing recorded as sent, and the group is tried again a group_interval later: then it is delivered.
    assert await d.state.last_sent("team/webhook[0]", '{}:{alertname="HighErrorRate"}') is None
    webhook.failures.clear()  # the receiver is healthy again
    assert await d.flush_due() == 1
    assert len(webhook.delivered) == 1


async def test_webhook_max_alerts_truncates(webhook, session):
    hook = WebhookIntegration(0, WebhookConfig(url=webhook.url, max_alerts=1), session, SystemClock())
    n = Notification("r", "{}:{}", {}, [alert("A"), alert("B")], "http://x")
    await hook.notify(n, NoJournal())
    (body,) = webhook.delivered
    assert body["truncatedAlerts"] == 1 and len(body["alerts"]) == 1


@pytest.mark.parametrize(
    ("url", "permanent"),
    [
        ("http://127.0.0.1:{port}/hooks/T000/B000/s3cr3t-token", False),  # nobody listening
        ("http://127.0.0.1:99999/hooks/T000/B000/s3cr3t-token", True),  # aiohttp puts the URL in the error
    ],
)
async def test_webhook_errors_never_show_the_secret_url(session, url: str, permanent: bool):
    from services.local_redis import free_port

    secret = url.format(port=free_port())
    hook = WebhookIntegration(0, WebhookConfig(url=secret, retry_deadline="300ms"), session, SystemClock())
    n = Notification("r", "{}:{}", {}, [alert()], "http://x")
    with pytest.raises(DeliveryError) as caught:
        await hook.notify(n, NoJournal())
    assert caught.value.permanent is permanent
    assert "s3cr3t-token" not in str(caught.value), str(caught.value)


def test_a_bad_webhook_url_in_config_is_reported_without_its_secret(tmp_path):
    from services.notifier.config import load_routing
    from shared.yamlfile import ConfigErrors

    path = tmp_path / "am.yml"
    path.write_text(
        "route: {receiver: r}\n"
        "receivers:\n"
        "  - name: r\n"
        "    webhook_configs: [{url: 'htp://example.com/hooks/s3cr3t-token'}]\n"
    )
    with pytest.raises(ConfigErrors) as caught:
        load_routing(path)
    assert "http:// or https://" in str(caught.value) and "s3cr3t-token" not in str(caught.value)


async def test_missing_url_file_is_a_retryable_error_not_a_crash(tmp_path, session):
    config = WebhookConfig(url_file=tmp_path / "absent", retry_deadline="300ms")
    hook = WebhookIntegration(0, config, session, SystemClock())
    with pytest.raises(DeliveryError) as caught:
        await hook.notify(Notification("r", "{}:{}", {}, [alert()], "http://x"), NoJournal())
    assert not caught.value.permanent and "cannot read url_file" in str(caught.value)


def test_needs_update_is_alertmanagers_dedup():
    assert needs_update(None, {"a"}, set(), 60, True, T0)
    assert not needs_update(None, set(), {"a"}, 60, True, T0)  # never heard of it, already resolved
    sent = LogEntry(firing={"a"}, resolved=set(), timestamp=T0)
    assert not needs_update(sent, {"a"}, set(), 60, True, T0 + 1)
    assert needs_update(sent, {"a", "b"}, set(), 60, True, T0 + 1)  # new firing alert
    assert needs_update(sent, set(), {"a"}, 60, True, T0 + 1)  # all resolved
    assert needs_update(sent, set(), {"a"}, 60, False, T0 + 1)  # ...even without send_resolved (clears log)
    assert needs_update(LogEntry({"a", "b"}, set(), T0), {"a"}, {"b"}, 60, True, T0 + 1)  # one resolved
    assert not needs_update(LogEntry({"a", "b"}, set(), T0), {"a"}, {"b"}, 60, False, T0 + 1)
    assert needs_update(sent, {"a"}, set(), 60, True, T0 + 61)  # repeat interval passed


async def test_console_prints_one_line_per_notification():
    out = io.StringIO()
    console = ConsoleIntegration(0, True, out)
    n = Notification(
        "oncall",
        '{}:{alertname="HighErrorRate"}',
        {"alertname": "HighErrorRate"},
        [alert(severity="page")],
        "http://x",
    )
    await console.notify(n, NoJournal())
    assert out.getvalue() == (
        "FIRING[1] HighErrorRate service=checkout severity=page: error ratio 0.05 -> oncall\n"
    )
    two = Notification("oncall", "k", {}, [alert("A"), alert("B", status="resolved")], "http://x")
    assert format_line(two) == "FIRING[1] A service=checkout: error ratio 0.05 (+1 resolved) -> oncall"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"receivers": [{"name": "r", "opsgenie_configs": [{"api_key_file": "/k"}]}]}, "opsgenie_configs"),
    ],
)
async def test_the_notifier_refuses_what_it_would_not_apply(extra: dict, named: str):
    from shared.yamlfile import ConfigError

    routing = RoutingConfig.model_validate(
        {"route": {"receiver": "r"}, "receivers": [{"name": "r", "console_configs": [{}]}], **extra}
    )
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match=named):
            build_receivers(routing, ReceiverDeps(session, SystemClock()))
