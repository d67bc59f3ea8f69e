"""Applying batches from the metrics and logs streams to the series store.

Each item is validated on its own: a bad item is counted and recorded in the DLQ with its reason, and the rest
of the batch is applied. The parts of a request stored as several entries (`PART_HEADER`) are held until its
last part and applied together, so no evaluation sees half a request.

An entry already applied is skipped, so an increment never counts twice: the ids of entries applied but not
yet acked, and of those start-up replay applied, are remembered until they can no longer come back (acked, or
older than the window). One id set rather than a high-water mark, because a failed entry comes back through
re-claim after newer entries have been applied.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter
from pydantic import TypeAdapter, ValidationError

from services.evaluator.log_metrics import LogMetrics
from services.evaluator.series import (
    METRIC_SERIES_LIMIT,
    SERIES_LIMIT,
    SERIES_SAMPLES_LIMIT,
    Series,
    SeriesStore,
)
from shared.codec import PoisonEntry, decode_entry, decode_envelope, decode_items, entry_part
from shared.consumers import Acker, EntriesFailed, Entry
from shared.events import LogEvent, MetricSample, WireSample, decode_wire_samples, fast_sample, wire_labels
from shared.streams import entry_order

log = logging.getLogger(__name__)

LOG_EVENTS_METRIC = "log_events_total"
MAX_FUTURE_SKEW = 600.0
PRUNE_MARGIN_MS = 60_000
PRUNE_EVERY_MS = 10_000  # samples more than 10 minutes ahead of the evaluator's clock are refused

# Raw label objects longer than this are remembered by their decoded labels instead (see `_apply_wire`).
ARRIVAL_KEY_BYTES = 512
LIMIT_REASONS = {SERIES_LIMIT, METRIC_SERIES_LIMIT, SERIES_SAMPLES_LIMIT}
LIMIT_LOG_EVERY = 60.0
# (metric name, labels, value, is an increment, timestamp or None for "now")
ParsedSample = tuple[str, dict[str, str], float, bool, float | None]

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


class Applied(NamedTuple):
    """An entry applied to the store, with its invalid items as (index, reason) for the DLQ."""

    entry: Entry
    bad: list[tuple[int, str]]


class _Decoded(NamedTuple):
    """An entry decoded but not applied yet: its batch in one of the two shapes the ingestor applies."""

    entry: Entry
    body: bytes
    wire: list[WireSample] | None  # the one-pass decode, when it applies (metrics)
    items: list[Any] | None  # otherwise the plain items


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
    log_metrics: LogMetrics = field(default_factory=lambda: LogMetrics([]))
    # Per stream, the parts of a request whose last part has not come yet: (parts in all, those that came).
    _held: dict[str, tuple[int, list[_Decoded]]] = field(default_factory=dict)
    # Acked parts that failed to apply with an entry, by (stream, that entry's id): applied with its retry.
    _stashed: dict[tuple[str, bytes], list[_Decoded]] = field(default_factory=dict)
    _pruned_at: dict[str, int] = field(default_factory=dict)
    _limit_logged: dict[str, float] = field(default_factory=dict)

    def caught_up(self) -> bool:
        """Whether every entry that was in the streams at start has been handled (applied, skipped or
        dead-lettered): evaluating before that would see a gap and resolve alerts that are still firing."""
        return all(self.progress.get(s, (0, 0)) >= t for s, t in self.targets.items())

    def apply_entry(self, stream: str, kind: str, entry: Entry) -> list[Applied] | None:
        """Apply one entry. Returns the entries this applied, each with its invalid items: the entry itself,
        after any parts held before it; none while it is a part of a request whose last part has not come
        yet; None if it was a duplicate. Raises PoisonEntry if the entry is not a batch at all (see
        `release` for what was held before it)."""
        self._advance(stream, entry.id)
        count, held = self._held.get(stream, (0, []))
        seen = self.applied.setdefault(stream, set())
        stashed = self._stashed.pop((stream, entry.id), [])
        if entry.id in seen or (held and any(h.entry.id == entry.id for h in held)):
            if stashed:  # delivered again after parts that failed with it: they come back with it
                return self._apply_or_stash(stream, kind, stashed, entry.id)
            self.metrics.duplicates.labels(stream).inc()
            return None
        try:
            body, headers = decode_envelope(entry.fields)
            # The common case, a batch of well-typed samples, is decoded and checked in one pass.
            wire = decode_wire_samples(body) if kind == "metrics" else None
            decoded = _Decoded(entry, body, wire, decode_items(body) if wire is None else None)
        except PoisonEntry:
            if stashed:
                self._stashed[(stream, entry.id)] = stashed  # for `release`
            raise
        if stashed:
            return self._apply_or_stash(stream, kind, [*stashed, decoded], entry.id)
        part = entry_part(headers)
        if _before(entry.id, held):
            # An older entry back through re-claim while a request is being read: on its own, the hold kept.
            return self._apply_or_stash(stream, kind, [decoded], entry.id)
        ready: list[_Decoded] = []
        if held and part != (len(held) + 1, count):
            # The rest of that request never came (trimmed before it was read, or unreadable): apply what did.
            ready, held = held, []
        if part is not None and part[0] == len(held) + 1 and part[0] < part[1]:
            self._held[stream] = (part[1], [*held, decoded])
            return self._apply_or_stash(stream, kind, ready, entry.id)
        self._held.pop(stream, None)
        return self._apply_or_stash(stream, kind, [*ready, *held, decoded], entry.id)

    def release(self, stream: str, kind: str, entry_id: bytes) -> list[Applied]:
        """Apply what is held of a request when entry `entry_id` after it cannot be read (poison): its parts
        are adjacent, so nothing more of it can come. Also what failed with that entry before."""
        _count, held = self._held.get(stream, (0, []))
        if _before(entry_id, held):
            held = []  # an older entry back through re-claim: the request being read goes on
        else:
            self._held.pop(stream, None)
        stashed = self._stashed.pop((stream, entry_id), [])
        return self._apply_or_stash(stream, kind, [*stashed, *held], entry_id)

    def _apply_or_stash(
        self, stream: str, kind: str, batches: list[_Decoded], entry_id: bytes
    ) -> list[Applied]:
        """Apply `batches` for entry `entry_id`. If that raises, the batches not applied but acked (held
        parts) are kept for that entry's retry through re-claim, and applied only then: before every later
        entry, a part that always fails would stop the stream."""
        try:
            return self._apply_decoded(stream, kind, batches)
        except Exception:
            seen = self.applied.setdefault(stream, set())
            left = [b for b in batches if b.entry.id not in seen and b.entry.id != entry_id]
            if left:
                self._stashed[(stream, entry_id)] = left
            raise

    def _apply_decoded(self, stream: str, kind: str, batches: list[_Decoded]) -> list[Applied]:
        seen = self.applied.setdefault(stream, set())
        applied = []
        for batch in batches:
            if batch.entry.id in seen:
                continue  # stashed, then delivered again and applied on its own: once is enough
            if batch.wire is None or not self._apply_wire(stream, batch.wire):
                items = batch.items if batch.items is not None else decode_items(batch.body)
                bad = self.apply_items(stream, kind, items)
            else:
                bad = []
            seen.add(batch.entry.id)
            if self._stashed:
                self._unstash(stream, batch.entry.id)
            applied.append(Applied(batch.entry, bad))
        return applied

    def _unstash(self, stream: str, entry_id: bytes) -> None:
        """Entry `entry_id`, applied, is owed by no stash any more: once acked it is forgotten, and the retry
        of another entry it had failed with would apply it again (or, never retried, count it as lost)."""
        for key in [k for k in self._stashed if k[0] == stream]:
            left = [b for b in self._stashed[key] if b.entry.id != entry_id]
            if not left:
                del self._stashed[key]
            elif len(left) < len(self._stashed[key]):
                self._stashed[key] = left

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
        # An entry that failed and was never retried (dead-lettered after too many deliveries) is out of the
        # window by now, and so are the parts that failed with it.
        for key in [k for k in self._stashed if k[0] == stream and entry_order(k[1])[0] < cutoff_ms]:
            lost = self._stashed.pop(key)
            items = sum(len(b.wire if b.wire is not None else b.items or ()) for b in lost)
            self.metrics.dropped.labels(stream, "failed_with_entry").inc(items)
            log.error(
                "parts of a request that failed to apply were never retried (their entry was dead-lettered)",
                extra={
                    "stream": stream,
                    "entry_id": key[1].decode(),
                    "parts": [b.entry.id.decode() for b in lost],
                },
            )

    def _advance(self, stream: str, entry_id: bytes) -> None:
        order = entry_order(entry_id)
        if order > self.progress.get(stream, (0, 0)):
            self.progress[stream] = order

    def apply_items(self, stream: str, kind: str, items: list[Any]) -> list[tuple[int, str]]:
        """Apply each valid item of a batch; returns the invalid ones as (index, reason)."""
        if kind == "metrics":
            samples, bad = _metric_samples(items)
        else:
            samples, bad = self._log_samples(items)
        self._apply_samples(stream, samples, bad)
        return bad

    def _apply_wire(self, stream: str, wire: list[WireSample]) -> bool:
        """Apply a batch of decoded samples, what `_apply_samples` does, written out flat for WireSamples
        because it runs for every sample ingested. The store remembers the series of each (name, raw labels
        JSON) it accepted, so a sample seen before needs no labels dict and no name checks. Every other
        sample is checked before anything is applied: if one fails, nothing is, and this returns False for
        the item-by-item path to judge the batch and give the precise reasons."""
        store = self.store
        known = store.by_arrival.get
        found = [known((sample.name, bytes(sample.labels))) for sample in wire]
        if None in found and any(wire_labels(wire[i]) is None for i, s in enumerate(found) if s is None):
            return False
        now = self.now()
        oldest, newest = now - store.retention, now + MAX_FUTURE_SKEW
        cap = store.limits.max_samples_per_series or float("inf")
        dropped: dict[str, int] = {}
        refusals = 0
        for sample, series in zip(wire, found, strict=True):
            ts = sample.timestamp
            if ts is None:
                ts = now
            if series is not None and oldest < ts <= newest:
                # The fast lane: a known series under its cap, at or after its newest point. Series.add and
                # Series.increment, without the calls.
                timestamps, values = series.timestamps, series.values
                try:
                    last = timestamps[-1]
                except IndexError:  # a series is never empty once made (trim keeps the newest); just in case
                    last = math.inf
                if ts >= last and len(timestamps) < cap:
                    if sample.kind == "sample":
                        if ts == last:
                            values[-1] = sample.value
                        else:
                            timestamps.append(ts)
                            values.append(sample.value)
                    elif ts == last:
                        values[-1] += sample.value
                    else:
                        timestamps.append(ts)
                        values.append(values[-1] + sample.value)
                    continue
            refused = self._apply_wire_sample(sample, series, ts, oldest, newest)
            if refused is not None:
                dropped[refused] = dropped.get(refused, 0) + 1
                refusals += 1
        self._count(stream, len(wire) - refusals, dropped)
        return True

    def _apply_wire_sample(
        self, sample: WireSample, series: Series | None, ts: float, oldest: float, newest: float
    ) -> str | None:
        """One sample off `_apply_wire`'s fast lane (`series`: the one found for it, if any): applied within
        the window and the store's limits; returns why it was dropped, or None."""
        if ts <= oldest:
            return "too_old"
        if ts > newest:
            return "too_far_in_future"
        increment = sample.kind == "increment"
        if series is not None:
            return self.store.apply(series, ts, sample.value, increment)
        labels = wire_labels(sample)  # a new series: checked before the batch was applied
        assert labels is not None
        raw = bytes(sample.labels)
        # A long spelling is not remembered under its bytes: the cache stays small whatever is sent.
        arrival = (sample.name, raw) if len(raw) <= ARRIVAL_KEY_BYTES else None
        return self.store.ingest(sample.name, labels, ts, sample.value, increment, arrival)

    def _apply_samples(self, stream: str, samples: list[ParsedSample], bad: list[tuple[int, str]]) -> None:
        """Apply valid samples to the store within the time window and limits, counting what is dropped
        (`bad`: the batch's invalid items, counted as such)."""
        now = self.now()
        oldest, newest = now - self.store.retention, now + MAX_FUTURE_SKEW
        dropped: dict[str, int] = {}
        applied = 0
        ingest = self.store.ingest
        for name, labels, value, increment, stamped in samples:
            ts = now if stamped is None else stamped
            if ts <= oldest:
                dropped["too_old"] = dropped.get("too_old", 0) + 1
                continue
            elif ts > newest:
                dropped["too_far_in_future"] = dropped.get("too_far_in_future", 0) + 1
                continue
            refused = ingest(name, labels, ts, value, increment)
            if refused is None:
                applied += 1
            else:
                dropped[refused] = dropped.get(refused, 0) + 1
        if bad:
            dropped["invalid"] = len(bad)
        self._count(stream, applied, dropped)

    def _count(self, stream: str, applied: int, dropped: dict[str, int]) -> None:
        self.metrics.samples.labels(stream).inc(applied)
        for reason, count in dropped.items():
            self.metrics.dropped.labels(stream, reason).inc(count)
            if reason in LIMIT_REASONS:
                self._warn_limit(stream, reason, count)

    def _log_samples(self, items: list[Any]) -> tuple[list[ParsedSample], list[tuple[int, str]]]:
        """Each valid log event as increments of log_events_total and of the log metrics it matches."""
        events, bad = _validated(_LOGS, items)
        samples: list[ParsedSample] = []
        for event in events:
            labels = {**event.labels, "service": event.service, "level": event.level}
            samples.append((LOG_EVENTS_METRIC, labels, 1.0, True, event.timestamp))
            for name, derived in self.log_metrics.counts(event):
                samples.append((name, derived, 1.0, True, event.timestamp))
        return samples, bad

    def _warn_limit(self, stream: str, reason: str, count: int) -> None:
        """Log a limit hit at most once a minute per reason (it is counted every time)."""
        now = self.now()
        if now - self._limit_logged.get(reason, float("-inf")) >= LIMIT_LOG_EVERY:
            self._limit_logged[reason] = now
            log.warning(
                "samples dropped by an evaluator limit",
                extra={"stream": stream, "reason": reason, "count": count, "limits": str(self.store.limits)},
            )

    def handler(self, stream: str, kind: str) -> Callable[[list[Entry], Acker], Any]:
        """The consumer-group handler for one stream: apply, dead-letter what is bad, ack."""

        async def handle(entries: list[Entry], acker: Acker) -> None:
            done: list[bytes] = []
            failures: dict[bytes, str] = {}
            for entry in entries:
                # One entry's failure (Redis down while dead-lettering) must not hold back the others.
                try:
                    poison = None
                    try:
                        applied = self.apply_entry(stream, kind, entry)
                    except PoisonEntry as exc:
                        applied, poison = self.release(stream, kind, entry.id), str(exc)
                    for outcome in applied or ():
                        if outcome.bad:
                            items = decode_entry(outcome.entry.fields).items
                            await acker.dead_letter_items(outcome.entry, outcome.bad, items)
                    if poison is not None:
                        await acker.dead_letter(entry, poison)  # acks it
                        continue
                except Exception as exc:  # reported per entry, retried by re-claim
                    failures[entry.id] = f"{type(exc).__name__}: {exc}"
                    continue
                done.append(entry.id)
            # The store is rebuilt from the stream tail on restart, so applying is as durable as the entry; so
            # is holding a part of a request until its last part comes.
            await acker.ack(*done)
            self.acked(stream, done)
            # Replayed ids are only needed until their entries have aged out of the window (ids carry the
            # Redis clock, so the cutoff is taken from the newest id, not from our clock).
            newest_ms = self.progress.get(stream, (0, 0))[0]
            self.forget_older_than(stream, newest_ms - int(self.store.retention * 1000) - PRUNE_MARGIN_MS)
            if failures:
                raise EntriesFailed(failures)

        return handle


def _before(entry_id: bytes, held: list[_Decoded]) -> bool:
    """Whether `entry_id` is older than the parts `held`: an entry back through re-claim, not their sequel."""
    return bool(held) and entry_order(entry_id) < entry_order(held[-1].entry.id)


def _metric_samples(items: list[Any]) -> tuple[list[ParsedSample], list[tuple[int, str]]]:
    """The valid samples of a batch, and (index, reason) for each invalid one. The common shape goes through
    `fast_sample`; anything else through pydantic, which also gives the precise reason."""
    samples: list[ParsedSample] = []
    bad: list[tuple[int, str]] = []
    for i, item in enumerate(items):
        parsed = fast_sample(item)
        if parsed is None:
            valid, errors = _validated(_SAMPLES, [item])
            if errors:
                bad.append((i, errors[0][1]))
                continue
            (sample,) = valid
            parsed = (sample.name, sample.labels, sample.value, sample.kind == "increment", sample.timestamp)
        samples.append(parsed)
    return samples, bad


def _validated(adapter: TypeAdapter[list[Any]], items: list[Any]) -> tuple[list[Any], list[tuple[int, str]]]:
    """Validate the whole list at once; if any item is bad, each on its own to tell which and why."""
    try:
        return adapter.validate_python(items), []
    except ValidationError:
        pass
    good, bad = [], []
    for i, item in enumerate(items):
        try:
            good.extend(adapter.validate_python([item]))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field_name = ".".join(str(p) for p in err["loc"][1:] if p != "[key]")
            bad.append((i, f"{field_name}: {err['msg']}" if field_name else err["msg"]))
    return good, bad
