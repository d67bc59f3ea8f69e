"""Rule groups as Prometheus runs them: rules in order at one timestamp, recorded series and ALERTS written
for later rules, stale markers, query_offset, limit, and tripwire's keep_firing_while."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.evaluator.promql.engine import Engine
from services.evaluator.promql.values import is_stale
from services.evaluator.rules.alerting import AlertState
from services.evaluator.rules.files import load_rule_files
from services.evaluator.rules.group import EvalContext, RuleGroup
from services.evaluator.series import SeriesStore
from shared.yamlfile import ConfigErrors

CTX = EvalContext(lookback=300, resend_delay=60)


def group_from(tmp_path: Path, text: str) -> RuleGroup:
    path = tmp_path / "rules.yml"
    path.write_text(text)
    (group,) = load_rule_files([path], default_interval=15)
    return group


def query(store: SeriesStore, expr: str, ts: float) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in Engine().instant(expr, store, round(ts * 1000))}


def test_later_rules_see_recorded_series_and_alerts_of_the_same_tick(tmp_path: Path):
    group = group_from(
        tmp_path,
        """
groups:
  - name: g
    rules:
      - record: job:errors:rate1m
        expr: sum by (job) (rate(errors_total[1m]))
        labels: {source: rec}
      - alert: Errors
        expr: job:errors:rate1m > 1
      - record: alerts:count
        expr: count(ALERTS{alertname="Errors"})
""",
    )
    store = SeriesStore(float("inf"))
    for i in range(5):
        store.add("errors_total", {"job": "api"}, i * 15.0, i * 100.0)
    group.evaluate(store, 60.0, CTX)
    assert query(store, "job:errors:rate1m", 60) == {
        (("__name__", "job:errors:rate1m"), ("job", "api"), ("source", "rec")): pytest.approx(6.666, rel=1e-3)
    }
    assert query(store, "alerts:count", 60) == {(("__name__", "alerts:count"),): 1.0}
    assert query(store, "ALERTS_FOR_STATE", 60) == {
        (("__name__", "ALERTS_FOR_STATE"), ("alertname", "Errors"), ("job", "api"), ("source", "rec")): 60.0
    }


def test_vanished_series_get_a_stale_marker(tmp_path: Path):
    group = group_from(
        tmp_path, "groups:\n  - name: g\n    rules:\n      - record: up:copy\n        expr: up\n"
    )
    store = SeriesStore(float("inf"))
    store.add("up", {"i": "a"}, 0.0, 1)
    group.evaluate(store, 0.0, CTX)
    group.evaluate(store, 400.0, CTX)  # `up` is out of the lookback now: the recorded series vanishes
    (series,) = [s for s in store if s.labels["__name__"] == "up:copy"]
    assert is_stale(series.values[-1]) and series.timestamps[-1] == 400.0
    assert query(store, "up:copy", 401) == {}


def test_query_offset_moves_queries_and_written_samples(tmp_path: Path):
    group = group_from(
        tmp_path,
        "groups:\n  - name: g\n    query_offset: 1m\n    rules:\n      - record: x:copy\n        expr: x\n",
    )
    store = SeriesStore(float("inf"))
    store.add("x", {}, 100.0, 1)
    store.add("x", {}, 150.0, 2)
    group.evaluate(store, 160.0, CTX)  # queries at 100: sees the first sample only
    (series,) = [s for s in store if s.labels["__name__"] == "x:copy"]
    assert list(series.timestamps) == [100.0] and list(series.values) == [1.0]


def test_limit_errors_the_rule_and_drops_its_alerts(tmp_path: Path):
    group = group_from(
        tmp_path, "groups:\n  - name: g\n    limit: 1\n    rules:\n      - alert: Up\n        expr: up == 1\n"
    )
    store = SeriesStore(float("inf"))
    store.add("up", {"i": "a"}, 0.0, 1)
    store.add("up", {"i": "b"}, 0.0, 1)
    group.evaluate(store, 0.0, CTX)
    (rule,) = group.rules
    assert rule.health == "err" and "exceeded limit of 1 with 2 alerts" in rule.last_error
    assert rule.active == {}


def test_keep_firing_while_holds_a_firing_alert_until_the_recovery_threshold(tmp_path: Path):
    group = group_from(
        tmp_path,
        """
groups:
  - name: g
    rules:
      - alert: HighErrorRatio
        expr: error_ratio > 0.02
        keep_firing_while: error_ratio > 0.015
""",
    )
    store = SeriesStore(float("inf"))
    (rule,) = group.rules
    states = []
    for step, ratio in enumerate([0.03, 0.018, 0.016, 0.01, 0.018]):
        store.add("error_ratio", {}, step * 15.0, ratio)
        group.evaluate(store, step * 15.0, CTX)
        states.append(next(a.state for a in rule.active.values()))
    # Fires above 2%, holds at 1.8% and 1.6%, resolves at 1%, and 1.8% alone does not fire it again.
    assert states == [
        AlertState.FIRING,
        AlertState.FIRING,
        AlertState.FIRING,
        AlertState.INACTIVE,
        AlertState.INACTIVE,
    ]


def test_recording_rules_reject_alerting_fields(tmp_path: Path):
    path = tmp_path / "rules.yml"
    path.write_text(
        "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: x\n        for: 5m\n"
    )
    with pytest.raises(ConfigErrors) as caught:
        load_rule_files([path], default_interval=15)
    assert "invalid field 'for' in recording rule" in str(caught.value)


def test_the_store_keeps_the_history_the_rules_read(tmp_path: Path):
    from services.evaluator.rules.group import history_needed

    group = group_from(
        tmp_path,
        """
groups:
  - name: g
    query_offset: 30s
    rules:
      - alert: A
        expr: sum(rate(errors_total[10m])) > 1
      - alert: B
        expr: max_over_time(rate(x[5m])[1h:1m] offset 2m) > 1
        keep_firing_while: y offset 2h > 0
""",
    )
    # B's keep_firing_while reads 2h + the 5m lookback back, plus the group's 30s query_offset.
    assert history_needed([group], lookback=300) == 7200 + 300 + 30
    assert history_needed([], lookback=300) == 300


def test_a_template_failing_at_expansion_marks_the_text_not_the_rule(tmp_path: Path):
    group = group_from(
        tmp_path,
        """
groups:
  - name: g
    rules:
      - alert: Slow
        expr: latency_seconds > 1
        annotations:
          summary: "{{ humanize $labels.path }}"
""",
    )
    store = SeriesStore(float("inf"))
    store.add("latency_seconds", {"path": "/checkout"}, 0.0, 2)
    group.evaluate(store, 0.0, CTX)
    (rule,) = group.rules
    (alert,) = rule.active.values()
    # As Prometheus: the alert fires and the annotation says what went wrong.
    assert rule.health == "ok" and alert.state == AlertState.FIRING
    assert alert.annotations["summary"].startswith("<error expanding template: ")


def _pending_group(tmp_path: Path, hold: str) -> tuple[RuleGroup, dict]:
    group = group_from(
        tmp_path,
        f"groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: {hold}\n",
    )
    store = SeriesStore(float("inf"))
    store.add("up", {}, 0.0, 0)
    group.evaluate(store, 0.0, CTX)  # pending since 0
    return group, group.snapshot(ts=60.0)  # the evaluator died right after its tick at 60


@pytest.mark.parametrize(
    ("hold", "restart_at", "expected_active_at"),
    [
        ("5m", 120.0, 0.0),  # a `for` shorter than the grace period keeps counting from its start
        ("30m", 120.0, 60.0),  # long `for`: the 60 s outage does not count (0 + 60)
        ("10m", 400.0, 400.0),  # 540 s left < the 10m grace: fires no sooner than 10m after the restart
    ],
)
def test_restore_follows_prometheus_outage_rules(
    tmp_path: Path, hold: str, restart_at: float, expected_active_at
):
    old, state = _pending_group(tmp_path, hold)
    fresh = group_from(tmp_path, Path(old.file).read_text())
    assert fresh.restore(dict(state), now=restart_at) == 1
    (rule,) = fresh.rules
    (record,) = rule.active.values()
    assert record.active_at == expected_active_at


def test_nothing_is_restored_after_an_outage_longer_than_the_tolerance(tmp_path: Path):
    old, state = _pending_group(tmp_path, "5m")
    fresh = group_from(tmp_path, Path(old.file).read_text())
    assert fresh.restore(dict(state), now=60.0 + 3601) == 0


def test_selection_cache_forgets_only_what_a_write_could_change():
    from services.evaluator.promql.parse import compile_expr
    from services.evaluator.rules.group import SelectionCache

    def matchers(expr: str):
        return compile_expr(expr).node.matchers

    cache = SelectionCache()
    for expr in ('up{job="a"}', "ALERTS", '{job="a"}', '{__name__=~"up|x"}'):
        cache[matchers(expr)] = [expr]
    cache.invalidate({"ALERTS"})
    # `up` cannot include an ALERTS series; the nameless and regex-named selections could.
    assert list(cache.values()) == [['up{job="a"}']]
    cache.invalidate({"up"})
    assert not cache


def test_alert_templates_see_the_external_url(tmp_path: Path):
    group = group_from(
        tmp_path,
        """
groups:
  - name: g
    rules:
      - alert: Down
        expr: up == 0
        labels: {dashboard: "{{ $externalURL }}/d"}
        annotations: {link: "{{ $externalURL }}/alerts?{{ $labels.job }}"}
""",
    )
    store = SeriesStore(float("inf"))
    store.add("up", {"job": "api"}, 0.0, 0.0)
    ctx = EvalContext(lookback=300, resend_delay=60, external_url="https://tw.example.com")
    (alert,) = group.evaluate(store, 15.0, ctx).alerts
    assert alert.labels["dashboard"] == "https://tw.example.com/d"
    assert alert.annotations["link"] == "https://tw.example.com/alerts?api"
