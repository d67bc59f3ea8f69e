"""GroupConsumer against a real Redis: groups at 0, acks, re-claim, DLQ, recovery after Redis loses data."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from shared.clock import SystemClock
from shared.codec import decode_entry, encode_batch
from shared.config import Config, StreamsConfig
from shared.connection import redis_broker
from shared.consumers import Acker, ConsumerMetrics, Entry, GroupConsumer, ensure_group
from shared.streams import Keys
from tests.polling import eventually


def _config(url: str, **streams: object) -> Config:
    return Config.model_validate({"redis": {"url": url}, "streams": {"consumer_name": "c1", **streams}})


async def _publish(redis: Redis, stream: str, items: list[object]) -> bytes:
    return await redis.xadd(stream, await encode_batch("test", orjson.dumps(items), "cid"))


class Recorder:
    """A handler that records items and acks, or fails while `failing` is set."""

    def __init__(self) -> None:
        self.items: list[object] = []
        self.failing = False
        self.calls = 0

    async def __call__(self, entries: list[Entry], acker: Acker) -> None:
        self.calls += 1
        if self.failing:
            raise RuntimeError("downstream is broken")
        for entry in entries:
            self.items.extend(decode_entry(entry.fields).items)
        await acker.ack(*(e.id for e in entries))


async def _consumer(config: Config, redis: Redis, stream: str, handler: Recorder, clock=None):
    registry = CollectorRegistry()
    broker = redis_broker(config, registry, "test")
    consumer = GroupConsumer(
        broker=broker,
        redis=redis,
        stream=stream,
        group="g",
        handler=handler,
        config=config.streams,
        clock=clock or SystemClock(),
        metrics=ConsumerMetrics(registry),
    )
    await consumer.prepare()
    await broker.start()
    consumer.start_background()
    return broker, consumer


async def test_group_created_at_zero_sees_entries_published_before_it(redis_server, redis, keys: Keys):
    await _publish(redis, keys.metrics, [1, 2])
    handler = Recorder()
    broker, consumer = await _consumer(_config(redis_server.url), redis, keys.metrics, handler)
    try:
        await eventually(lambda: _async(handler.items == [1, 2]), what="entries written before the group")
        await eventually(lambda: _pending_count(redis, keys.metrics, 0), what="everything acked")
    finally:
        await consumer.stop()
        await broker.stop()


async def test_ensure_group_is_idempotent(redis, keys: Keys):
    assert await ensure_group(redis, keys.logs, "g") is True
    assert await ensure_group(redis, keys.logs, "g") is False


async def test_failed_entries_are_reclaimed_then_dead_lettered(redis_server, redis, keys: Keys):
    config = _config(redis_server.url, claim_idle=0.05, reclaim_interval=0.05, max_deliveries=3)
    handler = Recorder()
    handler.failing = True
    broker, consumer = await _consumer(config, redis, keys.metrics, handler)
    try:
        entry_id = await _publish(redis, keys.metrics, ["poison"])
        dlq = Keys.dlq(keys.metrics)
        await eventually(lambda: redis.xlen(dlq), what="the entry in the DLQ")
        ((_, record),) = await redis.xrange(dlq)
        assert record[b"id"] == entry_id
        assert b"downstream is broken" in record[b"error"]
        assert int(record[b"deliveries"]) == 3
        assert decode_entry({b"__data__": record[b"entry:__data__"]}).items == ["poison"]
        # 1 read by the subscriber + re-claims until the 4th delivery, which dead-letters instead.
        assert handler.calls == 3
        assert await _pending_count(redis, keys.metrics, 0)
    finally:
        await consumer.stop()
        await broker.stop()


async def test_transient_failure_is_retried_and_not_lost(redis_server, redis, keys: Keys):
    config = _config(redis_server.url, claim_idle=0.05, reclaim_interval=0.05, max_deliveries=10)
    handler = Recorder()
    handler.failing = True
    broker, consumer = await _consumer(config, redis, keys.metrics, handler)
    try:
        await _publish(redis, keys.metrics, ["a"])
        await eventually(lambda: _async(handler.calls >= 2), what="a retry")
        handler.failing = False
        await eventually(lambda: _async(handler.items == ["a"]), what="the entry processed once")
        await eventually(lambda: _pending_count(redis, keys.metrics, 0), what="the entry acked")
        assert await redis.xlen(Keys.dlq(keys.metrics)) == 0
    finally:
        await consumer.stop()
        await broker.stop()


async def test_restarted_consumer_recovers_its_own_pending_entries(redis_server, redis, keys: Keys):
    # A predecessor with the same consumer name read an entry and died before acking it.
    await ensure_group(redis, keys.metrics, "g")
    await _publish(redis, keys.metrics, ["left-behind"])
    await redis.xreadgroup("g", "c1", {keys.metrics: ">"}, count=10)
    handler = Recorder()
    # claim_idle is long: the entry must come back through recover_own, not through re-claim.
    broker, consumer = await _consumer(
        _config(redis_server.url, claim_idle=3600), redis, keys.metrics, handler
    )
    try:
        await eventually(lambda: _async(handler.items == ["left-behind"]), what="own pending entry recovered")
    finally:
        await consumer.stop()
        await broker.stop()


class Blocking(Recorder):
    """A handler whose first call hangs until released (a webhook retrying for a long time)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, entries: list[Entry], acker: Acker) -> None:
        if self.calls == 0:
            self.calls += 1
            self.started.set()
            await self.release.wait()
            self.calls -= 1
        await super().__call__(entries, acker)


async def test_slow_handler_keeps_its_entry_from_being_reclaimed(redis_server, redis, keys: Keys):
    idle = 0.2
    slow, other = Blocking(), Recorder()
    slow_broker, slow_consumer = await _consumer(
        _config(redis_server.url, claim_idle=idle, reclaim_interval=0.02), redis, keys.metrics, slow
    )
    config_b = Config.model_validate(
        {
            "redis": {"url": redis_server.url},
            "streams": {"consumer_name": "c2", "claim_idle": idle, "reclaim_interval": 0.02},
        }
    )
    other_broker, other_consumer = await _consumer(config_b, redis, keys.metrics, other)
    try:
        await other_consumer.subscriber.stop()  # c2 only sweeps; the entry must reach c1's handler
        await _publish(redis, keys.metrics, ["slow"])
        await asyncio.wait_for(slow.started.wait(), 10)
        started = time.monotonic()
        # Let many claim_idle periods and re-claim sweeps pass while the handler is still busy.
        await eventually(lambda: _async(time.monotonic() - started > 6 * idle), what="time to pass")
        assert other.calls == 0, "another consumer re-claimed an entry that was still being handled"
        assert slow.calls == 1, "the same consumer re-ran an entry that was still being handled"
        slow.release.set()
        await eventually(lambda: _async(slow.items == ["slow"]), what="the slow entry finished")
        await eventually(lambda: _pending_count(redis, keys.metrics, 0), what="the entry acked")
        assert other.items == []
    finally:
        slow.release.set()
        for consumer, broker in ((slow_consumer, slow_broker), (other_consumer, other_broker)):
            await consumer.stop()
            await broker.stop()


@pytest.mark.parametrize("how", ["flush"])
async def test_subscriber_restarts_after_redis_loses_the_group(private_redis, how):
    keys = Keys(prefix="heal")
    config = _config(private_redis.url)
    redis = Redis.from_url(private_redis.url)
    handler = Recorder()
    broker, consumer = await _consumer(config, redis, keys.metrics, handler)
    try:
        await _publish(redis, keys.metrics, ["before"])
        await eventually(lambda: _async(handler.items == ["before"]), what="first entry")
        # Redis restarts without its data: the stream and the group are gone (NOGROUP for the reader).
        await redis.flushall()
        await eventually(
            lambda: _async(not consumer.subscriber.running), what="FastStream to stop on NOGROUP"
        )
        assert consumer.problems()
        await eventually(lambda: _async(consumer.subscriber.running), timeout=15, what="subscriber restarted")
        await _publish(redis, keys.metrics, ["after"])
        await eventually(lambda: _async(handler.items == ["before", "after"]), what="entry after recovery")
        assert consumer.problems() == []
    finally:
        await consumer.stop()
        await broker.stop()
        await redis.aclose()


async def _async(value: object) -> object:
    return value


async def _pending_count(redis: Redis, stream: str, expected: int) -> bool:
    return (await redis.xpending(stream, "g"))["pending"] == expected


def test_streams_config_defaults_are_sane():
    cfg = StreamsConfig()
    assert cfg.claim_idle > 10 and cfg.max_deliveries >= 3
