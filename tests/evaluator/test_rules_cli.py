"""`tripwire rules check` and `tripwire rules test`: promtool's output and exit codes, an alert's whole life
(pending, firing exactly `for` later, resolved) unit-tested, and precise errors for bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from services.cli import main

RULES = """\
groups:
  - name: checkout
    rules:
      - record: job:requests:rate1m
        expr: sum(rate(requests_total[1m]))
      - alert: HighErrorRate
        expr: sum(rate(errors_total[1m])) / sum(rate(requests_total[1m])) > 0.02
        for: 5m
        labels:
          severity: page
        annotations:
          summary: "More than 2% of checkout requests fail"
"""

# Samples every 15s (rate over [1m] needs at least two samples in its left-open window). Requests grow by
# 100/min throughout. Errors grow 1/min (1%) up to 5m, 5/min (5%) from 5m15s to 15m, then not at all.
# Rules run every minute: the first evaluation that sees only 5% is 6m (pending), 11m is exactly `for: 5m`
# later (firing), and 16m is the first that sees no new errors (resolved).
SERIES = """\
    input_series:
      - series: 'requests_total{service="checkout"}'
        values: '0+25x120'
      - series: 'errors_total{service="checkout"}'
        values: '0+0.25x20 6.25+1.25x39 55x60'
"""

LIFECYCLE = """\
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - name: error ratio lifecycle
    interval: 15s
{series}
    promql_expr_test:
      - expr: ALERTS{{alertname="HighErrorRate"}}
        eval_time: 5m
        exp_samples: []
      - expr: ALERTS{{alertname="HighErrorRate", alertstate="pending"}}
        eval_time: 6m
        exp_samples:
          - labels: 'ALERTS{{alertname="HighErrorRate", alertstate="pending", severity="page"}}'
            value: 1
      - expr: ALERTS_FOR_STATE{{alertname="HighErrorRate"}}
        eval_time: 10m
        exp_samples:
          - labels: 'ALERTS_FOR_STATE{{alertname="HighErrorRate", severity="page"}}'
            value: 360
      - expr: ALERTS{{alertname="HighErrorRate", alertstate="firing"}}
        eval_time: 10m59s
        exp_samples: []
      - expr: ALERTS{{alertname="HighErrorRate", alertstate="firing"}}
        eval_time: 11m
        exp_samples:
          - labels: 'ALERTS{{alertname="HighErrorRate", alertstate="firing", severity="page"}}'
            value: 1
      - expr: job:requests:rate1m
        eval_time: 10m
        exp_samples:
          - labels: job:requests:rate1m
            value: 1.6666666666666665
    alert_rule_test:
      - eval_time: 5m
        alertname: HighErrorRate
        exp_alerts: []
      - eval_time: 6m
        alertname: HighErrorRate
        exp_alerts: []
      - eval_time: 10m59s
        alertname: HighErrorRate
        exp_alerts: []
      - eval_time: 11m
        alertname: HighErrorRate
        exp_alerts:
          - exp_labels:
              severity: page
            exp_annotations:
              summary: "More than 2% of checkout requests fail"
      - eval_time: 15m
        alertname: HighErrorRate
        exp_alerts:
          - exp_labels:
              severity: page
            exp_annotations:
              summary: "More than 2% of checkout requests fail"
      - eval_time: 16m
        alertname: HighErrorRate
        exp_alerts: []
"""


def tripwire(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    code = exit_info.value.code
    assert isinstance(code, int)
    return code, captured.out, captured.err


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    return write(tmp_path, "rules.yml", RULES)


def test_check_accepts_a_good_file(capsys, rules_file: Path):
    code, out, err = tripwire(capsys, "rules", "check", str(rules_file))
    assert code == 0, err
    assert out == f"Checking {rules_file}\n  SUCCESS: 2 rules found\n\n"
    assert err == ""


def test_alert_lifecycle_pending_firing_resolved(capsys, tmp_path: Path, rules_file: Path):
    test = write(tmp_path, "test.yml", LIFECYCLE.format(series=SERIES))
    code, out, err = tripwire(capsys, "rules", "test", str(test))
    assert code == 0, err
    assert out == f"Unit Testing: {test}\n  SUCCESS\n\n"
    assert err == ""


def test_a_wrong_expectation_fails_with_a_readable_diff(capsys, tmp_path: Path, rules_file: Path):
    # Expecting the alert to fire a minute early (and the pending series a minute early) must fail.
    text = (
        LIFECYCLE.format(series=SERIES)
        .replace("eval_time: 11m\n        alertname", "eval_time: 10m\n        alertname")
        .replace("eval_time: 6m\n        exp_samples:", "eval_time: 5m\n        exp_samples:")
    )
    test = write(tmp_path, "test.yml", text)
    code, out, err = tripwire(capsys, "rules", "test", str(test))
    assert code == 1
    assert out.startswith(f"Unit Testing: {test}\n")
    assert "  FAILED:" in err
    assert (
        "    name: error ratio lifecycle,\n"
        "    alertname: HighErrorRate, time: 10m, \n"
        "        exp:[\n"
        "            0:\n"
        '              Labels:{alertname="HighErrorRate", severity="page"}\n'
        '              Annotations:{summary="More than 2% of checkout requests fail"}\n'
        "            ], \n"
        "        got:[]\n"
    ) in err
    assert (
        '    expr: "ALERTS{alertname=\\"HighErrorRate\\", alertstate=\\"pending\\"}", time: 5m,\n'
        '        exp: {__name__="ALERTS", alertname="HighErrorRate", alertstate="pending", '
        'severity="page"} 1E+00\n'
        "        got: nil\n"
    ) in err
    assert "Traceback" not in err


def test_run_selects_test_groups_by_name(capsys, tmp_path: Path):
    test = write(
        tmp_path,
        "test.yml",
        """\
        tests:
          - name: passes
            input_series: [{series: up, values: "1"}]
            promql_expr_test: [{expr: up, exp_samples: [{labels: up, value: 1}]}]
          - name: fails
            input_series: [{series: up, values: "0"}]
            promql_expr_test: [{expr: up, exp_samples: [{labels: up, value: 1}]}]
        """,
    )
    assert tripwire(capsys, "rules", "test", str(test))[0] == 1
    assert tripwire(capsys, "rules", "test", "--run", "pass", str(test))[0] == 0
    assert tripwire(capsys, "rules", "test", "--run", "^fails$", str(test))[0] == 1
    assert tripwire(capsys, "rules", "test", "--run", "nothing", "--run", "pass", str(test))[0] == 0
    code, _, err = tripwire(capsys, "rules", "test", "--run", "(", str(test))
    assert code == 1
    assert "invalid --run regular expression" in err


def test_rule_evaluation_error_is_named(capsys, tmp_path: Path):
    write(
        tmp_path,
        "rules.yml",
        "groups:\n  - name: g\n    rules:\n      - record: joined\n        expr: a + on(x) b\n",
    )
    test = write(
        tmp_path,
        "test.yml",
        """\
        rule_files: [rules.yml]
        tests:
          - input_series:
              - {series: 'a{x="1"}', values: "1"}
              - {series: 'b{x="1", y="1"}', values: "1"}
              - {series: 'b{x="1", y="2"}', values: "1"}
        """,
    )
    code, _, err = tripwire(capsys, "rules", "test", str(test))
    assert code == 1
    assert "    rule: joined, time: 0s, err: " in err
    assert "many-to-many" in err


# --- bad input: exit 1, a precise message, never a traceback ------------------------------------------------


def assert_clean_failure(code: int, err: str, *fragments: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in:\n{err}"


def test_test_file_that_is_not_yaml(capsys, tmp_path: Path):
    test = write(tmp_path, "test.yml", "tests:\n  - name: [unclosed\n")
    code, out, err = tripwire(capsys, "rules", "test", str(test))
    assert out.startswith(f"Unit Testing: {test}\n")
    assert_clean_failure(code, err, "  FAILED:", f"{test}:3:1: yaml: ")


def test_test_file_with_an_unknown_field(capsys, tmp_path: Path):
    test = write(tmp_path, "test.yml", "tests:\n  - name: t\n    input_serie: []\n")
    code, _, err = tripwire(capsys, "rules", "test", str(test))
    assert_clean_failure(code, err, f"{test}:3:5: field input_serie not found in type")


def test_test_file_with_a_bad_duration(capsys, tmp_path: Path):
    test = write(tmp_path, "test.yml", "evaluation_interval: 5 minutes\ntests: []\n")
    code, _, err = tripwire(capsys, "rules", "test", str(test))
    assert_clean_failure(
        code, err, f"{test}:1:1: evaluation_interval: not a valid duration string: '5 minutes'"
    )


def test_test_file_with_bad_promql(capsys, tmp_path: Path):
    test = write(
        tmp_path,
        "test.yml",
        "tests:\n  - promql_expr_test:\n      - expr: 'rate(up[5m]'\n        eval_time: 1m\n",
    )
    code, _, err = tripwire(capsys, "rules", "test", str(test))
    assert_clean_failure(code, err, '    expr: "rate(up[5m]", time: 1m, err: could not parse expression')


def test_test_file_with_bad_input_series(capsys, tmp_path: Path):
    test = write(
        tmp_path, "test.yml", "tests:\n  - input_series:\n      - {series: 'up{job=\"a\"', values: '1'}\n"
    )
    code, _, err = tripwire(capsys, "rules", "test", str(test))
    assert_clean_failure(code, err, 'input_series[0]: series "up{job=\\"a\\""')


def test_missing_test_file(capsys, tmp_path: Path):
    code, _, err = tripwire(capsys, "rules", "test", str(tmp_path / "nope.yml"))
    assert_clean_failure(code, err, f"{tmp_path / 'nope.yml'}: cannot read file: No such file or directory")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("groups:\n  - name: g\n    rules: [\n", ":4:1: yaml: "),
        ("groups:\n  - name: g\n    rulez: []\n", ":3:5: field rulez not found in type"),
        (
            "groups:\n  - name: g\n    interval: 1 minute\n    rules: []\n",
            ":3:5: groups.0.interval: not a valid duration string: '1 minute'",
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(up\n",
            ':5:9: group "g", rule 1, "A": could not parse expression',
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n"
            "        annotations:\n          summary: '{{ $value | nosuchfunction }}'\n",
            # The position is the rule's annotations (the loader's choice); the message names the annotation.
            ':6:9: group "g", rule 1, "A": annotation \'summary\': ',
        ),
    ],
    ids=["yaml", "unknown-field", "duration", "promql", "template-function"],
)
def test_bad_rule_files_fail_check_and_test_precisely(capsys, tmp_path: Path, text: str, fragment: str):
    rules = write(tmp_path, "rules.yml", text)
    code, out, err = tripwire(capsys, "rules", "check", str(rules))
    assert out.startswith(f"Checking {rules}\n")
    assert_clean_failure(code, err, "  FAILED:", f"{rules}{fragment}")
    if "nosuchfunction" in text:
        assert "nosuchfunction" in err

    test = write(tmp_path, "test.yml", "rule_files: [rules.yml]\ntests:\n  - {}\n")
    code, _, err = tripwire(capsys, "rules", "test", str(test))
    assert_clean_failure(code, err, "  FAILED:", f"{rules}{fragment}")


def test_check_reports_every_error_of_every_file(capsys, tmp_path: Path, rules_file: Path):
    bad = write(
        tmp_path,
        "bad.yml",
        "groups:\n  - name: g\n    rules:\n      - record: 'bad name'\n        expr: up\n"
        "      - alert: A\n        expr: 'up +'\n",
    )
    code, out, err = tripwire(capsys, "rules", "check", str(bad), str(tmp_path / "nope.yml"), str(rules_file))
    assert code == 1
    assert "invalid recording rule name: bad name" in err
    assert f'{bad}:7:9: group "g", rule 2, "A": could not parse expression' in err
    assert f"{tmp_path / 'nope.yml'}: cannot read file: No such file or directory" in err
    # The good file after the bad ones is still checked.
    assert f"Checking {rules_file}\n  SUCCESS: 2 rules found\n" in out
    assert "Traceback" not in err


def test_check_warns_about_duplicate_rules(capsys, tmp_path: Path):
    rules = write(
        tmp_path,
        "rules.yml",
        """\
        groups:
          - name: a
            labels: {team: x}
            rules:
              - {record: 'job:up:sum', expr: sum(up)}
          - name: b
            rules:
              - {record: 'job:up:sum', expr: sum(up), labels: {team: x}}
              - {record: 'job:up:sum', expr: sum(up)}
        """,
    )
    code, out, err = tripwire(capsys, "rules", "check", str(rules))
    assert code == 0
    assert "  SUCCESS: 3 rules found" in out
    assert "1 duplicate rule(s) found." in err
    assert "Metric: job:up:sum" in err
    assert "team: x" in err
    assert tripwire(capsys, "rules", "check", "--lint-fatal", str(rules))[0] == 3
    assert tripwire(capsys, "rules", "check", "--lint", "none", "--lint-fatal", str(rules))[0] == 0


@pytest.mark.parametrize(("order", "expected"), [("[first, second]", "value: 2"), ("[second, first]", "[]")])
def test_group_eval_order_and_globbed_rule_files(capsys, tmp_path: Path, order: str, expected: str):
    (tmp_path / "rules").mkdir()
    write(
        tmp_path / "rules",
        "a.yml",
        "groups:\n  - name: first\n    rules:\n      - {record: a, expr: sum(up)}\n",
    )
    write(
        tmp_path / "rules",
        "b.yml",
        "groups:\n  - name: second\n    rules:\n      - {record: b, expr: a * 2}\n",
    )
    # At 0m, `b` sees `a` only if the group recording `a` ran first at that same timestamp.
    exp = "exp_samples: [{labels: b, value: 2}]" if expected != "[]" else "exp_samples: []"
    test = write(
        tmp_path,
        "test.yml",
        f"""\
        rule_files: ['rules/*.yml']
        group_eval_order: {order}
        tests:
          - input_series: [{{series: up, values: '1'}}]
            promql_expr_test: [{{expr: b, eval_time: 0m, {exp}}}]
        """,
    )
    code, _, err = tripwire(capsys, "rules", "test", str(test))
    assert code == 0, err


def test_unmatched_rule_file_pattern_is_a_warning(capsys, tmp_path: Path):
    test = write(tmp_path, "test.yml", "rule_files: ['missing/*.yml']\ntests: []\n")
    code, out, err = tripwire(capsys, "rules", "test", str(test))
    assert code == 0
    assert "  SUCCESS" in out
    assert f"  WARNING: no file match pattern {tmp_path / 'missing/*.yml'}" in err


def test_values_are_read_as_text_and_start_timestamp_and_external_labels_apply(capsys, tmp_path: Path):
    # `0x3` is "0 repeated 3 times" in series notation, not YAML's hex 3 (Go reads the scalar as text).
    write(
        tmp_path,
        "rules.yml",
        """\
        groups:
          - name: g
            rules:
              - alert: Down
                expr: up == 0
                annotations:
                  where: '{{ $externalLabels.region }}'
        """,
    )
    test = write(
        tmp_path,
        "test.yml",
        """\
        rule_files: [rules.yml]
        tests:
          - start_timestamp: '2024-01-01T00:00:00Z'
            external_labels: {region: eu}
            input_series: [{series: 'up{job="a"}', values: 0x3}]
            promql_expr_test:
              - {expr: timestamp(up), eval_time: 3m, exp_samples: [{labels: '{job="a"}', value: 1704067380}]}
            alert_rule_test:
              - eval_time: 3m
                alertname: Down
                exp_alerts: [{exp_labels: {job: a}, exp_annotations: {where: eu}}]
        """,
    )
    code, _, err = tripwire(capsys, "rules", "test", str(test))
    assert code == 0, err


def test_bad_start_timestamp_is_named(capsys, tmp_path: Path):
    test = write(tmp_path, "test.yml", "tests:\n  - start_timestamp: yesterday\n")
    code, _, err = tripwire(capsys, "rules", "test", str(test))
    assert_clean_failure(code, err, f'{test}:2:5: tests.0.start_timestamp: cannot parse "yesterday"')


def test_subqueries_without_a_step_use_the_evaluation_interval_in_rules(tmp_path: Path, capsys):
    # Prometheus gives `[5m:]` the evaluation interval as its step (promtool: evaluation_interval), so a
    # recording rule and the same expression queried directly agree: 10 points of 30 s in (5m ago, now].
    (tmp_path / "sq_rules.yml").write_text(
        "groups:\n  - name: g\n    rules:\n      - record: sq\n        expr: count_over_time(up[5m:])\n"
    )
    test = tmp_path / "sq.yml"
    test.write_text(
        textwrap.dedent(
            """\
            rule_files: [sq_rules.yml]
            evaluation_interval: 30s
            tests:
              - interval: 30s
                input_series:
                  - series: up
                    values: 1x20
                promql_expr_test:
                  - expr: sq
                    eval_time: 10m
                    exp_samples:
                      - labels: sq
                        value: 10
                  - expr: count_over_time(up[5m:])
                    eval_time: 10m
                    exp_samples:
                      - labels: '{}'
                        value: 10
            """
        )
    )
    with pytest.raises(SystemExit) as exited:
        main(["rules", "test", str(test)])
    assert exited.value.code == 0, capsys.readouterr()
