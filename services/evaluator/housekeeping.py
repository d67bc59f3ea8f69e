"""Stream housekeeping done by the active evaluator: trim the metrics and logs streams by time, and export
how far behind the evaluator's consumer group is.

The streams are the evaluator's only history (no TSDB): after a restart it rebuilds its windows from their
tail. So they are trimmed by age, not only by length: `XTRIM MINID ~` keeps every entry younger than the
history the rules read (the store's retention) plus a margin, measured on the Redis server's clock (entry ids
carry it). The collector's `MAXLEN ~` cap still bounds memory under a flood.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger(__name__)

INTERVAL = 10.0  # seconds of real time between rounds
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

    async def run(self) -> None:
        while True:
            try:
                await self.trim()
                await self.observe_lag()
            except RedisError as exc:
                log.warning("stream housekeeping failed; will retry", extra={"error": str(exc)})
            await asyncio.sleep(INTERVAL)
