"""Conformance with promtool: `tripwire rules test` and `tripwire rules check` on Prometheus' own testdata
(cmd/promtool/testdata, copied into prometheus/promtool/), with the exit codes its unittest_test.go and
main_test.go expect (see /work/shared/conformance/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import main

CORPUS = Path(__file__).resolve().parent / "prometheus" / "promtool"

# `promtool test rules FILE` exit codes (unittest_test.go, TestRulesUnitTest; the @ modifier and negative
# offsets are always enabled in tripwire, as in Prometheus 3.x).
UNIT_TESTS = {
    "unittest-float.yml": 0,
    "long-period.yml": 0,
    "no-test-group-interval.yml": 0,
    "start-time-test.yml": 0,
    "at-modifier-test.yml": 0,
    "negative-offset-test.yml": 0,
    "failing.yml": 1,
    "bad-input-series.yml": 1,
    "bad-promql.yml": 1,
    "bad-rules-syntax-test.yml": 1,
    "bad-rules-error-test.yml": 1,
}

# unittest_test.go, TestRulesUnitTestRun: (file, --run patterns, exit code).
RUN_CASES = [
    ("rules_run.yml", [], 1),
    ("rules_run.yml", ["correct", "wrong"], 1),
    ("rules_run.yml", ["correct"], 0),
    ("rules_run.yml", ["wrong"], 1),
    ("rules_run_no_fuzzy.yml", [], 1),
    ("rules_run_fuzzy.yml", ["correct"], 0),
    ("rules_run_fuzzy.yml", ["wrong"], 1),
]


@pytest.fixture(scope="module", autouse=True)
def corpus() -> Path:
    assert CORPUS.is_dir(), f"the promtool corpus is missing: expected a copy in {CORPUS}"
    return CORPUS


def tripwire(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    code = exit_info.value.code
    assert isinstance(code, int)
    return code, captured.out, captured.err


@pytest.mark.parametrize(("name", "expected"), UNIT_TESTS.items(), ids=list(UNIT_TESTS))
def test_unit_test_file_exit_code(capsys, name: str, expected: int):
    path = CORPUS / name
    code, out, err = tripwire(capsys, "rules", "test", str(path))
    assert code == expected, f"stdout:\n{out}\nstderr:\n{err}"
    assert out.startswith(f"Unit Testing: {path}\n")
    assert "Traceback" not in err
    if expected == 0:
        assert "  SUCCESS\n" in out
        assert err == ""
    else:
        assert "  FAILED:\n" in err


@pytest.mark.parametrize(("name", "run", "expected"), RUN_CASES)
def test_run_and_fuzzy_compare(capsys, name: str, run: list[str], expected: int):
    args = [arg for pattern in run for arg in ("--run", pattern)]
    code, out, err = tripwire(capsys, "rules", "test", *args, str(CORPUS / name))
    assert code == expected, f"stdout:\n{out}\nstderr:\n{err}"


def test_failing_prints_expected_and_got(capsys):
    code, _, err = tripwire(capsys, "rules", "test", str(CORPUS / "failing.yml"))
    assert code == 1
    # A PromQL expectation: both sides, in promtool's notation.
    assert (
        '    expr: "test", time: 0s,\n'
        '        exp: {__name__="test"} 1E+00\n'
        '        got: {__name__="test"} 0E+00\n'
    ) in err
    # An alert expected but absent (there is no alerting rule "Test").
    assert (
        "    name: Failing test,\n"
        "    alertname: Test, time: 0s, \n"
        "        exp:[\n"
        "            0:\n"
        '              Labels:{alertname="Test"}\n'
        "              Annotations:{}\n"
        "            ], \n"
        "        got:[]\n"
    ) in err
    # Alerts firing while none are expected. An absent label renders as "": Prometheus expands alert
    # templates with missingkey=zero over map[string]string (template.go), whose zero value is "".
    assert (
        "    name: Failing alert test,\n"
        "    alertname: InstanceDown, time: 5m, \n"
        "        exp:[], \n"
        "        got:[\n"
        "            0:\n"
        '              Labels:{alertname="InstanceDown", job="test", severity="page"}\n'
        '              Annotations:{description=" of job test has been down for more than 5 '
        'minutes.", summary="Instance  down"}\n'
        "            ]\n"
    ) in err
    assert "    alertname: AlwaysFiring, time: 5m, \n        exp:[], \n" in err


def test_errors_are_named(capsys):
    _, _, err = tripwire(capsys, "rules", "test", str(CORPUS / "bad-input-series.yml"))
    assert 'input_series[0]: series "up{job=\\"prometheus\\", instance=\\"localhost:9090\\""' in err

    _, _, err = tripwire(capsys, "rules", "test", str(CORPUS / "bad-promql.yml"))
    assert '    expr: "join_1 + on(a) join_2", time: 0s, err: ' in err
    assert "many-to-many" in err

    _, _, err = tripwire(capsys, "rules", "test", str(CORPUS / "bad-rules-syntax-test.yml"))
    assert f'{CORPUS / "bad-rules-syntax.yml"}:7:9: group "bad-syntax", rule 1, "x": could not parse' in err

    _, _, err = tripwire(capsys, "rules", "test", str(CORPUS / "bad-rules-error-test.yml"))
    assert "    rule: joined, time: 0s, err: " in err
    assert "many-to-many" in err


def test_check_rules(capsys):
    path = CORPUS / "rules.yml"
    code, out, err = tripwire(capsys, "rules", "check", str(path))
    assert (code, out, err) == (0, f"Checking {path}\n  SUCCESS: 5 rules found\n\n", "")


def test_check_rejects_an_undefined_template_variable(capsys):
    path = CORPUS / "rules-bad.yml"
    code, out, err = tripwire(capsys, "rules", "check", str(path))
    assert code == 1
    assert out.startswith(f"Checking {path}\n")
    assert "  FAILED:\n" in err
    assert f"{path}:" in err
    assert 'group "alerts", rule 1, "InstanceDown": ' in err
    assert "$label" in err
    assert "Traceback" not in err


def test_check_warns_about_duplicate_rules(capsys):
    path = CORPUS / "rules_duplicates.yml"
    code, out, err = tripwire(capsys, "rules", "check", str(path))
    assert code == 0
    assert "  SUCCESS: 5 rules found" in out
    assert "1 duplicate rule(s) found." in err
    assert "Metric: job:test:count_over_time1m" in err
    # promtool's --lint-fatal turns the finding into exit code 3.
    assert tripwire(capsys, "rules", "check", "--lint-fatal", str(path))[0] == 3
