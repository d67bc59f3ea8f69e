"""One active evaluator among replicas: a Redis lease with renewal and a fencing token.

Each replica tries `SET lease <id>:<token> NX PX ttl`; the one that gets it is active: it restores state,
replays the stream tails, consumes and evaluates. The others are standbys that retry every ttl/3, so when the
active one dies its lease expires and a standby takes over within about one ttl. The token comes from INCR on
a counter at each acquisition, so it only ever grows: every write of alert state and alerts is made under
WATCH of the lease key and only if the lease still holds our `<id>:<token>` (see StateStore), so a replica
that paused past its lease (GC, a frozen VM) can never write after a successor took over. An active replica
that cannot renew its lease stops, and its supervisor restarts it as a standby.

The keys carry the `{alerts}` hash tag, like the state and the alerts stream the fence protects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.streams import Keys

log = logging.getLogger(__name__)

# Renew only if the lease is still ours (an expired-and-retaken lease must not be extended).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Take back a lease whose value starts with our holder id (ARGV[1]) under a new token.
_RECLAIM = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseLost(RuntimeError):
    """The active replica could not renew its lease; it must stop acting as the active one."""


@dataclass
class Lease:
    redis: Redis
    keys: Keys
    ttl: float
    # Unique per replica and stable across its restarts (the consumer name), so a crashed replica that comes
    # back takes its own lease back at once.
    holder: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    value: str | None = None  # "<holder>:<token>" while we hold it
    registry: CollectorRegistry | None = None

    def __post_init__(self) -> None:
        self.active = Gauge(
            "tripwire_evaluator_active",
            "1 while this evaluator holds the lease and evaluates, 0 while it is a standby.",
            registry=self.registry,
        )

    @property
    def key(self) -> str:
        return self.keys.evaluator_lease

    async def try_acquire(self) -> bool:
        """One attempt; True if we hold the lease now. A lease still held under our own holder id (this
        replica, restarted after a crash) is taken back at once rather than waited out."""
        token = await self.redis.incr(self.keys.evaluator_lease_token)
        value = f"{self.holder}:{token}"
        ttl_ms = int(self.ttl * 1000)
        taken = await self.redis.set(self.key, value, nx=True, px=ttl_ms)
        if not taken:
            taken = bool(await self.redis.eval(_RECLAIM, 1, self.key, f"{self.holder}:", value, ttl_ms))
        if taken:
            self.value = value
            self.active.set(1)
            log.info("evaluator lease acquired; this replica is active", extra={"lease": value})
            return True
        return False

    async def acquire(self) -> None:
        """Wait until we hold the lease (a standby until then)."""
        current = await self.redis.get(self.key)
        if current is not None:
            log.info(
                "another evaluator holds the lease; standing by",
                extra={"holder": current.decode(errors="replace"), "retry_every": round(self.ttl / 3, 2)},
            )
        # Polling Redis: there is no local event to wait on.
        while not await self._attempt():  # noqa: ASYNC110
            await asyncio.sleep(self.ttl / 3)

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire()
        except RedisError as exc:
            log.warning("cannot reach Redis for the evaluator lease; retrying", extra={"error": str(exc)})
            return False

    async def renew(self) -> bool:
        if self.value is None:
            return False
        return bool(await self.redis.eval(_RENEW, 1, self.key, self.value, int(self.ttl * 1000)))

    async def keep(self) -> None:
        """Renew every ttl/3 while active; raises LeaseLost when the lease is gone or cannot be renewed
        before it would expire."""
        deadline = asyncio.get_running_loop().time() + self.ttl
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                renewed = await self.renew()
            except RedisError as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise LeaseLost(f"could not renew the evaluator lease: {exc}") from None
                continue
            if not renewed:
                self.active.set(0)
                raise LeaseLost("the evaluator lease was lost (expired or taken over)")
            deadline = asyncio.get_running_loop().time() + self.ttl

    async def release(self) -> None:
        """Give the lease up at a clean stop, so a standby takes over at once instead of after the ttl."""
        if self.value is not None:
            with contextlib.suppress(RedisError):  # it expires by itself anyway
                await self.redis.eval(_RELEASE, 1, self.key, self.value)
            self.value = None
            self.active.set(0)
