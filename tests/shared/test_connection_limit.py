"""Every service's HTTP server bounds its connections: idle ones and slow headers are closed after
http.idle_timeout, and past http.max_connections a new connection is answered 503 and closed."""

from __future__ import annotations

import asyncio
import http.client
import logging
import subprocess
import sys
import time

import aiohttp
import pytest
from prometheus_client import generate_latest

from shared.clock import FakeClock
from shared.counted_log import CountedLog
from shared.service import Service
from tests.polling import eventually

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: tripwire\r\n\r\n"


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails if it has not closed within `seconds`."""
    received = b""
    deadline = time.monotonic() + seconds
    while chunk := await asyncio.wait_for(reader.read(65536), max(0.0, deadline - time.monotonic())):
        received += chunk
    return received


async def _status(port: int, request: bytes = REQUEST) -> tuple[int, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    line = await asyncio.wait_for(reader.readline(), 10)
    return int(line.split()[1]), writer


def _post_blocking(port: int, body: bytes) -> tuple[int, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/healthz", body=body)
        response = connection.getresponse()
        return response.status, response.getheader("Retry-After")
    finally:
        connection.close()


@pytest.fixture
async def serve(make_config):
    services: list[Service] = []

    async def start(**http: object) -> tuple[Service, int]:
        service = Service("test", make_config(http=http), FakeClock(0.0))
        services.append(service)
        serving = service.serving("127.0.0.1", 0)
        port = await serving.__aenter__()
        service.on_close(lambda: serving.__aexit__(None, None, None))
        return service, port

    yield start
    for service in services:
        await service._close()


async def test_a_connection_that_sends_nothing_or_trickles_its_headers_is_closed(serve):
    # aiohttp's keep-alive timer was left at its 3630 s default: such connections stayed an hour each, and a
    # few thousand of them used up the descriptors (helper-45's review).
    _service, port = await serve(idle_timeout="300ms")
    silent, _ = await asyncio.open_connection("127.0.0.1", port)
    trickling, trickle = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def trickle_headers() -> None:
        trickle.write(b"GET /healthz HTTP/1.1\r\n")
        while not trickle.is_closing():
            trickle.write(b"X")  # a slow client: bytes arrive, the headers never end
            await asyncio.sleep(0.05)

    trickler = asyncio.create_task(trickle_headers())
    try:
        assert await _closed_within(silent, 5) == b""
        assert await _closed_within(trickling, 5) == b""
    finally:
        trickler.cancel()
    assert time.monotonic() - started >= 0.25  # closed by the timer, not at once


async def test_an_idle_keep_alive_connection_is_closed_after_its_last_answer(serve):
    _service, port = await serve(idle_timeout="300ms")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    answer = await _closed_within(reader, 5)
    assert answer.startswith(b"HTTP/1.1 200 OK")


async def test_past_max_connections_a_new_connection_is_answered_503_and_closed(serve, caplog):
    service, port = await serve(max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]

    async def both_counted() -> bool:
        return service.connections is not None and service.connections.open == 2

    await eventually(both_counted, timeout=5, what="two connections open")
    async with aiohttp.ClientSession() as session:
        # A body on its way when the refusal comes is read and dropped: the client reads the 503, not a reset.
        async with session.post(f"http://127.0.0.1:{port}/healthz", data=b"x" * 2_000_000) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            body = await response.json()
        assert body["errorType"] == "unavailable"
        assert "http.max_connections, 2" in body["error"]

        # A client that sends its whole body before it reads (urllib3, http.client) too: bigger than the
        # socket buffers, it is still being sent when the server is done; closed at once, it met a reset.
        status, retry_after = await asyncio.to_thread(_post_blocking, port, b"x" * 20_000_000)
        assert (status, retry_after) == (503, "1")

        _reader, writer = held.pop()
        writer.close()

        refused = 2

        async def served() -> bool:
            nonlocal refused
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                refused += response.status == 503  # until the closed connection is counted out
                return response.status == 200

        await eventually(served, timeout=5, what="a connection to be taken once one closed")
    metrics = generate_latest(service.registry).decode()
    assert f"tripwire_http_connections_refused_total {refused:.1f}" in metrics
    refusals = [r for r in caplog.records if r.getMessage().startswith("refusing connections")]
    assert [(r.refused_connections, r.max_connections) for r in refusals] == [(1, 2)]  # type: ignore[attr-defined]


async def test_a_burst_of_connections_is_cut_at_max_connections(serve):
    # asyncio accepts a burst before any connection is made: counted at connection_made, all of them got in.
    service, port = await serve(max_connections=5)
    answers = await asyncio.gather(*(_status(port) for _ in range(30)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 5 + [503] * 25
    for _, writer in answers:
        writer.close()

    async def all_closed() -> bool:
        return service.connections is not None and service.connections.open == 0

    await eventually(all_closed, timeout=5, what="the count to fall back to 0")


async def test_refused_connections_that_linger_are_few(serve):
    # Up to max_connections refused connections lingered as well, so open and lingering together could use
    # every descriptor the default cap leaves to Redis and scrapes (helper-49's review).
    service, port = await serve(max_connections=80)
    assert service.connections is not None and service.connections.max_lingering == 10
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(80)]

    async def all_counted() -> bool:
        return service.connections is not None and service.connections.open == 80

    await eventually(all_counted, timeout=5, what="eighty connections open")
    refused = [await _status(port, b"") for _ in range(15)]  # they send nothing and never close
    assert [status for status, _ in refused] == [503] * 15
    assert service.connections.lingering == 10
    for _, writer in refused + [(0, w) for _, w in held]:
        writer.close()


def test_counted_log_logs_the_first_then_once_per_period_and_flushes_the_rest(caplog):
    now = [0.0]
    counted = CountedLog(logging.getLogger("test"), "it happened", "times", every=60.0, now=lambda: now[0])
    for second in range(0, 150, 10):
        now[0] = float(second)
        counted.note(last=second)
    counted.flush()
    counted.flush()  # nothing new: no line
    lines = [(r.times, r.last) for r in caplog.records if r.getMessage() == "it happened"]  # type: ignore[attr-defined]
    # At 0 s, 60 s and 120 s, then the two after 120 s at stop.
    assert lines == [(1, 0), (6, 60), (6, 120), (2, 140)]


def test_a_service_raises_its_open_file_limit_and_sizes_the_default_cap_from_it():
    script = (
        "import resource\n"
        "from shared.connection_limit import default_max_connections, raise_open_file_limit\n"
        "_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "before = default_max_connections()\n"
        "soft = raise_open_file_limit()\n"
        "print(before, soft == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0],"
        " default_max_connections() == min(10_000, hard // 2))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["128", "True", "True"]


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ({"idle_timeout": "0s"}, "greater than 0"),
        ({"max_connections": 0}, "greater than or equal to 1"),
    ],
)
def test_http_limits_are_checked(make_config, http, message):
    with pytest.raises(ValueError, match=message):
        make_config(http=http)
