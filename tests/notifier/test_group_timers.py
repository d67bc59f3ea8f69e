"""Aggregation-group timers against Alertmanager's: group_wait, group_interval and repeat_interval, driven
by a fake clock over a real Redis, and a replica taking over a schedule."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.notifier.dispatcher import Dispatcher
from shared.alerts import Alert, from_unix
from shared.clock import FakeClock
from tests.notifier.test_dispatcher import dispatcher_for

T0 = 1_800_000_000.0
WAIT = 30.0  # Alertmanager's default group_wait


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make(redis, keys, webhook, session, clock: FakeClock) -> Dispatcher:
    # Alertmanager's default timings: group_wait 30s, group_interval 5m, repeat_interval 4h.
    return dispatcher_for(
        redis, keys, webhook.url, session, clock, {"receiver": "team", "group_by": ["alertname"]}
    )


def alert(name: str, start: float, *, resolved_at: float | None = None) -> Alert:
    # As the evaluator sends them: firing alerts end a few minutes ahead and are re-sent before that.
    end = resolved_at if resolved_at is not None else start + 100_000
    return Alert(
        labels={"alertname": "Errors", "instance": name},
        startsAt=from_unix(start),
        endsAt=from_unix(end),
        status="resolved" if resolved_at is not None else "firing",
    )


async def run_until(
    d: Dispatcher, clock: FakeClock, end: float, sent: list[tuple[float, list[str]]], webhook
):
    """Advance the clock from one due group to the next, as the flush loop does, recording notifications."""
    while (due := await d.schedule.next_due()) is not None and due <= end:
        clock.set(max(clock.now(), due))
        before = len(webhook.delivered)
        await d.flush_due()
        for body in webhook.delivered[before:]:
            sent.append(
                (clock.now() - T0, sorted(f"{a['labels']['instance']}:{a['status']}" for a in body["alerts"]))
            )
    clock.set(max(clock.now(), end))


async def test_notification_times_follow_alertmanager(redis, keys, webhook, session):
    """The scripted sequence (times in seconds after T0) and the notifications Alertmanager sends for it:
    t=0    a fires: a new group; nothing before group_wait     -> t=30   [a firing]
    t=60   b fires in the same group: waits for the next tick  -> t=330  [a, b firing]
    t=400  a resolves: told at the next tick                   -> t=630  [a resolved, b firing]
    nothing changes: ticks every 5 min, dedup keeps quiet until repeat_interval (4h) has passed since the
    last notification; the first tick strictly after 630 + 4h  -> t=15330 [b firing]
    """
    clock = FakeClock(T0)
    d = make(redis, keys, webhook, session, clock)
    sent: list[tuple[float, list[str]]] = []
    await d.dispatch("1-0", [alert("a", T0)])
    await run_until(d, clock, T0 + 60, sent, webhook)
    await d.dispatch("2-0", [alert("b", T0 + 60)])
    await run_until(d, clock, T0 + 400, sent, webhook)
    await d.dispatch("3-0", [alert("a", T0, resolved_at=T0 + 400)])
    await run_until(d, clock, T0 + 16_000, sent, webhook)
    assert sent == [
        (30.0, ["a:firing"]),
        (330.0, ["a:firing", "b:firing"]),
        (630.0, ["a:resolved", "b:firing"]),
        (15330.0, ["b:firing"]),
    ]


async def test_an_alert_older_than_group_wait_starts_its_group_at_once(redis, keys, webhook, session):
    clock = FakeClock(T0 + 600)
    d = make(redis, keys, webhook, session, clock)
    await d.dispatch("1-0", [alert("a", T0)])  # started 10 minutes ago, e.g. seen again after a restart
    assert await d.flush_due() == 1
    assert len(webhook.delivered) == 1


async def test_a_restarted_or_other_replica_keeps_the_schedule(redis, keys, webhook, session):
    clock = FakeClock(T0)
    first = make(redis, keys, webhook, session, clock)
    await first.dispatch("1-0", [alert("a", T0)])
    # The process dies during group_wait; a new one (or another replica) takes over from Redis.
    clock.set(T0 + 10)
    second = make(redis, keys, webhook, session, clock)
    assert await second.flush_due() == 0  # not earlier than the original group_wait ...
    clock.set(T0 + WAIT)
    assert await second.flush_due() == 1  # ... and not group_wait after the restart either
    assert await first.flush_due() == 0  # a group is flushed by one replica only
    assert len(webhook.delivered) == 1


async def test_one_unreadable_group_does_not_hold_back_the_others(redis, keys, webhook, session):
    clock = FakeClock(T0)
    d = make(redis, keys, webhook, session, clock)
    await d.dispatch("1-0", [alert("a", T0)])
    broken = Alert(labels={"alertname": "Broken"}, startsAt=from_unix(T0), endsAt=from_unix(T0 + 1000))
    await d.dispatch("2-0", [broken])
    # Corrupt the Broken group's stored state, as a bad write or a manual edit might.
    group_hash = d.state._group_key("team", '{}:{alertname="Broken"}')
    await redis.hset(group_hash, broken.fingerprint, b"{not json")
    clock.set(T0 + WAIT)
    assert await d.flush_due() == 2
    assert [b["commonLabels"]["alertname"] for b in webhook.delivered] == ["Errors"]
    assert d.metrics.flush_errors._value.get() == 1


async def test_a_group_being_flushed_is_not_pulled_back_nor_settled_by_another_claimer(redis, keys):
    """A re-sent alert must not make a claimed group due again (another replica would flush it twice), and
    only the claimer can renew or settle its claim."""
    from services.notifier.nflog import GroupSchedule

    schedule = GroupSchedule(redis, keys)
    now = 1_800_000_000.0
    await schedule.add("r", "{}:{}", "{}", now, overdue=False, now=now)
    [group] = await schedule.claim_due(now, lease=15.0)
    await schedule.add("r", "{}:{}", "{}", now + 30, overdue=True, now=now + 1)  # a re-sent, old alert
    assert await schedule.claim_due(now + 1, lease=15.0) == []
    assert await redis.zscore(schedule.times, group.id) == now + 15
    stranger = type(group)(group.id, group.receiver, group.group_key, group.route, "not-the-token")
    assert not await schedule.renew(stranger, now + 100)
    assert not await schedule.flushed_at(stranger, now + 100)
    assert await schedule.renew(group, now + 20)
    assert await schedule.flushed_at(group, now + 300)
    assert await redis.zscore(schedule.times, group.id) == now + 300
    # Flushed once: a later overdue alert no longer pulls it forward either.
    await schedule.add("r", "{}:{}", "{}", now + 30, overdue=True, now=now + 2)
    assert await redis.zscore(schedule.times, group.id) == now + 300
