"""The evaluation loop: each rule group runs on wall-clock ticks of its interval (from the injected clock),
then its state and the alerts it produced are written to Redis together."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.exceptions import RedisError

from services.evaluator.rules.alerting import AlertState
from services.evaluator.rules.group import EvalContext, RuleGroup, copy_state
from services.evaluator.series import SeriesStore
from services.evaluator.state import StateStore
from shared.clock import Clock
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

TRIM_EVERY = 10.0
BACKLOG_POLL = 0.05


class EvaluationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "tripwire_rule_group_duration_seconds",
            "Time to evaluate a rule group and persist its state.",
            ["rule_group"],
            registry=registry,
        )
        self.missed = Counter(
            "tripwire_rule_group_iterations_missed",
            "Ticks skipped because evaluation fell behind.",
            ["rule_group"],
            registry=registry,
        )
        self.failures = Counter(
            "tripwire_rule_group_persist_failures",
            "Ticks whose state or alerts could not be written to Redis.",
            ["rule_group"],
            registry=registry,
        )
        self.alerts_sent = Counter(
            "tripwire_alerts_published",
            "Alert objects published on the alerts stream.",
            ["rule_group"],
            registry=registry,
        )
        self.alerts = Gauge(
            "tripwire_alerts",
            "Alerts by state.",
            ["state"],
            registry=registry,
        )
        self.series = Gauge("tripwire_series", "Series in the store.", registry=registry)
        self.last_tick = Gauge(
            "tripwire_rule_group_last_evaluation_timestamp_seconds",
            "When the group last evaluated.",
            ["rule_group"],
            registry=registry,
        )


@dataclass
class Evaluator:
    groups: list[RuleGroup]
    store: SeriesStore
    state: StateStore
    clock: Clock
    ctx: EvalContext
    metrics: EvaluationMetrics
    caught_up: Callable[[], bool] = lambda: True
    catch_up_timeout: float = 300.0
    last_evaluation: dict[str, float] = field(default_factory=dict, init=False)  # group key -> ts
    _last_trim: float = field(default=0.0, init=False)
    _visible: dict[str, asyncio.Lock] = field(default_factory=dict, init=False)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _crashed: asyncio.Future[None] | None = field(default=None, init=False)
    _running: bool = field(default=False, init=False)

    async def restore(self) -> int:
        """Load every group's persisted alert state (pending `for` timers, firing alerts, re-send times)."""
        restored = 0
        now = self.clock.now()
        for group in self.groups:
            restored += group.restore(
                await self.state.load(group.key), now, self.ctx.outage_tolerance, self.ctx.grace_period
            )
        return restored

    async def run(self) -> None:
        """Run every group's loop until cancelled (groups may be replaced meanwhile by `replace_groups`);
        raises if a group loop crashes, so readiness reports it."""
        await self.wait_for_backlog()
        self._crashed = asyncio.get_running_loop().create_future()
        self._running = True
        for group in self.groups:
            self._start(group)
        try:
            await self._crashed
        finally:
            self._running = False
            await self._stop_all()

    def _start(self, group: RuleGroup) -> None:
        task = asyncio.create_task(self._run_group(group), name=f"group:{group.name}")
        task.add_done_callback(self._on_group_done)
        self._tasks[group.key] = task

    def _on_group_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._crashed is None or self._crashed.done():
            return
        if task.exception() is not None:
            self._crashed.set_exception(task.exception())  # type: ignore[arg-type]

    async def _stop_all(self) -> None:
        tasks, self._tasks = list(self._tasks.values()), {}
        await cancel_and_wait(tasks)

    async def replace_groups(self, groups: list[RuleGroup]) -> dict[str, int]:
        """Switch to a new, fully valid rule set: rules that are still there keep their state, groups that
        are gone stop, new ones start on their next aligned tick. Returns counts for the log."""
        old = {group.key: group for group in self.groups}
        kept = sum(copy_state(group, old[group.key]) for group in groups if group.key in old)
        for group in groups:
            if group.key not in old:
                # A group added by the reload may have state from an earlier run of the same file.
                group.restore(
                    await self.state.load(group.key),
                    self.clock.now(),
                    self.ctx.outage_tolerance,
                    self.ctx.grace_period,
                )
        if self._running:
            await self._stop_all()
        self.groups = groups
        if self._running:
            for group in groups:
                self._start(group)
        self._update_gauges()
        return {"groups": len(groups), "rules": sum(len(g.rules) for g in groups), "rules_kept_state": kept}

    async def wait_for_backlog(self) -> bool:
        """Hold the first evaluation until ingest has caught up with what the streams held at start (after an
        outage, the gap would otherwise look like series vanishing and resolve firing alerts). Gives up after
        `catch_up_timeout` of real time, loudly. Polls on real time: the backlog drains at its own pace."""
        started = time.monotonic()
        if self.caught_up():
            return True
        log.warning("waiting for the stream backlog before the first evaluation")
        while not self.caught_up():
            if time.monotonic() - started > self.catch_up_timeout:
                log.error(
                    "stream backlog not consumed in time; evaluating anyway (alerts may flap)",
                    extra={"waited_seconds": round(time.monotonic() - started, 1)},
                )
                return False
            await asyncio.sleep(BACKLOG_POLL)
        log.info("caught up with the stream backlog", extra={"seconds": round(time.monotonic() - started, 2)})
        return True

    async def _run_group(self, group: RuleGroup) -> None:
        interval = group.interval
        next_ts = math.ceil(self.clock.now() / interval) * interval
        while True:
            await self.clock.sleep_until(next_ts)
            await self.tick(group, next_ts)
            next_ts += interval
            now = self.clock.now()
            if next_ts < now:
                missed = math.floor((now - next_ts) / interval) + 1
                self.metrics.missed.labels(group.name).inc(missed)
                log.warning("evaluation fell behind", extra={"rule_group": group.name, "missed": missed})
                next_ts += missed * interval

    def visible(self, group: RuleGroup) -> asyncio.Lock:
        """Held while a tick of `group` evaluates and persists: the API reads a group's alerts under it, so
        what it reports (say, pending since T) is already in Redis and survives a crash."""
        return self._visible.setdefault(group.key, asyncio.Lock())

    async def tick(self, group: RuleGroup, ts: float) -> None:
        """Evaluate `group` at `ts`, persist its state and publish its alerts in one transaction."""
        async with self.visible(group):
            await self._tick(group, ts)

    async def _tick(self, group: RuleGroup, ts: float) -> None:
        started = time.perf_counter()
        outcome = group.evaluate(self.store, ts, self.ctx)
        previous = [(record, record.last_sent_at, record.valid_until) for _, record in outcome.sends]
        group.commit(outcome, self.ctx)
        try:
            await self.state.save(
                group.key, group.snapshot(ts), [a.to_wire() for a in outcome.alerts], f"{group.key}@{ts}"
            )
        except RedisError as exc:
            # Not published: undo the "sent" marks so the next tick sends these alerts again.
            for record, last_sent_at, valid_until in previous:
                record.last_sent_at, record.valid_until = last_sent_at, valid_until
            self.metrics.failures.labels(group.name).inc()
            log.error(
                "could not persist rule group state; will retry next tick",
                extra={"rule_group": group.name, "error": str(exc)},
            )
            return
        if outcome.alerts:
            self.metrics.alerts_sent.labels(group.name).inc(len(outcome.alerts))
            log.info("published alerts", extra={"rule_group": group.name, "count": len(outcome.alerts)})
        self.metrics.duration.labels(group.name).observe(time.perf_counter() - started)
        self.metrics.last_tick.labels(group.name).set(ts)
        self.last_evaluation[group.key] = ts
        self._update_gauges()
        if ts - self._last_trim >= TRIM_EVERY:
            self.store.trim(ts)
            self._last_trim = ts

    def _update_gauges(self) -> None:
        counts = {state: 0 for state in AlertState}
        for group in self.groups:
            for rule in group.alerting_rules:
                for record in rule.active.values():
                    counts[record.state] += 1
        for state, count in counts.items():
            self.metrics.alerts.labels(state.value).set(count)
        self.metrics.series.set(len(self.store))
