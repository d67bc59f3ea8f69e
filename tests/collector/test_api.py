"""The collector's HTTP API against a real Redis."""

from __future__ import annotations

import asyncio
import functools
import gzip
import os
import threading
import zlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from redis.asyncio import Redis

from services.collector.app import build
from services.collector.body_budget import stored_bytes
from services.collector.ingest import METRICS, parse_body
from services.local_redis import free_port
from shared.clock import FakeClock
from shared.codec import decode_entry
from shared.config import CollectorConfig, Config
from shared.streams import Keys
from shared.webapp import BODIES_ENCODED, token_client
from tests.busy_redis import BUSY_FOR_600_MS, redis_is_busy
from tests.polling import eventually
from tests.redis_server import LocalRedisServer

JSON_TYPE = {"Content-Type": "application/json"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_763_800_000.0)


async def _client(config: Config, clock: FakeClock) -> AsyncIterator[TestClient]:
    service = build(config, clock)
    await service.start()
    client = TestClient(TestServer(service.web))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await service.stop()


@pytest.fixture
async def client(make_config, clock) -> AsyncIterator[TestClient]:
    async for c in _client(make_config(), clock):
        yield c


async def test_accepted_batch_is_one_entry_in_redis(client: TestClient, redis: Redis, keys: Keys):
    samples = [
        {"name": "http_requests_total", "labels": {"status": str(200 + i)}, "value": 1, "kind": "increment"}
        for i in range(1000)
    ]
    response = await client.post("/api/v1/metrics", json={"samples": samples})
    assert response.status == 202
    reply = await response.json()
    assert reply["accepted"] == 1000
    entries = await redis.xrange(keys.metrics)
    assert len(entries) == 1
    entry_id, fields = entries[0]
    assert entry_id.decode() == reply["entry"]
    batch = decode_entry(fields)
    assert batch.kind == "metrics"
    assert len(batch.items) == 1000
    assert batch.items[7] == {
        "name": "http_requests_total",
        "labels": {"status": "207"},
        "value": 1.0,
        "kind": "increment",
        "timestamp": 1_763_800_000.0,
    }


async def test_logs_go_to_the_logs_stream(client: TestClient, redis: Redis, keys: Keys):
    response = await client.post(
        "/api/v1/logs", json={"logs": [{"service": "agent", "level": "error", "message": "Budget exceeded"}]}
    )
    assert response.status == 202
    assert await redis.xlen(keys.logs) == 1
    assert await redis.xlen(keys.metrics) == 0


async def test_invalid_request_publishes_nothing(client: TestClient, redis: Redis, keys: Keys):
    response = await client.post(
        "/api/v1/metrics", json={"samples": [{"name": "ok", "value": 1}, {"name": "ok", "value": "NaN"}]}
    )
    assert response.status == 400
    reply = await response.json()
    assert reply["status"] == "error"
    assert reply["errorType"] == "bad_data"
    assert reply["errors"] == [{"index": 1, "field": "value", "reason": "Input should be a valid number"}]
    assert await redis.exists(keys.metrics) == 0


async def test_every_bad_label_of_an_item_is_named_not_only_the_first(client: TestClient):
    sample = {"name": "ok", "value": 1, "labels": {"ok": "1", "b-1": "x", "__y": "z", "v": "x" * 5000}}
    response = await client.post("/api/v1/metrics", json={"samples": [sample]})
    assert response.status == 400
    [error] = (await response.json())["errors"]
    assert error["field"] == "labels"
    assert error["reason"] == (
        "invalid label name 'b-1': must match [a-zA-Z_][a-zA-Z0-9_]*; label name '__y' is reserved: names "
        "starting with '__' are internal; value of label 'v' is longer than 4096 characters"
    )


async def test_a_wrong_path_or_method_gets_a_json_error_naming_what_works(client: TestClient):
    response = await client.post("/api/v1/metric", json={"samples": []})
    assert response.status == 404
    assert await response.json() == {
        "status": "error",
        "errorType": "not_found",
        "error": "no endpoint POST /api/v1/metric",
    }
    response = await client.get("/api/v1/metrics")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert (await response.json())["error"] == "GET is not allowed on /api/v1/metrics (allowed: POST)"


async def test_an_item_with_very_many_bad_labels_gets_a_short_answer(client: TestClient):
    labels = {f"bad-{i}": "x" for i in range(50_000)}
    response = await client.post(
        "/api/v1/metrics", json={"samples": [{"name": "ok", "value": 1, "labels": labels}]}
    )
    assert response.status == 400
    [error] = (await response.json())["errors"]
    assert error["reason"].count("invalid label name") == 10
    assert error["reason"].endswith("; and 49990 more")


async def test_oversized_body_is_413_and_publishes_nothing(make_config, clock, redis: Redis, keys: Keys):
    async for client in _client(make_config(collector={"max_body_bytes": 2048}), clock):
        big = {"samples": [{"name": "x", "value": 1, "labels": {"pad": "p" * 100}}] * 50}
        response = await client.post(
            "/api/v1/metrics", data=orjson.dumps(big), headers={"Content-Type": "application/json"}
        )
        assert response.status == 413
        assert "limit of 2048 bytes" in (await response.json())["error"]

        # Chunked upload without Content-Length: the limit still holds while streaming.
        async def chunks():
            for _ in range(10):
                yield b" " * 1024

        response = await client.post("/api/v1/metrics", data=chunks(), headers=JSON_TYPE)
        assert response.status == 413
    assert await redis.exists(keys.metrics) == 0


async def test_only_json_bodies_are_taken(make_config, clock, redis: Redis, keys: Keys):
    # Browsers send text/plain, forms and untyped bodies cross-origin without asking (no CORS preflight):
    # with no ingest token (the default) any page a user opens could otherwise post metrics and logs,
    # fire alerts and so flip kill switches.
    body = orjson.dumps({"samples": [{"name": "x", "value": 1}]})
    async for client in _client(make_config(), clock):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
            headers = {"Content-Type": content_type} if content_type else {}
            response = await client.post("/api/v1/metrics", data=body, headers=headers)
            assert response.status == 415, content_type
            assert "Content-Type must be application/json" in (await response.json())["error"]
        typed = {"Content-Type": "application/json; charset=utf-8"}
        assert (await client.post("/api/v1/metrics", data=body, headers=typed)).status == 202
    assert await redis.xlen(keys.metrics) == 1


async def test_bearer_token_is_required_when_configured(make_config, clock, redis: Redis, keys: Keys):
    config = make_config()
    config.ingest_token = SecretStr("s3cret")
    async for client in _client(config, clock):
        body = {"samples": [{"name": "x", "value": 1}]}
        missing = await client.post("/api/v1/metrics", json=body)
        wrong = await client.post("/api/v1/metrics", json=body, headers={"Authorization": "Bearer nope"})
        right = await client.post("/api/v1/metrics", json=body, headers={"Authorization": "Bearer s3cret"})
        lower = await client.post("/api/v1/metrics", json=body, headers={"Authorization": "bearer s3cret"})
        assert (missing.status, wrong.status, right.status, lower.status) == (401, 401, 202, 202)
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        text = await (await client.get("/metrics")).text()
        assert 'tripwire_ingest_requests_total{code="401",endpoint="/api/v1/metrics"} 2.0' in text
        # Health endpoints stay open for orchestrators.
        assert (await client.get("/healthz")).status == 200
    assert await redis.xlen(keys.metrics) == 2


def test_a_token_that_is_not_utf8_is_refused_not_an_error():
    # aiohttp decodes header bytes that are not UTF-8 as surrogates (surrogateescape); encoding them
    # strictly raised, and the request was answered 500.
    tokens = {"default": SecretStr("s3cret")}
    assert token_client("Bearer \udcff\udcfe", tokens) is None
    assert token_client("Basic s3cret", tokens) is None
    assert token_client("Bearer s3cret", tokens) == "default"


def test_the_scheme_may_be_followed_by_several_spaces():
    # RFC 9110 11.4: `auth-scheme [ 1*SP credentials ]`. Two spaces were a 401.
    tokens = {"default": SecretStr("s3cret")}
    assert token_client("Bearer  s3cret", tokens) == token_client("bearer   s3cret", tokens) == "default"
    assert token_client("Bearer s3cret ", tokens) is None  # aiohttp strips a header's own trailing space
    assert token_client("Bearer\ts3cret", tokens) is None


@pytest.mark.parametrize("with_id", [False, True], ids=["plain", "x-request-id"])
async def test_a_write_redis_refuses_for_good_is_500_not_a_503_to_retry(
    client: TestClient, redis: Redis, keys: Keys, with_id: bool
):
    # helper-45's review: every Redis error was a 503, so a sender retried a write Redis can never take (a
    # key of another type, an ACL without XADD) for ever. Nothing is stored either way.
    await redis.set(keys.metrics, "not a stream")
    headers = {"X-Request-Id": "r-1"} if with_id else {}
    body = {"samples": [{"name": "up", "value": 1}]}
    response = await client.post("/api/v1/metrics", json=body, headers=headers)
    assert response.status == 500
    reply = await response.json()
    assert reply["errorType"] == "store_refused" and "retrying will not" in reply["error"]
    assert "WRONGTYPE" not in reply["error"]  # Redis' own words stay in the collector's log
    assert await redis.get(keys.metrics) == b"not a stream"


async def test_redis_down_gives_503_with_retry_after_then_recovers(private_redis: LocalRedisServer, clock):
    config = Config.model_validate(
        {
            "redis": {
                "url": private_redis.url,
                "prefix": "down",
                "connect_timeout": "500ms",
                "socket_timeout": "1s",
            },
            "collector": {"retry_after": "3s"},
        }
    )
    async for client in _client(config, clock):
        body = {"samples": [{"name": "x", "value": 1}]}
        assert (await client.post("/api/v1/metrics", json=body)).status == 202
        private_redis.stop()
        response = await client.post("/api/v1/metrics", json=body)
        assert response.status == 503
        assert response.headers["Retry-After"] == "3"
        error = (await response.json())["error"]
        assert "redis is unavailable" in error
        assert str(private_redis.port) not in error  # Redis' address stays in our log
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert "redis unreachable" in (await ready.json())["problems"][0]
        private_redis.start()
        assert (await client.post("/api/v1/metrics", json=body)).status == 202
        assert (await client.get("/readyz")).status == 200
    # Both accepted batches survived the Redis restart (AOF), the refused one was never written.
    check = Redis.from_url(private_redis.url)
    assert await check.xlen(Keys("down").metrics) == 2
    await check.aclose()


async def test_health_ready_and_metrics(client: TestClient):
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()
    await client.post("/api/v1/metrics", json={"samples": [{"name": "x", "value": 1}]})
    text = await (await client.get("/metrics")).text()
    assert 'tripwire_ingest_items_total{endpoint="/api/v1/metrics"} 1.0' in text
    assert 'tripwire_ingest_requests_total{code="202",endpoint="/api/v1/metrics"} 1.0' in text


def test_writes_are_never_sent_again_by_the_client():
    # A timed-out XADD may still be applied by a stalled Redis, and one whose connection dropped may have
    # been: sent again, the batch is stored twice (tests/shared/test_connection.py shows both happening).
    from shared.connection import redis_client

    kwargs = redis_client(Config.model_validate({})).connection_pool.connection_kwargs
    assert kwargs["retry_on_timeout"] is False
    assert kwargs["retry"]._retries == 0


async def test_gzip_header_over_bytes_that_are_not_gzip_is_400(client: TestClient, redis: Redis, keys: Keys):
    response = await client.post(
        "/api/v1/metrics",
        data=b'{"samples": [{"name": "x", "value": 1}]}',
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status == 400, await response.text()
    assert "could not be decoded" in (await response.json())["error"]
    assert await redis.xlen(keys.metrics) == 0


async def test_gzip_bodies_are_accepted(client: TestClient, redis: Redis, keys: Keys):
    import gzip

    response = await client.post(
        "/api/v1/metrics",
        data=gzip.compress(b'{"samples": [{"name": "x", "value": 1}]}'),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status == 202, await response.text()
    assert await redis.xlen(keys.metrics) == 1


_PLAIN = b'{"samples": [{"name": "x", "value": 1}]}'


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "body", "status"),
    [
        ("gzip", gzip.compress(_PLAIN), 202),
        ("GZIP", gzip.compress(_PLAIN), 202),
        ("gzip", gzip.compress(_PLAIN[:20]) + gzip.compress(_PLAIN[20:]), 202),  # two members: one body
        ("deflate", zlib.compress(_PLAIN), 202),  # as the RFC says: zlib-wrapped
        ("deflate", _raw_deflate(_PLAIN), 202),  # as some clients send it
        ("gzip", gzip.compress(_PLAIN)[:-8], 400),  # no CRC and length trailer: truncated
        ("deflate", zlib.compress(_PLAIN) + b"junk", 400),
        ("gzip", gzip.compress(b" " * (3 << 20)), 413),  # 3 KiB that inflate past the 2 MiB limit
        ("gzip", gzip.compress(_PLAIN) + gzip.compress(b"") * 1024, 400),  # each member costs a decoder
        ("gzip", os.urandom(3 << 20), 413),  # compressed, over the limit too (checked before inflating)
    ],
    ids=[
        "gzip",
        "GZIP",
        "gzip-members",
        "zlib",
        "raw-deflate",
        "truncated",
        "trailing-junk",
        "bomb",
        "members-flood",
        "compressed-too-big",
    ],
)
async def test_compressed_bodies_are_decoded_under_the_limit(
    make_config, clock, redis: Redis, keys: Keys, encoding: str, body: bytes, status: int
):
    # The collector decodes bodies itself (aiohttp's auto_decompress is off): aiohttp would also inflate,
    # on the event loop, every byte of a body a handler refused while it drains up to 10 s of it.
    config = make_config(collector={"max_body_bytes": 2 << 20})
    async for client in _client(config, clock):
        headers = {**JSON_TYPE, "Content-Encoding": encoding}
        response = await client.post("/api/v1/metrics", data=body, headers=headers)
        assert response.status == status, await response.text()
        assert client.app[BODIES_ENCODED] is True
    assert await redis.exists(keys.metrics) == (status == 202)


async def test_a_body_that_stalls_gets_408_and_stores_nothing(make_config, clock, redis: Redis, keys: Keys):
    # A client that announces a body and trickles it (or stops) held its connection and buffer for ever.
    config = make_config(collector={"body_timeout": "300ms"})
    async for client in _client(config, clock):
        host, port = client.server.host, client.server.port
        reader, writer = await asyncio.open_connection(host, port)
        body = orjson.dumps({"samples": [{"name": "x", "value": 1}]})
        writer.write(
            b"POST /api/v1/metrics HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]  # and never the rest
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
    assert await redis.exists(keys.metrics) == 0


async def test_a_content_encoding_we_do_not_decode_is_415(make_config, clock, redis: Redis, keys: Keys):
    # aiohttp decodes gzip and deflate; any other coding reached the parser as if it were plain JSON.
    body = orjson.dumps({"samples": [{"name": "x", "value": 1}]})
    async for client in _client(make_config(), clock):
        # br and zstd too: aiohttp leaves the body to read_body here (auto_decompress off), which refuses them
        # in our JSON shape (aiohttp itself would answer a plain-text 400 without their optional packages).
        for encoding in ("x-gzip", "foo", "gzip, gzip", "br", "zstd"):
            headers = {**JSON_TYPE, "Content-Encoding": encoding}
            response = await client.post("/api/v1/metrics", data=body, headers=headers)
            assert response.status == 415, encoding
            assert "is not supported: send gzip, deflate" in (await response.json())["error"]
        for plain in ("identity", "IDENTITY", ""):
            headers = {**JSON_TYPE, "Content-Encoding": plain}
            assert (await client.post("/api/v1/metrics", data=body, headers=headers)).status == 202
    assert await redis.xlen(keys.metrics) == 3


async def _exchange(client: TestClient, head: bytes, body: bytes | None = None) -> list[bytes]:
    """Send a request's head on a raw connection; send `body` only once the server says 100 Continue.
    Returns the status lines and headers the server sent, interim responses included."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head)
        await writer.drain()
        lines: list[bytes] = []
        while True:
            status = await asyncio.wait_for(reader.readline(), timeout=10)
            headers = []
            while (line := await asyncio.wait_for(reader.readline(), timeout=10)) not in (b"\r\n", b""):
                headers.append(line.strip())
            lines.append(status.strip())
            lines.extend(headers)
            if not status.startswith(b"HTTP/1.1 100"):
                return lines
            assert body is not None, "the server asked for a body it should have refused on the headers"
            writer.write(body)
            await writer.drain()
    finally:
        writer.close()


async def test_expect_100_continue_is_answered_only_when_the_body_is_wanted(
    make_config, clock, redis: Redis, keys: Keys
):
    # aiohttp said "100 Continue" before any check, so a client uploaded a body only to be refused for its
    # token, type or size. Now the refusal comes instead of the 100, and closes the connection (the client
    # may still send the body, which must not be read as the next request).
    config = make_config(collector={"max_body_bytes": 4096})
    config.ingest_token = SecretStr("s3cret")
    body = orjson.dumps({"samples": [{"name": "x", "value": 1}]})

    def head(
        path: str, *, token: str = "s3cret", length: int = len(body), expect: str = "100-continue"
    ) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {length}\r\nExpect: {expect}\r\n\r\n"
        ).encode()

    async for client in _client(config, clock):
        for path in ("/api/v1/metrics", "/v1/metrics"):
            refused = await _exchange(client, head(path, token="wrong"))
            assert refused[0] == b"HTTP/1.1 401 Unauthorized", (path, refused)
            assert b"Connection: close" in refused, refused
            too_big = await _exchange(client, head(path, length=5000))
            assert too_big[0] == b"HTTP/1.1 413 Request Entity Too Large", (path, too_big)
        wrong_type = await _exchange(client, head("/api/v1/logs").replace(b"json", b"xml"))
        assert wrong_type[0] == b"HTTP/1.1 415 Unsupported Media Type", wrong_type
        assert (await _exchange(client, head("/api/v1/metrics", expect="magic")))[0].startswith(
            b"HTTP/1.1 417"
        )
        accepted = await _exchange(client, head("/api/v1/metrics"), body)
        assert [accepted[0], accepted[1]] == [b"HTTP/1.1 100 Continue", b"HTTP/1.1 202 Accepted"], accepted
        assert b"Connection: close" not in accepted
    assert await redis.xlen(keys.metrics) == 1


async def test_a_request_in_flight_at_shutdown_is_finished_before_redis_is_closed(
    make_config, redis_server, redis: Redis, keys: Keys
):
    # SIGTERM closed Redis under an XADD still waiting for its reply: the client got a 503 (before that, a
    # retry stored the batch twice) for a batch Redis may have stored. Now HTTP drains first.

    port = free_port()
    service = build(make_config(collector={"listen": f"127.0.0.1:{port}"}))
    running = asyncio.create_task(service.run(f"127.0.0.1:{port}", service.start))
    probe = Redis.from_url(redis_server.url, socket_timeout=0.1)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: _ready(session, base), timeout=10, what="the collector to be ready")
            busy = asyncio.create_task(redis.eval(BUSY_FOR_600_MS, 0))
            await eventually(lambda: redis_is_busy(probe), timeout=5, what="Redis to be running the script")
            body = {"samples": [{"name": "jobs_total", "value": 1, "kind": "increment"}]}
            post = asyncio.create_task(session.post(base + "/api/v1/metrics", json=body))
            await eventually(lambda: _in_flight(session, base), timeout=5, what="the XADD to be waiting")
            service.request_stop()
            response = await post
            assert response.status == 202, await response.text()
            await busy
        await asyncio.wait_for(running, timeout=10)
    finally:
        running.cancel()
        await probe.aclose()
    assert await redis.xlen(keys.metrics) == 1


async def _ready(session: aiohttp.ClientSession, base: str) -> bool:
    try:
        async with session.get(base + "/readyz") as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def _in_flight(session: aiohttp.ClientSession, base: str) -> bool:
    async with session.get(base + "/metrics") as response:
        return "tripwire_publish_in_flight 1.0" in await response.text()


async def test_bodies_held_past_max_buffered_bytes_get_503_before_they_are_read(
    make_config, redis_server, redis: Redis, keys: Keys, clock
):
    # While Redis is slow, requests wait with their bodies in memory; without a bound, enough concurrent
    # senders could make the collector hold any amount (found by review).

    config = make_config(collector={"max_body_bytes": 1024, "max_buffered_bytes": 2500})
    pad = {"name": "x", "value": 1, "labels": {"pad": "p" * 900}}  # about 950 bytes: one fits, two do not
    body = orjson.dumps({"samples": [pad]})
    # Parsed, a request holds its items and their envelope, not its body (which is dropped).
    items = parse_body(METRICS, body, clock.now(), 10).items_json
    probe = Redis.from_url(redis_server.url, socket_timeout=0.1)
    async for client in _client(config, clock):
        busy = asyncio.create_task(redis.eval(BUSY_FOR_600_MS, 0))
        await eventually(lambda: redis_is_busy(probe), timeout=5, what="Redis to be running the script")
        first = asyncio.create_task(client.post("/api/v1/metrics", data=body, headers=JSON_TYPE))
        held = functools.partial(_holding, client, stored_bytes(len(items)))
        await eventually(held, timeout=5, what="the first request's items to be held")
        for path in ("/api/v1/metrics", "/v1/metrics"):
            refused = await client.post(path, data=body, headers=JSON_TYPE)
            assert refused.status == 503, path
            assert refused.headers["Retry-After"] == "1"
        assert "max_buffered_bytes" in (
            await (await client.post("/api/v1/logs", data=body, headers=JSON_TYPE)).text()
        )
        # Compressed, the length says nothing of what it decodes to: refused at the chunk that passes.
        squeezed = {**JSON_TYPE, "Content-Encoding": "gzip"}
        assert (
            await client.post("/api/v1/metrics", data=gzip.compress(body), headers=squeezed)
        ).status == 503
        assert (await first).status == 202
        await busy
        assert (await client.post("/api/v1/metrics", data=body, headers=JSON_TYPE)).status == 202
        text = await (await client.get("/metrics")).text()
        assert "tripwire_ingest_buffer_full_total 4.0" in text
        assert "tripwire_ingest_buffered_bytes 0.0" in text  # every hold was given back
    await probe.aclose()
    assert await redis.xlen(keys.metrics) == 2


async def test_a_request_bigger_than_the_budget_is_taken_alone_never_refused_for_good(
    make_config, clock, redis, keys
):
    # Items and envelope are up to 7x a body of small samples (each gains kind and timestamp): a 413 (or a
    # 503 for ever) for a body within max_body_bytes broke configs that took it before (helper-49).
    small = orjson.dumps({"samples": [{"name": "up", "value": 1} for _ in range(150)]})
    assert stored_bytes(len(parse_body(METRICS, small, clock.now(), 1000).items_json)) > 6 * len(small)
    config = make_config(collector={"max_body_bytes": 4096, "max_buffered_bytes": 4096})
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"samples": ['
        await release.wait()
        yield b"]}"

    async for client in _client(config, clock):
        slow = asyncio.create_task(client.post("/api/v1/metrics", data=slow_body(), headers=JSON_TYPE))
        try:
            holding = functools.partial(_holding_any, client)
            await eventually(holding, timeout=5, what="the slow body to hold some of the budget")
            # Not alone: refused now, for a retry.
            refused = await client.post("/api/v1/metrics", data=small, headers=JSON_TYPE)
            assert (refused.status, refused.headers["Retry-After"]) == (503, "1")
        finally:
            release.set()
            assert (await slow).status == 202
        # Alone: taken, past the budget.
        response = await client.post("/api/v1/metrics", data=small, headers=JSON_TYPE)
        assert response.status == 202, await response.text()
        assert "tripwire_ingest_buffered_bytes 0.0" in await (await client.get("/metrics")).text()
    assert await redis.xlen(keys.metrics) == 1


async def _holding_any(client: TestClient) -> bool:
    return "tripwire_ingest_buffered_bytes 0.0" not in await (await client.get("/metrics")).text()


async def _holding(client: TestClient, size: int) -> bool:
    text = await (await client.get("/metrics")).text()
    return f"tripwire_ingest_buffered_bytes {float(size)}" in text


async def test_a_connection_that_announces_a_body_and_sends_none_holds_nothing(
    make_config, clock, redis, keys
):
    # Reserving at the announced size let 52 idle connections (chunked: reserved at max_body_bytes) fill the
    # default 256 MiB and refuse everyone else for body_timeout (found by review). Bytes count as they come.
    config = make_config(collector={"max_body_bytes": 1024, "max_buffered_bytes": 1024})
    body = orjson.dumps({"samples": [{"name": "x", "value": 1}]})
    async for client in _client(config, clock):
        idle = []
        for head in (b"Transfer-Encoding: chunked", b"Content-Length: 1000"):
            reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
            writer.write(
                b"POST /api/v1/metrics HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                + head
                + b"\r\nExpect: 100-continue\r\n\r\n"
            )
            await writer.drain()
            # Asked for its body: the handler is past the budget, waiting for bytes that never come.
            assert await asyncio.wait_for(reader.readline(), timeout=10) == b"HTTP/1.1 100 Continue\r\n"
            idle.append(writer)
        assert (await client.post("/api/v1/metrics", data=body, headers=JSON_TYPE)).status == 202
        for writer in idle:
            writer.close()
    assert await redis.xlen(keys.metrics) == 1


def test_a_budget_counts_what_arrives_and_gives_it_back():
    from aiohttp.test_utils import make_mocked_request

    from services.collector.body_budget import BodyBudget
    from services.collector.publish import Unavailable

    budget = BodyBudget(1000, 800, 2.5)

    def hold(**headers: str):
        return budget.hold(make_mocked_request("POST", "/", headers=headers))

    with hold(**{"Content-Length": "700"}) as first:
        first.take(700)
        with pytest.raises(Unavailable) as refused:
            hold(**{"Content-Length": "400"})  # known not to fit: refused before reading
        assert refused.value.retry_after_header == "3"
        hold(**{"Content-Length": "900"})  # over the body limit: left for read_body's 413, not a 503
        with hold(**{"Content-Encoding": "gzip"}) as second:
            second.take(300)
            with pytest.raises(Unavailable):
                second.take(1)
        assert budget.held == 700
        # A JSON body counts as what it will be stored as (twice), from its Content-Length on: admitted at
        # its own size, it was refused after its upload and parse when its items did not fit.
        with pytest.raises(Unavailable):
            budget.hold(make_mocked_request("POST", "/", headers={"Content-Length": "200"}), stored_bytes)
        reserved = budget.hold(
            make_mocked_request("POST", "/", headers={"Content-Length": "150"}), stored_bytes
        )
        with reserved:
            reserved.take_body(150)
            assert budget.held == 1000
            reserved.swap(280)  # parsed: its items and their envelope
            assert budget.held == 980
    assert budget.held == 0
    # Alone, a request may pass the budget: one bigger than it is never refused for good.
    with hold() as alone:
        alone.take(5000)
        with pytest.raises(Unavailable):
            hold(**{"Content-Length": "1"})
    assert budget.held == 0
    with pytest.raises(ValueError, match="must be at least max_body_bytes"):
        Config.model_validate({"collector": {"max_body_bytes": 4096, "max_buffered_bytes": 2048}})
    # Unset, it grows with a body limit past its default (a config from before it still loads).
    # Room for a full JSON body, counted at twice its size, with some to spare.
    big = Config.model_validate({"collector": {"max_body_bytes": 300 * 2**20}}).collector
    assert big.max_buffered_bytes == 3 * 300 * 2**20


@pytest.mark.parametrize(
    ("derived", "source", "value", "expected"),
    [
        ("max_buffered_bytes", "max_body_bytes", 300 * 2**20, 900 * 2**20),
        ("otlp_max_samples", "max_items", 300_000, 300_000),
    ],
)
def test_a_derived_default_is_not_taken_for_a_setting(derived: str, source: str, value: int, expected: int):
    # Derived from another setting, it stays unset: what was set, validated again with that setting
    # lowered, derives it again rather than keep the old value as if the user had written it.
    section = CollectorConfig.model_validate({source: value})
    assert getattr(section, derived) == expected
    assert derived not in section.model_fields_set
    written = section.model_dump(exclude_unset=True)
    assert written == {source: value}
    again = CollectorConfig.model_validate({**written, source: getattr(CollectorConfig(), source)})
    assert getattr(again, derived) == getattr(CollectorConfig(), derived)


async def test_every_202_survives_a_redis_sigkill_in_the_middle_of_ingest(
    private_redis: LocalRedisServer, clock
):
    # "Nothing acknowledged that is not in Redis", under a crash rather than a clean stop: 200 requests, 16 at
    # a time, Redis SIGKILLed once 30 have been answered 202 (AOF, fsync always, as in docker-compose).
    config = Config.model_validate(
        {
            "redis": {
                "url": private_redis.url,
                "prefix": "crash",
                "connect_timeout": "500ms",
                "socket_timeout": "1s",
            },
            "collector": {"max_in_flight": 16},
        }
    )
    statuses: dict[int, int] = {}
    slots = asyncio.Semaphore(16)

    async def send(client: TestClient, n: int) -> None:
        sample = {"name": "jobs_total", "labels": {"n": str(n)}, "value": 1, "kind": "increment"}
        async with slots:
            response = await client.post("/api/v1/metrics", json={"samples": [sample]})
            statuses[n] = response.status

    async def crash() -> None:
        answered = functools.partial(_async, lambda: list(statuses.values()).count(202) >= 30)
        await eventually(answered, timeout=30, what="30 requests answered 202")
        private_redis.kill()

    async for client in _client(config, clock):
        await asyncio.gather(crash(), *(send(client, n) for n in range(200)))
    private_redis.start()
    accepted = {n for n, status in statuses.items() if status == 202}
    assert set(statuses.values()) <= {202, 503}
    assert 30 <= len(accepted) < 200  # the crash came in the middle
    check = Redis.from_url(private_redis.url)
    stored = [
        item["labels"]["n"]
        for _, fields in await check.xrange(Keys("crash").metrics)
        for item in decode_entry(fields).items
    ]
    await check.aclose()
    assert len(stored) == len(set(stored))  # none twice
    assert accepted <= {int(n) for n in stored}  # every 202 is there


async def _async(check: Callable[[], bool]) -> bool:
    return check()


async def test_a_big_body_is_validated_off_the_event_loop_and_one_past_the_wait_is_told_busy(
    make_config, clock, redis: Redis, keys: Keys, monkeypatch
):
    # helper-52: 100 bodies validated item by item on the event loop held it for seconds; healthy Redis was
    # reported down (its replies sat unread past redis-py's timeouts) and /healthz took 7 s.
    from services.collector import api

    entered, release = threading.Event(), threading.Event()
    real = api.parse_items

    def held_parse(*args, **kwargs):
        if not entered.is_set():
            entered.set()
            assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "parse_items", held_parse)
    config = make_config(collector={"validation_threads": 1, "validation_wait": "200ms"})
    # RFC 3339 timestamps: the item-by-item path; past VALIDATE_INLINE_BYTES: a validation thread.
    stamp = "2025-11-22T08:26:40Z"
    samples = [
        {"name": "jobs_total", "labels": {"i": str(i)}, "value": 1, "timestamp": stamp} for i in range(2000)
    ]
    body = orjson.dumps({"samples": samples})
    assert len(body) > api.VALIDATE_INLINE_BYTES
    async for client in _client(config, clock):
        first = asyncio.create_task(client.post("/api/v1/metrics", data=body, headers=JSON_TYPE))
        await eventually(lambda: _now(entered.is_set()), what="the first body to be in its thread")
        # The loop is free while that thread works: health checks and small requests are answered.
        assert (await asyncio.wait_for(client.get("/healthz"), 5)).status == 200
        small = {"samples": [{"name": "jobs_total", "value": 1, "timestamp": stamp}]}
        assert (await asyncio.wait_for(client.post("/api/v1/metrics", json=small), 5)).status == 202
        busy = await client.post("/api/v1/metrics", data=body, headers=JSON_TYPE)
        assert busy.status == 503
        assert busy.headers["Retry-After"] == "1"
        assert "busy" in (await busy.json())["error"]
        metrics = await (await client.get("/metrics")).text()
        assert "tripwire_ingest_busy_total 1.0" in metrics
        assert 'tripwire_publish_refusals_total{kind="metrics",reason="redis_error"}' not in metrics
        release.set()
        response = await first
        assert response.status == 202, await response.text()
        assert (await response.json())["accepted"] == 2000
    assert await redis.xlen(keys.metrics) == 2  # the small request and the first big one


async def _now(value: bool) -> bool:
    return value
