"""Prometheus' own PromQL engine tests (promqltest scripts) against tripwire's engine.

One test per script runs all its cases and records the outcomes; it fails only if the runner cannot read
or run the script (a runner bug), not on a case that fails. The gate is `test_promqltest_pass_rate`: at
least 95% of the in-scope cases must pass. The per-file table and the overall rate are printed at the end
of every pytest run (conftest.py). Each script runs once per session, whichever tests are selected.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from services.evaluator.promql.values import STALE_NAN
from tests.conformance import promqltest

SCRIPTS = sorted((Path(__file__).parent / "prometheus" / "promqltest").glob("*.test"))
REQUIRED_PASS_RATE = 0.95
MAX_FAILURES_SHOWN = 50
# Outcomes by script name, filled as scripts run; conftest.py prints them at the end of the session.
RESULTS: dict[str, list[promqltest.Outcome]] = {}


def outcomes_for(path: Path) -> list[promqltest.Outcome]:
    """The outcomes of one script, run on first use (so test order and selection do not matter)."""
    if path.name not in RESULTS:
        RESULTS[path.name] = promqltest.run_script(path)
    return RESULTS[path.name]


@pytest.fixture(scope="session")
def corpus_outcomes() -> list[promqltest.Outcome]:
    return [outcome for path in SCRIPTS for outcome in outcomes_for(path)]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script(script: Path):
    outcomes = outcomes_for(script)
    assert outcomes, f"no eval cases found in {script.name}"


def test_every_eval_line_is_read():
    # The corpus has 895 `eval instant`, 198 `eval range` and 3 `eval_fail instant` lines.
    cases = [case for path in SCRIPTS for case in promqltest.eval_cases(promqltest.parse_script(path))]
    kinds = Counter(
        f"{'eval_fail' if case.fail else 'eval'} {'range' if case.is_range else 'instant'}" for case in cases
    )
    assert kinds == {"eval instant": 895, "eval range": 198, "eval_fail instant": 3}
    assert len({(case.file, case.line) for case in cases}) == len(cases)


def test_script_reading_follows_test_go(tmp_path: Path):
    script = tmp_path / "x.test"
    script.write_text(
        """
# comment
load 5m
  m{a="1"} 1+1x2
  m{a="1"} 7

eval instant at 1h30m m
  expect ordered
  expect warn msg: some warning
  m{a="2"} 2
  m{a="1"} 1

eval range from 0 to 10m step 5m m
  {__name__="m", a="1"} 1 _ 3
# a comment ends a block too
eval instant at 0 scalar(m)
  1

eval_fail instant at 0 m
  expected_fail_regexp dup.*cate

eval instant at 1m m[1m]
  expect range vector from 0 to 1m step 30s

eval instant at 0 "a"
  expect string `a`
"""
    )
    load, first, ranged, scalar, failing, matrix, string = promqltest.parse_script(script)
    assert isinstance(load, promqltest.Load) and load.step_ms == 300_000
    assert [values for _, values in load.series.values()] == [[7.0]]  # a repeated series replaces
    assert isinstance(first, promqltest.Case) and first.instant_at == 5_400_000 and first.is_ordered
    assert first.annotations and [pos for pos, _, _ in first.expected.values()] == [1, 2]
    assert isinstance(ranged, promqltest.Case) and ranged.range_args == (0, 600_000, 300_000)
    assert next(iter(ranged.expected.values()))[2] == [1.0, None, 3.0]
    assert isinstance(scalar, promqltest.Case) and scalar.expect_scalar
    assert isinstance(failing, promqltest.Case) and failing.is_fail and failing.fail_regex is not None
    assert isinstance(matrix, promqltest.Case) and matrix.range_args == (0, 60_000, 30_000)
    assert matrix.instant_at == 60_000 and matrix.exclude_from_range_query
    assert isinstance(string, promqltest.Case) and string.expected_string == "a"


def test_script_errors_name_file_and_line(tmp_path: Path):
    script = tmp_path / "bad.test"
    script.write_text("load 1m\n  m 1\n\nbogus m\n")
    with pytest.raises(promqltest.ScriptError, match=r"bad\.test:4: invalid command"):
        promqltest.parse_script(script)
    script.write_text("load 1m\n  m 1\n  m 1 two\n")
    with pytest.raises(promqltest.ScriptError, match=r"bad\.test:3: column 5: unexpected identifier 'two'"):
        promqltest.parse_script(script)


def test_durations_are_prometheus_durations():
    assert promqltest.duration_ms("0") == 0
    assert promqltest.duration_ms("1h30m") == 5_400_000
    assert promqltest.duration_ms("1y2w3d4h5m6s7ms") == 31_536_000_000 + 2 * 604_800_000 + 3 * 86_400_000 + (
        4 * 3_600_000 + 5 * 60_000 + 6_000 + 7
    )
    for bad in ("10", "1m1h", "", "1.5m"):
        with pytest.raises(promqltest.ScriptError):
            promqltest.duration_ms(bad)


def test_scope_reads_function_calls_not_the_at_modifier():
    assert promqltest.called_functions('metric @ start() + sort_by_label(m, "x(") + end ()') == [
        "sort_by_label",
        "end",
    ]


def test_almost_equal_is_prometheus_almost_equal():
    stale = STALE_NAN
    assert promqltest.almost_equal(float("nan"), float("nan"))
    assert promqltest.almost_equal(stale, stale) and not promqltest.almost_equal(stale, float("nan"))
    assert promqltest.almost_equal(1.0, 1.0 + 1e-9) and not promqltest.almost_equal(1.0, 1.0001)
    assert not promqltest.almost_equal(0.0, 1e-300)


def test_promqltest_pass_rate(corpus_outcomes: list[promqltest.Outcome]):
    in_scope = [o for o in corpus_outcomes if o.status != "skipped"]
    failed = [o for o in in_scope if o.status == "failed"]
    rate = (len(in_scope) - len(failed)) / len(in_scope)
    shown = "\n".join(
        f"  {o.case.file}:{o.case.line}: {o.case.expr}\n      [{o.category}] {o.detail}"
        for o in failed[:MAX_FAILURES_SHOWN]
    )
    more = f"\n  ... and {len(failed) - MAX_FAILURES_SHOWN} more" if len(failed) > MAX_FAILURES_SHOWN else ""
    assert rate >= REQUIRED_PASS_RATE, (
        f"{len(in_scope) - len(failed)}/{len(in_scope)} in-scope cases pass ({rate:.1%}, need "
        f"{REQUIRED_PASS_RATE:.0%}):\n{shown}{more}"
    )
