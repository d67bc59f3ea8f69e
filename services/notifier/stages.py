"""The notification pipeline's stages, in Alertmanager's order, each a small function testable alone:

inhibit -> active time -> mute time -> silence -> (wait) -> dedup -> retry -> record

`Dispatcher._flush` runs them for one group and receiver. Alertmanager's wait stage (an HA peer's position
in its gossip cluster) has no counterpart here: replicas take a group by claiming it in Redis
(nflog.GroupSchedule). The retry stage is each integration's own retrying `notify` (jittered backoff under a
deadline, Retry-After); the record stage is NotifierState.record.
"""

from __future__ import annotations

from services.notifier.inhibition import Inhibitor
from services.notifier.nflog import LogEntry
from services.notifier.routing import Route
from services.notifier.silences import Silence, muted_by
from services.notifier.time_intervals import TimeInterval
from shared.alerts import Alert


def inhibit(alerts: list[Alert], inhibitor: Inhibitor | None, firing: list[Alert]) -> tuple[list[Alert], int]:
    """Leave out firing alerts that a firing source inhibits; returns the rest and how many were left out.
    A resolution is never held back."""
    if inhibitor is None or not inhibitor.rules or not firing:
        return alerts, 0
    kept = [a for a in alerts if a.is_resolved() or not inhibitor.inhibited_by(a.labels, firing)]
    return kept, len(alerts) - len(kept)


def active_time(route: Route, now: float, intervals: dict[str, TimeInterval]) -> bool:
    """Whether the route may send now: always without active_time_intervals, else only inside one."""
    active = [intervals[name] for name in route.active_time_intervals if name in intervals]
    return not active or any(interval.contains(now) for interval in active)


def mute_time(route: Route, now: float, intervals: dict[str, TimeInterval]) -> bool:
    """Whether one of the route's mute_time_intervals holds now (then nothing is sent)."""
    return any(intervals[name].contains(now) for name in route.mute_time_intervals if name in intervals)


def silence(alerts: list[Alert], silences: list[Silence], now: float) -> tuple[list[Alert], int]:
    """Leave out firing alerts an active silence mutes; returns the rest and how many were left out. Muted
    alerts stay in their group, so once the silence ends they count as new and are notified."""
    if not silences:
        return alerts, 0
    kept = [a for a in alerts if a.is_resolved() or not muted_by(silences, a.labels, now)]
    return kept, len(alerts) - len(kept)


def dedup(
    entry: LogEntry | None,
    firing: set[str],
    resolved: set[str],
    repeat: float,
    send_resolved: bool,
    now: float,
) -> bool:
    """Alertmanager's DedupStage: notify on new firing alerts, on resolution, or when the repeat interval has
    passed since the last notification; never for a group the receiver has not heard of that is already all
    resolved."""
    if entry is None:
        return bool(firing)
    if not firing <= entry.firing:
        return True
    if not firing:
        return bool(entry.firing)
    if send_resolved and not resolved <= entry.resolved:
        return True
    return entry.timestamp < now - repeat
