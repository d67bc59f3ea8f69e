"""The alert state machine, driven by timestamps alone (no clock, no Redis): Prometheus 3.x semantics."""

from __future__ import annotations

from services.evaluator.promql import compile_expr
from services.evaluator.rules.alerting import RESOLVED_RETENTION, AlertingRule, AlertRecord, AlertState
from services.evaluator.rules.templates import parse_template

T0 = 1_700_000_000.0
BREACH = [({"__name__": "error_ratio", "service": "checkout"}, 0.05)]
CLEAR: list = []


def rule(hold: float = 300.0, keep: float = 0.0) -> AlertingRule:
    return AlertingRule(
        name="HighErrorRate",
        expr=compile_expr("error_ratio > 0.02"),
        hold=hold,
        keep_firing_for=keep,
        labels={"severity": parse_template("page")},
        annotations={"summary": parse_template("{{ $labels.service }} errors at {{ $value }}")},
    )


def only(r: AlertingRule):
    (alert,) = r.active.values()
    return alert


def test_pending_then_firing_exactly_after_for():
    r = rule(hold=300.0)
    r.eval(T0, BREACH, {})
    alert = only(r)
    assert alert.state == AlertState.PENDING and alert.active_at == T0
    assert alert.labels == {"service": "checkout", "severity": "page", "alertname": "HighErrorRate"}
    assert alert.annotations == {"summary": "checkout errors at 0.05"}
    assert r.due(T0, 60.0) == []  # pending alerts are never sent
    for step in range(1, 20):  # 15s ticks: still pending at 4m45s
        r.eval(T0 + step * 15, BREACH, {})
        assert only(r).state == AlertState.PENDING
    r.eval(T0 + 300, BREACH, {})
    assert only(r).state == AlertState.FIRING
    assert only(r).fired_at == T0 + 300


def test_a_pending_alert_that_vanishes_is_dropped_and_restarts_its_for():
    r = rule(hold=300.0)
    r.eval(T0, BREACH, {})
    r.eval(T0 + 15, CLEAR, {})
    assert r.active == {}
    r.eval(T0 + 30, BREACH, {})
    assert only(r).active_at == T0 + 30


def test_resolved_alert_is_sent_then_resent_for_15_minutes_then_forgotten():
    r = rule(hold=0.0)
    r.eval(T0, BREACH, {})
    assert only(r).state == AlertState.FIRING  # for: 0 fires at once
    sent = r.due(T0, 60.0)
    r.mark_sent(sent, T0, 60.0, 15.0)
    assert r.due(T0 + 15, 60.0) == []
    r.eval(T0 + 15, CLEAR, {})
    alert = only(r)
    assert alert.state == AlertState.INACTIVE and alert.resolved_at == T0 + 15
    assert r.due(T0 + 15, 60.0) == [alert]  # resolution is sent at once
    r.mark_sent([alert], T0 + 15, 60.0, 15.0)
    assert r.due(T0 + 30, 60.0) == []
    assert r.due(T0 + 76, 60.0) == [alert]  # and re-sent every resend delay
    r.eval(T0 + 15 + RESOLVED_RETENTION, CLEAR, {})
    assert r.active  # kept for exactly the retention...
    r.eval(T0 + 15 + RESOLVED_RETENTION + 15, CLEAR, {})
    assert r.active == {}  # ...then dropped


def test_firing_alert_is_resent_every_resend_delay_with_endsat_ahead():
    r = rule(hold=0.0)
    r.eval(T0, BREACH, {})
    r.mark_sent(r.due(T0, 60.0), T0, 60.0, 15.0)
    for t in (T0 + 15, T0 + 30, T0 + 45, T0 + 60):
        r.eval(t, BREACH, {})
        assert r.due(t, 60.0) == []
    r.eval(T0 + 75, BREACH, {})
    (due,) = r.due(T0 + 75, 60.0)
    wire = r.to_alert(due, T0 + 75, 60.0, 15.0, {"env": "prod"}, "http://eval:9401")
    assert wire.status == "firing"
    assert wire.starts_at.timestamp() == T0  # startsAt is when it started firing
    assert wire.ends_at.timestamp() == T0 + 75 + 4 * 60  # valid for 4 resend delays
    assert wire.labels["env"] == "prod"
    assert wire.generator_url == "http://eval:9401/graph?g0.expr=error_ratio%20%3E%200.02&g0.tab=1"


def test_keep_firing_for_holds_a_firing_alert_then_resolves():
    r = rule(hold=0.0, keep=60.0)
    r.eval(T0, BREACH, {})
    r.eval(T0 + 15, CLEAR, {})
    assert only(r).state == AlertState.FIRING and only(r).keep_firing_since == T0 + 15
    r.eval(T0 + 60, CLEAR, {})
    assert only(r).state == AlertState.FIRING
    r.eval(T0 + 75, CLEAR, {})  # 60s after the condition cleared
    assert only(r).state == AlertState.INACTIVE and only(r).resolved_at == T0 + 75


def test_keep_firing_resets_when_the_condition_returns():
    r = rule(hold=0.0, keep=60.0)
    r.eval(T0, BREACH, {})
    r.eval(T0 + 15, CLEAR, {})
    r.eval(T0 + 30, BREACH, {})
    assert only(r).keep_firing_since is None and only(r).fired_at == T0


def test_state_round_trips_as_plain_data():
    r = rule(hold=300.0)
    r.eval(T0, BREACH, {})
    saved = {fp: a.to_json() for fp, a in r.active.items()}
    restored = rule(hold=300.0)
    restored.active = {fp: AlertRecord.from_json(data) for fp, data in saved.items()}
    restored.eval(T0 + 300, BREACH, {})
    assert only(restored).state == AlertState.FIRING  # the restored `for` timer kept running
