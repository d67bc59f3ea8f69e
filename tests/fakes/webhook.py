"""A local webhook receiver that behaves like a real one: it validates the Alertmanager v4 payload, logs every
request, and can be told to fail the next N calls with a status (5xx, 429 + Retry-After, 4xx)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

REQUIRED = {
    "version",
    "groupKey",
    "truncatedAlerts",
    "status",
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "alerts",
}
ALERT_REQUIRED = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


@dataclass
class Received:
    at: float
    path: str
    status: int
    body: dict[str, Any] | None


@dataclass
class FakeWebhook:
    """Start with `await fake.start()`; `fake.url` is where to post; `fake.received` logs every call."""

    received: list[Received] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    def fail_next(self, count: int, status: int = 503, headers: dict[str, str] | None = None) -> None:
        self.failures.extend([(status, headers or {})] * count)

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Bodies of the calls that were answered 200."""
        return [r.body for r in self.received if r.status == 200 and r.body is not None]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.received.append(Received(time.monotonic(), request.path, 400, None))
            return web.Response(status=400, text="invalid JSON")
        problem = _validate(body)
        if problem:
            self.received.append(Received(time.monotonic(), request.path, 400, body))
            return web.Response(status=400, text=problem)
        if self.failures:
            status, headers = self.failures.pop(0)
            self.received.append(Received(time.monotonic(), request.path, status, body))
            return web.Response(status=status, text="injected failure", headers=headers)
        self.received.append(Received(time.monotonic(), request.path, 200, body))
        return web.Response(status=200, text="ok")

    async def start(self) -> FakeWebhook:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "payload must be an object"
    missing = REQUIRED - body.keys()
    if missing:
        return f"missing fields: {sorted(missing)}"
    if body["version"] != "4" or body["status"] not in ("firing", "resolved"):
        return "bad version or status"
    for alert in body["alerts"]:
        if ALERT_REQUIRED - alert.keys():
            return f"alert missing fields: {sorted(ALERT_REQUIRED - alert.keys())}"
    return None
