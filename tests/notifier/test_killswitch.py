"""The kill switch: guardrails (pure), and flag_off receivers through the dispatcher against real Redis, the
built-in flag store and the vendor fakes, with the injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.evaluator.rules.files import load_rule_files
from services.evaluator.rules.group import EvalContext
from services.evaluator.series import SeriesStore
from services.notifier.app import ReceiverDeps, build_receivers
from services.notifier.config import RoutingConfig
from services.notifier.dispatcher import Dispatcher, DispatchMetrics
from services.notifier.health import IntegrationHealth
from services.notifier.killswitch import DecisionLog, Guardrails, Trigger, decide
from services.notifier.nflog import NotifierState
from services.notifier.receivers.delivery import RateLimits
from services.notifier.routing import Route
from shared.alerts import Alert, from_unix
from shared.clock import FakeClock
from shared.flag_store import FlagStore
from tests.fakes.flags import FakeLaunchDarkly
from tests.fakes.webhook import FakeWebhook

T0 = 1_800_000_000.0
ROUTE = {
    "receiver": "rollback",
    "group_by": ["alertname", "flag"],
    "group_wait": "0s",
    "group_interval": "1m",
    "repeat_interval": "4h",
}


def trigger(started: float = T0) -> Trigger:
    return Trigger("fp", "HighErrorRate", started, "0.07", {"alertname": "HighErrorRate"})


# The rule, alone ------------------------------------------------------------------------------------------
def test_guardrails_in_order_wait_cooldown_breaker_dry_run_flip():
    rails = Guardrails(min_firing_for=300, cooldown=3600, max_flips=3, max_flips_window=3600)
    assert decide(trigger(T0), rails, T0 + 60, None, 0)[0] == "wait"
    action, reason = decide(trigger(T0), rails, T0 + 300, T0 - 600, 0)
    assert action == "refused" and reason.startswith("cooldown") and "15m ago" in reason
    action, reason = decide(trigger(T0), rails, T0 + 300, None, 3)
    assert action == "refused" and reason.startswith("breaker open: 3 flips")
    assert decide(trigger(T0), rails, T0 + 300, T0 - 7200, 2)[0] == "flip"
    dry = Guardrails(dry_run=True)
    assert decide(trigger(T0), dry, T0, None, 0)[0] == "dry_run"


# Through the dispatcher -----------------------------------------------------------------------------------
def alert(flag: str = "new-checkout", status: str = "firing", at: float = T0, **labels: str) -> Alert:
    return Alert(
        labels={"alertname": "HighErrorRate", "service": "checkout", "flag": flag, **labels},
        annotations={"summary": "error rate 7%", "value": "0.07"},
        startsAt=from_unix(at),
        endsAt=from_unix(at + 3600 if status == "firing" else at + 60),
        status=status,  # type: ignore[arg-type]
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def pager() -> AsyncIterator[FakeWebhook]:
    fake = await FakeWebhook().start()
    yield fake
    await fake.stop()


def killswitch(redis, keys, session, clock, flag_off: dict[str, Any], pager: FakeWebhook) -> Dispatcher:
    config = {"provider": "builtin", "flag": "{{ .CommonLabels.flag }}", "notify": ["pager"], **flag_off}
    routing = RoutingConfig.model_validate(
        {
            "route": ROUTE,
            "receivers": [
                {"name": "rollback", "flag_off_configs": [config]},
                {"name": "pager", "webhook_configs": [{"url": pager.url, "retry_deadline": "2s"}]},
            ],
        }
    )
    state = NotifierState(redis, keys)
    deps = ReceiverDeps(
        session,
        clock,
        state,
        RateLimits(clock),
        "http://notifier:9402",
        decisions=DecisionLog(redis, keys),
        flag_store=FlagStore(redis, keys, clock),
    )
    registry = CollectorRegistry()
    dispatcher = Dispatcher(
        tree=Route.build(routing.route),
        receivers=build_receivers(routing, deps),
        state=state,
        clock=clock,
        external_url="http://notifier:9402",
        resolve_timeout=300.0,
        metrics=DispatchMetrics(registry),
        health=IntegrationHealth(registry),
    )
    deps.dispatcher = dispatcher
    return dispatcher


async def audit(redis, keys) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()} for _, fields in await redis.xrange(keys.audit)
    ]


async def step(d: Dispatcher, source: str, alerts: list[Alert], advance: float = 60.0) -> None:
    await d.dispatch(source, alerts)
    await d.flush_due()
    d.clock.set(d.clock.now() + advance)  # type: ignore[attr-defined]


async def test_a_firing_alert_turns_its_flag_off_audited_and_announced(redis, keys, session, pager):
    clock = FakeClock(T0)
    d = killswitch(redis, keys, session, clock, {}, pager)
    await step(d, "1-0", [alert()])
    record = await FlagStore(redis, keys, clock).get("new-checkout")
    assert record is not None and record.enabled is False
    assert record.updated_by == "tripwire:rollback/flag_off[0]"
    [entry] = await audit(redis, keys)
    assert entry["outcome"] == "flipped" and entry["flag"] == "new-checkout"
    assert entry["rule"] == "HighErrorRate" and entry["value"] == "0.07"
    assert (
        entry["alert_fingerprint"] == alert().fingerprint
        and entry["actor"] == "tripwire:rollback/flag_off[0]"
    )
    assert '"read_back":false' in entry["provider_response"]
    [told] = pager.delivered
    assert told["commonLabels"]["outcome"] == "flipped"
    assert "Turned OFF flag new-checkout" in told["commonAnnotations"]["summary"]


async def test_dry_run_flips_nothing_but_audits_and_notifies(redis, keys, session, pager):
    clock = FakeClock(T0)
    d = killswitch(redis, keys, session, clock, {"dry_run": True}, pager)
    await step(d, "1-0", [alert()])
    assert await FlagStore(redis, keys, clock).get("new-checkout") is None
    [entry] = await audit(redis, keys)
    assert entry["outcome"] == "dry_run" and "would have been turned off" in entry["reason"]
    [told] = pager.delivered
    assert "DRY RUN" in told["commonAnnotations"]["summary"]


async def test_a_flapping_alert_flips_once_and_resolved_never_re_enables(redis, keys, session, pager):
    clock = FakeClock(T0)
    d = killswitch(redis, keys, session, clock, {"cooldown": "1h"}, pager)
    store = FlagStore(redis, keys, clock)
    await step(d, "1-0", [alert()])
    for i in range(3):  # resolve, fire again, ...
        await step(d, f"{2 + 2 * i}-0", [alert(status="resolved")])
        assert (await store.get("new-checkout")).enabled is False  # type: ignore[union-attr]
        await step(d, f"{3 + 2 * i}-0", [alert(at=clock.now())])
    history = await store.history("new-checkout")
    assert [c.enabled for c in history] == [False]  # one flip, never back on
    outcomes = [e["outcome"] for e in await audit(redis, keys)]
    assert outcomes == ["flipped", "refused", "refused", "refused"]
    assert all("cooldown" in e["reason"] for e in (await audit(redis, keys))[1:])


async def test_max_flips_opens_the_breaker_and_pages(redis, keys, session, pager):
    clock = FakeClock(T0)
    d = killswitch(redis, keys, session, clock, {"max_flips": 2, "max_flips_window": "1h"}, pager)
    await step(d, "1-0", [alert("flag-a"), alert("flag-b"), alert("flag-c")], advance=1)
    store = FlagStore(redis, keys, clock)
    off = {k for k, r in (await store.all()).items() if not r.enabled}
    assert len(off) == 2
    entries = await audit(redis, keys)
    refused = [e for e in entries if e["outcome"] == "refused_breaker"]
    assert len(refused) == 1 and "breaker open: 2 flips" in refused[0]["reason"]
    pages = [t for t in pager.delivered if t["commonLabels"]["severity"] == "critical"]
    assert len(pages) == 1 and "breaker open" in pages[0]["commonAnnotations"]["description"]


async def test_min_firing_for_waits_then_flips(redis, keys, session, pager):
    clock = FakeClock(T0)
    d = killswitch(redis, keys, session, clock, {"min_firing_for": "5m"}, pager)
    store = FlagStore(redis, keys, clock)
    await step(d, "1-0", [alert()], advance=120)
    assert await store.get("new-checkout") is None and await audit(redis, keys) == []
    clock.set(T0 + 301)
    await d.flush_due()  # asked to come back when the alert has fired 5 minutes
    assert (await store.get("new-checkout")).enabled is False  # type: ignore[union-attr]


async def test_launchdarkly_405_is_an_audited_refusal_and_a_page(redis, keys, session, pager, tmp_path: Path):
    ld = await FakeLaunchDarkly(
        token="api-0123", flags={("default", "new-checkout"): {"production": True}}
    ).start()
    ld.approvals_required.add(("default", "new-checkout", "production"))
    (tmp_path / "ld-token").write_text("api-0123")
    try:
        clock = FakeClock(T0)
        config = {
            "provider": "launchdarkly",
            "url": ld.url,
            "token_file": str(tmp_path / "ld-token"),
            "project": "default",
            "environment": "production",
        }
        d = killswitch(redis, keys, session, clock, config, pager)
        await step(d, "1-0", [alert()])
        assert ld.flag_on("default", "new-checkout", "production") is True
        [entry] = await audit(redis, keys)
        assert entry["outcome"] == "refused_by_provider" and '"status":405' in entry["provider_response"]
        [page] = pager.delivered
        assert page["commonLabels"]["severity"] == "critical"
        assert "REFUSED" in page["commonAnnotations"]["summary"]
        assert len([r for r in ld.requests if r.method == "PATCH"]) == 1  # refused once, not retried
    finally:
        await ld.stop()


async def test_a_replayed_delivery_finds_its_decision_and_does_not_flip_twice(redis, keys, session, pager):
    """What a restart after SIGKILL between decision and flip does, in process: the same delivery id (the
    dispatcher's intent) replays; the decision is found, the flag is read first, nothing is flipped twice."""
    clock = FakeClock(T0)
    d = killswitch(redis, keys, session, clock, {}, pager)
    [integration] = d.receivers["rollback"].integrations
    n = alert()
    from services.notifier.notification import Notification
    from services.notifier.receivers.delivery import NoJournal

    notification = Notification("rollback", "{}:{flag}", {}, [n], "http://x")
    await integration.notify(notification, NoJournal("delivery-1"))
    await integration.notify(notification, NoJournal("delivery-1"))
    history = await FlagStore(redis, keys, clock).history("new-checkout")
    assert len(history) == 1
    assert [e["outcome"] for e in await audit(redis, keys)] == ["flipped"]


# The seeds' rollback trigger ------------------------------------------------------------------------------
async def test_error_rate_above_5_percent_for_10m_turns_enable_stateless_orchestration_off(
    redis, keys, session, pager, tmp_path: Path
):
    """A Prometheus rule 'error rate > 5% for 10m', evaluated by the evaluator's rule group on the injected
    clock, routed to a flag_off receiver for ENABLE_STATELESS_ORCHESTRATION: off after 10 minutes, no
    sooner."""
    rules = tmp_path / "rules.yml"
    rules.write_text(
        """
groups:
  - name: rollback
    interval: 30s
    rules:
      - alert: OrchestrationErrorRate
        expr: sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m])) > 0.05
        for: 10m
        labels: {flag: ENABLE_STATELESS_ORCHESTRATION}
"""
    )
    [group] = load_rule_files([rules], default_interval=30)
    series = SeriesStore(float("inf"))
    ctx = EvalContext(lookback=300, resend_delay=60)
    clock = FakeClock(T0)
    d = killswitch(redis, keys, session, clock, {"flag": "{{ .CommonLabels.flag }}"}, pager)
    store = FlagStore(redis, keys, clock)
    ok = errors = 0.0
    bad_from = T0 + 600  # 10 minutes of health, then 8% errors
    flipped_at = None
    for tick in range(0, 40 * 60, 30):
        ts = T0 + tick
        errors += 80 if ts >= bad_from else 2
        ok += 920 if ts >= bad_from else 998
        series.add("http_requests_total", {"status": "500"}, ts, errors)
        series.add("http_requests_total", {"status": "200"}, ts, ok)
        clock.set(ts)
        outcome = group.evaluate(series, ts, ctx)
        if outcome.alerts:
            await d.dispatch(f"{tick + 1}-0", outcome.alerts)
        group.commit(outcome, ctx)
        await d.flush_due()
        record = await store.get("ENABLE_STATELESS_ORCHESTRATION")
        if record is not None and not record.enabled and flipped_at is None:
            flipped_at = ts
    assert flipped_at is not None
    # The rate crosses 5% a minute or two into the bad phase; `for: 10m` holds it pending 10 more minutes.
    assert bad_from + 600 <= flipped_at <= bad_from + 600 + 180, flipped_at - bad_from
    [entry] = await audit(redis, keys)
    assert entry["rule"] == "OrchestrationErrorRate" and entry["outcome"] == "flipped"


def test_a_flip_announced_in_slack_carries_the_re_enable_button_within_limits():
    from services.notifier.config import SlackConfig
    from services.notifier.killswitch import Decision
    from services.notifier.receivers.flag_off import announcement
    from services.notifier.receivers.slack import SlackIntegration
    from services.notifier.receivers.slack_message import REENABLE_ACTION, check_limits

    decision = Decision(
        id="d" * 24,
        action="flip",
        reason="HighErrorRate has fired for 5m",
        flag="new-checkout",
        environment="production",
        project="default",
        provider="launchdarkly",
        receiver="rollback",
        group_key="{}:{}",
        trigger=trigger(),
        at=T0,
        outcome="flipped",
    )
    slack = SlackIntegration(
        0,
        SlackConfig(api_url="${SLACK_URL}"),
        receiver="oncall",
        state=None,
        session=None,  # type: ignore[arg-type]
        clock=FakeClock(T0),
        limits=RateLimits(FakeClock(T0)),
    )
    message = slack.message(announcement(decision, "http://notifier:9402"))
    assert check_limits(message) == []
    buttons = [
        element
        for block in [*message["blocks"], *(b for a in message.get("attachments", []) for b in a["blocks"])]
        if block["type"] == "actions"
        for element in block["elements"]
    ]
    [reenable] = [b for b in buttons if b["action_id"] == REENABLE_ACTION]
    assert reenable["value"] == decision.id and "confirm" in reenable
    assert "Turned OFF flag new-checkout" in message["text"]


async def test_the_breaker_counts_flips_made_not_flags_found_already_off(redis, keys, session, pager):
    clock = FakeClock(T0)
    store = FlagStore(redis, keys, clock)
    for flag in ("flag-a", "flag-b", "flag-c"):
        await store.set(flag, False, actor="ops", reason="off already")
    d = killswitch(redis, keys, session, clock, {"max_flips": 1}, pager)
    # One after the other: flips in flight at the same moment each hold a slot until they finish (the safe
    # side), so concurrent attempts past max_flips are refused even if some then find their flag off.
    for i, flag in enumerate(("flag-a", "flag-b", "flag-c", "flag-d")):
        await step(d, f"{i + 1}-0", [alert(flag)], advance=1)
    outcomes = sorted(e["outcome"] for e in await audit(redis, keys))
    assert outcomes == ["already_off", "already_off", "already_off", "flipped"]


async def test_a_re_enable_while_the_alert_still_fires_is_not_undone_by_a_re_send(
    redis, keys, session, pager
):
    clock = FakeClock(T0)
    d = killswitch(redis, keys, session, clock, {"cooldown": "1m"}, pager)
    store = FlagStore(redis, keys, clock)
    await step(d, "1-0", [alert()])
    await store.set("new-checkout", True, actor="slack:U1", reason="fixed forward")
    for i in range(3):  # the same firing episode re-sent, past cooldown and repeat_interval
        clock.set(clock.now() + 5 * 3600)
        await step(d, f"{2 + i}-0", [alert()])
    assert (await store.get("new-checkout")).enabled is True  # type: ignore[union-attr]
    assert [e["outcome"] for e in await audit(redis, keys)] == ["flipped"]


async def test_a_flip_still_retrying_when_the_alert_resolves_is_abandoned_and_paged(
    redis, keys, session, pager
):
    ld = await FakeLaunchDarkly(token="t", flags={("default", "new-checkout"): {"production": True}}).start()
    try:
        ld.fail_next(1000, status=503)
        clock = FakeClock(T0)
        config = {
            "provider": "launchdarkly",
            "url": ld.url,
            "token": "${TRIPWIRE_TEST_LD_TOKEN:-t}",
            "project": "default",
            "environment": "production",
            "retry_deadline": "1s",
        }
        d = killswitch(redis, keys, session, clock, config, pager)
        flush = asyncio.create_task(step(d, "1-0", [alert()]))
        while not flush.done():
            await clock.advance(0.5)
            await asyncio.sleep(0.001)
        await flush
        assert [e["outcome"] for e in await audit(redis, keys)] == ["retrying"]
        await step(d, "2-0", [alert(status="resolved")])
        assert [e["outcome"] for e in await audit(redis, keys)] == ["retrying", "abandoned"]
        assert ld.flag_on("default", "new-checkout", "production")
        assert any(t["commonLabels"]["outcome"] == "abandoned" for t in pager.delivered)
    finally:
        await ld.stop()


def test_a_kill_switch_cannot_notify_another_kill_switch(tmp_path: Path):
    from services.notifier.config import load_routing
    from shared.yamlfile import ConfigErrors

    path = tmp_path / "am.yml"
    flag_off = {"provider": "builtin", "flag": "x"}
    path.write_text(
        yaml.safe_dump(
            {
                "route": {"receiver": "a"},
                "receivers": [
                    {"name": "a", "flag_off_configs": [{**flag_off, "notify": ["b"]}]},
                    {"name": "b", "flag_off_configs": [{**flag_off, "notify": ["a"]}]},
                ],
            }
        )
    )
    with pytest.raises(ConfigErrors) as caught:
        load_routing(path)
    assert 'notify receiver "b" has flag_off_configs' in str(caught.value)
