"""The evaluator as a service against a real Redis, on a fake clock: a 5-minute `for` in milliseconds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from services.evaluator.app import EvaluatorApp, build
from services.evaluator.rules.alerting import AlertState
from shared.clock import FakeClock
from shared.codec import decode_entry
from shared.streams import Keys, append_batch, entry_order
from tests.polling import eventually

T0 = 1_800_000_000.0  # a multiple of 15 s, so ticks land on T0 + k*15
RULES = """\
groups:
  - name: checkout
    rules:
      - alert: HighErrorRate
        expr: checkout_error_ratio > 0.02
        for: 5m
        labels: {severity: page}
        annotations: {summary: "error ratio {{ $value }}"}
      - alert: ErrorLogs
        expr: log_events_total{level="error"} >= 3
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(RULES)
    return path


async def started(make_config, rules_file: Path, clock: FakeClock) -> EvaluatorApp:
    config = make_config(rule_files=[str(rules_file)], evaluator={"external_url": "http://eval:9401"})
    app = build(config, clock)
    await app.start()
    return app


async def publish(redis: Redis, stream: str, kind: str, items: list[dict]) -> None:
    await append_batch(redis, stream, kind, orjson.dumps(items), "test", 10_000)


async def alerts_published(redis: Redis, keys: Keys) -> list[dict]:
    return [item for _, fields in await redis.xrange(keys.alerts) for item in decode_entry(fields).items]


def rule_state(app: EvaluatorApp, name: str):
    (group,) = app.evaluator.groups
    rule = next(r for r in group.rules if r.name == name)
    return list(rule.active.values())


async def test_for_five_minutes_fires_once_at_the_right_tick(make_config, rules_file, redis, keys):
    clock = FakeClock(T0)
    app = await started(make_config, rules_file, clock)
    (group,) = app.evaluator.groups
    try:
        await publish(
            redis,
            keys.metrics,
            "metrics",
            [
                {
                    "name": "checkout_error_ratio",
                    "labels": {"service": "checkout"},
                    "value": 0.05,
                    "kind": "sample",
                    "timestamp": T0 + ts,
                }
                for ts in range(0, 301, 15)
            ],
        )
        await eventually(lambda: _ready(app), what="samples applied")
        for step in range(0, 20):
            await app.evaluator.tick(group, T0 + step * 15)
            assert rule_state(app, "HighErrorRate")[0].state == AlertState.PENDING
        assert await alerts_published(redis, keys) == []
        await app.evaluator.tick(group, T0 + 300)
        (alert,) = await alerts_published(redis, keys)
        assert alert["status"] == "firing"
        assert alert["labels"] == {"alertname": "HighErrorRate", "service": "checkout", "severity": "page"}
        assert alert["annotations"] == {"summary": "error ratio 0.05"}
        assert alert["startsAt"] == "2027-01-15T08:05:00Z"  # T0 + 5m
        # The next ticks inside the resend delay publish nothing more.
        await app.evaluator.tick(group, T0 + 315)
        assert len(await alerts_published(redis, keys)) == 1
    finally:
        await app.service.stop()


async def _ready(app: EvaluatorApp) -> bool:
    return len(app.evaluator.store) > 0


async def test_log_events_are_counted_into_log_events_total(make_config, rules_file, redis, keys):
    clock = FakeClock(T0)
    app = await started(make_config, rules_file, clock)
    (group,) = app.evaluator.groups
    try:
        await publish(
            redis,
            keys.logs,
            "logs",
            [
                {
                    "service": "agent",
                    "level": "error",
                    "message": "Budget exceeded",
                    "labels": {"agent_type": "planner"},
                    "timestamp": T0 - 5 + i,
                }
                for i in range(3)
            ],
        )
        await eventually(lambda: _ready(app), what="log events applied")
        await app.evaluator.tick(group, T0)
        (alert,) = await alerts_published(redis, keys)
        assert alert["labels"] == {
            "alertname": "ErrorLogs",
            "service": "agent",
            "level": "error",
            "agent_type": "planner",
        }
    finally:
        await app.service.stop()


async def test_bad_items_are_dead_lettered_and_the_rest_applied(make_config, rules_file, redis, keys):
    clock = FakeClock(T0)
    app = await started(make_config, rules_file, clock)
    try:
        await publish(
            redis,
            keys.metrics,
            "metrics",
            [
                {"name": "ok_metric", "value": 1.0, "timestamp": T0},
                {"name": "bad metric", "value": 1.0, "timestamp": T0},
                {"name": "too_old", "value": 1.0, "timestamp": T0 - 3600},
            ],
        )
        await eventually(lambda: redis.xlen(Keys.dlq(keys.metrics)), what="bad item in the DLQ")
        ((_, record),) = await redis.xrange(Keys.dlq(keys.metrics))
        assert b"item 1: name: invalid metric name 'bad metric'" in record[b"error"]
        assert [s.labels["__name__"] for s in app.evaluator.store] == ["ok_metric"]
        await eventually(lambda: _no_pending(redis, keys), what="the entry acked")
    finally:
        await app.service.stop()


async def _no_pending(redis: Redis, keys: Keys) -> bool:
    return (await redis.xpending(keys.metrics, "evaluator"))["pending"] == 0


async def test_restart_restores_pending_state_and_replays_the_window(make_config, rules_file, redis, keys):
    clock = FakeClock(T0)
    first = await started(make_config, rules_file, clock)
    try:
        await publish(
            redis,
            keys.metrics,
            "metrics",
            [
                {"name": "checkout_error_ratio", "value": 0.05, "timestamp": T0 + ts}
                for ts in range(0, 301, 15)
            ]
            + [{"name": "requests_total", "value": 1.0, "kind": "increment", "timestamp": T0 + 1}] * 3,
        )
        await eventually(lambda: _ready(first), what="samples applied")
        for step in range(0, 10):
            await first.evaluator.tick(first.evaluator.groups[0], T0 + step * 15)
        (pending,) = rule_state(first, "HighErrorRate")
        assert pending.state == AlertState.PENDING and pending.active_at == T0
    finally:
        await first.service.stop()

    clock.set(T0 + 150)
    second = await started(make_config, rules_file, clock)
    try:
        # State restored before any tick: the `for` timer still counts from T0.
        (restored,) = rule_state(second, "HighErrorRate")
        assert restored.state == AlertState.PENDING and restored.active_at == T0
        # The window was rebuilt from the stream tail, and increments were not counted twice.
        counter = next(s for s in second.evaluator.store if s.labels["__name__"] == "requests_total")
        assert counter.values[-1] == 3.0
        group = second.evaluator.groups[0]
        for step in range(10, 20):
            await second.evaluator.tick(group, T0 + step * 15)
        assert await alerts_published(redis, keys) == []
        await second.evaluator.tick(group, T0 + 300)
        (alert,) = await alerts_published(redis, keys)
        assert alert["startsAt"] == "2027-01-15T08:05:00Z"
    finally:
        await second.service.stop()


async def test_backlog_written_while_down_is_consumed_before_evaluating(make_config, rules_file, redis, keys):
    clock = FakeClock(T0)
    first = await started(make_config, rules_file, clock)
    increment = {"name": "requests_total", "value": 1.0, "kind": "increment", "timestamp": T0 + 1}
    try:
        await publish(redis, keys.metrics, "metrics", [increment])
        await eventually(lambda: _ready(first), what="first sample applied")
    finally:
        await first.service.stop()
    # Written while the evaluator was down: beyond what the group delivered, so not part of the replay.
    for _ in range(3):
        await publish(redis, keys.metrics, "metrics", [increment])
    (newest_id, _), *_ = await redis.xrevrange(keys.metrics, count=1)
    second = await started(make_config, rules_file, clock)
    try:
        assert second.ingestor.targets[keys.metrics] == entry_order(newest_id)
        assert await second.evaluator.wait_for_backlog()
        counter = next(s for s in second.evaluator.store if s.labels["__name__"] == "requests_total")
        assert counter.values[-1] == 4.0
    finally:
        await second.service.stop()


async def test_first_evaluation_waits_until_ingest_caught_up():
    from prometheus_client import CollectorRegistry

    from services.evaluator.evaluation import EvaluationMetrics, Evaluator
    from services.evaluator.series import SeriesStore

    polls = 0
    done = False

    def caught_up() -> bool:
        nonlocal polls
        polls += 1
        return done

    evaluator = Evaluator(
        groups=[],
        store=SeriesStore(300),
        state=None,  # type: ignore[arg-type]
        clock=FakeClock(T0),
        ctx=None,  # type: ignore[arg-type]
        metrics=EvaluationMetrics(CollectorRegistry()),
        caught_up=caught_up,
    )
    waiting = asyncio.create_task(evaluator.wait_for_backlog())
    await eventually(lambda: _async(polls >= 3), what="a few polls")
    assert not waiting.done()
    done = True
    assert await asyncio.wait_for(waiting, 5) is True
    evaluator.catch_up_timeout = 0.0
    done = False
    assert await evaluator.wait_for_backlog() is False  # gives up (loudly) instead of never evaluating


async def test_group_loop_runs_on_aligned_ticks_of_the_fake_clock(make_config, rules_file, redis, keys):
    clock = FakeClock(T0 + 1)
    app = await started(make_config, rules_file, clock)
    (group,) = app.evaluator.groups
    try:
        await eventually(lambda: _async(clock.sleepers > 0), what="the loop waiting on the clock")
        await clock.advance(14)
        await eventually(
            lambda: _async(app.evaluator.last_evaluation.get(group.key) == T0 + 15), what="first aligned tick"
        )
        await clock.advance(15)
        await eventually(
            lambda: _async(app.evaluator.last_evaluation.get(group.key) == T0 + 30), what="second tick"
        )
    finally:
        await app.service.stop()


async def _async(value: object) -> object:
    return value
