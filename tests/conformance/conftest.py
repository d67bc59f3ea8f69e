"""Print the promqltest conformance table at the end of the run, so the pass rate is in every test log."""

from __future__ import annotations

from collections import Counter

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Per script: passed / failed / skipped (with reasons); then the overall in-scope pass rate."""
    from tests.conformance.test_promqltest import RESULTS

    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("promqltest conformance (Prometheus' own engine tests)")
    totals: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    annotations = 0
    for name, outcomes in sorted(RESULTS.items()):
        counts = Counter(o.status for o in outcomes)
        totals.update(counts)
        categories.update(o.category for o in outcomes if o.status == "failed")
        annotations += sum(o.annotations_ignored for o in outcomes)
        write(_row(name, counts))
        reasons = Counter(o.detail for o in outcomes if o.status == "skipped")
        for reason, n in reasons.most_common():
            write(f"{'':<26} skipped {n:>4}: {reason}")
    in_scope = totals["passed"] + totals["failed"]
    rate = totals["passed"] / in_scope if in_scope else 0.0
    write(f"{_row('TOTAL', totals)}  -> {rate:.1%} of {in_scope} in-scope cases pass")
    if categories:
        write("failed, by kind: " + ", ".join(f"{kind} {n}" for kind, n in categories.most_common()))
    write(
        f"annotations (expect warn/info/no_warn/no_info) are not implemented: {annotations} in-scope cases "
        "were compared on their result only"
    )


def _row(name: str, counts: Counter[str]) -> str:
    passed, failed, skipped = counts["passed"], counts["failed"], counts["skipped"]
    return f"{name:<26} passed {passed:>4}  failed {failed:>3}  skipped {skipped:>3}"
