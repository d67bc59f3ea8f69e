"""Keeping a real Redis busy for a moment, to test what happens to commands sent while it cannot answer."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

# Keeps a single-threaded Redis busy (DEBUG SLEEP is disabled by default since Redis 7); TIME advances.
BUSY_FOR_600_MS = """
local start = redis.call('TIME')
while true do
    local now = redis.call('TIME')
    if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > 600000 then return 1 end
end
"""


async def redis_is_busy(probe: Redis) -> bool:
    """Whether Redis is too busy to answer `probe` (a client with a short socket timeout) a PING."""
    try:
        await probe.ping()
    except RedisTimeoutError:
        return True
    return False
