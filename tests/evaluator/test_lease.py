"""The evaluator lease on a real Redis: one active replica, takeover after expiry, fenced stale writers."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from services.evaluator.lease import Lease, LeaseLost
from services.evaluator.state import FencedOff, StateStore
from shared.streams import Keys
from tests.polling import eventually


async def test_one_holder_at_a_time_and_takeover_after_expiry(redis: Redis, keys: Keys):
    active = Lease(redis, keys, ttl=0.3, holder="eval-a")
    standby = Lease(redis, keys, ttl=0.3, holder="eval-b")
    assert await active.try_acquire()
    assert not await standby.try_acquire()
    # The active replica dies (stops renewing): the standby gets the lease once it expires.
    await eventually(standby.try_acquire, timeout=5, what="the standby to take over")
    assert await active.renew() is False
    token = lambda value: int(value.rsplit(":", 1)[1])  # noqa: E731
    assert token(standby.value) > token(active.value)  # fencing tokens only grow


async def test_a_restarted_replica_takes_its_own_lease_back_at_once(redis: Redis, keys: Keys):
    first = Lease(redis, keys, ttl=30, holder="eval-a")
    assert await first.try_acquire()
    restarted = Lease(redis, keys, ttl=30, holder="eval-a")  # same replica after a SIGKILL
    assert await restarted.try_acquire()
    assert not await Lease(redis, keys, ttl=30, holder="eval-b").try_acquire()


async def test_a_writer_that_lost_the_lease_is_fenced_off(redis: Redis, keys: Keys):
    old = Lease(redis, keys, ttl=0.2, holder="eval-a")
    assert await old.try_acquire()
    store = StateStore(redis, keys, maxlen=1000)
    store.fence = old.value
    await store.save("g", {"r\x1ffp": {"state": "firing"}}, [{"labels": {"alertname": "A"}}], "t1")
    new = Lease(redis, keys, ttl=30, holder="eval-b")
    await eventually(new.try_acquire, timeout=5, what="the takeover")
    with pytest.raises(FencedOff):
        await store.save("g", {}, [{"labels": {"alertname": "A"}}], "t2")
    assert await redis.xlen(keys.alerts) == 1  # the stale writer published nothing


async def test_keep_raises_when_the_lease_is_taken_over(redis: Redis, keys: Keys):
    lease = Lease(redis, keys, ttl=0.3, holder="eval-a")
    assert await lease.try_acquire()
    await redis.set(keys.evaluator_lease, "eval-b:999")  # someone else holds it now
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(lease.keep(), timeout=5)


async def test_release_lets_a_standby_in_at_once(redis: Redis, keys: Keys):
    lease = Lease(redis, keys, ttl=30, holder="eval-a")
    assert await lease.try_acquire()
    await lease.release()
    assert await Lease(redis, keys, ttl=30, holder="eval-b").try_acquire()
