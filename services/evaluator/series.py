"""The in-memory series store: every series' recent samples, indexed by metric name.

A series is identified by its canonical label set (all labels including `__name__`, sorted). Samples are kept
sorted by their own timestamp in two `array('d')` columns (8 bytes a value, not a 32-byte Python float in a
list), and trimmed to the retention window the rules need (largest range + lookback). `increment` samples
accumulate into a counter: the series' value at time t is the sum of all increments at or before t.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass

from shared.matchers import Matcher

LabelKey = tuple[tuple[str, str], ...]
# The arrival cache holds at least this many keys, or twice the series count, before it starts over.
ARRIVAL_CACHE_MIN = 100_000
METRIC_NAME = "__name__"


def label_key(labels: dict[str, str]) -> LabelKey:
    """The canonical identity of a label set."""
    return tuple(sorted(labels.items()))


class Series:
    __slots__ = ("labels", "timestamps", "values")

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.timestamps = array("d")
        self.values = array("d")

    def __len__(self) -> int:
        return len(self.timestamps)

    def add(self, ts: float, value: float) -> None:
        """Record the series' value at `ts` (a later write at the same timestamp wins)."""
        ts_col = self.timestamps
        if not ts_col or ts > ts_col[-1]:
            ts_col.append(ts)
            self.values.append(value)
            return
        if ts == ts_col[-1]:  # a batch that carries one series twice at one timestamp
            self.values[-1] = value
            return
        i = bisect.bisect_left(ts_col, ts)
        if i < len(ts_col) and ts_col[i] == ts:
            self.values[i] = value
        else:
            ts_col.insert(i, ts)
            self.values.insert(i, value)

    def increment(self, ts: float, delta: float) -> None:
        """Add `delta` to the counter at `ts`; an out-of-order increment also raises every later point."""
        ts_col = self.timestamps
        if not ts_col or ts >= ts_col[-1]:
            last = self.values[-1] if self.values else 0.0
            if ts_col and ts == ts_col[-1]:
                self.values[-1] = last + delta
            else:
                ts_col.append(ts)
                self.values.append(last + delta)
            return
        i = bisect.bisect_left(ts_col, ts)
        if ts_col[i] != ts:
            before = self.values[i - 1] if i > 0 else 0.0
            ts_col.insert(i, ts)
            self.values.insert(i, before)
        for j in range(i, len(self.values)):
            self.values[j] += delta

    def latest(self, at: float, lookback: float) -> tuple[float, float] | None:
        """The newest sample in `(at - lookback, at]`, as Prometheus' instant selector picks it."""
        i = bisect.bisect_right(self.timestamps, at) - 1
        if i < 0 or self.timestamps[i] <= at - lookback:
            return None
        return self.timestamps[i], self.values[i]

    def trim(self, keep_after: float) -> None:
        """Forget samples at or before `keep_after`, keeping the newest one so a counter keeps its total."""
        i = bisect.bisect_right(self.timestamps, keep_after)
        i = min(i, len(self.timestamps) - 1)
        if i > 0:
            del self.timestamps[:i]
            del self.values[:i]


@dataclass(frozen=True)
class SeriesLimits:
    """Caps on what ingest may add (0 = no cap); rule output is never capped."""

    max_series: int = 0
    max_series_per_metric: int = 0
    max_samples_per_series: int = 0


# Why ingest refused a sample: the `reason` label of tripwire_evaluator_samples_dropped.
SERIES_LIMIT = "series_limit"
METRIC_SERIES_LIMIT = "metric_series_limit"
SERIES_SAMPLES_LIMIT = "series_samples_limit"


class SeriesStore:
    """All series, indexed by metric name for selector lookups."""

    def __init__(self, retention: float, limits: SeriesLimits | None = None) -> None:
        self.retention = retention
        self.limits = limits or SeriesLimits()
        self._series: dict[LabelKey, Series] = {}
        self._by_name: dict[str, dict[LabelKey, Series]] = {}
        # Ingest's lookup by (name, labels in arrival order), or by a key the caller chose (see `ingest`;
        # the evaluator's one-pass ingest uses (name, raw labels JSON)): producers send labels in a stable
        # order, so this skips building and sorting the canonical key for nearly every sample. It maps each
        # key to the series `ingest` found or made for it; cleared (never replaced) on trim and when it
        # outgrows max(ARRIVAL_CACHE_MIN, 2 x series).
        self.by_arrival: dict[Hashable, Series] = {}

    def __len__(self) -> int:
        return len(self._series)

    def __iter__(self) -> Iterator[Series]:
        return iter(self._series.values())

    def _get(self, name: str, labels: dict[str, str]) -> Series:
        return self.series_for({**labels, METRIC_NAME: name})

    def series_for(self, full: dict[str, str]) -> Series:
        """The series with exactly these labels (`__name__` included, or absent), created if new."""
        key = label_key(full)
        series = self._series.get(key)
        if series is None:
            series = Series(full)
            self._series[key] = series
            self._by_name.setdefault(full.get(METRIC_NAME, ""), {})[key] = series
        return series

    def add(self, name: str, labels: dict[str, str], ts: float, value: float) -> None:
        self._get(name, labels).add(ts, value)

    def increment(self, name: str, labels: dict[str, str], ts: float, delta: float) -> None:
        self._get(name, labels).increment(ts, delta)

    def ingest(
        self,
        name: str,
        labels: dict[str, str],
        ts: float,
        value: float,
        increment: bool,
        arrival: Hashable | None = None,
    ) -> str | None:
        """Apply one ingested sample (a value, or a counter increment) within the limits. Returns why it was
        dropped (SERIES_LIMIT, METRIC_SERIES_LIMIT, SERIES_SAMPLES_LIMIT), or None once applied.

        `arrival` is the key to remember the series under in `by_arrival` (default: the name and the labels
        in arrival order); a caller with a cheaper identity of (name, labels) passes its own."""
        if arrival is None:
            arrival = (name, tuple(labels.items()))
        series = self.by_arrival.get(arrival)
        if series is None:
            full = {**labels, METRIC_NAME: name}
            series = self._series.get(label_key(full))
            if series is None:
                limits = self.limits
                if limits.max_series and len(self._series) >= limits.max_series:
                    return SERIES_LIMIT
                if limits.max_series_per_metric and len(self._by_name.get(name, ())) >= (
                    limits.max_series_per_metric
                ):
                    return METRIC_SERIES_LIMIT
                series = self.series_for(full)
            if len(self.by_arrival) >= max(ARRIVAL_CACHE_MIN, 2 * len(self._series)):
                self.by_arrival.clear()  # many spellings of the same label sets: start over, stay bounded
            self.by_arrival[arrival] = series
        return self.apply(series, ts, value, increment)

    def apply(self, series: Series, ts: float, value: float, increment: bool) -> str | None:
        """Apply one sample to a series of this store within the per-series cap: SERIES_SAMPLES_LIMIT if
        refused (a write at the newest timestamp still replaces it), else None."""
        cap = self.limits.max_samples_per_series
        if cap and len(series.timestamps) >= cap and ts != series.timestamps[-1]:
            return SERIES_SAMPLES_LIMIT
        if increment:
            series.increment(ts, value)
        else:
            series.add(ts, value)
        return None

    def select(self, matchers: Iterable[Matcher]) -> Iterator[Series]:
        """Series matching every matcher (an equality on `__name__` uses the name index)."""
        matchers = list(matchers)
        name = next((m.value for m in matchers if m.name == METRIC_NAME and m.op == "="), None)
        candidates = self._by_name.get(name, {}).values() if name is not None else self._series.values()
        for series in candidates:
            if all(m.matches(series.labels) for m in matchers):
                yield series

    def trim(self, now: float) -> int:
        """Drop samples older than the retention window, and series with nothing recent; returns series
        dropped."""
        horizon = now - self.retention
        stale = [key for key, s in self._series.items() if not s.timestamps or s.timestamps[-1] <= horizon]
        if stale:
            self.by_arrival.clear()
        for key in stale:
            series = self._series.pop(key)
            name = series.labels.get(METRIC_NAME, "")
            by_name = self._by_name[name]
            del by_name[key]
            if not by_name:
                del self._by_name[name]
        for series in self._series.values():
            series.trim(horizon)
        return len(stale)
