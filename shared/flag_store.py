"""Tripwire's built-in feature flags: boolean kill switches kept in Redis.

Every flag is one field of the `Keys.flags` hash (flag key -> JSON state). A change is one Lua script that
checks the expected version, writes the new state with `version + 1`, appends the change to the
`Keys.flag_history` stream and PUBLISHes it on `Keys.flag_changes`; all three keys share the `{flags}` hash
tag, so the script stays in one slot under Redis Cluster. Doing it in one script means a subscriber never
hears of a change that was not written, history never misses one, and two writers racing on the same
`expected_version` cannot both win.

Setting a flag to the state it already has changes nothing (no version bump, no history entry, no message):
a kill switch that fires again for the same alert, or a retried API call, is harmless. A flag never set is
absent; applications reading it through the OpenFeature provider get their own default.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis

from shared.clock import Clock
from shared.streams import Keys

log = logging.getLogger(__name__)

HISTORY_MAXLEN = 10_000
"""The history stream is capped (approximately, `MAXLEN ~`) at this many changes across all flags."""

_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_HISTORY_PAGE = 500

# KEYS: state hash, history stream. ARGV: flag key, "1"/"0", expected version ("" = any), now (JSON number),
# actor, reason, channel, history maxlen, flag key as a JSON string, and the state's tail as JSON
# (`"updated_at":..,"updated_by":..,"reason":..}`). The JSON is assembled from pieces Python encoded so
# that floats and strings are exact (Lua's cjson would round `updated_at` to 14 digits).
_SET_SCRIPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local version, was = 0, nil
if current then
  local ok, state = pcall(cjson.decode, current)
  if ok and type(state) == 'table' then
    version = tonumber(state.version) or 0
    was = state.enabled
  end
end
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= version then
  return {'conflict', version}
end
local enabled = ARGV[2] == '1'
if current and was == enabled then
  return {'same', current}
end
version = version + 1
local flag = enabled and 'true' or 'false'
local state = '{"enabled":' .. flag .. ',"version":' .. version .. ',' .. ARGV[10]
redis.call('HSET', KEYS[1], ARGV[1], state)
local from = 'absent'
if current then from = was and 'true' or 'false' end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*',
  'key', ARGV[1], 'from', from, 'to', flag, 'version', version,
  'actor', ARGV[5], 'reason', ARGV[6], 'at', ARGV[4])
redis.call('PUBLISH', ARGV[7],
  '{"key":' .. ARGV[9] .. ',"enabled":' .. flag .. ',"version":' .. version .. ',"at":' .. ARGV[4] .. '}')
return {'changed', state}
"""


class FlagConflict(Exception):
    """A change was made against a version that is no longer the flag's current one (API: 412)."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"flag {key!r} is at version {actual}, not the expected {expected}")
        self.key = key
        self.expected = expected
        self.actual = actual


class FlagRecord(BaseModel):
    """A flag's current state; `version` counts its changes (1 after the first set)."""

    model_config = ConfigDict(frozen=True)

    key: str
    enabled: bool
    version: int
    updated_at: float
    updated_by: str
    reason: str


class FlagChange(BaseModel):
    """One entry of a flag's history: `previous` is None when the change created the flag."""

    model_config = ConfigDict(frozen=True)

    id: str
    key: str
    previous: bool | None
    enabled: bool
    version: int
    at: float
    actor: str
    reason: str


def validate_key(key: str) -> str:
    """Return `key` if it is a valid flag key, else raise ValueError saying what is allowed."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(
            f"invalid flag key {key!r}: use 1 to 200 characters of letters, digits, '_', '.', ':' and '-'"
        )
    return key


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_record(key: str, raw: bytes | str) -> FlagRecord:
    """A flag's stored JSON state as a FlagRecord. Raises ValueError (or ValidationError) if unreadable."""
    data: Any = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"flag {key!r}: stored state is not a JSON object")
    return FlagRecord.model_validate({**data, "key": key})


class FlagStore:
    """The built-in flags in Redis: read them, change them atomically, read their history."""

    def __init__(self, redis: Redis, keys: Keys, clock: Clock) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self._set_script = redis.register_script(_SET_SCRIPT)

    async def get(self, key: str) -> FlagRecord | None:
        """The flag's state, or None if it was never set. Raises ValueError for an invalid key."""
        validate_key(key)
        raw = await self.redis.hget(self.keys.flags, key)
        return None if raw is None else parse_record(key, raw)

    async def all(self) -> dict[str, FlagRecord]:
        """Every flag by key (sorted); an unreadable entry is logged and left out rather than failing all."""
        raw = await self.redis.hgetall(self.keys.flags)
        out: dict[str, FlagRecord] = {}
        for field, value in sorted((_text(k), v) for k, v in raw.items()):
            try:
                out[field] = parse_record(field, value)
            except (ValueError, ValidationError) as exc:
                log.warning("skipping unreadable flag %r: %s", field, exc)
        return out

    async def set(
        self, key: str, enabled: bool, *, actor: str, reason: str, expected_version: int | None = None
    ) -> FlagRecord:
        """Turn a flag on or off and return its state.

        Atomic (one Lua script): writes the state with version + 1, appends to the history and publishes
        `{"key", "enabled", "version", "at"}` on the changes channel. Setting the state the flag already has
        returns it unchanged (no version bump, no history, no message). `expected_version` (0 = the flag
        must not exist yet) makes it a compare-and-set: FlagConflict if the flag's version differs.
        """
        validate_key(key)
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
        if expected_version is not None and expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, got {expected_version}")
        now = float(self.clock.now())
        tail = orjson.dumps({"updated_at": now, "updated_by": actor, "reason": reason})[1:]
        outcome, value = await self._set_script(
            keys=[self.keys.flags, self.keys.flag_history],
            args=[
                key,
                "1" if enabled else "0",
                "" if expected_version is None else str(expected_version),
                orjson.dumps(now),
                actor,
                reason,
                self.keys.flag_changes,
                HISTORY_MAXLEN,
                orjson.dumps(key),
                tail,
            ],
        )
        if _text(outcome) == "conflict":
            raise FlagConflict(key, expected_version or 0, int(value))
        return parse_record(key, value)

    async def history(self, key: str, count: int = 50) -> list[FlagChange]:
        """The flag's last `count` changes, newest first (as far back as the capped stream reaches)."""
        validate_key(key)
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        out: list[FlagChange] = []
        upper = "+"
        # The stream holds every flag's changes, so page backwards, keeping this flag's, until enough.
        while len(out) < count:
            page = await self.redis.xrevrange(self.keys.flag_history, max=upper, min="-", count=_HISTORY_PAGE)
            for entry_id, fields in page:
                data = {_text(k): _text(v) for k, v in fields.items()}
                if data.get("key") != key:
                    continue
                out.append(
                    FlagChange(
                        id=_text(entry_id),
                        key=key,
                        previous=None if data["from"] == "absent" else data["from"] == "true",
                        enabled=data["to"] == "true",
                        version=int(data["version"]),
                        at=float(data["at"]),
                        actor=data["actor"],
                        reason=data["reason"],
                    )
                )
                if len(out) == count:
                    break
            if len(page) < _HISTORY_PAGE:
                break
            upper = f"({_text(page[-1][0])}"  # exclusive: continue below the last entry seen
        return out
