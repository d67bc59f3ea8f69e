from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from shared.streams import Keys
from tests.fakes.webhook import FakeWebhook
from tests.redis_server import ContainerRedisServer, LocalRedisServer, make_server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedisServer | ContainerRedisServer]:
    """One real Redis for the session; tests isolate themselves with a key prefix each."""
    server = make_server()
    yield server
    server.close()


@pytest.fixture
def private_redis() -> Iterator[LocalRedisServer | ContainerRedisServer]:
    """A Redis of this test's own, for tests that stop, kill or wipe it."""
    server = make_server()
    yield server
    server.close()


@pytest.fixture
def keys() -> Keys:
    """A key prefix of this test's own: parallel-safe isolation on a shared server."""
    return Keys(prefix=f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def redis(redis_server: LocalRedisServer | ContainerRedisServer, keys: Keys) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    # Leave the shared server clean: drop every key of this test's prefix.
    async for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
async def webhook() -> AsyncIterator[FakeWebhook]:
    """A local webhook receiver that validates payloads, logs requests and can inject failures."""
    fake = await FakeWebhook().start()
    yield fake
    await fake.stop()


@pytest.fixture
def make_config(redis_server, keys: Keys):
    """Build a Config on the shared test Redis with this test's key prefix; nested dicts override defaults."""
    from shared.config import Config

    def build(**overrides: object) -> Config:
        data: dict[str, object] = {
            "redis": {"url": redis_server.url, "prefix": keys.prefix},
            "streams": {"consumer_name": "test"},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}  # type: ignore[dict-item]
            else:
                data[key] = value
        return Config.model_validate(data)

    return build
