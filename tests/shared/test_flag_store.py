"""The built-in flag store on a real Redis: atomic changes, exactly one message per real change, idempotent
flips, compare-and-set, history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

import shared.flag_store
from shared.clock import FakeClock
from shared.flag_store import FlagConflict, FlagStore, validate_key
from shared.streams import Keys

T0 = 1_700_000_000.123456  # sub-millisecond on purpose: updated_at must come back exactly
DONE = b"test-sentinel"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(redis: Redis, keys: Keys, clock: FakeClock) -> FlagStore:
    return FlagStore(redis, keys, clock)


@pytest.fixture
async def changes(redis: Redis, keys: Keys) -> AsyncIterator[PubSub]:
    """A subscriber to the changes channel, confirmed subscribed before the test writes anything."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.flag_changes)
    confirmation = await pubsub.get_message(timeout=5)
    assert confirmation is not None
    assert confirmation["type"] == "subscribe"
    yield pubsub
    await pubsub.aclose()


async def published(redis: Redis, keys: Keys, pubsub: PubSub) -> list[dict[str, Any]]:
    """Every change message published so far: a sentinel published after them marks the end (a channel
    delivers in order), so no waiting for silence is needed."""
    await redis.publish(keys.flag_changes, DONE)
    out: list[dict[str, Any]] = []
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message is not None, "the sentinel never arrived"
        if message["data"] == DONE:
            return out
        out.append(orjson.loads(message["data"]))


async def test_first_set_creates_the_flag_at_version_1(store: FlagStore, clock: FakeClock):
    assert await store.get("checkout.new-flow") is None
    record = await store.set("checkout.new-flow", False, actor="tripwire", reason="HighErrorRate firing")
    assert record.model_dump() == {
        "key": "checkout.new-flow",
        "enabled": False,
        "version": 1,
        "updated_at": T0,
        "updated_by": "tripwire",
        "reason": "HighErrorRate firing",
    }
    assert await store.get("checkout.new-flow") == record
    assert await store.all() == {"checkout.new-flow": record}


async def test_each_real_change_publishes_exactly_once_and_repeats_are_no_ops(
    redis: Redis, keys: Keys, store: FlagStore, clock: FakeClock, changes: PubSub
):
    first = await store.set("payments", False, actor="tripwire", reason="kill")
    clock.set(T0 + 10)
    repeat = await store.set("payments", False, actor="someone-else", reason="kill again")
    # The repeat returns the record untouched: same version, same author, same time.
    assert repeat == first
    clock.set(T0 + 20)
    back = await store.set("payments", True, actor="oncall", reason="fixed")
    assert (back.version, back.enabled, back.updated_at, back.updated_by) == (2, True, T0 + 20, "oncall")
    assert await store.set("payments", True, actor="oncall", reason="fixed, twice") == back

    assert await published(redis, keys, changes) == [
        {"key": "payments", "enabled": False, "version": 1, "at": T0},
        {"key": "payments", "enabled": True, "version": 2, "at": T0 + 20},
    ]
    assert [c.version for c in await store.history("payments", 10)] == [2, 1]


async def test_expected_version_is_a_compare_and_set(
    redis: Redis, keys: Keys, store: FlagStore, changes: PubSub
):
    # 0 means "must not exist yet".
    created = await store.set("search", True, actor="a", reason="create", expected_version=0)
    with pytest.raises(FlagConflict) as conflict:
        await store.set("search", False, actor="b", reason="stale view", expected_version=0)
    assert (conflict.value.expected, conflict.value.actual) == (0, 1)
    # A conflict is checked before the same-state shortcut: the caller's view is stale either way.
    with pytest.raises(FlagConflict):
        await store.set("search", True, actor="b", reason="stale view", expected_version=5)
    with pytest.raises(FlagConflict, match="version 0, not the expected 3"):
        await store.set("never-set", True, actor="b", reason="x", expected_version=3)

    # Nothing of the refused changes was written, recorded or announced.
    assert await store.get("search") == created
    assert await store.get("never-set") is None
    assert len(await store.history("search", 10)) == 1
    assert await published(redis, keys, changes) == [
        {"key": "search", "enabled": True, "version": 1, "at": T0}
    ]

    changed = await store.set("search", False, actor="b", reason="current view", expected_version=1)
    assert (changed.version, changed.enabled) == (2, False)


async def test_concurrent_writers_on_one_version_exactly_one_wins(store: FlagStore):
    await store.set("race", True, actor="setup", reason="start")
    results = await asyncio.gather(
        *(store.set("race", False, actor=f"w{i}", reason="race", expected_version=1) for i in range(20)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, FlagConflict) for r in results if r not in winners)
    assert (await store.get("race")) == winners[0]
    assert [c.version for c in await store.history("race", 10)] == [2, 1]


async def test_concurrent_identical_flips_change_the_flag_once(store: FlagStore, clock: FakeClock):
    """Two alerts firing the same kill switch at once: one change, one message, one history entry."""
    await asyncio.gather(*(store.set("kill-me", False, actor="tripwire", reason="fire") for _ in range(10)))
    record = await store.get("kill-me")
    assert record is not None
    assert record.version == 1
    assert len(await store.history("kill-me", 10)) == 1


async def test_history_is_per_flag_newest_first_and_limited_by_count(store: FlagStore, clock: FakeClock):
    await store.set("a", True, actor="alice", reason="on")
    clock.set(T0 + 1)
    await store.set("b", False, actor="bob", reason="b off")
    clock.set(T0 + 2)
    await store.set("a", False, actor="tripwire", reason="alert ErrorBudgetBurn firing")
    clock.set(T0 + 3)
    await store.set("a", True, actor="carol", reason="recovered")

    history = await store.history("a", 10)
    assert [(c.previous, c.enabled, c.version, c.at, c.actor, c.reason) for c in history] == [
        (False, True, 3, T0 + 3, "carol", "recovered"),
        (True, False, 2, T0 + 2, "tripwire", "alert ErrorBudgetBurn firing"),
        (None, True, 1, T0, "alice", "on"),
    ]
    assert all(c.key == "a" for c in history)
    assert [c.version for c in await store.history("a", 2)] == [3, 2]
    assert [c.reason for c in await store.history("b", 10)] == ["b off"]
    assert await store.history("never-set", 10) == []
    with pytest.raises(ValueError, match="count"):
        await store.history("a", 0)


async def test_history_pages_past_other_flags_changes(store: FlagStore):
    await store.set("old", False, actor="x", reason="the one to find")
    # More changes of another flag than one page of XREVRANGE holds.
    for i in range(600):
        await store.set("noisy", i % 2 == 0, actor="x", reason=str(i))
    history = await store.history("old", 5)
    assert [(c.reason, c.version) for c in history] == [("the one to find", 1)]


async def test_history_stream_is_capped(
    redis: Redis, keys: Keys, store: FlagStore, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(shared.flag_store, "HISTORY_MAXLEN", 10)
    for i in range(400):
        await store.set("flappy", i % 2 == 0, actor="x", reason=str(i))
    # `MAXLEN ~` trims whole stream nodes (100 entries by default), so the bound is approximate.
    assert await redis.xlen(keys.flag_history) <= 200
    assert (await store.history("flappy", 1))[0].version == 400


@pytest.mark.parametrize("key", ["", "has space", "slash/key", "é", "x" * 201, "star*", "new\nline"])
async def test_invalid_keys_are_refused_with_the_rule(store: FlagStore, key: str):
    with pytest.raises(ValueError, match="1 to 200 characters of letters, digits"):
        await store.set(key, True, actor="x", reason="y")
    with pytest.raises(ValueError, match="invalid flag key"):
        await store.get(key)


def test_valid_keys_use_the_whole_alphabet():
    for key in ["a", "A-z_0.9:x", "x" * 200, "team:checkout.new-flow_v2"]:
        assert validate_key(key) == key


async def test_set_refuses_non_boolean_states(store: FlagStore):
    with pytest.raises(TypeError, match="bool"):
        await store.set("flag", 1, actor="x", reason="y")  # type: ignore[arg-type]
    assert await store.get("flag") is None


async def test_an_unreadable_entry_does_not_hide_the_others(redis: Redis, keys: Keys, store: FlagStore):
    good = await store.set("good", True, actor="x", reason="y")
    await redis.hset(keys.flags, "broken", b"{not json")
    assert await store.all() == {"good": good}
