"""Notifier state in Redis: which alerts each aggregation group holds, and what was last sent for it.

The group store keeps, per receiver and group key, the newest version of each alert (by fingerprint). The
notification log (nflog, as Alertmanager calls it) keeps, per receiver and group key, the firing and resolved
fingerprints of the last notification and when it went out, per integration. Both live under the `{alerts}`
hash tag, beside the stream they are derived from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis

from shared.alerts import Alert
from shared.streams import Keys, entry_order


@dataclass
class LogEntry:
    """What was last notified for one group and receiver."""

    firing: set[str] = field(default_factory=set)
    resolved: set[str] = field(default_factory=set)
    timestamp: float = 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"firing": sorted(self.firing), "resolved": sorted(self.resolved), "ts": self.timestamp}
        )

    @classmethod
    def from_json(cls, raw: bytes) -> LogEntry:
        data = orjson.loads(raw)
        return cls(set(data["firing"]), set(data["resolved"]), float(data["ts"]))


TOMBSTONE_TTL = 3600.0


def _group_id(receiver: str, group_key: str) -> str:
    # Group keys hold arbitrary label values; a digest keeps Redis keys short and safe.
    return hashlib.sha256(f"{receiver}\x00{group_key}".encode()).hexdigest()[:32]


class NotifierState:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def _group_key(self, receiver: str, group_key: str) -> str:
        return f"{self.keys.alerts}:group:{_group_id(receiver, group_key)}"

    async def upsert(
        self, receiver: str, group_key: str, alerts: list[tuple[str, Alert]], now: float
    ) -> dict[str, Alert]:
        """Merge `alerts` (each with the stream entry id it came from) into the group, never replacing a newer
        version with an older one (nor a forgotten alert with an older one); returns the group's alerts."""
        key = self._group_key(receiver, group_key)
        current = {fp.decode(): orjson.loads(raw) for fp, raw in (await self.redis.hgetall(key)).items()}
        updates: dict[str, bytes] = {}
        for source, alert in alerts:
            stored = current.get(alert.fingerprint)
            if stored is not None and entry_order(stored["source"]) > entry_order(source):
                continue
            record = {"source": source, "alert": alert.to_wire()}
            current[alert.fingerprint] = record
            updates[alert.fingerprint] = orjson.dumps(record)
        expired = [fp for fp, r in current.items() if "gone" in r and r["gone"] < now - TOMBSTONE_TTL]
        async with self.redis.pipeline(transaction=True) as pipe:
            if updates:
                pipe.hset(key, mapping=updates)
            if expired:
                pipe.hdel(key, *expired)
            await pipe.execute()
        return {fp: Alert.model_validate(r["alert"]) for fp, r in current.items() if "gone" not in r}

    async def last_sent(self, receiver: str, group_key: str) -> LogEntry | None:
        raw = await self.redis.hget(self.keys.notification_log(receiver), group_key)
        return LogEntry.from_json(raw) if raw else None

    async def record(self, log_name: str, group_key: str, entry: LogEntry) -> None:
        """Record what was just notified for a group through one integration (`log_name`)."""
        await self.redis.hset(self.keys.notification_log(log_name), group_key, entry.to_json())

    async def forget(self, receiver: str, group_key: str, fingerprints: list[str], now: float) -> None:
        """Drop resolved alerts from a group once every integration has been told. A tombstone with the
        alert's source entry id stays for `TOMBSTONE_TTL`, so an older firing entry re-claimed late cannot
        bring the alert back."""
        if not fingerprints:
            return
        key = self._group_key(receiver, group_key)
        stored = await self.redis.hmget(key, fingerprints)
        tombstones = {
            fp: orjson.dumps({"source": orjson.loads(raw)["source"], "gone": now})
            for fp, raw in zip(fingerprints, stored, strict=True)
            if raw is not None
        }
        if tombstones:
            await self.redis.hset(key, mapping=tombstones)
