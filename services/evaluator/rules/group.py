"""A rule group: its rules run in order at one timestamp, on the group's interval."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.evaluator.promql.nodes import lookbehind_ms
from services.evaluator.promql.values import STALE_NAN
from services.evaluator.rules.alerting import AlertingRule, AlertRecord, AlertState
from services.evaluator.rules.recording import RecordingRule, RuleError
from services.evaluator.series import METRIC_NAME, SeriesStore
from shared.alerts import Alert

Rule = AlertingRule | RecordingRule
SAVED_AT = "\x1fsaved_at"  # the snapshot's own timestamp, beside the per-alert entries
DEFAULT_OUTAGE_TOLERANCE = 3600.0  # Prometheus' --rules.alert.for-outage-tolerance
DEFAULT_GRACE_PERIOD = 600.0  # Prometheus' --rules.alert.for-grace-period
SeriesKey = tuple[tuple[str, str], ...]


class SelectionCache(dict[Any, Any]):
    """Series selections shared by a group's rules during one tick, indexed by the metric name they ask
    for, so that a rule's writes forget only the selections they could change. (Scanning every cached
    selection after every rule made a group quadratic: 2,000 rules took 1.2 s a tick.)"""

    def __init__(self) -> None:
        super().__init__()
        self._by_name: dict[str | None, set[Any]] = {}

    def __setitem__(self, matchers: Any, series: Any) -> None:
        super().__setitem__(matchers, series)
        name = next((m.value for m in matchers if m.name == METRIC_NAME and m.op == "="), None)
        self._by_name.setdefault(name, set()).add(matchers)

    def invalidate(self, names: set[str]) -> None:
        """Forget selections that could include series of `names` (new series may have appeared): those
        for these names, and those without a fixed name (`{job="x"}`, `{__name__=~"..."}`)."""
        for name in (*names, None):
            for matchers in self._by_name.pop(name, ()):
                self.pop(matchers, None)


@dataclass
class EvalContext:
    """What every rule evaluation needs besides the samples."""

    lookback: float
    resend_delay: float
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = "http://localhost:9401"
    # Step of subqueries written without one (`[5m:]`): the global evaluation interval, as Prometheus.
    subquery_step: float = 60.0
    outage_tolerance: float = DEFAULT_OUTAGE_TOLERANCE
    grace_period: float = DEFAULT_GRACE_PERIOD


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
    rules: list[Rule]
    labels: dict[str, str] = field(default_factory=dict)
    limit: int = 0
    query_offset: float = 0.0
    # Per rule (by position): the series it wrote last time, so vanished ones get a stale marker.
    _previous: dict[int, dict[SeriesKey, dict[str, str]]] = field(default_factory=dict, repr=False)

    @property
    def alerting_rules(self) -> list[AlertingRule]:
        return [r for r in self.rules if isinstance(r, AlertingRule)]

    @property
    def key(self) -> str:
        """Prometheus' group key: file and name, unique across a rule set."""
        return f"{self.file};{self.name}"

    def evaluate(self, store: SeriesStore, ts: float, ctx: EvalContext) -> Outcome:
        """Run every rule at `ts`, in order: each rule's output (recorded series, `ALERTS`) is written to
        `store` before the next rule runs, so later rules see it. Collects the alerts to send (call `commit`
        once they have been). Queries and written samples use `ts - query_offset`; alert times use `ts`."""
        sends: list[tuple[AlertingRule, AlertRecord]] = []
        alerts: list[Alert] = []
        eval_ts = ts - self.query_offset
        selections = SelectionCache()  # shared by the rules, invalidated by what they write
        for index, rule in enumerate(self.rules):
            try:
                vector = rule.expr.evaluate(store, eval_ts, ctx.lookback, selections, ctx.subquery_step)
                if isinstance(rule, RecordingRule):
                    output = rule.eval(vector, self.limit)
                else:
                    recovering = None
                    if rule.keep_firing_while is not None:
                        recovering = rule.keep_firing_while.evaluate(
                            store, eval_ts, ctx.lookback, selections, ctx.subquery_step
                        )
                    rule.eval(ts, vector, ctx.external_labels, recovering, ctx.external_url)
                    active = rule.active_count()
                    if self.limit and active > self.limit:
                        # As Prometheus: over the limit, the rule's alerts are dropped and the rule errors.
                        rule.active.clear()
                        raise RuleError(f"exceeded limit of {self.limit} with {active} alerts")
                    output = rule.series()
                rule.health, rule.last_error = "ok", ""
            except Exception as exc:  # one broken rule must not stop the others
                rule.health, rule.last_error = "err", str(exc)
                continue
            written = self._write(store, index, output, eval_ts)
            if written:
                selections.invalidate(written)
            if isinstance(rule, RecordingRule):
                continue
            for record in rule.due(ts, ctx.resend_delay):
                sends.append((rule, record))
                alerts.append(
                    rule.to_alert(
                        record, ts, ctx.resend_delay, self.interval, ctx.external_labels, ctx.external_url
                    )
                )
        return Outcome(ts, sends, alerts)

    def _write(
        self, store: SeriesStore, index: int, output: list[tuple[dict[str, str], float]], ts: float
    ) -> set[str]:
        """Write a rule's output at `ts`, and a stale marker for each series it wrote before but not now.
        Returns the metric names written."""
        current: dict[SeriesKey, dict[str, str]] = {}
        names: set[str] = set()
        for labels, value in output:
            store.series_for(labels).add(ts, value)
            current[tuple(sorted(labels.items()))] = labels
            names.add(labels.get(METRIC_NAME, ""))
        for key, labels in self._previous.get(index, {}).items():
            if key not in current:
                store.series_for(labels).add(ts, STALE_NAN)
                names.add(labels.get(METRIC_NAME, ""))
        self._previous[index] = current
        return names

    def commit(self, outcome: Outcome, ctx: EvalContext) -> None:
        """Mark the outcome's alerts as sent (only after they are safely on the alerts stream)."""
        for rule, record in outcome.sends:
            rule.mark_sent([record], outcome.ts, ctx.resend_delay, self.interval)

    def snapshot(self, ts: float | None = None) -> dict[str, dict[str, object]]:
        """All alert state of the group as plain data, keyed by rule name and fingerprint, with the time it
        was taken (so a restart knows how long the evaluator was down)."""
        state: dict[str, dict[str, object]] = {
            f"{rule.name}\x1f{fp}": record.to_json()
            for rule in self.alerting_rules
            for fp, record in rule.active.items()
        }
        if ts is not None:
            state[SAVED_AT] = {"ts": ts}
        return state

    def restore(
        self,
        state: dict[str, dict[str, object]],
        now: float | None = None,
        outage_tolerance: float = DEFAULT_OUTAGE_TOLERANCE,
        grace_period: float = DEFAULT_GRACE_PERIOD,
    ) -> int:
        """Load state saved by `snapshot` (entries of rules no longer in the group are ignored), with
        Prometheus' restore rules (rules/manager.go RestoreForState) when `now` is given: after an outage
        longer than `outage_tolerance` nothing is restored; for rules whose `for` is at least
        `grace_period`, a pending alert's `for` does not count the outage, and never fires sooner than
        `grace_period` after the restart. Shorter `for`s keep counting from where they started."""
        saved = state.pop(SAVED_AT, None)
        down_at = float(saved["ts"]) if saved else None  # type: ignore[arg-type]
        if now is not None and down_at is not None and now - down_at > outage_tolerance:
            return 0
        by_name = {rule.name: rule for rule in self.alerting_rules}
        restored = 0
        for key, data in state.items():
            rule_name, _, fp = key.partition("\x1f")
            rule = by_name.get(rule_name)
            if rule is None:
                continue
            record = AlertRecord.from_json(data)
            if now is not None and down_at is not None and rule.hold >= grace_period:
                _adjust_for_outage(record, rule.hold, down_at, now, grace_period)
            rule.active[fp] = record
            restored += 1
        return restored


def _adjust_for_outage(record: AlertRecord, hold: float, down_at: float, now: float, grace: float) -> None:
    if record.state != AlertState.PENDING:
        return  # firing (or resolved) alerts carry on as they were
    remaining = hold - (down_at - record.active_at)
    if remaining <= 0:
        return
    if remaining < grace:
        record.active_at = now + grace - hold  # fires `grace` after the restart at the earliest
    else:
        record.active_at += now - down_at  # the outage does not count towards `for`


def rule_identity(rule: Rule) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """How a reload recognises a rule: kind, name and labels (as Prometheus' nameAndLabels)."""
    if isinstance(rule, AlertingRule):
        return ("alert", rule.name, tuple(sorted((k, t.source) for k, t in rule.labels.items())))
    return ("record", rule.name, tuple(sorted(rule.labels.items())))


def copy_state(new: RuleGroup, old: RuleGroup) -> int:
    """Carry the state of `old`'s rules over to the rules of `new` with the same identity (Prometheus'
    Group.CopyState): active alerts and their timers, health, and the series each rule wrote last (so a
    series that vanishes after the reload still gets its stale marker). Returns the rules matched."""
    by_identity: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[int]] = {}
    for index, rule in enumerate(old.rules):
        by_identity.setdefault(rule_identity(rule), []).append(index)
    matched = 0
    for index, rule in enumerate(new.rules):
        candidates = by_identity.get(rule_identity(rule))
        if not candidates:
            continue
        old_index = candidates.pop(0)  # duplicates pair up in order
        old_rule = old.rules[old_index]
        if isinstance(rule, AlertingRule) and isinstance(old_rule, AlertingRule):
            rule.active = old_rule.active
        rule.health, rule.last_error = old_rule.health, old_rule.last_error
        if old_index in old._previous:
            new._previous[index] = old._previous[old_index]
        matched += 1
    return matched


def history_needed(groups: list[RuleGroup], lookback: float) -> float:
    """Seconds of samples the rules read at most (largest range or subquery plus offsets and lookback, plus
    the group's query_offset): what the store keeps and the replay rebuilds."""
    needed = lookback
    for group in groups:
        for rule in group.rules:
            exprs = [rule.expr]
            keep_while = getattr(rule, "keep_firing_while", None)
            if keep_while is not None:
                exprs.append(keep_while)
            for expr in exprs:
                reach = lookbehind_ms(expr.node, round(lookback * 1000)) / 1000
                needed = max(needed, reach + group.query_offset)
    return needed
