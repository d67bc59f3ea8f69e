"""Alert state and alert publication in Redis, written together.

With several replicas, every write is fenced by the evaluator lease (services/evaluator/lease.py).

Each tick of a group writes the group's whole alert state (a hash, one field per rule and fingerprint) and the
batch of alerts to send (one entry on the alerts stream) in one MULTI. The keys share the `{alerts}` hash tag,
so the transaction stays valid on Redis Cluster. After a crash, what was published and the state that says it
was published can therefore never disagree.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from services.evaluator.lease import LeaseLost
from shared.codec import encode_batch
from shared.streams import Keys


class FencedOff(LeaseLost):
    """A write refused because this replica no longer holds the evaluator lease."""


class StateStore:
    def __init__(self, redis: Redis, keys: Keys, maxlen: int) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        # The lease value (`<id>:<token>`) every write must still find, when replicas share the state.
        self.fence: str | None = None

    async def load(self, group_key: str) -> dict[str, dict[str, object]]:
        raw = await self.redis.hgetall(self.keys.rule_state(group_key))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def save(
        self,
        group_key: str,
        state: dict[str, dict[str, object]],
        alerts: list[dict[str, object]],
        tick_id: str,
    ) -> None:
        """Replace the group's state and publish `alerts` (if any) atomically."""
        key = self.keys.rule_state(group_key)
        fields = await encode_batch("alerts", orjson.dumps(alerts), tick_id) if alerts else None
        async with self.redis.pipeline(transaction=True) as pipe:
            if self.fence is not None:
                # Fencing: the transaction runs only if the lease is still ours, and fails (WatchError) if it
                # changes hands between this check and EXEC.
                await pipe.watch(self.keys.evaluator_lease)
                holder = await pipe.get(self.keys.evaluator_lease)
                if holder is None or holder.decode() != self.fence:
                    raise FencedOff(f"the evaluator lease is no longer ours (held by {holder!r})")
                pipe.multi()
            pipe.delete(key)
            if state:
                pipe.hset(key, mapping={k: orjson.dumps(v) for k, v in state.items()})
            if fields is not None:
                pipe.xadd(self.keys.alerts, fields, maxlen=self.maxlen, approximate=True)
            await pipe.execute()
