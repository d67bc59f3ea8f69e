"""Notifier state in Redis: which alerts each aggregation group holds, and what was last sent for it.

The group store keeps, per receiver and group key, the newest version of each alert (by fingerprint). The
notification log (nflog, as Alertmanager calls it) keeps, per receiver and group key, the firing and resolved
fingerprints of the last notification and when it went out, per integration. Both live under the `{alerts}`
hash tag, beside the stream they are derived from.
"""

from __future__ import annotations

import hashlib
import uuid
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


@dataclass
class Intent:
    """A notification being delivered through one integration, written before its first request goes out and
    removed with the log entry that records it sent. Found at the next flush, it means the process died
    mid-delivery: `state` says whether the last request may have arrived ("sending") or certainly did not
    ("failed"), and the integration reconciles (see Integration.reconcile)."""

    id: str
    firing: set[str]
    resolved: set[str]
    timestamp: float
    state: str = "sending"
    attempts: int = 0
    reason: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "firing": sorted(self.firing),
                "resolved": sorted(self.resolved),
                "ts": self.timestamp,
                "state": self.state,
                "attempts": self.attempts,
                "reason": self.reason,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Intent:
        data = orjson.loads(raw)
        return cls(
            data["id"],
            set(data["firing"]),
            set(data["resolved"]),
            float(data["ts"]),
            data["state"],
            int(data["attempts"]),
            data.get("reason", ""),
        )

    def entry(self) -> LogEntry:
        """The log entry to record if this intent turns out delivered."""
        return LogEntry(set(self.firing), set(self.resolved), self.timestamp)


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

    async def members(self, receiver: str, group_key: str) -> list[tuple[str, Alert]]:
        """The group's alerts, each with the stream entry id it came from."""
        raw = await self.redis.hgetall(self._group_key(receiver, group_key))
        records = [orjson.loads(r) for r in raw.values()]
        return [(r["source"], Alert.model_validate(r["alert"])) for r in records if "gone" not in r]

    async def last_sent(self, receiver: str, group_key: str) -> LogEntry | None:
        raw = await self.redis.hget(self.keys.notification_log(receiver), group_key)
        return LogEntry.from_json(raw) if raw else None

    async def record(self, log_name: str, group_key: str, entry: LogEntry) -> None:
        """Record what was just notified for a group through one integration (`log_name`), and drop the
        delivery's intent with it (one transaction: no moment where neither says what happened)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.notification_log(log_name), group_key, entry.to_json())
            pipe.hdel(self._intents(log_name), group_key)
            await pipe.execute()

    def _intents(self, log_name: str) -> str:
        return f"{self.keys.notification_log(log_name)}:intent"

    async def intent(self, log_name: str, group_key: str) -> Intent | None:
        """The unfinished delivery of a group through one integration, if a previous attempt left one."""
        raw = await self.redis.hget(self._intents(log_name), group_key)
        return Intent.from_json(raw) if raw else None

    async def write_intent(self, log_name: str, group_key: str, intent: Intent) -> None:
        await self.redis.hset(self._intents(log_name), group_key, intent.to_json())

    async def drop_intent(self, log_name: str, group_key: str) -> None:
        await self.redis.hdel(self._intents(log_name), group_key)

    def _refs(self, log_name: str) -> str:
        return f"{self.keys.notification_log(log_name)}:message"

    async def message_ref(self, log_name: str, group_key: str) -> dict[str, str] | None:
        """Where a group's message went (Slack channel id and ts), to update it or reply in its thread."""
        raw = await self.redis.hget(self._refs(log_name), group_key)
        return orjson.loads(raw) if raw else None

    async def set_message_ref(self, log_name: str, group_key: str, ref: dict[str, str] | None) -> None:
        if ref is None:
            await self.redis.hdel(self._refs(log_name), group_key)
        else:
            await self.redis.hset(self._refs(log_name), group_key, orjson.dumps(ref))

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


# Aggregation-group timers, kept in Redis so a restart or another replica resumes the same schedule.
_SCHEDULE = """
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[1])
if ARGV[4] == '1' and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0
    and redis.call('HEXISTS', KEYS[4], ARGV[1]) == 0 then
  redis.call('ZADD', KEYS[1], 'LT', ARGV[5], ARGV[1])
end
return 1
"""
# Claim the due groups: move each one's time forward by a lease and note the claimer's token, so no other
# replica flushes it meanwhile and only the claimer can renew or settle it.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, gid in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], gid)
  redis.call('HSET', KEYS[3], gid, ARGV[4])
  table.insert(out, gid)
  table.insert(out, redis.call('HGET', KEYS[2], gid) or '')
end
return out
"""
# Extend a claim, if it is still ours.
_RENEW = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
  return 1
end
return 0
"""
# End a claim, if it is still ours: next flush time ('flushed', 'retry') or drop the group ('drop'). A group
# that has had a flush attempt is in the flushed set, so later alerts no longer pull it to "overdue".
_SETTLE = """
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[3] == 'drop' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[1], 'XX', ARGV[4], ARGV[1])
  redis.call('SADD', KEYS[3], ARGV[1])
end
return 1
"""


@dataclass
class ScheduledGroup:
    id: str
    receiver: str
    group_key: str
    route: str
    token: str = ""  # the claim's owner: renew and settle only with it


class GroupSchedule:
    """When each aggregation group flushes next: first `group_wait` after it appears (at once if it has
    not flushed and an alert of it started longer ago than that), then every `group_interval`."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        base = f"{keys.alerts}:group-schedule"
        self.times, self.meta, self.flushed = base, f"{base}:meta", f"{base}:flushed"
        self.claims = f"{base}:claims"
        self._schedule = redis.register_script(_SCHEDULE)
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._settle = redis.register_script(_SETTLE)

    async def add(
        self, receiver: str, group_key: str, route: str, first_flush: float, overdue: bool, now: float
    ) -> None:
        """Schedule a group's first flush unless it is scheduled already; `overdue` pulls a group that has
        not had a flush attempt (and is not being flushed) to `now`."""
        gid = _group_id(receiver, group_key)
        meta = orjson.dumps({"receiver": receiver, "group_key": group_key, "route": route})
        await self._schedule(
            keys=[self.times, self.meta, self.flushed, self.claims],
            args=[gid, meta, first_flush, int(overdue), now],
        )

    async def claim_due(self, now: float, lease: float, limit: int = 100) -> list[ScheduledGroup]:
        """Claim up to `limit` due groups for `lease` seconds (renew while flushing; settle when done)."""
        if limit <= 0:
            return []
        token = uuid.uuid4().hex
        raw = await self._claim(
            keys=[self.times, self.meta, self.claims], args=[now, now + lease, limit, token]
        )
        out = []
        for gid, meta in zip(raw[::2], raw[1::2], strict=True):
            data = orjson.loads(meta) if meta else {"receiver": "", "group_key": "", "route": ""}
            out.append(
                ScheduledGroup(gid.decode(), data["receiver"], data["group_key"], data["route"], token)
            )
        return out

    async def renew(self, group: ScheduledGroup, until: float) -> bool:
        """Extend our claim to `until`; False if the claim is no longer ours (it lapsed and was taken)."""
        return bool(await self._renew(keys=[self.times, self.claims], args=[group.id, group.token, until]))

    async def _end(self, group: ScheduledGroup, mode: str, when: float = 0.0) -> bool:
        keys = [self.times, self.meta, self.flushed, self.claims]
        return bool(await self._settle(keys=keys, args=[group.id, group.token, mode, when]))

    async def flushed_at(self, group: ScheduledGroup, next_flush: float) -> bool:
        return await self._end(group, "flushed", next_flush)

    async def retry_at(self, group: ScheduledGroup, when: float) -> bool:
        return await self._end(group, "retry", when)

    async def drop(self, group: ScheduledGroup) -> bool:
        return await self._end(group, "drop")

    async def next_due(self) -> float | None:
        first = await self.redis.zrange(self.times, 0, 0, withscores=True)
        return float(first[0][1]) if first else None


class IntentJournal:
    """The Journal a delivery writes through: every attempt updates the group's intent in Redis."""

    def __init__(self, state: NotifierState, log_name: str, group_key: str, intent: Intent) -> None:
        self.state, self.log_name, self.group_key, self.intent = state, log_name, group_key, intent

    @property
    def id(self) -> str:
        return self.intent.id

    async def sending(self) -> None:
        self.intent.state, self.intent.attempts = "sending", self.intent.attempts + 1
        await self.state.write_intent(self.log_name, self.group_key, self.intent)

    async def not_sent(self, reason: str) -> None:
        self.intent.state, self.intent.reason = "failed", reason[:500]
        await self.state.write_intent(self.log_name, self.group_key, self.intent)
