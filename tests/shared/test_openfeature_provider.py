"""The OpenFeature provider, registered with the real openfeature SDK and queried through its client, over
a real Redis: cache loaded at start, changes pushed within a second, type mismatches, and what an app sees
while tripwire's Redis is stopped, was never reachable, or dropped the listener's connection."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis as sync_redis
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus
from openfeature.provider.no_op_provider import NoOpProvider
from redis.asyncio import Redis

from shared.clock import FakeClock
from shared.flag_store import FlagStore
from shared.openfeature_provider import TripwireProvider
from shared.streams import Keys
from tests.polling import eventually

T0 = 1_700_000_000.0
MakeProvider = Callable[..., tuple[TripwireProvider, OpenFeatureClient]]


def holds(condition: Callable[[], object]) -> Callable[[], Any]:
    """A synchronous condition as a probe for `eventually`."""

    async def probe() -> object:
        return condition()

    return probe


@pytest.fixture
def make_provider() -> Iterator[MakeProvider]:
    """Register TripwireProviders with `api.set_provider` (a domain each, so tests do not share the
    global registry), wait until the SDK reports them ready, and shut them down afterwards."""
    made: list[tuple[TripwireProvider, str]] = []

    def make(source: str | sync_redis.Redis, prefix: str, **options: Any):
        provider = TripwireProvider(source, prefix, **options)
        domain = f"tripwire-test-{uuid.uuid4().hex[:8]}"
        made.append((provider, domain))
        api.set_provider(provider, domain)  # initialize runs on the SDK's own thread
        client = api.get_client(domain)
        deadline = time.monotonic() + 10
        while client.get_provider_status() != ProviderStatus.READY:
            assert time.monotonic() < deadline, f"provider not ready: {client.get_provider_status()}"
            time.sleep(0.01)
        return provider, client

    yield make
    for provider, domain in made:
        provider.shutdown()
        api.set_provider(NoOpProvider(), domain)


@pytest.fixture
def store(redis: Redis, keys: Keys) -> FlagStore:
    return FlagStore(redis, keys, FakeClock(T0))


async def test_unknown_flags_get_the_callers_default_with_flag_not_found(
    redis_server, keys: Keys, store: FlagStore, make_provider: MakeProvider
):
    _, client = make_provider(redis_server.url, keys.prefix)
    assert client.get_boolean_value("no-such-flag", True) is True
    details = client.get_boolean_details("no-such-flag", False)
    assert (details.value, details.reason, details.error_code) == (
        False,
        Reason.ERROR,
        ErrorCode.FLAG_NOT_FOUND,
    )
    assert details.error_message is not None
    assert "no-such-flag" in details.error_message


async def test_flags_set_before_start_are_served_from_the_loaded_cache(
    redis_server, keys: Keys, store: FlagStore, make_provider: MakeProvider
):
    await store.set("checkout", False, actor="tripwire", reason="kill")
    await store.set("search", True, actor="oncall", reason="on")
    _, client = make_provider(redis_server.url, keys.prefix)
    details = client.get_boolean_details("checkout", True)
    assert (details.value, details.reason, details.variant, details.error_code) == (
        False,
        Reason.STATIC,
        "off",
        None,
    )
    assert details.flag_metadata == {"version": 1, "updated_at": T0}
    assert client.get_boolean_value("search", False) is True


async def test_a_change_through_the_store_reaches_the_app_within_a_second(
    redis_server, keys: Keys, store: FlagStore, make_provider: MakeProvider
):
    await store.set("payments", True, actor="setup", reason="on")
    _, client = make_provider(redis_server.url, keys.prefix)
    changed: list[list[str] | None] = []
    client.add_handler(
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, lambda d: changed.append(d.flags_changed)
    )
    assert client.get_boolean_value("payments", False) is True

    # The store writes through its own connection; the provider only hears of it through pub/sub.
    await store.set("payments", False, actor="tripwire", reason="HighErrorRate firing")
    await eventually(
        holds(lambda: client.get_boolean_value("payments", True) is False),
        timeout=1.0,
        interval=0.005,
        what="the kill to reach the app",
    )
    details = client.get_boolean_details("payments", True)
    assert (details.reason, details.flag_metadata["version"]) == (Reason.STATIC, 2)
    await eventually(holds(lambda: ["payments"] in changed), timeout=1.0, what="a configuration event")

    # A flag created after start is pushed the same way.
    await store.set("brand-new", True, actor="api", reason="create")
    await eventually(holds(lambda: client.get_boolean_value("brand-new", False) is True), timeout=1.0)


@pytest.mark.parametrize(
    ("method", "default"),
    [
        ("get_string_details", "fallback"),
        ("get_integer_details", 7),
        ("get_float_details", 0.5),
        ("get_object_details", {"a": 1}),
    ],
)
async def test_non_boolean_evaluations_are_type_mismatches(
    redis_server, keys: Keys, store: FlagStore, make_provider: MakeProvider, method: str, default: Any
):
    await store.set("checkout", False, actor="x", reason="y")
    _, client = make_provider(redis_server.url, keys.prefix)
    details = getattr(client, method)("checkout", default)
    assert (details.value, details.reason, details.error_code) == (
        default,
        Reason.ERROR,
        ErrorCode.TYPE_MISMATCH,
    )


async def test_get_string_value_returns_the_default_on_a_boolean_flag(
    redis_server, keys: Keys, store: FlagStore, make_provider: MakeProvider
):
    await store.set("checkout", True, actor="x", reason="y")
    _, client = make_provider(redis_server.url, keys.prefix)
    assert client.get_string_value("checkout", "fallback") == "fallback"


async def test_resolution_is_a_local_lookup(
    redis_server, keys: Keys, store: FlagStore, make_provider: MakeProvider
):
    await store.set("hot-path", True, actor="x", reason="y")
    provider, _ = make_provider(redis_server.url, keys.prefix)
    n = 50_000
    started = time.perf_counter()
    for _ in range(n):
        provider.resolve_boolean_details("hot-path", False)
    per_call = (time.perf_counter() - started) / n
    # A Redis round trip costs tens of microseconds even on localhost; a dict lookup well under one.
    assert per_call < 20e-6, f"{per_call * 1e6:.1f}µs per resolution"


async def test_redis_stopped_serves_the_last_values_as_stale_and_recovers(private_redis, make_provider):
    keys = Keys(prefix="stale")
    writer = Redis.from_url(private_redis.url)
    await FlagStore(writer, keys, FakeClock(T0)).set("checkout", False, actor="tripwire", reason="kill")
    await writer.aclose()
    _, client = make_provider(private_redis.url, keys.prefix)
    statuses: list[ProviderEvent] = []
    for event in (ProviderEvent.PROVIDER_STALE, ProviderEvent.PROVIDER_READY):
        client.add_handler(event, lambda d, e=event: statuses.append(e))
    assert client.get_boolean_details("checkout", True).reason == Reason.STATIC

    private_redis.stop()
    await eventually(
        holds(lambda: client.get_boolean_details("checkout", True).reason == Reason.STALE),
        what="the provider to notice Redis is gone",
    )
    details = client.get_boolean_details("checkout", True)
    assert (details.value, details.error_code) == (False, None)  # the kill holds while Redis is away
    never_seen = client.get_boolean_details("never-seen", True)
    assert (never_seen.value, never_seen.reason, never_seen.error_code) == (
        True,
        Reason.ERROR,
        ErrorCode.GENERAL,
    )
    await eventually(holds(lambda: client.get_provider_status() == ProviderStatus.STALE))

    private_redis.start()
    await eventually(
        holds(lambda: client.get_boolean_details("checkout", True).reason == Reason.STATIC),
        what="the provider to reconnect",
    )
    await eventually(holds(lambda: client.get_provider_status() == ProviderStatus.READY))
    assert ProviderEvent.PROVIDER_STALE in statuses
    # Changes flow again after the reconnection.
    writer = Redis.from_url(private_redis.url)
    await FlagStore(writer, keys, FakeClock(T0)).set("checkout", True, actor="oncall", reason="fixed")
    await writer.aclose()
    await eventually(holds(lambda: client.get_boolean_value("checkout", False) is True), timeout=1.0)


async def test_redis_down_at_startup_never_raises_and_loads_when_it_comes(private_redis):
    keys = Keys(prefix="late")
    writer = Redis.from_url(private_redis.url)
    await FlagStore(writer, keys, FakeClock(T0)).set("checkout", False, actor="tripwire", reason="kill")
    await writer.aclose()
    private_redis.stop()

    provider = TripwireProvider(private_redis.url, keys.prefix, init_timeout=0.5)
    domain = f"tripwire-test-{uuid.uuid4().hex[:8]}"
    try:
        api.set_provider_and_wait(provider, domain)  # must not raise: the app starts without tripwire
        client = api.get_client(domain)
        details = client.get_boolean_details("checkout", True)
        assert (details.value, details.reason, details.error_code) == (True, Reason.ERROR, ErrorCode.GENERAL)
        assert details.error_message is not None
        assert "never seen" in details.error_message
        await eventually(
            holds(lambda: client.get_provider_status() == ProviderStatus.ERROR), what="an ERROR status"
        )

        private_redis.start()
        await eventually(
            holds(lambda: client.get_boolean_value("checkout", True) is False), what="the flags to load"
        )
        await eventually(holds(lambda: client.get_provider_status() == ProviderStatus.READY))
    finally:
        provider.shutdown()
        api.set_provider(NoOpProvider(), domain)


@pytest.mark.parametrize("source", ["url", "borrowed client with redis-py's default retries"])
async def test_changes_missed_while_disconnected_are_picked_up_by_a_full_reload(
    private_redis, make_provider: MakeProvider, source: str
):
    keys = Keys(prefix="missed")
    admin = Redis.from_url(private_redis.url)
    await FlagStore(admin, keys, FakeClock(T0)).set("checkout", True, actor="x", reason="on")
    borrowed = None if source == "url" else sync_redis.Redis.from_url(private_redis.url)
    provider, client = make_provider(borrowed or private_redis.url, keys.prefix)
    assert client.get_boolean_value("checkout", False) is True

    # A change nobody announced (as if its message was published while the listener was away) ...
    state = {"enabled": False, "version": 2, "updated_at": T0, "updated_by": "x", "reason": "missed"}
    await admin.hset(keys.flags, "checkout", orjson.dumps(state))
    assert client.get_boolean_value("checkout", False) is True
    # ... and the listener's connection dropped: it must reconnect and reload everything.
    assert await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
    await eventually(
        holds(lambda: client.get_boolean_value("checkout", True) is False), what="a reload after reconnect"
    )
    await admin.aclose()
    provider.shutdown()  # before closing the client it borrows
    if borrowed is not None:
        borrowed.close()


async def test_a_message_older_than_the_cache_is_checked_against_redis(
    redis: Redis, redis_server, keys: Keys, store: FlagStore, make_provider: MakeProvider
):
    await store.set("checkout", True, actor="x", reason="on")
    await store.set("checkout", False, actor="x", reason="off")  # version 2
    _, client = make_provider(redis_server.url, keys.prefix)

    def announce(key: str, enabled: bool, version: int) -> dict[str, Any]:
        return {"key": key, "enabled": enabled, "version": version, "at": T0}

    # A late duplicate of version 1 must not resurrect the old state ...
    await redis.publish(keys.flag_changes, orjson.dumps(announce("checkout", True, 1)))
    # ... (messages are handled in order: once this one shows, the one before was handled too)
    await store.set("marker", True, actor="x", reason="y")
    await eventually(holds(lambda: client.get_boolean_value("marker", False) is True))
    assert client.get_boolean_value("checkout", True) is False

    # ... but a store that was wiped restarts at version 1, and then Redis says so.
    wiped = {"enabled": True, "version": 1, "updated_at": T0, "updated_by": "x", "reason": "after wipe"}
    await redis.hset(keys.flags, "checkout", orjson.dumps(wiped))
    await redis.publish(keys.flag_changes, orjson.dumps(announce("checkout", True, 1)))
    await eventually(holds(lambda: client.get_boolean_value("checkout", False) is True))


async def test_garbage_on_the_channel_is_ignored(
    redis: Redis, redis_server, keys: Keys, store: FlagStore, make_provider: MakeProvider
):
    provider, client = make_provider(redis_server.url, keys.prefix)
    await redis.publish(keys.flag_changes, b"{not json")
    await redis.publish(
        keys.flag_changes, orjson.dumps({"key": "x", "enabled": "yes", "version": 1, "at": 0})
    )
    await store.set("after", False, actor="x", reason="y")
    await eventually(holds(lambda: client.get_boolean_value("after", True) is False))
    assert provider.live
    assert client.get_boolean_details("x", True).error_code == ErrorCode.FLAG_NOT_FOUND


async def test_shutdown_stops_the_listener_and_keeps_answering(
    redis_server, keys: Keys, store: FlagStore, make_provider: MakeProvider
):
    await store.set("checkout", False, actor="x", reason="y")
    provider, _ = make_provider(redis_server.url, keys.prefix)
    thread = provider._thread
    assert thread is not None
    assert thread.is_alive()
    provider.shutdown()
    provider.shutdown()  # idempotent
    assert not thread.is_alive()
    assert not provider.live
    # The app keeps its last values (marked stale) rather than failing.
    details = provider.resolve_boolean_details("checkout", True)
    assert (details.value, details.reason) == (False, Reason.STALE)


async def test_a_silent_connection_is_noticed_by_pings(private_redis, make_provider: MakeProvider):
    """A connection that stays open but gets no answers (a partition, a hung server) is not trusted."""
    keys = Keys(prefix="silent")
    admin = Redis.from_url(private_redis.url)
    await FlagStore(admin, keys, FakeClock(T0)).set("checkout", False, actor="x", reason="kill")
    provider, client = make_provider(private_redis.url, keys.prefix, ping_interval=0.2)
    # Redis holds every client's commands (the listener's PINGs too) for 3 seconds.
    await admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")
    await eventually(
        holds(lambda: client.get_boolean_details("checkout", True).reason == Reason.STALE),
        timeout=2.5,
        what="the unanswered pings to mark the cache stale",
    )
    assert client.get_boolean_value("checkout", True) is False
    await eventually(holds(lambda: provider.live), what="recovery once Redis answers again")
    await admin.aclose()
