"""Evaluator core speed: series-store appends, one evaluation tick of 1,000 rules, and memory per series.

Figures printed (targets from the engine issue, not asserted):
- append: samples/s written into the series store (`SeriesStore.add` by name and labels, as ingest does;
  and `Series.add` on a series already looked up, the floor of the store's own cost); target >= 300k/s;
- tick: one evaluation of 1,000 alerting rules (a mix of rate ratios, *_over_time and `sum by`) over 10k
  series holding 5 minutes of 15 s samples, median of a few runs; target < 1 s;
- memory: resident bytes per series in that store (tracemalloc, everything the store holds); target <= 2 KB.

Usage: python bench/engine.py [--series 10000] [--rules 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.evaluator.promql import compile_expr  # noqa: E402
from services.evaluator.rules.alerting import AlertingRule  # noqa: E402
from services.evaluator.rules.group import EvalContext, RuleGroup  # noqa: E402
from services.evaluator.series import SeriesStore  # noqa: E402

T0 = 1_800_000_000.0
STEP = 15.0
POINTS = 21  # 5 minutes of 15 s samples, both ends included
METRICS = 50  # metric names; series are spread over them


def series_labels(i: int) -> tuple[str, dict[str, str]]:
    """Series i: one of 50 metrics (a `_total` counter or a gauge), 200 series each (service, code, pod)."""
    metric = i % METRICS
    name = f"app_requests_{metric}_total" if metric % 2 == 0 else f"app_latency_{metric}_seconds"
    j = i // METRICS
    return name, {
        "service": f"svc{j % 20}",
        "instance": f"10.0.{j % 10}.{j % 7}:9100",
        "code": ("200", "500", "503", "404")[j % 4],
        "pod": f"pod-{j}",
        "job": "app",
    }


def build_store(n_series: int) -> SeriesStore:
    store = SeriesStore(retention=600)
    rng = random.Random(1)
    for i in range(n_series):
        name, labels = series_labels(i)
        value = 0.0
        for p in range(POINTS):
            value += rng.random() * 10 if name.endswith("_total") else 0
            store.add(name, labels, T0 + p * STEP, value if name.endswith("_total") else rng.random())
    return store


def rules(n_rules: int) -> list[AlertingRule]:
    """A realistic mix: error-ratio alerts, *_over_time thresholds and `sum by` aggregations."""
    out = []
    for r in range(n_rules):
        counter = f"app_requests_{(r * 2) % METRICS}_total"
        gauge = f"app_latency_{(r * 2 + 1) % METRICS}_seconds"
        service = f"svc{r % 20}"
        kind = r % 4
        if kind == 0:
            expr = (
                f'sum by (service) (rate({counter}{{service="{service}",code=~"5.."}}[5m]))'
                f' / sum by (service) (rate({counter}{{service="{service}"}}[5m])) > 0.02'
            )
        elif kind == 1:
            expr = f'avg_over_time({gauge}{{service="{service}"}}[5m]) > 0.9'
        elif kind == 2:
            expr = f"sum by (service, code) (increase({counter}[5m])) > 1e6"
        else:
            expr = f'max_over_time({gauge}{{code="500"}}[2m]) > 0.999'
        out.append(AlertingRule(name=f"Rule{r}", expr=compile_expr(expr), hold=300.0))
    return out


def bench_raw_append(n: int) -> float:
    """Baseline: two bare array('d') appends per sample, what any columnar store in Python pays at least."""
    from array import array

    columns = [(array("d"), array("d")) for _ in range(1000)]
    started = time.perf_counter()
    for k in range(n):
        ts_col, val_col = columns[k % 1000]
        ts_col.append(T0 + k // 1000)
        val_col.append(1.0)
    return n / (time.perf_counter() - started)


def bench_raw_scan(store: SeriesStore, group: RuleGroup) -> float:
    """Baseline for a tick: per rule, select its series and read every sample in its window once (no PromQL
    semantics), the least a Python evaluator must touch."""
    started = time.perf_counter()
    for rule in group.alerting_rules:
        for matchers in _selectors(rule.expr.node):
            for series in store.select(matchers):
                sum(series.values)
    return time.perf_counter() - started


def _selectors(node: object) -> list[tuple[object, ...]]:
    from services.evaluator.promql import nodes

    found: list[tuple[object, ...]] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, nodes.VectorSelector):
            found.append(n.matchers)
        elif isinstance(n, nodes.MatrixSelector):
            found.append(n.selector.matchers)
        else:
            for attr in ("expr", "lhs", "rhs", "param"):
                child = getattr(n, attr, None)
                if child is not None:
                    stack.append(child)
            stack.extend(getattr(n, "args", ()))
    return found


def bench_append(n: int) -> tuple[float, float]:
    store = SeriesStore(retention=600)
    labels = [series_labels(i) for i in range(1000)]
    started = time.perf_counter()
    for k in range(n):
        name, lab = labels[k % 1000]
        store.add(name, lab, T0 + k // 1000, 1.0)
    by_labels = n / (time.perf_counter() - started)
    series = [store.series_for({**lab, "__name__": name}) for name, lab in labels]
    started = time.perf_counter()
    for k in range(n):
        series[k % 1000].add(T0 + 10_000 + k // 1000, 1.0)
    by_series = n / (time.perf_counter() - started)
    return by_labels, by_series


def bench_tick(store: SeriesStore, group: RuleGroup, runs: int) -> list[float]:
    ctx = EvalContext(lookback=300, resend_delay=60)
    times = []
    for run in range(runs):
        ts = T0 + (POINTS - 1) * STEP + run * 0.001
        started = time.perf_counter()
        outcome = group.evaluate(store, ts, ctx)
        times.append(time.perf_counter() - started)
        group.commit(outcome, ctx)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--appends", type=int, default=1_000_000)
    args = parser.parse_args()

    by_labels, by_series = bench_append(args.appends)
    raw = bench_raw_append(args.appends)
    print(f"append via store.add(name, labels): {by_labels:>12,.0f} samples/s   (target >= 300,000)")
    print(f"append via series.add (looked up):  {by_series:>12,.0f} samples/s")
    print(f"raw baseline, 2x array.append:      {raw:>12,.0f} samples/s")

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = build_store(args.series)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_series = (after - before) / args.series
    print(
        f"memory: {per_series:,.0f} bytes/series ({args.series:,} series x {POINTS} samples)"
        "   (target <= 2,048)"
    )

    group = RuleGroup("bench", "bench.yml", 15.0, list(rules(args.rules)))
    times = bench_tick(store, group, args.runs)
    firing = sum(r.active_count() for r in group.alerting_rules)
    raw_scan = bench_raw_scan(store, group)
    print(
        f"tick: {args.rules:,} rules over {len(store):,} series: "
        f"median {statistics.median(times) * 1000:,.0f} ms, "
        f"min {min(times) * 1000:,.0f} ms, max {max(times) * 1000:,.0f} ms ({args.runs} runs; "
        f"{firing} alerts active)   (target < 1,000 ms)"
    )
    print(f"raw baseline, select + read every sample once per rule: {raw_scan * 1000:,.0f} ms")


if __name__ == "__main__":
    main()
