"""Counters derived from log events (`log_metrics` in tripwire.yml).

Every log event already counts into `log_events_total{service, level, ...labels}`; a log metric adds 1 to its
own counter for each event that passes its `match` (field equality) and `message_regex` (RE2 syntax, searched
anywhere in the message), labelled with the chosen event fields, event labels or named regex groups:

    log_metrics:
      - name: budget_exceeded_total
        match: {level: error}
        message_regex: 'Budget exceeded for (?P<tenant>\\w+)'
        labels: [service, tenant]

A label whose source is missing or empty is left out, as Prometheus drops empty labels.
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.config import LogMetricConfig
from shared.events import LogEvent
from shared.matchers import compile_go


def _field(event: LogEvent, name: str) -> str:
    """An event's own field (service, level, message) or one of its labels; "" when it has none."""
    if name == "service":
        return event.service
    if name == "level":
        return event.level
    if name == "message":
        return event.message
    return event.labels.get(name, "")


class LogMetric:
    """One compiled `log_metrics` entry."""

    def __init__(self, config: LogMetricConfig) -> None:
        self.name = config.name
        self.match = dict(config.match)
        self.regex = compile_go(config.message_regex) if config.message_regex is not None else None
        self.labels = list(config.labels)

    def labels_for(self, event: LogEvent) -> dict[str, str] | None:
        """The counter's labels for `event`, or None if the event does not count."""
        if any(_field(event, name) != value for name, value in self.match.items()):
            return None
        groups: dict[str, str | None] = {}
        if self.regex is not None:
            found = self.regex.search(event.message)
            if found is None:
                return None
            groups = found.groupdict()
        labels = {}
        for name in self.labels:
            value = groups.get(name) or _field(event, name)
            if value:
                labels[name] = value
        return labels


class LogMetrics:
    """All log metrics of the config, applied to each event in config order."""

    def __init__(self, configs: list[LogMetricConfig]) -> None:
        self.metrics = [LogMetric(config) for config in configs]

    def __len__(self) -> int:
        return len(self.metrics)

    def counts(self, event: LogEvent) -> Iterator[tuple[str, dict[str, str]]]:
        """The (metric name, labels) of every derived counter `event` adds 1 to."""
        for metric in self.metrics:
            labels = metric.labels_for(event)
            if labels is not None:
                yield metric.name, labels
