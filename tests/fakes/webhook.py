"""A local webhook receiver that behaves like a real one: it validates the Alertmanager v4 payload, logs every
request, and can be told to fail the next N calls with a status (5xx, 429 + Retry-After, 4xx)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from tests.fakes.http import HOST, Accept, Call, FakeServer, Handler, Outcome, Reply, Request

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
    """One call as the webhook tests see it: when, where, what was answered (0: hung) and the JSON body."""

    at: float
    path: str
    status: int
    body: dict[str, Any] | None


class FakeWebhook(FakeServer):
    """Start with `await fake.start()`; `fake.url` is where to post (any path under it is accepted);
    `fake.received` logs every call, `fake.requests` too with headers and raw bodies."""

    def __init__(self, *, host: str = HOST, port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.received: list[Received] = []

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Bodies of the calls that were answered 200."""
        return [r.body for r in self.received if r.status == 200 and r.body is not None]

    async def start(self) -> Self:
        await super().start()
        # Receivers are configured with a path of their own; the tests append sub-paths to it.
        self.url = f"{self.url}/hook"
        return self

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/{tail:.*}", self._hook)]

    def record(self, request: Request) -> None:
        super().record(request)
        body = request.json if isinstance(request.json, dict) else None
        self.received.append(Received(request.at, request.path, request.status, body))

    def _hook(self, call: Call) -> Outcome:
        if not call.json_ok:
            return Reply(400, "invalid JSON")
        problem = _validate(call.json)
        if problem:
            return Reply(400, problem)
        return Accept(lambda: Reply(200, "ok"))


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "payload must be an object"
    missing = REQUIRED - body.keys()
    if missing:
        return f"missing fields: {sorted(missing)}"
    if body["version"] != "4" or body["status"] not in ("firing", "resolved"):
        return "bad version or status"
    if not isinstance(body["alerts"], list):
        return "alerts must be an array"
    for alert in body["alerts"]:
        if not isinstance(alert, dict):
            return "alert must be an object"
        if ALERT_REQUIRED - alert.keys():
            return f"alert missing fields: {sorted(ALERT_REQUIRED - alert.keys())}"
    return None
