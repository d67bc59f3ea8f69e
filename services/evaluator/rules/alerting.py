"""One alerting rule's state machine, as Prometheus 3.x runs it (rules/alerting.go).

inactive -> pending when the expression first returns a series (activeAt = ts); pending -> firing once
`ts - activeAt >= for` (firedAt = ts); a pending alert whose series vanishes is dropped; a firing alert whose
series vanishes keeps firing for `keep_firing_for`, then resolves (resolvedAt = ts) and is kept, and re-sent,
for 15 minutes. The rule never reads a clock: it is given `ts`. Its state is plain data (`AlertRecord`) so the
service can persist it each tick and restore it after a crash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from services.evaluator.promql import Expression
from services.evaluator.promql.parse import Sample
from services.evaluator.rules.templates import Template, TemplateError
from services.evaluator.series import METRIC_NAME
from shared.alerts import Alert, fingerprint, from_unix

RESOLVED_RETENTION = 15 * 60.0  # Prometheus keeps resolved alerts, and re-sends them, for 15 minutes.


def _expand(
    template: Template, labels: dict[str, str], value: float, external: dict[str, str], external_url: str = ""
) -> str:
    """A template's text, or Prometheus' `<error expanding template: …>` in its place: one bad expansion
    must not fail the whole rule (nor hide the alert)."""
    try:
        return template.render(labels, value, external, external_url)
    except TemplateError as exc:
        return f"<error expanding template: {exc}>"


def generator_url(external_url: str, expr: str) -> str:
    """Prometheus' link to the expression's table view."""
    return f"{external_url.rstrip('/')}/graph?g0.expr={quote(expr, safe='')}&g0.tab=1"


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


@dataclass
class AlertRecord:
    """Everything Prometheus keeps about one active alert, as plain data (times are Unix seconds)."""

    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    active_at: float
    value: float = 0.0
    fired_at: float | None = None
    resolved_at: float | None = None
    last_sent_at: float | None = None
    valid_until: float | None = None
    keep_firing_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertRecord:
        return cls(**{**data, "state": AlertState(data["state"])})

    def needs_sending(self, ts: float, resend_delay: float) -> bool:
        if self.state == AlertState.PENDING:
            return False
        if self.resolved_at is not None and (
            self.last_sent_at is None or self.resolved_at > self.last_sent_at
        ):
            return True
        return self.last_sent_at is None or self.last_sent_at + resend_delay < ts


@dataclass
class AlertingRule:
    name: str
    expr: Expression
    hold: float = 0.0  # `for`
    keep_firing_for: float = 0.0
    keep_firing_while: Expression | None = None
    labels: dict[str, Template] = field(default_factory=dict)
    annotations: dict[str, Template] = field(default_factory=dict)
    active: dict[str, AlertRecord] = field(default_factory=dict)  # by fingerprint
    health: str = "unknown"
    last_error: str = ""

    def alert_labels(
        self, sample_labels: dict[str, str], value: float, external: dict[str, str], external_url: str = ""
    ) -> dict[str, str]:
        """The labels of the alert a result sample produces: the series' labels without `__name__`, the rule's
        (templated) labels over them, `alertname`; a label templated to "" is removed, as in Prometheus."""
        labels = {k: v for k, v in sample_labels.items() if k != METRIC_NAME}
        for key, template in self.labels.items():
            labels[key] = _expand(template, sample_labels, value, external, external_url)
        labels["alertname"] = self.name
        for key in [k for k, v in labels.items() if v == ""]:
            del labels[key]
        return labels

    def eval(
        self,
        ts: float,
        vector: list[Sample],
        external_labels: dict[str, str],
        recovering: list[Sample] | None = None,
        external_url: str = "",
    ) -> None:
        """Advance every alert of this rule to time `ts`, given the expression's result at `ts`.
        `recovering` is the result of `keep_firing_while` (a tripwire extension): a firing alert whose series
        has left `expr` but is still in it keeps firing, so an alert that fires above 2% resolves only below
        1.5%, say, instead of flapping around one threshold."""
        holding = {
            fingerprint(self.alert_labels(labels, value, external_labels, external_url))
            for labels, value in recovering or ()
        }
        found: dict[str, tuple[dict[str, str], dict[str, str], float]] = {}
        for sample_labels, value in vector:
            labels = self.alert_labels(sample_labels, value, external_labels, external_url)
            # Annotations see the series' own labels (as label templates do), not the alert's final ones.
            annotations = {
                key: _expand(template, sample_labels, value, external_labels, external_url)
                for key, template in self.annotations.items()
            }
            fp = fingerprint(labels)
            if fp in found:
                # Checked before any state changes, so a failed evaluation leaves the alerts as they were.
                raise RuntimeError(
                    "vector contains metrics with the same labelset after applying alert labels"
                )
            found[fp] = (labels, annotations, value)
        seen = set(found)
        for fp, (labels, annotations, value) in found.items():
            alert = self.active.get(fp)
            if alert is not None and alert.state != AlertState.INACTIVE:
                alert.value = value
                alert.annotations = annotations
                alert.labels = labels
                continue
            self.active[fp] = AlertRecord(labels, annotations, AlertState.PENDING, active_at=ts, value=value)

        for fp, alert in list(self.active.items()):
            if fp not in seen:
                keep_firing = alert.state == AlertState.FIRING and fp in holding
                if not keep_firing and alert.state == AlertState.FIRING and self.keep_firing_for > 0:
                    if alert.keep_firing_since is None:
                        alert.keep_firing_since = ts
                    keep_firing = ts - alert.keep_firing_since < self.keep_firing_for
                if alert.state == AlertState.PENDING or (
                    alert.resolved_at is not None and ts - alert.resolved_at > RESOLVED_RETENTION
                ):
                    del self.active[fp]
                if alert.state != AlertState.INACTIVE and not keep_firing:
                    alert.state = AlertState.INACTIVE
                    alert.resolved_at = ts
                if not keep_firing:
                    continue
            else:
                alert.keep_firing_since = None
            if alert.state == AlertState.PENDING and ts - alert.active_at >= self.hold:
                alert.state = AlertState.FIRING
                alert.fired_at = ts

    def due(self, ts: float, resend_delay: float) -> list[AlertRecord]:
        """Alerts to send at `ts`: state changes, resolutions and periodic re-sends."""
        return [a for a in self.active.values() if a.needs_sending(ts, resend_delay)]

    def mark_sent(self, alerts: list[AlertRecord], ts: float, resend_delay: float, interval: float) -> None:
        """Record a successful send; `valid_until` allows for two missed evaluations or sends."""
        for alert in alerts:
            alert.last_sent_at = ts
            alert.valid_until = ts + 4 * max(resend_delay, interval)

    def to_alert(
        self,
        record: AlertRecord,
        ts: float,
        resend_delay: float,
        interval: float,
        external_labels: dict[str, str],
        external_url: str,
    ) -> Alert:
        """The Alertmanager alert object for `record` as it is sent at `ts` (external labels added last,
        never overriding the alert's own)."""
        labels = {**external_labels, **record.labels}
        resolved = record.resolved_at is not None and record.state == AlertState.INACTIVE
        ends_at = record.resolved_at if resolved else ts + 4 * max(resend_delay, interval)
        return Alert(
            labels=labels,
            annotations=record.annotations,
            startsAt=from_unix(record.fired_at if record.fired_at is not None else record.active_at),
            endsAt=from_unix(ends_at),  # type: ignore[arg-type]
            generatorURL=generator_url(external_url, self.expr.text),
            status="resolved" if resolved else "firing",
        )

    def series(self) -> list[tuple[dict[str, str], float]]:
        """The `ALERTS` and `ALERTS_FOR_STATE` samples of the pending and firing alerts, as Prometheus writes
        them after each evaluation."""
        out: list[tuple[dict[str, str], float]] = []
        for record in self.active.values():
            if record.state == AlertState.INACTIVE:
                continue
            out.append(({**record.labels, METRIC_NAME: "ALERTS", "alertstate": record.state.value}, 1.0))
            out.append(({**record.labels, METRIC_NAME: "ALERTS_FOR_STATE"}, float(int(record.active_at))))
        return out

    def active_count(self) -> int:
        """Alerts pending or firing (resolved ones kept for re-sending do not count)."""
        return sum(1 for a in self.active.values() if a.state != AlertState.INACTIVE)
