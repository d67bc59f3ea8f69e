"""Rebuilding the series store after a restart by re-reading the tail of the metrics and logs streams.

The evaluator keeps no TSDB: the streams are the log. On start it reads, for each stream, the entries of the
last `retention` seconds up to what its consumer group has already been given, and applies them. The group
then carries on from there; entries it delivers again (pending ones of the crashed process) are known to the
ingestor as applied and are skipped, so nothing is applied twice.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.evaluator.ingest import Ingestor
from shared.codec import PoisonEntry
from shared.consumers import Entry
from shared.streams import entry_order

log = logging.getLogger(__name__)

PAGE = 100


async def _last_delivered(redis: Redis, stream: str, group: str) -> bytes | None:
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream yet
        return None
    for info in groups:
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name == group:
            last = info["last-delivered-id"]
            return last if isinstance(last, bytes) else str(last).encode()
    return None


async def replay_tail(
    redis: Redis, ingestor: Ingestor, stream: str, kind: str, group: str, window: float
) -> int:
    """Apply the entries of the last `window` seconds of `stream` that `group` has already delivered.

    Entry ids carry the Redis server's clock, so the window is measured on that clock (TIME); the samples'
    own timestamps are then checked against the evaluator's clock as for any other entry."""
    last = await _last_delivered(redis, stream, group)
    if last is None or last == b"0-0":
        return 0
    seconds, micros = await redis.time()
    start = f"{int((seconds + micros / 1e6 - window) * 1000)}-0"
    applied = 0
    while True:
        page = await redis.xrange(stream, min=start, max=last, count=PAGE)
        for entry_id, fields in page:
            try:
                ingestor.apply_entry(stream, kind, Entry(entry_id, fields))
            except PoisonEntry:
                # What was held of a request it belongs to; the consumer path dead-letters the entry itself.
                try:
                    ingestor.release(stream, kind, entry_id)
                except Exception:
                    log.exception("could not replay entries", extra={"stream": stream, "entry_id": entry_id})
                continue
            except Exception:
                # Never let one odd entry stop the evaluator from starting (a crash loop on every restart).
                log.exception("could not replay entry", extra={"stream": stream, "entry_id": entry_id})
                continue
            applied += 1
        if len(page) < PAGE:
            break
        ms, seq = entry_order(page[-1][0])
        start = f"{ms}-{seq + 1}"
    log.info("replayed stream tail", extra={"stream": stream, "entries": applied})
    return applied
