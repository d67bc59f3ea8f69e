"""Silences, as Alertmanager has them: matchers and a time window; pending before startsAt, active until
endsAt, expired after. An alert is silenced while any active silence's matchers all match its labels.

The API shapes are Alertmanager's v2 (`PostableSilence`, `GettableSilence`), so `amtool silence add|query|
expire` work against the notifier. Silence and validate are pure, given the time; `SilenceStore` keeps the
silences in Redis so every replica sees the same ones.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from services.notifier.time_intervals import TimeIntervalEntry
from shared.alerts import rfc3339
from shared.matchers import Matcher, MatcherError
from shared.streams import Keys

SilenceState = Literal["pending", "active", "expired"]
# Expired silences stay queryable this long, as Alertmanager's --data.retention default (120h).
RETENTION = 120 * 3600.0


class SilenceError(ValueError):
    """A silence that cannot be created or changed; the message says why (API: 400)."""


class SilenceNotFound(KeyError):
    """No silence with that id (API: 404)."""


class MatcherModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    value: str
    isRegex: bool
    isEqual: bool = True

    def matcher(self) -> Matcher:
        op = ("=~" if self.isRegex else "=") if self.isEqual else ("!~" if self.isRegex else "!=")
        return Matcher.create(self.name, op, self.value)


class PostableSilence(BaseModel):
    """The body of POST /api/v2/silences."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    matchers: list[MatcherModel]
    startsAt: datetime
    endsAt: datetime
    createdBy: str = Field(min_length=1)
    comment: str = Field(min_length=1)
    # Tripwire's extension (Alertmanager #3339): mute only while one of these recurring windows holds,
    # e.g. the Sunday maintenance window, for as long as the silence is active.
    timeIntervals: list[TimeIntervalEntry] = Field(default_factory=list)


class Silence:
    """One silence; times are Unix seconds."""

    def __init__(
        self,
        id: str,
        matchers: list[MatcherModel],
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
        updated_at: float,
        time_intervals: list[TimeIntervalEntry] | None = None,
    ) -> None:
        self.id = id
        self.matchers = matchers
        self.compiled = [m.matcher() for m in matchers]
        self.starts_at = starts_at
        self.ends_at = ends_at
        self.created_by = created_by
        self.comment = comment
        self.updated_at = updated_at
        self.time_intervals = time_intervals or []

    def state(self, now: float) -> SilenceState:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def mutes(self, labels: dict[str, str], now: float) -> bool:
        """Whether this silence mutes an alert with `labels` at `now`."""
        if self.state(now) != "active" or not all(m.matches(labels) for m in self.compiled):
            return False
        return not self.time_intervals or any(entry.contains(now) for entry in self.time_intervals)

    def to_api(self, now: float) -> dict[str, object]:
        """Alertmanager's GettableSilence."""
        # Tripwire's recurring windows, only when set (Alertmanager's shape otherwise).
        extension = {"timeIntervals": [t.model_dump() for t in self.time_intervals]}
        return {
            "id": self.id,
            "status": {"state": self.state(now)},
            "updatedAt": rfc3339(self.updated_at),
            "matchers": [m.model_dump() for m in self.matchers],
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
            **(extension if self.time_intervals else {}),
        }

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "matchers": [m.model_dump() for m in self.matchers],
                "starts_at": self.starts_at,
                "ends_at": self.ends_at,
                "created_by": self.created_by,
                "comment": self.comment,
                "updated_at": self.updated_at,
                "time_intervals": [t.model_dump() for t in self.time_intervals],
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> Silence:
        data = orjson.loads(raw)
        data["matchers"] = [MatcherModel.model_validate(m) for m in data["matchers"]]
        data["time_intervals"] = [TimeIntervalEntry.model_validate(t) for t in data.get("time_intervals", [])]
        return cls(**data)


def validate(body: PostableSilence, now: float) -> tuple[list[MatcherModel], float, float]:
    """Alertmanager's checks on a new or changed silence; returns its matchers and clamped times."""
    if not body.matchers:
        raise SilenceError("at least one matcher required")
    compiled = []
    for m in body.matchers:
        try:
            compiled.append(m.matcher())
        except MatcherError as exc:
            raise SilenceError(f"invalid label matcher: {exc}") from None
    if all(matcher.matches({}) for matcher in compiled):
        # As Alertmanager: at least one matcher must need a label, or the silence would mute every alert.
        raise SilenceError("at least one matcher must not match the empty string")
    starts, ends = body.startsAt.timestamp(), body.endsAt.timestamp()
    if ends < starts:
        raise SilenceError("end time must not be before start time")
    if ends < now:
        raise SilenceError("end time can't be in the past")
    return body.matchers, max(starts, now), ends


class SilenceStore:
    """Silences in one Redis hash (id -> JSON), shared by replicas; a small local cache per read."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.key = keys.silences

    async def all(self, now: float) -> list[Silence]:
        """Every silence not yet past its retention (older expired ones are removed as they are seen)."""
        raw = await self.redis.hgetall(self.key)
        out, gone = [], []
        for sid, data in raw.items():
            try:
                silence = Silence.loads(data)
            except (ValueError, KeyError, TypeError, ValidationError):
                gone.append(sid)  # unreadable: never silences anything
                continue
            if silence.ends_at < now - RETENTION:
                gone.append(sid)
                continue
            out.append(silence)
        if gone:
            await self.redis.hdel(self.key, *gone)
        return sorted(out, key=lambda s: (s.starts_at, s.id))

    async def get(self, silence_id: str, now: float) -> Silence:
        data = await self.redis.hget(self.key, silence_id)
        if data is None:
            raise SilenceNotFound(silence_id)
        return Silence.loads(data)

    async def put(self, body: PostableSilence, now: float) -> str:
        """Create a silence, or change one (`body.id`): in place while it is not expired and its matchers
        and start are unchanged (as Alertmanager), otherwise the old one expires and a new id is made."""
        matchers, starts, ends = validate(body, now)
        sid = str(uuid.uuid4())
        if body.id:
            old = await self.get(body.id, now)
            state = old.state(now)
            same = [m.model_dump() for m in old.matchers] == [m.model_dump() for m in matchers]
            # An active silence keeps its id when only its end or comment change (its start, as sent, stays).
            keeps_start = state == "pending" or body.startsAt.timestamp() <= old.starts_at
            if state != "expired" and same and keeps_start:
                sid, starts = old.id, (starts if state == "pending" else old.starts_at)
            elif state != "expired":
                await self.expire(old.id, now)
        silence = Silence(
            sid, matchers, starts, ends, body.createdBy, body.comment, now, list(body.timeIntervals)
        )
        await self.redis.hset(self.key, sid, silence.dumps())
        return sid

    async def expire(self, silence_id: str, now: float) -> None:
        """End a silence now (a pending one never starts)."""
        silence = await self.get(silence_id, now)
        if silence.state(now) == "expired":
            raise SilenceError(f"silence {silence_id} already expired")
        if silence.state(now) == "pending":
            silence.starts_at = now
        silence.ends_at, silence.updated_at = now, now
        await self.redis.hset(self.key, silence_id, silence.dumps())


def muted_by(silences: list[Silence], labels: dict[str, str], now: float) -> list[str]:
    """Ids of the silences that mute an alert with `labels` at `now`."""
    return [s.id for s in silences if s.mutes(labels, now)]
