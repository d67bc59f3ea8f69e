"""Prometheus' own PromQL engine tests (promqltest scripts) against tripwire's engine.

One test per script runs all its cases; it fails only if the runner cannot read the script. The gate is
`test_promqltest_pass_rate`: at least 95% of the in-scope cases must pass. The per-file table and the overall
rate are printed at the end of every pytest run (conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import promqltest

SCRIPTS = sorted((Path(__file__).parent / "prometheus" / "promqltest").glob("*.test"))
REQUIRED_PASS_RATE = 0.95
RESULTS: dict[str, list[promqltest.Outcome]] = {}


def run_script(path: Path) -> list[promqltest.Outcome]:
    if path.name not in RESULTS:
        RESULTS[path.name] = [promqltest.run_case(case) for case in promqltest.parse_script(path)]
    return RESULTS[path.name]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script(script: Path):
    outcomes = run_script(script)
    assert outcomes, f"no eval cases found in {script.name}"


def test_every_eval_line_is_read():
    # 895 `eval instant`, 198 `eval range` and 3 `eval_fail instant` lines in the corpus.
    cases = [case for path in SCRIPTS for case in promqltest.parse_script(path)]
    assert len(cases) == 895 + 198 + 3


def test_promqltest_pass_rate():
    outcomes = [o for path in SCRIPTS for o in run_script(path)]
    in_scope = [o for o in outcomes if o.status != "skipped"]
    passed = [o for o in in_scope if o.status == "passed"]
    rate = len(passed) / len(in_scope)
    failures = "\n".join(
        f"  {o.case.file}:{o.case.line}: {o.case.expr}\n      {o.detail}"
        for o in in_scope
        if o.status == "failed"
    )
    assert rate >= REQUIRED_PASS_RATE, f"{len(passed)}/{len(in_scope)} passed ({rate:.1%}):\n{failures}"
