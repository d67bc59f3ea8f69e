"""Print the promqltest conformance table at the end of the run, so the pass rate is in every test log."""

from __future__ import annotations

from collections import Counter

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.conformance.test_promqltest import RESULTS

    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("promqltest conformance (Prometheus' own engine tests)")
    totals: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for name, outcomes in sorted(RESULTS.items()):
        counts = Counter(o.status for o in outcomes)
        totals.update(counts)
        reasons.update(o.detail for o in outcomes if o.status == "skipped")
        write(_row(name, counts))
    in_scope = totals["passed"] + totals["failed"]
    rate = totals["passed"] / in_scope if in_scope else 0.0
    write(f"{_row('TOTAL', totals)}  -> {rate:.1%} of in-scope cases pass")
    write("skipped, by reason:")
    for reason, count in reasons.most_common():
        write(f"  {count:>4}  {reason}")


def _row(name: str, counts: Counter[str]) -> str:
    passed, failed, skipped = counts["passed"], counts["failed"], counts["skipped"]
    return f"{name:<28} passed {passed:>4}  failed {failed:>3}  skipped {skipped:>3}"
