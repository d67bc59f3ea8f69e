"""Consumer groups on Redis Streams, with the recovery FastStream leaves to us.

FastStream reads only new entries (`>`), creates groups at `$`, never re-delivers an entry whose handler
failed, and stops a subscriber for good on NOGROUP (see ../shared/handbook/FASTSTREAM.md). So every consuming
service wires its handler through `GroupConsumer`, which:

- creates the group at id 0 with MKSTREAM before subscribing (entries written before the group existed count);
- reads batches with a FastStream batch subscriber whose parser hands us the raw entries (no JSON round trip);
- leaves acking to the handler, which acks only once the entry's effect is durable;
- on start, re-processes this consumer's own pending entries (a restarted process picks up where it died);
- re-claims entries left pending by any consumer for longer than `claim_idle` (XAUTOCLAIM, in batches), and
  moves an entry that has been delivered `max_deliveries` times to `<stream>:dlq` with the reason;
- keeps entries it is still working on from looking idle (XCLAIM ... JUSTID every `claim_idle / 3`), so a slow
  handler (a webhook retrying for a minute) never has its entry taken over and delivered twice;
- notices a subscriber that stopped (NOGROUP after Redis lost its data) and restarts it on a fresh group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage as BatchMessage
from faststream.redis.message import RedisBatchStreamMessage
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.clock import Clock
from shared.config import StreamsConfig
from shared.streams import Keys
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DLQ_MAXLEN = 100_000


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry as read from Redis."""

    id: bytes
    fields: dict[bytes, bytes]


# A handler processes a list of entries and acks each one once its effect is durable. Raising leaves the
# un-acked entries pending, to be retried by the re-claim task.
EntryHandler = Callable[["list[Entry]", "Acker"], Awaitable[None]]

MAX_REMEMBERED_ERRORS = 10_000


class EntriesFailed(Exception):
    """Raised by a handler that processed a batch but could not finish some entries (left un-acked)."""

    def __init__(self, failures: dict[bytes, str]) -> None:
        super().__init__("; ".join(f"{i.decode()}: {r}" for i, r in failures.items()))
        self.failures = failures


async def ensure_group(redis: Redis, stream: str, group: str) -> bool:
    """Create `group` on `stream` at id 0 (creating the stream too). Returns False if it already existed."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.entries = Counter(
            "tripwire_stream_entries",
            "Stream entries handled, by stream, group and outcome (acked, dead_lettered, failed).",
            ["stream", "group", "outcome"],
            registry=registry,
        )
        self.reclaimed = Counter(
            "tripwire_stream_reclaimed_entries",
            "Entries taken over from a dead or slow consumer, or re-read from this consumer's own backlog.",
            ["stream", "group"],
            registry=registry,
        )
        self.restarts = Counter(
            "tripwire_stream_subscriber_restarts",
            "Subscribers restarted after they stopped (e.g. NOGROUP after Redis lost its data).",
            ["stream", "group"],
            registry=registry,
        )


class Acker:
    """Acks and dead-letters entries of one stream and group, counting outcomes."""

    def __init__(self, redis: Redis, stream: str, group: str, metrics: ConsumerMetrics) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.metrics = metrics

    async def ack(self, *ids: bytes) -> None:
        if ids:
            await self.redis.xack(self.stream, self.group, *ids)
            self.metrics.entries.labels(self.stream, self.group, "acked").inc(len(ids))

    async def dead_letter(self, entry: Entry, reason: str, deliveries: int | None = None) -> None:
        """Move `entry` to the stream's DLQ with `reason`, acking it in the same transaction."""
        record: dict[bytes | str, bytes | str] = {
            "stream": self.stream,
            "group": self.group,
            "id": entry.id,
            "error": reason[:4000],
            "deliveries": str(deliveries if deliveries is not None else ""),
        }
        for key, value in entry.fields.items():
            record[b"entry:" + key] = value
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(Keys.dlq(self.stream), record, maxlen=DLQ_MAXLEN, approximate=True)
            pipe.xack(self.stream, self.group, entry.id)
            await pipe.execute()
        self.metrics.entries.labels(self.stream, self.group, "dead_lettered").inc()
        log.error(
            "moved entry to the dead-letter queue",
            extra={
                "stream": self.stream,
                "entry_id": entry.id.decode(),
                "reason": reason,
                "deliveries": deliveries,
            },
        )

    async def dead_letter_items(self, entry: Entry, bad: list[tuple[int, str]], items: list[Any]) -> None:
        """Record the invalid items of an otherwise good entry in the DLQ (the entry itself is acked by its
        handler once the good items are applied)."""
        record = {
            "stream": self.stream,
            "group": self.group,
            "id": entry.id,
            "error": "; ".join(f"item {i}: {reason}" for i, reason in bad)[:4000],
            "items": orjson.dumps([{"index": i, "item": items[i], "reason": r} for i, r in bad], default=str),
        }
        await self.redis.xadd(Keys.dlq(self.stream), record, maxlen=DLQ_MAXLEN, approximate=True)
        self.metrics.entries.labels(self.stream, self.group, "items_dead_lettered").inc(len(bad))


class GroupConsumer:
    """A FastStream batch subscriber on one stream and group, plus re-claim, DLQ and self-healing."""

    def __init__(
        self,
        *,
        broker: RedisBroker,
        redis: Redis,
        stream: str,
        group: str,
        handler: EntryHandler,
        config: StreamsConfig,
        clock: Clock,
        metrics: ConsumerMetrics,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = config.consumer_name
        self.handler = handler
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.acker = Acker(redis, stream, group, metrics)
        self.last_errors: dict[bytes, str] = {}
        # Entries a handler is working on now: never re-claimed by us, kept fresh against other consumers.
        self.in_flight: set[bytes] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

        self.subscriber = broker.subscriber(
            stream=StreamSub(
                stream,
                group=group,
                consumer=self.consumer,
                batch=True,
                max_records=config.read_count,
                polling_interval=100,
            ),
            parser=self._parse,
            decoder=self._decode,
            ack_policy=AckPolicy.MANUAL,
        )
        self.subscriber(self._on_message)

    # FastStream glue: skip its body parsing and give the handler the raw entries.
    @staticmethod
    async def _parse(raw: Any, _original: Any) -> RedisBatchStreamMessage:
        return RedisBatchStreamMessage(
            raw_message=raw,
            body=b"",
            headers={},
            batch_headers=[],
            path={},
            reply_to="",
            content_type=None,
            message_id=raw["message_ids"][0].decode() if raw["message_ids"] else "",
            correlation_id="",
            consumer=None,
            group=None,
        )

    @staticmethod
    async def _decode(_msg: Any, _original: Any) -> None:
        return None

    async def _on_message(self, msg: BatchMessage) -> None:
        raw = msg.raw_message
        entries = [Entry(i, f) for i, f in zip(raw["message_ids"], raw["data"], strict=True)]
        await self._handle(entries)

    async def _handle(self, entries: list[Entry]) -> None:
        ids = {e.id for e in entries}
        self.in_flight |= ids
        try:
            await self.handler(entries, self.acker)
        except EntriesFailed as exc:
            self._remember(exc.failures)
            log.error(
                "entries failed; they stay pending for re-claim",
                extra={"stream": self.stream, "errors": str(exc)},
            )
            raise
        except Exception as exc:
            self._remember({e.id: f"{type(exc).__name__}: {exc}" for e in entries})
            log.exception("handler failed; entries stay pending for re-claim", extra={"stream": self.stream})
            raise
        finally:
            self.in_flight -= ids

    def _remember(self, failures: dict[bytes, str]) -> None:
        """Keep the last error per pending entry, for the DLQ record if it is finally given up on."""
        self.metrics.entries.labels(self.stream, self.group, "failed").inc(len(failures))
        self.last_errors.update(failures)
        while len(self.last_errors) > MAX_REMEMBERED_ERRORS:
            self.last_errors.pop(next(iter(self.last_errors)))

    # Lifecycle ----------------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Create the group at id 0 and finish this consumer's own leftovers; call before the broker starts
        its subscribers (recovering concurrently with them would hand the same entry to both)."""
        await ensure_group(self.redis, self.stream, self.group)
        await self.recover_own()

    def start_background(self) -> None:
        """Start the periodic re-claim and the subscriber watchdog (after the broker has started)."""
        self._tasks = [
            asyncio.create_task(self._reclaim_loop(), name=f"reclaim:{self.stream}"),
            asyncio.create_task(self._watchdog_loop(), name=f"watchdog:{self.stream}"),
            asyncio.create_task(self._keepalive_loop(), name=f"keepalive:{self.stream}"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(self._tasks)
        self._tasks = []

    def problems(self) -> list[str]:
        """What is wrong with this consumer right now (empty when healthy); used by /readyz."""
        problems = []
        if not self.subscriber.running:
            problems.append(f"subscriber on {self.stream} (group {self.group}) is not running")
        for task in self._tasks:
            if task.done():
                problems.append(f"{task.get_name()} task has stopped")
        return problems

    # Recovery ------------------------------------------------------------------------------------------
    async def recover_own(self) -> int:
        """Re-process entries delivered to this consumer name but never acked (by a crashed predecessor)."""
        handled = 0
        start = "0"
        while True:
            response = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: start}, count=self.config.read_count
            )
            entries = [Entry(i, f) for i, f in response[0][1]] if response else []
            # Entries deleted by trimming come back with empty fields: nothing left to process.
            gone = [e.id for e in entries if not e.fields]
            if gone:
                await self.acker.ack(*gone)
            live = [e for e in entries if e.fields]
            if not entries:
                return handled
            if live:
                self.metrics.reclaimed.labels(self.stream, self.group).inc(len(live))
                await self._process_claimed(live)
                handled += len(live)
            start = entries[-1].id.decode()

    async def reclaim_once(self) -> int:
        """One sweep of XAUTOCLAIM over the whole pending list; returns how many entries were taken over."""
        handled = 0
        cursor = "0-0"
        while True:
            next_cursor, claimed, *_ = await self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=int(self.config.claim_idle * 1000),
                start_id=cursor,
                count=self.config.read_count,
            )
            # An entry our own handler is still on came back only because it looked idle: leave it be.
            entries = [Entry(i, f) for i, f in claimed if f and i not in self.in_flight]
            if entries:
                self.metrics.reclaimed.labels(self.stream, self.group).inc(len(entries))
                await self._process_claimed(entries)
                handled += len(entries)
            cursor = next_cursor.decode() if isinstance(next_cursor, bytes) else next_cursor
            if cursor == "0-0":
                return handled

    async def _process_claimed(self, entries: list[Entry]) -> None:
        deliveries = await self._delivery_counts(entries)
        poison = [e for e in entries if deliveries.get(e.id, 0) > self.config.max_deliveries]
        for entry in poison:
            reason = self.last_errors.pop(entry.id, "handler never acked it")
            await self.acker.dead_letter(
                entry,
                f"gave up after {deliveries[entry.id] - 1} deliveries: {reason}",
                deliveries[entry.id] - 1,
            )
        retry = [e for e in entries if e not in poison]
        if retry:
            with contextlib.suppress(Exception):  # already logged and counted by _handle
                await self._handle(retry)

    async def _delivery_counts(self, entries: list[Entry]) -> dict[bytes, int]:
        ids = sorted(entries, key=lambda e: tuple(int(p) for p in e.id.split(b"-")))
        pending = await self.redis.xpending_range(
            self.stream, self.group, min=ids[0].id, max=ids[-1].id, count=len(entries) * 4 + 10
        )
        return {p["message_id"]: int(p["times_delivered"]) for p in pending}

    async def _reclaim_loop(self) -> None:
        while not self._stopping:
            await self.clock.sleep_until(self.clock.now() + self.config.reclaim_interval)
            await self._guarded(self.reclaim_once)

    async def _guarded(self, step: Callable[[], Awaitable[int]]) -> None:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Redis down or restarting: try again next round rather than kill the task.
            log.warning("re-claim sweep failed; will retry", exc_info=True, extra={"stream": self.stream})

    async def keep_alive(self) -> int:
        """Reset the idle time of the entries being handled now, so no other consumer re-claims them (XCLAIM
        with JUSTID neither returns the entries nor counts a delivery)."""
        ids = sorted(self.in_flight)
        if ids:
            await self.redis.xclaim(
                self.stream, self.group, self.consumer, min_idle_time=0, message_ids=ids, justid=True
            )
        return len(ids)

    async def _keepalive_loop(self) -> None:
        while not self._stopping:
            await self.clock.sleep_until(self.clock.now() + self.config.claim_idle / 3)
            await self._guarded(self.keep_alive)

    async def _watchdog_loop(self) -> None:
        while not self._stopping:
            await self.clock.sleep_until(self.clock.now() + 1.0)
            if not self.subscriber.running and not self._stopping:
                await self._guarded(self._restart_subscriber)

    async def _restart_subscriber(self) -> int:
        created = await ensure_group(self.redis, self.stream, self.group)
        log.error(
            "subscriber had stopped; restarting it",
            extra={"stream": self.stream, "group": self.group, "group_recreated": created},
        )
        await self.subscriber.start()
        self.metrics.restarts.labels(self.stream, self.group).inc()
        return 0
