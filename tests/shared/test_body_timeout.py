"""Every endpoint that reads a request body whole gives up after http.body_timeout with a 408: a client
trickling a body held its connection for ever, and five of them kept an evaluator at 503 once
http.max_connections were open (helper-49's review)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from services.evaluator.app import build as build_evaluator
from shared.clock import FakeClock
from tests.notifier.running import running_notifier


def _trickle(first: bytes) -> AsyncIterator[bytes]:
    """A body that sends its first bytes and then nothing (the test's end closes it)."""

    async def body() -> AsyncIterator[bytes]:
        yield first
        await asyncio.Event().wait()

    return body()


async def _posted_slowly(client: TestClient, method: str, path: str, first: bytes, **headers: str) -> object:
    response = await asyncio.wait_for(
        client.request(method, path, data=_trickle(first), headers=headers), timeout=10
    )
    return response.status, (await response.json())["errorType"]


async def test_the_evaluators_query_endpoint_gives_up_on_a_slow_body(make_config):
    config = make_config(http={"body_timeout": "300ms"})
    app = build_evaluator(config, FakeClock(1_700_000_000.0))
    client = TestClient(TestServer(app.service.web))
    await client.start_server()
    try:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert await _posted_slowly(client, "POST", "/api/v1/query", b"query=up", **form) == (408, "timeout")
    finally:
        await client.close()
        await app.service.redis.aclose()


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/api/v2/alerts", {"Content-Type": "application/json"}),
        ("POST", "/api/v2/silences", {"Content-Type": "application/json"}),
        ("PUT", "/api/v1/flags/checkout", {"Content-Type": "application/json"}),
        (
            "POST",
            "/slack/actions",
            {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "100"},
        ),
    ],
)
async def test_the_notifiers_endpoints_give_up_on_a_slow_body(make_config, method, path, headers):
    config = make_config(http={"body_timeout": "300ms"})
    config.slack_signing_secret = SecretStr("s" * 32)
    async with running_notifier(config, consume=False) as (_app, client):
        assert await _posted_slowly(client, method, path, b"[", **headers) == (408, "timeout")
