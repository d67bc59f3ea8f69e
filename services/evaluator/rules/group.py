"""A rule group: its rules run in order at one timestamp, on the group's interval."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.evaluator.rules.alerting import AlertingRule, AlertRecord
from services.evaluator.series import SeriesStore
from shared.alerts import Alert


@dataclass
class EvalContext:
    """What every rule evaluation needs besides the samples."""

    lookback: float
    resend_delay: float
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = "http://localhost:9401"


@dataclass
class Outcome:
    """One tick's result: the alerts to publish, and how to mark them sent once they are."""

    ts: float
    sends: list[tuple[AlertingRule, AlertRecord]]
    alerts: list[Alert]


@dataclass
class RuleGroup:
    name: str
    file: str
    interval: float
    rules: list[AlertingRule]
    labels: dict[str, str] = field(default_factory=dict)
    limit: int = 0

    @property
    def key(self) -> str:
        """Prometheus' group key: file and name, unique across a rule set."""
        return f"{self.file};{self.name}"

    def evaluate(self, store: SeriesStore, ts: float, ctx: EvalContext) -> Outcome:
        """Run every rule at `ts` and collect what must be sent (call `commit` once it has been)."""
        sends: list[tuple[AlertingRule, AlertRecord]] = []
        alerts: list[Alert] = []
        for rule in self.rules:
            try:
                vector = rule.expr.evaluate(store, ts, ctx.lookback)
                rule.eval(ts, vector, ctx.external_labels)
                active = rule.active_count()
                if self.limit and active > self.limit:
                    # As Prometheus: over the limit, the rule's alerts are dropped and the rule errors.
                    rule.active.clear()
                    raise RuntimeError(f"exceeded limit of {self.limit} with {active} alerts")
                rule.health, rule.last_error = "ok", ""
            except Exception as exc:  # one broken rule must not stop the others
                rule.health, rule.last_error = "err", str(exc)
                continue
            for record in rule.due(ts, ctx.resend_delay):
                sends.append((rule, record))
                alerts.append(
                    rule.to_alert(
                        record, ts, ctx.resend_delay, self.interval, ctx.external_labels, ctx.external_url
                    )
                )
        return Outcome(ts, sends, alerts)

    def commit(self, outcome: Outcome, ctx: EvalContext) -> None:
        """Mark the outcome's alerts as sent (only after they are safely on the alerts stream)."""
        for rule, record in outcome.sends:
            rule.mark_sent([record], outcome.ts, ctx.resend_delay, self.interval)

    def snapshot(self) -> dict[str, dict[str, object]]:
        """All alert state of the group as plain data, keyed by rule name and fingerprint."""
        return {
            f"{rule.name}\x1f{fp}": record.to_json()
            for rule in self.rules
            for fp, record in rule.active.items()
        }

    def restore(self, state: dict[str, dict[str, object]]) -> int:
        """Load state saved by `snapshot` (entries of rules no longer in the group are ignored)."""
        by_name = {rule.name: rule for rule in self.rules}
        restored = 0
        for key, data in state.items():
            rule_name, _, fp = key.partition("\x1f")
            rule = by_name.get(rule_name)
            if rule is not None:
                rule.active[fp] = AlertRecord.from_json(data)
                restored += 1
        return restored
