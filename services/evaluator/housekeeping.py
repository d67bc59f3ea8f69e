"""Stream housekeeping done by the active evaluator: trim the metrics and logs streams by time, and export
how far behind the evaluator's consumer group is.

The streams are the evaluator's only history (no TSDB): after a restart it rebuilds its windows from their
tail. So they are trimmed by age, not only by length: `XTRIM MINID ~` keeps every entry younger than the
history the rules read (the store's retention) plus a margin, measured on the Redis server's clock (entry ids
carry it). The collector's `MAXLEN ~` cap still bounds memory under a flood, and trims oldest first whether
the entries were read or not: a stream at its cap that holds less than the rules' history is logged as an
error (raise `streams.maxlen`), since the cap is then deleting entries the rules and a restart still need.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from shared.streams import entry_order

log = logging.getLogger(__name__)

INTERVAL = 10.0  # seconds of real time between rounds
SHORT_LOG_EVERY = 60.0  # seconds between errors about one stream holding too little history
AT_CAP = 0.9  # a stream this full of its MAXLEN is being trimmed by the cap
MARGIN = 60.0  # keep this much more than the rules need, for clock skew and slow restarts


class HousekeepingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.trimmed = Counter(
            "tripwire_stream_trimmed_entries",
            "Entries trimmed by age (XTRIM MINID) from the evaluator's input streams.",
            ["stream"],
            registry=registry,
        )
        self.lag = Gauge(
            "tripwire_stream_consumer_lag",
            "Entries not yet delivered to the evaluator's consumer group (XINFO GROUPS lag).",
            ["stream"],
            registry=registry,
        )
        self.history = Gauge(
            "tripwire_stream_history_seconds",
            "Age of the oldest entry of the evaluator's input streams (Redis clock): the history they hold.",
            ["stream"],
            registry=registry,
        )
        self.pending = Gauge(
            "tripwire_stream_consumer_pending",
            "Entries delivered to the evaluator's consumer group but not acked yet.",
            ["stream"],
            registry=registry,
        )


@dataclass
class Housekeeper:
    redis: Redis
    streams: list[str]
    group: str
    retention: Callable[[], float]  # seconds of history the rules need now (grows on reload)
    metrics: HousekeepingMetrics
    maxlen: int = 0  # the collector's MAXLEN cap (0: unknown, not judged)
    _short_logged: dict[str, float] = field(default_factory=dict)

    async def trim(self) -> int:
        """Trim every stream to the entries of the last `retention + MARGIN` seconds (Redis clock)."""
        seconds, micros = await self.redis.time()
        cutoff_ms = int((seconds + micros / 1e6 - self.retention() - MARGIN) * 1000)
        trimmed = 0
        for stream in self.streams:
            removed = await self.redis.xtrim(stream, minid=f"{cutoff_ms}-0", approximate=True)
            self.metrics.trimmed.labels(stream).inc(removed)
            trimmed += removed
        return trimmed

    async def observe_lag(self) -> None:
        for stream in self.streams:
            try:
                groups = await self.redis.xinfo_groups(stream)
            except ResponseError:  # the stream does not exist yet
                continue
            for info in groups:
                name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
                if name == self.group:
                    self.metrics.lag.labels(stream).set(info.get("lag") or 0)
                    self.metrics.pending.labels(stream).set(info.get("pending") or 0)

    async def observe_history(self) -> list[str]:
        """Export each stream's history (age of its oldest entry); returns the streams at their MAXLEN cap
        that hold less than the rules need, and logs an error for each (at most once a minute)."""
        seconds, micros = await self.redis.time()
        now = seconds + micros / 1e6
        short = []
        for stream in self.streams:
            oldest = await self.redis.xrange(stream, count=1)
            if not oldest:
                continue
            held = now - entry_order(oldest[0][0])[0] / 1000
            self.metrics.history.labels(stream).set(held)
            needed = self.retention()
            if self.maxlen and held < needed and await self.redis.xlen(stream) >= AT_CAP * self.maxlen:
                short.append(stream)
                if now - self._short_logged.get(stream, float("-inf")) >= SHORT_LOG_EVERY:
                    self._short_logged[stream] = now
                    log.error(
                        "stream is at its streams.maxlen cap and holds less history than the rules need: the "
                        "cap is trimming entries they still read, read by the evaluator or not; raise "
                        "streams.maxlen",
                        extra={
                            "stream": stream,
                            "maxlen": self.maxlen,
                            "history_seconds": round(held, 1),
                            "needed_seconds": needed,
                        },
                    )
        return short

    async def run(self) -> None:
        while True:
            try:
                await self.trim()
                await self.observe_lag()
                await self.observe_history()
            except RedisError as exc:
                log.warning("stream housekeeping failed; will retry", extra={"error": str(exc)})
            await asyncio.sleep(INTERVAL)
