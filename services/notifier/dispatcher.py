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
import uuid
from dataclasses import dataclass

import orjson
from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from services.notifier import stages
from services.notifier.alert_store import AlertStore
from services.notifier.health import IntegrationHealth
from services.notifier.inhibition import Inhibitor
from services.notifier.nflog import (
    GroupSchedule,
    Intent,
    IntentJournal,
    LogEntry,
    NotifierState,
    ScheduledGroup,
)
from services.notifier.notification import Notification
from services.notifier.receivers import Deferred, DeliveryError, Integration
from services.notifier.routing import Route
from services.notifier.silences import Silence, SilenceStore
from services.notifier.time_intervals import TimeInterval
from shared.alerts import ZERO_TIME, Alert, from_unix, rfc3339
from shared.clock import Clock
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# A claimed group is not flushed by another replica (or this one) for this long; the flush renews its claim
# while it runs, so a crashed replica's in-flight groups are taken over within one lease.
CLAIM_LEASE = 15.0
DLQ_MAXLEN = 10_000
MAX_FLUSHES = 64  # groups flushed at once by one replica
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
        self.reconciled = Counter(
            "tripwire_notifier_deliveries_reconciled",
            "Unfinished deliveries found at a flush (a crash, a failed attempt), by what reconciling found.",
            ["integration", "outcome"],
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
        health: IntegrationHealth | None = None,
        claim_lease: float = CLAIM_LEASE,
    ) -> None:
        self.claim_lease = claim_lease
        self.tree = tree
        self.health = health
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
        self._flushing: dict[str, asyncio.Task[None]] = {}

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
        """Flush every group whose time has come and wait for them; returns how many were flushed. A group
        whose delivery failed is tried again a group_interval later; a group left empty is dropped."""
        flushes = await self._start_due()
        await asyncio.gather(*flushes)
        return len(flushes)

    async def _start_due(self) -> list[asyncio.Task[None]]:
        """Claim as many due groups as there are free flush slots (MAX_FLUSHES), and flush each in its own
        task, so a receiver that is slow, rate limited or retrying holds back only its own groups, and a
        replica never claims more than it can work on (the rest stay for the other replicas)."""
        free = MAX_FLUSHES - len(self._flushing)
        now = self.clock.now()
        due = await self.schedule.claim_due(now, self.claim_lease, limit=free)
        if not due:
            return []
        # Read once per pass: the flushes start now (no more are claimed than can run), so it is fresh.
        mute = await self._mute_inputs(now)
        tasks = []
        for group in due:
            if group.id in self._flushing:
                continue
            task = asyncio.create_task(self._flush_one(group, mute), name=f"flush-{group.id}")
            self._flushing[group.id] = task
            task.add_done_callback(lambda _t, gid=group.id: self._flushed(gid))
            tasks.append(task)
        return tasks

    def _flushed(self, group_id: str) -> None:
        self._flushing.pop(group_id, None)
        self.wake.set()  # its next flush time may be the earliest now

    async def _flush_one(self, group: ScheduledGroup, mute: tuple[list[Silence], list[Alert]]) -> None:
        flush = asyncio.current_task()
        assert flush is not None
        renewing = asyncio.create_task(self._renew_claim(group, flush))
        try:
            await self._flush_group(group, self.clock.now(), mute)
        except Exception:
            # One bad group (say, unreadable state, or Redis gone) must not hold back the others; it stays
            # claimed, so it is flushed again when its claim lapses.
            log.exception("group flush failed unexpectedly", extra={"group_key": group.group_key})
            self.metrics.flush_errors.inc()
        finally:
            await cancel_and_wait([renewing])

    async def _renew_claim(self, group: ScheduledGroup, flush: asyncio.Task[None]) -> None:
        """Keep our claim alive while the flush runs (retries, rate limits), a third of a lease at a time; if
        it was lost (lapsed and taken by another replica), stop the flush: the other replica owns it now."""
        while True:
            await asyncio.sleep(self.claim_lease / 3)  # real time: the lease is a real-time safety net
            try:
                if not await self.schedule.renew(group, self.clock.now() + self.claim_lease):
                    log.error(
                        "lost the claim on a group mid-flush; stopping", extra={"group_key": group.group_key}
                    )
                    flush.cancel()
                    return
            except RedisError as exc:
                log.warning(
                    "could not renew a group claim", extra={"group_key": group.group_key, "error": str(exc)}
                )

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
            retry = now + route.group_interval
            if isinstance(exc, Deferred):
                retry = min(retry, exc.until)  # asked to come back at a given time (e.g. min_firing_for)
                log.info("group flush deferred", extra={"group_key": group.group_key, "reason": str(exc)})
            else:
                log.warning(
                    "group flush failed; trying again a group_interval later",
                    extra={"group_key": group.group_key, "error": str(exc)},
                )
            await self.schedule.retry_at(group, retry)
            return
        if holds_alerts:
            await self.schedule.flushed_at(group, now + route.group_interval)
        else:
            await self.schedule.drop(group)

    async def run(self) -> None:
        """Flush groups as they come due, for ever: woken by new groups, else on the next due time (checked at
        least every POLL seconds, for groups another replica scheduled)."""
        try:
            await self._run()
        finally:
            await cancel_and_wait(list(self._flushing.values()))

    async def _run(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self._start_due()
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

    async def _notify(
        self,
        integration: Integration,
        receiver_name: str,
        repeat_interval: float,
        group_key: str,
        group_labels: dict[str, str],
        alerts: list[Alert],
        firing: set[str],
        resolved: set[str],
        now: float,
    ) -> DeliveryError | None:
        """Dedup, deliver and record one group through one integration; returns the failure when delivery
        failed in a way worth trying again (Deferred: at a given time)."""
        log_name = f"{receiver_name}/{integration.name}"
        labels = (receiver_name, integration.name)
        pending = await self.state.intent(log_name, group_key)
        if pending is not None:
            try:
                await self._reconcile(integration, log_name, group_key, pending)
            except Exception as exc:
                self.metrics.reconciled.labels(integration.name, "unknown").inc()
                reason = f"{integration.name}: cannot tell whether an interrupted delivery arrived: {exc}"
                log.warning("reconcile failed; will retry", extra={"group_key": group_key, "error": reason})
                return DeliveryError(reason, permanent=False)
        entry = await self.state.last_sent(log_name, group_key)
        # An integration with unfinished work for the group (a kill switch's flip still retrying) is told
        # whatever the dedup stage says, so it can finish or settle it (e.g. on the resolution).
        unfinished = getattr(integration, "has_unfinished", None)
        must = unfinished is not None and await unfinished(group_key)
        if not must and not stages.dedup(
            entry, firing, resolved, repeat_interval, integration.send_resolved, now
        ):
            self.metrics.notifications.labels(*labels, "deduplicated").inc()
            return None
        shown = alerts if integration.send_resolved else [a for a in alerts if not a.is_resolved()]
        if not shown:
            # Everything resolved but this integration does not want resolved notifications: just clear.
            await self.state.record(log_name, group_key, LogEntry(set(), resolved, now))
            return None
        notification = Notification(receiver_name, group_key, group_labels, shown, self.external_url)
        # Reuse a failed delivery's id: it is the idempotency key the receiving side may dedup on.
        intent = Intent(pending.id if pending else uuid.uuid4().hex, firing, resolved, now)
        journal = IntentJournal(self.state, log_name, group_key, intent)
        try:
            await integration.notify(notification, journal)
        except Deferred as exc:
            self.metrics.notifications.labels(*labels, "deferred").inc()
            return exc
        except DeliveryError as exc:
            if intent.state == "sending":
                # We gave up on a request that may have arrived: not a crash, so an integration that cannot
                # look (a Slack incoming webhook) sends again rather than assume it arrived.
                intent.state = "abandoned"
                await self.state.write_intent(log_name, group_key, intent)
            outcome = "failed_permanently" if exc.permanent else "failed"
            self.metrics.notifications.labels(*labels, outcome).inc()
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
            if exc.permanent and self.health is not None:
                self.health.refused(receiver_name, integration.name, str(exc))
            await self._dead_letter(notification, integration.name, exc, now)
            return exc  # the group keeps its alerts and is tried again a group_interval later
        self.metrics.notifications.labels(*labels, "sent").inc()
        if self.health is not None:
            self.health.delivered(receiver_name, integration.name)
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
        return None

    async def announce(self, receiver_names: list[str], notification: Notification) -> None:
        """Deliver a notification the notifier itself makes (a kill-switch decision) to named receivers, with
        the same dedup, intents, retries and DLQ as routed ones; its group key is unique, so a replay after a
        crash is told once. A failure worth retrying is raised (the caller's delivery is retried and only
        re-announces: its decision stands); permanent ones are logged and dead-lettered. Kill-switch
        integrations are never announced to (one kill switch must not trigger another)."""
        now = self.clock.now()
        firing = {a.fingerprint for a in notification.alerts}
        failures: list[DeliveryError] = []
        for name in receiver_names:
            receiver = self.receivers.get(name)
            if receiver is None:
                log.error("announce: no such receiver", extra={"receiver": name})
                continue
            for integration in receiver.integrations:
                if getattr(integration, "kill_switch", False):
                    continue
                failure = await self._notify(
                    integration,
                    name,
                    float("inf"),
                    notification.group_key,
                    notification.group_labels,
                    notification.alerts,
                    firing,
                    set(),
                    now,
                )
                if failure is not None:
                    log.error("announcement not delivered", extra={"receiver": name, "error": str(failure)})
                    if not failure.permanent:
                        failures.append(failure)
        if failures:
            raise DeliveryError("announcement: " + "; ".join(str(f) for f in failures), permanent=False)

    async def _reconcile(
        self, integration: Integration, log_name: str, group_key: str, pending: Intent
    ) -> None:
        """A delivery was left unfinished: its last attempt failed (nothing to ask: it did not arrive), or a
        request's fate is unknown: the process died mid-request ("sending") or gave up after one
        ("abandoned"); then ask the integration. Delivered: recorded as sent, so dedup does not send it
        twice. Either way the intent is settled here; a new one is written if it is sent again."""
        if pending.state == "failed":
            self.metrics.reconciled.labels(integration.name, "failed_before").inc()
            await self.state.drop_intent(log_name, group_key)
            return
        delivered = await integration.reconcile(group_key, pending)
        self.metrics.reconciled.labels(integration.name, "delivered" if delivered else "not_delivered").inc()
        log.warning(
            "reconciled a delivery whose last request may have arrived",
            extra={
                "integration": log_name,
                "group_key": group_key,
                "state": pending.state,
                "attempts": pending.attempts,
                "delivered": delivered,
            },
        )
        if delivered:
            await self.state.record(log_name, group_key, pending.entry())
        else:
            await self.state.drop_intent(log_name, group_key)

    async def _dead_letter(
        self, notification: Notification, integration: str, error: DeliveryError, now: float
    ) -> None:
        """Keep an undelivered notification, with why, on the notifications DLQ for ops to see and replay. The
        group itself is not given up: a retryable failure is tried again at the next flush."""
        fields = {
            "receiver": notification.receiver,
            "integration": integration,
            "group_key": notification.group_key,
            "reason": str(error),
            "permanent": "true" if error.permanent else "false",
            "at": rfc3339(now),
            "payload": orjson.dumps(notification.webhook_payload()),
        }
        try:
            await self.state.redis.xadd(
                self.state.keys.notifications_dlq, fields, maxlen=DLQ_MAXLEN, approximate=True
            )
        except RedisError as exc:
            log.error("could not write the notifications DLQ", extra={"error": str(exc)})

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
        failures: list[DeliveryError] = []
        for integration in receiver.integrations:
            failure = await self._notify(
                integration,
                receiver_name,
                route.repeat_interval,
                group_key,
                group_labels,
                alerts,
                firing,
                resolved,
                now,
            )
            if failure is not None:
                failures.append(failure)
        if failures:
            message = "; ".join(str(f) for f in failures)
            if all(isinstance(f, Deferred) for f in failures):
                raise Deferred(message, until=min(f.until for f in failures if isinstance(f, Deferred)))
            raise DeliveryError(message, permanent=False)
        if resolved:
            # Every integration has been told (or did not want to be): resolved alerts leave the group.
            await self.state.forget(receiver_name, group_key, sorted(resolved), now)
        return total > len(resolved)
