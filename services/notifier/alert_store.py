"""Every alert the notifier has received, newest version per fingerprint, for `GET /api/v2/alerts`.

One Redis hash shared by replicas. An older stream entry never replaces a newer version of an alert (entries
can arrive late through re-claim). Resolved alerts are not listed (as Alertmanager's API) and are removed as
writes go by, once resolved for longer than `RESOLVED_RETENTION`.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from shared.alerts import Alert
from shared.streams import Keys, entry_order

RESOLVED_RETENTION = 15 * 60.0


class AlertStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.key = keys.current_alerts

    async def put(self, source: str, alerts: list[Alert], now: float) -> None:
        """Record `alerts` from stream entry `source` (newer versions win), and drop long-resolved ones."""
        if not alerts:
            return
        fps = [a.fingerprint for a in alerts]
        stored = dict(zip(fps, await self.redis.hmget(self.key, fps), strict=True))
        updates: dict[str, bytes] = {}
        for alert in alerts:
            raw = stored.get(alert.fingerprint)
            if raw is not None and entry_order(orjson.loads(raw)["source"]) > entry_order(source):
                continue
            record = {"source": source, "updated": now, "alert": alert.to_wire()}
            updates[alert.fingerprint] = orjson.dumps(record)
        if updates:
            await self.redis.hset(self.key, mapping=updates)

    async def active(self, now: float) -> list[tuple[Alert, float]]:
        """Alerts not yet resolved at `now`, each with when it was last updated, oldest start first."""
        out: list[tuple[Alert, float]] = []
        gone: list[bytes] = []
        for fp, raw in (await self.redis.hgetall(self.key)).items():
            record = orjson.loads(raw)
            alert = Alert.model_validate(record["alert"])
            ended = alert.status == "resolved" or alert.ends_at.timestamp() <= now
            if ended:
                if alert.ends_at.timestamp() < now - RESOLVED_RETENTION:
                    gone.append(fp)
                continue
            out.append((alert, float(record["updated"])))
        if gone:
            await self.redis.hdel(self.key, *gone)
        return sorted(out, key=lambda pair: (pair[0].starts_at, pair[0].fingerprint))
