"""The kill switch's decisions: may this alert turn this flag off, now?

`decide` is the pure rule (no clock, no Redis): automation only ever turns flags off, only for an alert that
has fired `min_firing_for`, never twice for one flag within its `cooldown`, and never more than `max_flips`
flips per `max_flips_window` for all flags together (a global breaker: many flags at once means monitoring
broke, so stop and page). `DecisionLog` applies it atomically in Redis (WATCH/MULTI, so two replicas cannot
both take the last flip the breaker allows) and remembers every decision by id, so a delivery replayed after
a crash finds its decision instead of taking a new one: a flip is decided once and carried out once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from shared.durations import format_duration
from shared.streams import Keys

Action = Literal["flip", "dry_run", "refused", "wait"]
AUDIT_MAXLEN = 100_000


@dataclass(frozen=True)
class Guardrails:
    min_firing_for: float = 0.0
    dry_run: bool = False
    cooldown: float = 3600.0
    max_flips: int = 3
    max_flips_window: float = 3600.0


@dataclass(frozen=True)
class Trigger:
    """The alert that asks for the flip: the group's longest-firing one."""

    fingerprint: str
    alertname: str
    starts_at: float
    value: str
    labels: dict[str, str]


def decide(
    trigger: Trigger, rails: Guardrails, now: float, last_flip: float | None, recent_flips: int
) -> tuple[Action, str]:
    """What to do about one flag for one firing alert, and why (the reason is audited as is)."""
    firing_for = now - trigger.starts_at
    if firing_for < rails.min_firing_for:
        return "wait", (
            f"{trigger.alertname} has fired for {format_duration(max(firing_for, 0))}, "
            f"less than min_firing_for {format_duration(rails.min_firing_for)}"
        )
    if last_flip is not None and now - last_flip < rails.cooldown:
        return "refused", (
            f"cooldown: this flag was turned off {format_duration(now - last_flip)} ago "
            f"(cooldown {format_duration(rails.cooldown)})"
        )
    if recent_flips >= rails.max_flips:
        return "refused", (
            f"breaker open: {recent_flips} flips in the last {format_duration(rails.max_flips_window)} "
            f"(max_flips {rails.max_flips}); many flags at once usually means monitoring broke, not the apps"
        )
    if rails.dry_run:
        return "dry_run", "dry_run: the flag would have been turned off"
    return "flip", f"{trigger.alertname} has fired for {format_duration(firing_for)}"


@dataclass
class Decision:
    """One decision about one flag, remembered by id (`outcome` is filled in once it is carried out)."""

    id: str
    action: Action
    reason: str
    flag: str
    environment: str | None
    project: str | None
    provider: str
    receiver: str
    group_key: str
    trigger: Trigger
    at: float
    outcome: str = ""  # flipped | already_off | refused_by_provider | failed | dry_run | refused | abandoned
    response: dict[str, Any] = field(default_factory=dict)
    integration: str = ""  # e.g. flag_off[0]: which config of the receiver decided (for the re-enable)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> Decision:
        data = orjson.loads(raw)
        data["trigger"] = Trigger(**data["trigger"])
        return cls(**data)

    @property
    def flag_id(self) -> str:
        """The flag as the breaker and cooldown count it: provider, project, environment, key (the built-in
        store has no projects or environments: its key alone names the flag)."""
        if self.provider == "builtin":
            return f"builtin///{self.flag}"
        return f"{self.provider}/{self.project or ''}/{self.environment or ''}/{self.flag}"

    @property
    def done(self) -> bool:
        return bool(self.outcome)


class DecisionLog:
    """Decisions, flips for cooldown and breaker, and the audit stream, in Redis (one hash tag, so the
    bookkeeping of a decision is one transaction). Dry runs keep their own cooldown and breaker, so shadow
    mode reports what the real mode would have done."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.audit = keys.audit
        base = f"{keys.audit}:killswitch"
        self.decisions = f"{base}:decisions"
        self.pending_key = f"{base}:pending"  # group key -> ids of flips decided but not finished

    def _flips(self, dry_run: bool) -> tuple[str, str]:
        mode = "dry" if dry_run else "real"
        return f"{self.audit}:killswitch:{mode}:last-flip", f"{self.audit}:killswitch:{mode}:flips"

    async def get(self, decision_id: str) -> Decision | None:
        raw = await self.redis.hget(self.decisions, decision_id)
        return Decision.from_json(raw) if raw else None

    async def decide(self, draft: Decision, rails: Guardrails, now: float) -> Decision:
        """The decision with `draft.id`: the one already taken (a replay after a crash), else a new one taken
        against the current cooldown and breaker and recorded with them in one transaction. `wait` is not
        recorded (it is asked again later)."""
        last_key, flips_key = self._flips(rails.dry_run)
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(self.decisions, last_key, flips_key)
                    existing = await pipe.hget(self.decisions, draft.id)
                    if existing:
                        return Decision.from_json(existing)
                    last = await pipe.hget(last_key, draft.flag_id)
                    recent = await pipe.zcount(flips_key, now - rails.max_flips_window, "+inf")
                    action, reason = decide(draft.trigger, rails, now, float(last) if last else None, recent)
                    decision = Decision(**{**asdict(draft), "trigger": draft.trigger, "action": action})
                    decision.reason = reason
                    if action == "wait":
                        return decision
                    pipe.multi()
                    pipe.hset(self.decisions, decision.id, decision.to_json())
                    if action == "flip":
                        pipe.sadd(f"{self.pending_key}:{decision.group_key}", decision.id)
                    if action in ("flip", "dry_run"):
                        pipe.hset(last_key, decision.flag_id, now)
                        pipe.zadd(flips_key, {decision.id: now})
                        pipe.zremrangebyscore(flips_key, "-inf", now - max(rails.max_flips_window, 86400))
                    await pipe.execute()
                    return decision
                except WatchError:
                    continue  # another replica decided meanwhile: look again

    async def finish(
        self, decision: Decision, outcome: str, response: dict[str, Any], actor: str, now: float
    ) -> None:
        """Record how a decision ended and append it to the audit stream, in one transaction."""
        decision.outcome, decision.response = outcome, response
        entry = audit_fields(decision, outcome, actor, now)
        _, flips_key = self._flips(decision.action == "dry_run")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.decisions, decision.id, decision.to_json())
            pipe.srem(f"{self.pending_key}:{decision.group_key}", decision.id)
            if decision.action == "flip" and outcome not in ("flipped", "flip_unconfirmed"):
                # The breaker counts flips made, not attempts: nothing was turned off, give the slot back.
                pipe.zrem(flips_key, decision.id)
            pipe.xadd(self.audit, entry, maxlen=AUDIT_MAXLEN, approximate=True)
            await pipe.execute()

    async def pending(self, group_key: str) -> list[Decision]:
        """Flips decided for a group but not finished (still retrying)."""
        ids = await self.redis.smembers(f"{self.pending_key}:{group_key}")
        found = [await self.get(i.decode()) for i in ids]
        return [d for d in found if d is not None and not d.done]

    async def record(
        self, decision: Decision, outcome: str, actor: str, response: dict[str, Any], now: float
    ) -> None:
        """Append an event about a decision to the audit stream (e.g. a human's re-enable)."""
        event = Decision(**{**asdict(decision), "trigger": decision.trigger})
        event.outcome, event.response = outcome, response
        entry = audit_fields(event, outcome, actor, now)
        await self.redis.xadd(self.audit, entry, maxlen=AUDIT_MAXLEN, approximate=True)


def audit_fields(decision: Decision, outcome: str, actor: str, at: float) -> dict[str, str]:
    """One audit entry: all it takes to answer "why was this flag turned off, by what, and did it work"."""
    return {
        "at": f"{at:.3f}",
        "decision": decision.id,
        "outcome": outcome,
        "action": decision.action,
        "reason": decision.reason,
        "flag": decision.flag,
        "environment": decision.environment or "",
        "project": decision.project or "",
        "provider": decision.provider,
        "receiver": decision.receiver,
        "group_key": decision.group_key,
        "alert_fingerprint": decision.trigger.fingerprint,
        "rule": decision.trigger.alertname,
        "value": decision.trigger.value,
        "actor": actor,
        "provider_response": orjson.dumps(decision.response).decode(),
    }
