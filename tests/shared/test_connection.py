"""The services' Redis client: one retry after a connection error, none after a timeout."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.connection import redis_client
from shared.streams import Keys
from tests.polling import eventually

# Keeps a single-threaded Redis busy (DEBUG SLEEP is disabled by default since Redis 7); TIME advances.
BUSY_FOR_600_MS = """
local start = redis.call('TIME')
while true do
    local now = redis.call('TIME')
    if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > 600000 then return 1 end
end
"""


async def test_a_timed_out_xadd_is_not_sent_again(make_config, redis_server, redis: Redis, keys: Keys):
    # Redis busy for longer than the client waits: the XADD times out but Redis applies it afterwards.
    # A retry sent it again, and that one succeeded once Redis was free: the batch was stored twice.
    client = redis_client(make_config(redis={"socket_timeout": 0.3}))
    probe = Redis.from_url(redis_server.url, socket_timeout=0.1)
    stream = keys.metrics
    try:
        await client.ping()  # connected before Redis is made busy
        await probe.ping()
        busy = asyncio.create_task(redis.eval(BUSY_FOR_600_MS, 0))
        await eventually(lambda: _busy(probe), timeout=5, what="Redis to be running the script")
        with pytest.raises(RedisTimeoutError):
            await client.xadd(stream, {b"data": b"batch"})
        await busy
        # The timed-out XADD is applied once Redis reads it, a moment after the script: wait for it, then
        # make sure no second one follows (a command sent after it is answered after it).
        await eventually(lambda: _stored(redis, stream), timeout=5, what="the XADD to be applied")
        await client.ping()
        assert await redis.xlen(stream) == 1
    finally:
        await client.aclose()
        await probe.aclose()


async def _busy(probe: Redis) -> bool:
    try:
        await probe.ping()
    except RedisTimeoutError:
        return True
    return False


async def _stored(redis: Redis, stream: str) -> bool:
    return await redis.xlen(stream) >= 1
