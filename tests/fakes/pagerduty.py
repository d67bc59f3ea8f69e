"""A local fake of the PagerDuty Events API v2: `POST /v2/enqueue` (alert events) and
`POST /v2/change/enqueue` (change events), validated and answered like PagerDuty, with its alert
de-duplication: events with the same dedup_key apply to the open incident until it is resolved."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.fakes.http import HOST, Accept, Call, FakeServer, Handler, Outcome, Reply

DEFAULT_ROUTING_KEY = "0123456789abcdef0123456789abcdef"
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
MAX_EVENT_BYTES = 512 * 1024
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
OPTIONAL_STRINGS = ("component", "group", "class")


@dataclass
class Incident:
    """The alert PagerDuty keeps for one dedup_key: its state and every event applied to it."""

    status: str  # "triggered" | "acknowledged" | "resolved"
    events: list[dict[str, Any]] = field(default_factory=list)
    dedup_key: str = ""
    routing_key: str = ""

    @property
    def open(self) -> bool:
        """Triggered or acknowledged: new events with its dedup_key still apply to it."""
        return self.status != "resolved"


def _invalid(errors: list[str]) -> Reply:
    return Reply(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})


def _links_problems(event: dict[str, Any], key: str, required: str, optional: tuple[str, ...]) -> list[str]:
    items = event.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        return [f"'{key}' must be an array"]
    problems = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get(required), str) or not item[required]:
            problems.append(f"'{key}[{i}].{required}' is missing or blank")
            continue
        for name in optional:
            if name in item and not isinstance(item[name], str):
                problems.append(f"'{key}[{i}].{name}' must be a string")
    return problems


def _timestamp_problem(payload: dict[str, Any]) -> list[str]:
    stamp = payload.get("timestamp")
    if stamp is None:
        return []
    if isinstance(stamp, str):
        try:
            datetime.fromisoformat(stamp)
        except ValueError:
            pass
        else:
            return []
    return ["'payload.timestamp' must be an ISO 8601 timestamp"]


def _summary_problem(payload: dict[str, Any]) -> list[str]:
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary:
        return ["'payload.summary' is missing or blank"]
    if len(summary) > SUMMARY_MAX:
        return [f"'payload.summary' must be at most {SUMMARY_MAX} characters"]
    return []


class FakePagerDuty(FakeServer):
    """PagerDuty Events API v2 at `enqueue_url` (and `/v2/change/enqueue`): 202 for a valid event, 400
    `invalid event` with `errors` otherwise. `events` are the accepted alert events, `incidents` the current
    incident per dedup_key, `changes` the accepted change events. With `require_key`, only `routing_key` is
    accepted (400 otherwise); without it any 32-character key is."""

    def __init__(
        self,
        routing_key: str = DEFAULT_ROUTING_KEY,
        *,
        require_key: bool = False,
        host: str = HOST,
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.routing_key = routing_key
        self.require_key = require_key
        self.incidents: dict[str, Incident] = {}
        self.changes: list[dict[str, Any]] = []
        self.history: list[Incident] = []  # every incident ever opened, resolved ones included
        self._events: list[dict[str, Any]] = []

    @property
    def enqueue_url(self) -> str:
        """Where alert events go (PagerDuty's https://events.pagerduty.com/v2/enqueue)."""
        return f"{self.url}/v2/enqueue"

    @property
    def change_url(self) -> str:
        """Where change events go (PagerDuty's https://events.pagerduty.com/v2/change/enqueue)."""
        return f"{self.url}/v2/change/enqueue"

    @property
    def events(self) -> list[dict[str, Any]]:
        """Accepted (202) alert events in order, including acknowledges/resolves PagerDuty dropped."""
        return list(self._events)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/v2/enqueue", self._enqueue), ("POST", "/v2/change/enqueue", self._change)]

    def failure_body(self, status: int) -> str | dict[str, Any] | None:
        if status == 429:
            return {"status": "throttle event", "message": "Request Limit Exceeded"}
        return "Internal Server Error"

    def rate_limited(self, retry_after: int) -> Reply:
        # PagerDuty documents no Retry-After on 429; sending it anyway tells a polite client how long.
        return Reply(
            429,
            {"status": "throttle event", "message": "Request Limit Exceeded"},
            {"Retry-After": str(retry_after)},
        )

    def _common(self, call: Call) -> tuple[dict[str, Any], list[str]] | Reply:
        # PagerDuty documents only 202/400/429/5xx; an event over its 512 KB limit is a 400 like any
        # other invalid event, not a 413.
        if len(call.body) > MAX_EVENT_BYTES:
            return _invalid([f"Event must be at most {MAX_EVENT_BYTES} bytes"])
        if not call.json_ok:
            return _invalid(["Malformed JSON"])
        event = call.json
        if not isinstance(event, dict):
            return _invalid(["Event must be a JSON object"])
        errors = []
        key = event.get("routing_key")
        if not isinstance(key, str) or len(key) != 32:
            errors.append("'routing_key' must be a 32-character string")
        elif self.require_key and key != self.routing_key:
            errors.append("'routing_key' is not a known integration key")
        return event, errors

    def _enqueue(self, call: Call) -> Outcome:
        checked = self._common(call)
        if isinstance(checked, Reply):
            return checked
        event, errors = checked
        action = event.get("event_action")
        if action not in ACTIONS:
            errors.append(f"'event_action' must be one of {', '.join(ACTIONS)}")
        dedup_key = event.get("dedup_key")
        if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > DEDUP_KEY_MAX):
            errors.append(f"'dedup_key' must be a string of at most {DEDUP_KEY_MAX} characters")
        if action in ("acknowledge", "resolve") and not dedup_key:
            errors.append(f"'dedup_key' is required for {action} events")
        if action == "trigger":
            errors.extend(self._payload_problems(event))
        for name in ("client", "client_url"):
            if name in event and not isinstance(event[name], str):
                errors.append(f"'{name}' must be a string")
        if errors:
            return _invalid(errors)

        def apply() -> Reply:
            key = dedup_key or uuid.uuid4().hex  # PagerDuty generates a key for a trigger without one
            self._events.append(event)
            self._apply(action, key, event)
            return Reply(202, {"status": "success", "message": "Event processed", "dedup_key": key})

        return Accept(apply)

    @staticmethod
    def _payload_problems(event: dict[str, Any]) -> list[str]:
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return ["'payload' is missing or not an object"]
        errors = _summary_problem(payload)
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            errors.append("'payload.source' is missing or blank")
        if payload.get("severity") not in SEVERITIES:
            errors.append(f"'payload.severity' must be one of {', '.join(SEVERITIES)}")
        errors.extend(_timestamp_problem(payload))
        for name in OPTIONAL_STRINGS:
            if name in payload and not isinstance(payload[name], str):
                errors.append(f"'payload.{name}' must be a string")
        errors.extend(_links_problems(event, "links", "href", ("text",)))
        errors.extend(_links_problems(event, "images", "src", ("href", "alt")))
        return errors

    def _apply(self, action: str, key: str, event: dict[str, Any]) -> None:
        incident = self.incidents.get(key)
        # Follow-ups apply only to an open incident of the same integration; PagerDuty drops the rest.
        current = incident if incident is not None and incident.open else None
        if current is not None and current.routing_key != event["routing_key"]:
            return
        if action == "trigger":
            if current is None:
                current = Incident("triggered", dedup_key=key, routing_key=event["routing_key"])
                self.incidents[key] = current
                self.history.append(current)
            current.events.append(event)  # a repeated trigger is a log entry on the open incident
        elif current is not None:
            current.status = "acknowledged" if action == "acknowledge" else "resolved"
            current.events.append(event)

    def _change(self, call: Call) -> Outcome:
        checked = self._common(call)
        if isinstance(checked, Reply):
            return checked
        event, errors = checked
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or not an object")
        else:
            errors.extend(_summary_problem(payload))
            if "source" in payload and not isinstance(payload["source"], str):
                errors.append("'payload.source' must be a string")
            errors.extend(_timestamp_problem(payload))
        errors.extend(_links_problems(event, "links", "href", ("text",)))
        if errors:
            return _invalid(errors)

        def apply() -> Reply:
            self.changes.append(event)
            return Reply(202, {"status": "success", "message": "Change event processed"})

        return Accept(apply)
