"""The services' Redis client: a command is never sent twice, after a timeout or a dropped connection."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.connection import redis_client
from shared.streams import Keys
from tests.busy_redis import BUSY_FOR_600_MS, redis_is_busy
from tests.polling import eventually


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
        await eventually(lambda: redis_is_busy(probe), timeout=5, what="Redis to be running the script")
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


class ReplyDropper:
    """A TCP proxy to Redis that, once armed, cuts the client's connection instead of relaying the next
    reply: a command Redis applied whose answer was lost on the way."""

    def __init__(self, port: int) -> None:
        self.redis_port = port
        self.armed = False

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if replies and self.armed:
                        self.armed = False
                        client_writer.transport.abort()
                        return
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        await asyncio.gather(
            pump(client_reader, redis_writer, False), pump(redis_reader, client_writer, True)
        )


async def test_a_write_whose_reply_is_lost_is_not_sent_again(
    make_config, redis_server, redis: Redis, keys: Keys
):
    # redis-py retried on a connection error, and a connection that drops after Redis applied the XADD is
    # one: the batch was stored twice, under one 202 (found by review: an increment counted twice).
    proxy = ReplyDropper(redis_server.port)
    port = await proxy.start()
    client = redis_client(make_config(redis={"url": f"redis://127.0.0.1:{port}/0"}))
    try:
        await client.ping()
        proxy.armed = True
        with pytest.raises(RedisConnectionError):
            await client.xadd(keys.metrics, {b"data": b"batch"})
        assert await redis.xlen(keys.metrics) == 1  # applied once; the caller answers 503, the sender retries
        assert await client.ping()  # and the client reconnects for the next command
    finally:
        await client.aclose()
        proxy.server.close()


async def _stored(redis: Redis, stream: str) -> bool:
    return await redis.xlen(stream) >= 1
