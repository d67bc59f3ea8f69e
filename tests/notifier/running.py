"""A notifier running in this process for API tests, and the real `amtool` pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator

from aiohttp.test_utils import TestClient, TestServer

from services.notifier.app import NotifierApp, build
from shared.clock import SystemClock
from shared.config import Config

AMTOOL = shutil.which("amtool")
NO_AMTOOL = "amtool not installed (Debian prometheus-alertmanager; .ci/run installs it)"


@contextlib.asynccontextmanager
async def running_notifier(
    config: Config, *, consume: bool = True
) -> AsyncIterator[tuple[NotifierApp, TestClient]]:
    """The notifier built from `config` with its HTTP API on a free port (`client.server.port`); with
    `consume`, its stream consumer and flush loop run too. Stopped on the way out."""
    app = build(config, SystemClock())
    if consume:
        await app.service.start()
    client = TestClient(TestServer(app.service.web))
    await client.start_server()
    try:
        yield app, client
    finally:
        await client.close()
        await app.service.stop()


async def amtool(port: int, *args: str) -> tuple[int, str, str]:
    """Run Debian's amtool against the notifier on `port`; returns exit code, stdout, stderr."""
    assert AMTOOL is not None, NO_AMTOOL
    process = await asyncio.create_subprocess_exec(
        AMTOOL,
        f"--alertmanager.url=http://127.0.0.1:{port}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"AMTOOL_HTTP_CONFIG_FILE": "", "HOME": "/nonexistent"},  # no user amtool config applies
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode(), err.decode()
