"""The routing tree, with Alertmanager's semantics: depth-first, first matching child wins unless it has
`continue: true`, a route with no matching child is itself the match, and options are inherited.

Route keys and group keys are Alertmanager's (`{}/{env="prod"}:{alertname="HighErrorRate"}`), so dedup
state and webhook `groupKey`s line up with what Alertmanager users already see.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.notifier.config import RouteConfig, route_matchers
from services.notifier.matchers import Matcher, labels_string, matchers_string, sort_key

DEFAULT_GROUP_WAIT = 30.0
DEFAULT_GROUP_INTERVAL = 300.0
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0


@dataclass
class Route:
    receiver: str
    matchers: list[Matcher]
    group_by: list[str] | None  # None: no grouping labels; ["..."]: every label
    group_wait: float
    group_interval: float
    repeat_interval: float
    continue_: bool = False
    # Named time intervals; not inherited by child routes, as in Alertmanager.
    mute_time_intervals: list[str] = field(default_factory=list)
    active_time_intervals: list[str] = field(default_factory=list)
    parent: Route | None = None
    routes: list[Route] = field(default_factory=list)

    @classmethod
    def build(cls, config: RouteConfig, parent: Route | None = None) -> Route:
        """A route from config, inheriting unset options from `parent`."""
        route = cls(
            receiver=config.receiver or (parent.receiver if parent else ""),
            matchers=sorted(route_matchers(config), key=sort_key),
            group_by=config.group_by
            if config.group_by is not None
            else (parent.group_by if parent else None),
            group_wait=_pick(config.group_wait, parent and parent.group_wait, DEFAULT_GROUP_WAIT),
            group_interval=_pick(
                config.group_interval, parent and parent.group_interval, DEFAULT_GROUP_INTERVAL
            ),
            repeat_interval=_pick(
                config.repeat_interval, parent and parent.repeat_interval, DEFAULT_REPEAT_INTERVAL
            ),
            continue_=config.continue_,
            mute_time_intervals=list(config.mute_time_intervals),
            active_time_intervals=list(config.active_time_intervals),
            parent=parent,
        )
        route.routes = [cls.build(child, route) for child in config.routes]
        return route

    def match(self, labels: dict[str, str]) -> list[Route]:
        """The routes an alert with `labels` is delivered through."""
        if not all(m.matches(labels) for m in self.matchers):
            return []
        found: list[Route] = []
        for child in self.routes:
            matches = child.match(labels)
            found.extend(matches)
            if matches and not child.continue_:
                break
        return found or [self]

    def key(self) -> str:
        own = matchers_string(self.matchers)
        return f"{self.parent.key()}/{own}" if self.parent else own

    def group_labels(self, labels: dict[str, str]) -> dict[str, str]:
        if self.group_by is None:
            return {}
        if self.group_by == ["..."]:
            return dict(labels)
        return {name: labels[name] for name in self.group_by if name in labels}

    def group_key(self, labels: dict[str, str]) -> str:
        return f"{self.key()}:{labels_string(self.group_labels(labels))}"


def _pick(own: float | None, inherited: float | None, default: float) -> float:
    if own is not None:
        return own
    return inherited if inherited is not None else default
