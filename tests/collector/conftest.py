"""Fixtures shared by the collector's tests."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from services.collector import publish


@pytest.fixture
def recall_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The idempotency keys the collector looks up in Redis for refused requests (Publisher.recall's GETs),
    in order, while the test runs."""
    lookups: list[str] = []
    real = publish.recall_batch

    async def counted(redis: Redis, stream: str, key: str) -> Any:
        lookups.append(key)
        return await real(redis, stream, key)

    monkeypatch.setattr(publish, "recall_batch", counted)
    return lookups
