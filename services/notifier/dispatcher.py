"""From alerts to notifications, read top to bottom as Alertmanager's pipeline:

route (which receivers) -> group (aggregation group by `group_by`, flushed on its timers: group_wait after it
appears, then every group_interval) -> mute (silences, inhibition) -> per integration: dedup against the
notification log (new alerts, resolutions, repeat_interval) -> deliver (with the integration's retries) ->
record in the notification log.

Group contents, their timers and the notification log all live in Redis, so a restarted notifier, or another
replica, carries on with the same schedule and never re-sends what was sent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from services.notifier import stages
from services.notifier.alert_store import AlertStore
from services.notifier.inhibition import Inhibitor
from services.notifier.nflog import GroupSchedule, LogEntry, NotifierState, ScheduledGroup
from services.notifier.notification import Notification
from services.notifier.receivers import DeliveryError, Integration
from services.notifier.routing import Route
from services.notifier.silences import Silence, SilenceStore
from services.notifier.time_intervals import TimeInterval
from shared.alerts import ZERO_TIME, Alert, from_unix
from shared.clock import Clock
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CLAIM_LEASE = 120.0  # a claimed group is not flushed by another replica for this long (unless re-scheduled)
POLL = 1.0  # how often the schedule is looked at when nothing wakes us (groups of other replicas)


@dataclass
class Receiver:
    name: str
    integrations: list[Integration]


class DispatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "tripwire_notifications",
            "Notification attempts by receiver, integration and outcome.",
            ["receiver", "integration", "outcome"],
            registry=registry,
        )
        self.time_muted = Counter(
            "tripwire_notifier_group_flushes_time_muted",
            "Group flushes that sent nothing because their route was muted by a time interval.",
            registry=registry,
        )
        self.flush_errors = Counter(
            "tripwire_notifier_flush_errors",
            "Group flush passes that failed unexpectedly (logged with a traceback); retried.",
            registry=registry,
        )
        self.inhibited = Counter(
            "tripwire_notifier_alerts_inhibited",
            "Alerts left out of a notification because a firing alert inhibited them.",
            registry=registry,
        )
        self.silenced = Counter(
            "tripwire_notifier_alerts_silenced",
            "Alerts left out of a notification because a silence muted them.",
            registry=registry,
        )
        self.alerts_received = Counter(
            "tripwire_notifier_alerts_received",
            "Alerts read from the alerts stream, by status.",
            ["status"],
            registry=registry,
        )


def _walk(route: Route) -> list[Route]:
    return [route, *(r for child in route.routes for r in _walk(child))]


def _resolved_if_ended(alert: Alert, now: float) -> Alert:
    if alert.status == "firing" and alert.ends_at.timestamp() <= now:
        return alert.model_copy(update={"status": "resolved"})
    return alert


class Dispatcher:
    def __init__(
        self,
        tree: Route,
        receivers: dict[str, Receiver],
        state: NotifierState,
        clock: Clock,
        external_url: str,
        resolve_timeout: float,
        metrics: DispatchMetrics,
        silences: SilenceStore | None = None,
        alert_store: AlertStore | None = None,
        inhibitor: Inhibitor | None = None,
        intervals: dict[str, TimeInterval] | None = None,
    ) -> None:
        self.tree = tree
        self.receivers = receivers
        self.state = state
        self.clock = clock
        self.external_url = external_url
        self.resolve_timeout = resolve_timeout
        self.metrics = metrics
        self.silences = silences
        self.alert_store = alert_store
        self.inhibitor = inhibitor
        self.intervals = intervals or {}
        self.schedule = GroupSchedule(state.redis, state.keys)
        self.routes = {route.key(): route for route in _walk(tree)}
        self.wake = asyncio.Event()

    def replace(
        self,
        tree: Route,
        receivers: dict[str, Receiver],
        inhibitor: Inhibitor,
        intervals: dict[str, TimeInterval],
    ) -> None:
        """Switch to a reloaded routing config (groups of routes that are gone are re-routed when due)."""
        self.tree, self.receivers, self.inhibitor, self.intervals = tree, receivers, inhibitor, intervals
        self.routes = {route.key(): route for route in _walk(tree)}
        self.wake.set()

    async def dispatch(self, source: str, alerts: list[Alert]) -> None:
        """Take in the alerts of stream entry `source`: record them, add them to their aggregation groups and
        schedule those groups. All of it is in Redis when this returns, so the entry can be acked; delivery
        happens when a group is due (`flush_due`, run by `run`)."""
        now = self.clock.now()
        groups: dict[tuple[str, str], tuple[Route, list[tuple[str, Alert]]]] = {}
        alerts = [self._received(received, now) for received in alerts]
        if self.alert_store is not None:
            await self.alert_store.put(source, alerts, now)
        for alert in alerts:
            self.metrics.alerts_received.labels(alert.status).inc()
            for route in self.tree.match(alert.labels):
                key = (route.receiver, route.group_key(alert.labels))
                groups.setdefault(key, (route, []))[1].append((source, alert))
        for (receiver, group_key), (route, members) in groups.items():
            await self.state.upsert(receiver, group_key, members, now)
            # As Alertmanager: a group flushes group_wait after it appears, or at once if it has not flushed
            # yet and one of its alerts started longer ago than that (e.g. after a restart).
            overdue = any(a.starts_at.timestamp() + route.group_wait <= now for _, a in members)
            await self.schedule.add(receiver, group_key, route.key(), now + route.group_wait, overdue, now)
        self.wake.set()

    async def flush_due(self) -> int:
        """Flush every group whose time has come; returns how many were flushed. A group whose delivery
        failed is tried again a group_interval later; a group left empty is dropped."""
        now = self.clock.now()
        due = await self.schedule.claim_due(now, CLAIM_LEASE)
        if not due:
            return 0
        mute = await self._mute_inputs(now)
        for group in due:
            try:
                await self._flush_group(group, now, mute)
            except RedisError:
                raise
            except Exception:
                # One bad group (say, unreadable state) must not hold back the others; it is retried later.
                log.exception("group flush failed unexpectedly", extra={"group_key": group.group_key})
                self.metrics.flush_errors.inc()
        return len(due)

    async def _flush_group(
        self, group: ScheduledGroup, now: float, mute: tuple[list[Silence], list[Alert]]
    ) -> None:
        route = self.routes.get(group.route)
        if route is None or group.receiver not in self.receivers:
            route = None
        # After a reload, alerts that no longer route here go through the current tree again (as
        # Alertmanager rebuilds its groups), so none is lost or sent to a receiver it left.
        members = await self.state.members(group.receiver, group.group_key)
        kept: list[Alert] = []
        stale: list[tuple[str, Alert]] = []
        for source, alert in members:
            if route is not None and route in self.tree.match(alert.labels):
                kept.append(alert)
            else:
                stale.append((source, alert))
        if stale:
            await self.state.forget(group.receiver, group.group_key, [a.fingerprint for _, a in stale], now)
            for source, alert in stale:
                await self.dispatch(source, [alert])
            log.info("re-routed alerts after a reload", extra={"group_key": group.group_key})
        if route is None or not kept:
            await self.schedule.drop(group)
            return
        try:
            holds_alerts = await self._flush(route, group.receiver, group.group_key, kept, now, mute)
        except DeliveryError as exc:
            log.warning(
                "group flush failed; trying again a group_interval later",
                extra={"group_key": group.group_key, "error": str(exc)},
            )
            await self.schedule.retry_at(group, now + route.group_interval)
            return
        if holds_alerts:
            await self.schedule.flushed_at(group, now + route.group_interval)
        else:
            await self.schedule.drop(group)

    async def run(self) -> None:
        """Flush groups as they come due, for ever: woken by new groups, else on the next due time (checked at
        least every POLL seconds, for groups another replica scheduled)."""
        while True:
            self.wake.clear()
            try:
                await self.flush_due()
                upcoming = await self.schedule.next_due()
            except RedisError as exc:
                log.warning("group flush pass failed; will retry", extra={"error": str(exc)})
                upcoming = None

            now = self.clock.now()
            until = now + POLL if upcoming is None else min(upcoming, now + POLL)
            sleeper = asyncio.create_task(self.clock.sleep_until(until))
            woken = asyncio.create_task(self.wake.wait())
            try:
                await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait([sleeper, woken])

    async def _mute_inputs(self, now: float) -> tuple[list[Silence], list[Alert]]:
        """What the inhibit and silence stages need, read once per flush pass: the silences, and the firing
        alerts that may inhibit others."""
        silences = await self.silences.all(now) if self.silences is not None else []
        firing: list[Alert] = []
        if self.inhibitor is not None and self.inhibitor.rules and self.alert_store is not None:
            firing = [a for a, _ in await self.alert_store.active(now) if not a.is_resolved()]
        return silences, firing

    def _received(self, alert: Alert, now: float) -> Alert:
        """As Alertmanager: an alert without an end gets one `resolve_timeout` away; one whose end has passed
        is resolved."""
        if alert.ends_at == ZERO_TIME:
            alert = alert.model_copy(update={"ends_at": from_unix(now + self.resolve_timeout)})
        return _resolved_if_ended(alert, now)

    async def _flush(
        self,
        route: Route,
        receiver_name: str,
        group_key: str,
        members: list[Alert],
        now: float,
        mute: tuple[list[Silence], list[Alert]],
    ) -> bool:
        """Run the stages for one group's `members` and receiver; returns whether the group still holds
        alerts afterwards (resolved ones leave it once every integration has been told)."""
        # A stored firing alert whose end has passed (its source stopped re-sending it) is resolved now.
        alerts = sorted(
            (_resolved_if_ended(a, now) for a in members), key=lambda a: (a.starts_at, a.fingerprint)
        )
        total = len(alerts)
        silences, sources = mute
        alerts, inhibited = stages.inhibit(alerts, self.inhibitor, sources)
        self.metrics.inhibited.inc(inhibited)
        if not stages.active_time(route, now, self.intervals) or stages.mute_time(route, now, self.intervals):
            # Muted by time: nothing is sent or recorded, so the first flush after the mute sends it all.
            self.metrics.time_muted.inc()
            return True
        alerts, silenced = stages.silence(alerts, silences, now)
        self.metrics.silenced.inc(silenced)
        if not alerts:
            return True  # all muted: they stay in the group
        firing = {a.fingerprint for a in alerts if not a.is_resolved()}
        resolved = {a.fingerprint for a in alerts if a.is_resolved()}
        group_labels = route.group_labels(alerts[0].labels)
        receiver = self.receivers[receiver_name]
        failures: list[str] = []
        for integration in receiver.integrations:
            log_name = f"{receiver_name}/{integration.name}"
            entry = await self.state.last_sent(log_name, group_key)
            if not stages.dedup(
                entry, firing, resolved, route.repeat_interval, integration.send_resolved, now
            ):
                self.metrics.notifications.labels(receiver_name, integration.name, "deduplicated").inc()
                continue
            shown = alerts if integration.send_resolved else [a for a in alerts if not a.is_resolved()]
            if not shown:
                # Everything resolved but this integration does not want resolved notifications: just clear.
                await self.state.record(log_name, group_key, LogEntry(set(), resolved, now))
                continue
            notification = Notification(receiver_name, group_key, group_labels, shown, self.external_url)
            try:
                await integration.notify(notification)
            except DeliveryError as exc:
                outcome = "failed_permanently" if exc.permanent else "failed"
                self.metrics.notifications.labels(receiver_name, integration.name, outcome).inc()
                log.error(
                    "notification not delivered",
                    extra={
                        "receiver": receiver_name,
                        "integration": integration.name,
                        "group_key": group_key,
                        "error": str(exc),
                        "permanent": exc.permanent,
                    },
                )
                if not exc.permanent:
                    failures.append(str(exc))
                continue
            self.metrics.notifications.labels(receiver_name, integration.name, "sent").inc()
            log.info(
                "notification sent",
                extra={
                    "receiver": receiver_name,
                    "integration": integration.name,
                    "group_key": group_key,
                    "status": notification.status,
                    "alerts": len(shown),
                },
            )
            await self.state.record(log_name, group_key, LogEntry(firing, resolved, now))
        if failures:
            raise DeliveryError("; ".join(failures), permanent=False)
        if resolved:
            # Every integration has been told (or did not want to be): resolved alerts leave the group.
            await self.state.forget(receiver_name, group_key, sorted(resolved), now)
        return total > len(resolved)
