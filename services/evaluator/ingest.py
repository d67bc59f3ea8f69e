"""Applying batches from the metrics and logs streams to the series store.

Each item is validated on its own: a bad item is counted and recorded in the DLQ with its reason, and the rest
of the batch is applied. An entry already applied is skipped, so an increment never counts twice: the ids of
entries applied but not yet acked, and of those start-up replay applied, are remembered until they can no
longer come back (acked, or older than the window). One id set rather than a high-water mark, because a failed
entry comes back through re-claim after newer entries have been applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import TypeAdapter, ValidationError

from services.evaluator.series import SeriesStore
from shared.codec import PoisonEntry, decode_entry
from shared.consumers import Acker, EntriesFailed, Entry
from shared.events import LogEvent, MetricSample
from shared.streams import entry_order

log = logging.getLogger(__name__)

LOG_EVENTS_METRIC = "log_events_total"
MAX_FUTURE_SKEW = 600.0
PRUNE_MARGIN_MS = 60_000
PRUNE_EVERY_MS = 10_000  # samples more than 10 minutes ahead of the evaluator's clock are refused

_SAMPLES = TypeAdapter(list[MetricSample])
_LOGS = TypeAdapter(list[LogEvent])


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = Counter(
            "tripwire_evaluator_samples_applied",
            "Samples and log events applied to the series store.",
            ["stream"],
            registry=registry,
        )
        self.dropped = Counter(
            "tripwire_evaluator_samples_dropped",
            "Items not applied, by stream and reason.",
            ["stream", "reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "tripwire_evaluator_duplicate_entries",
            "Entries skipped because they had already been applied.",
            ["stream"],
            registry=registry,
        )


@dataclass
class Ingestor:
    """Applies entries of the metrics and logs streams to `store`."""

    store: SeriesStore
    now: Callable[[], float]
    metrics: IngestMetrics
    applied: dict[str, set[bytes]] = field(default_factory=dict)
    # Newest entry handled per stream (applied, skipped or dead-lettered): how far ingest has caught up.
    progress: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Newest entry per stream when the evaluator started: evaluation waits until ingest has reached it.
    targets: dict[str, tuple[int, int]] = field(default_factory=dict)
    _pruned_at: dict[str, int] = field(default_factory=dict)

    def caught_up(self) -> bool:
        """Whether every entry that was in the streams at start has been handled (applied, skipped or
        dead-lettered): evaluating before that would see a gap and resolve alerts that are still firing."""
        return all(self.progress.get(s, (0, 0)) >= t for s, t in self.targets.items())

    def apply_entry(self, stream: str, kind: str, entry: Entry) -> list[tuple[int, str]] | None:
        """Apply one entry. Returns the invalid items (index, reason), or None if the entry was a duplicate.
        Raises PoisonEntry if the entry is not a batch at all."""
        self._advance(stream, entry.id)
        seen = self.applied.setdefault(stream, set())
        if entry.id in seen:
            self.metrics.duplicates.labels(stream).inc()
            return None
        batch = decode_entry(entry.fields)
        bad = self.apply_items(stream, kind, batch.items)
        seen.add(entry.id)
        return bad

    def acked(self, stream: str, ids: list[bytes]) -> None:
        """Entries acked to the group never come back in this process: stop remembering them."""
        self.applied.get(stream, set()).difference_update(ids)

    def forget_older_than(self, stream: str, cutoff_ms: int) -> None:
        """Drop remembered ids of entries written before `cutoff_ms` (their samples are out of the window).
        Sweeps at most once per `PRUNE_EVERY_MS` of stream time, since the set can hold a whole replay."""
        if cutoff_ms - self._pruned_at.get(stream, 0) < PRUNE_EVERY_MS:
            return
        self._pruned_at[stream] = cutoff_ms
        seen = self.applied.get(stream)
        if seen:
            seen.difference_update([i for i in seen if entry_order(i)[0] < cutoff_ms])

    def _advance(self, stream: str, entry_id: bytes) -> None:
        order = entry_order(entry_id)
        if order > self.progress.get(stream, (0, 0)):
            self.progress[stream] = order

    def apply_items(self, stream: str, kind: str, items: list[Any]) -> list[tuple[int, str]]:
        adapter = _SAMPLES if kind == "metrics" else _LOGS
        try:
            good: list[Any] = adapter.validate_python(items)
            bad: list[tuple[int, str]] = []
        except ValidationError:
            good, bad = _validate_one_by_one(adapter, items)
        now = self.now()
        oldest, newest = now - self.store.retention, now + MAX_FUTURE_SKEW
        applied = 0
        for item in good:
            ts = item.timestamp if item.timestamp is not None else now
            if ts <= oldest:
                self.metrics.dropped.labels(stream, "too_old").inc()
                continue
            if ts > newest:
                self.metrics.dropped.labels(stream, "too_far_in_future").inc()
                continue
            if kind == "metrics":
                if item.kind == "increment":
                    self.store.increment(item.name, item.labels, ts, item.value)
                else:
                    self.store.add(item.name, item.labels, ts, item.value)
            else:
                labels = {**item.labels, "service": item.service, "level": item.level}
                self.store.increment(LOG_EVENTS_METRIC, labels, ts, 1.0)
            applied += 1
        self.metrics.samples.labels(stream).inc(applied)
        if bad:
            self.metrics.dropped.labels(stream, "invalid").inc(len(bad))
        return bad

    def handler(self, stream: str, kind: str) -> Callable[[list[Entry], Acker], Any]:
        """The consumer-group handler for one stream: apply, dead-letter what is bad, ack."""

        async def handle(entries: list[Entry], acker: Acker) -> None:
            done: list[bytes] = []
            failures: dict[bytes, str] = {}
            for entry in entries:
                # One entry's failure (Redis down while dead-lettering) must not hold back the others.
                try:
                    try:
                        bad = self.apply_entry(stream, kind, entry)
                    except PoisonEntry as exc:
                        await acker.dead_letter(entry, str(exc))
                        continue
                    if bad:
                        items = decode_entry(entry.fields).items
                        await acker.dead_letter_items(entry, bad, items)
                except Exception as exc:  # reported per entry, retried by re-claim
                    failures[entry.id] = f"{type(exc).__name__}: {exc}"
                    continue
                done.append(entry.id)
            # The store is rebuilt from the stream tail on restart, so applying is as durable as the entry.
            await acker.ack(*done)
            self.acked(stream, done)
            # Replayed ids are only needed until their entries have aged out of the window (ids carry the
            # Redis clock, so the cutoff is taken from the newest id, not from our clock).
            newest_ms = self.progress.get(stream, (0, 0))[0]
            self.forget_older_than(stream, newest_ms - int(self.store.retention * 1000) - PRUNE_MARGIN_MS)
            if failures:
                raise EntriesFailed(failures)

        return handle


def _validate_one_by_one(
    adapter: TypeAdapter[list[Any]], items: list[Any]
) -> tuple[list[Any], list[tuple[int, str]]]:
    good, bad = [], []
    for i, item in enumerate(items):
        try:
            good.extend(adapter.validate_python([item]))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field_name = ".".join(str(p) for p in err["loc"][1:] if p != "[key]")
            bad.append((i, f"{field_name}: {err['msg']}" if field_name else err["msg"]))
    return good, bad
