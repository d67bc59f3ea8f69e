"""The notifier's Alertmanager API v2 routes, in Alertmanager's shapes so `amtool` works against it.

Today: alerts (`POST /api/v2/alerts` puts them on the alerts stream, the path the evaluator's alerts take;
`GET /api/v2/alerts` lists them with their receivers and silence status), `GET /api/v2/receivers`, and
silences (`GET/POST /api/v2/silences`, `GET/DELETE /api/v2/silence/{id}`). Posting alerts needs the ingest
token and changing silences the admin token, when configured. Errors are a JSON string body, as Alertmanager
answers.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, field_validator
from redis.exceptions import RedisError

from services.notifier.alert_store import AlertStore
from services.notifier.inhibition import Inhibitor
from services.notifier.matchers import Matcher, MatcherError, parse_matcher
from services.notifier.routing import Route
from services.notifier.silences import (
    PostableSilence,
    Silence,
    SilenceError,
    SilenceNotFound,
    SilenceStore,
    muted_by,
)
from shared.alerts import ZERO_TIME, Alert, rfc3339
from shared.clock import Clock
from shared.matchers import compile_go
from shared.webapp import json_response, require_token, within_body_timeout

MAX_BODY = 1024 * 1024
VERSION = importlib.metadata.version("tripwire")
Publish = Callable[[list[dict[str, object]]], Awaitable[str]]


class PostableAlert(BaseModel):
    """Alertmanager's PostableAlert. Tripwire also needs the `alertname` label (every alert it routes has
    one; its group keys and notifications assume it)."""

    model_config = ConfigDict(extra="forbid")

    labels: dict[Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")], str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str = ""

    @field_validator("labels")
    @classmethod
    def _alertname(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname"):
            raise ValueError("an alert needs a non-empty 'alertname' label")
        return labels


_POSTABLE_ALERTS = TypeAdapter(list[PostableAlert])


def _invalid(prefix: str, exc: ValidationError) -> web.Response:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return json_response(f"{prefix}: {where}: {first['msg']}", 400)


def _too_large(request: web.Request) -> web.Response | None:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return json_response(f"request body exceeds {MAX_BODY} bytes", 413)
    return None


def _filters(request: web.Request) -> list[Matcher]:
    return [parse_matcher(text) for text in request.query.getall("filter", [])]


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "true").lower()
    if value not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value == "true"


def _silence_filter_matches(silence: Silence, filters: list[Matcher]) -> bool:
    """Alertmanager's silence filter: the filter matchers apply to the silence's equality matchers seen as a
    label set."""
    labels = {m.name: m.value for m in silence.matchers if m.isEqual and not m.isRegex}
    return all(f.matches(labels) for f in filters)


class V2Api:
    """The handlers; `register` adds them to an aiohttp app."""

    def __init__(
        self,
        silences: SilenceStore,
        alerts: AlertStore,
        inhibitor: Inhibitor,
        tree: Route,
        receivers: list[str],
        publish: Publish,
        clock: Clock,
        config_text: str = "",
    ) -> None:
        self.silences = silences
        self.alerts = alerts
        self.inhibitor = inhibitor
        self.tree = tree
        self.receivers = receivers
        self.publish = publish
        self.clock = clock
        self.config_text = config_text
        self.started = clock.now()

    def replace(self, inhibitor: Inhibitor, tree: Route, receivers: list[str], config_text: str) -> None:
        """Serve a reloaded routing config."""
        self.inhibitor, self.tree, self.receivers, self.config_text = inhibitor, tree, receivers, config_text

    def register(
        self, app: web.Application, admin: SecretStr | None, ingest: SecretStr | dict[str, SecretStr] | None
    ) -> None:
        admin_only, ingest_only = require_token(admin, "admin"), require_token(ingest, "ingest")
        app.router.add_get("/api/v2/alerts", self.list_alerts)
        app.router.add_post("/api/v2/alerts", ingest_only(self.post_alerts))
        app.router.add_get("/api/v2/receivers", self.list_receivers)
        app.router.add_get("/api/v2/alerts/groups", self.list_groups)
        app.router.add_get("/api/v2/status", self.status)
        app.router.add_get("/api/v2/silences", self.list_silences)
        app.router.add_post("/api/v2/silences", admin_only(self.post_silence))
        app.router.add_get("/api/v2/silence/{id}", self.get_silence)
        app.router.add_delete("/api/v2/silence/{id}", admin_only(self.delete_silence))

    # Alerts ----------------------------------------------------------------------------------------------
    async def _listed(self, request: web.Request) -> list[tuple[Alert, list[Route], dict[str, object]]]:
        """The unresolved alerts that pass the request's Alertmanager filters (filter, active, silenced,
        inhibited, receiver), each with its routes and its GettableAlert. Raises ValueError on bad filters."""
        try:
            filters = _filters(request)
            show = {name: _flag(request, name) for name in ("active", "silenced", "inhibited")}
            receiver = compile_go(request.query.get("receiver", ".*"))
        except (MatcherError, re.error) as exc:
            raise ValueError(str(exc)) from None
        now = self.clock.now()
        silences = await self.silences.all(now)
        current = await self.alerts.active(now)
        firing = [alert for alert, _ in current]
        out = []
        for alert, updated in current:
            routes = self.tree.match(alert.labels)
            if not all(f.matches(alert.labels) for f in filters):
                continue
            if not any(receiver.fullmatch(route.receiver) for route in routes):
                continue
            silenced_by = muted_by(silences, alert.labels, now)
            inhibited_by = self.inhibitor.inhibited_by(alert.labels, firing)
            if (silenced_by and not show["silenced"]) or (inhibited_by and not show["inhibited"]):
                continue
            if not silenced_by and not inhibited_by and not show["active"]:
                continue
            wire = alert.to_wire()
            del wire["status"]
            gettable = {
                **wire,
                "updatedAt": rfc3339(updated),
                "receivers": [{"name": route.receiver} for route in routes],
                "status": {
                    "state": "suppressed" if silenced_by or inhibited_by else "active",
                    "silencedBy": silenced_by,
                    "inhibitedBy": inhibited_by,
                    "mutedBy": [],
                },
            }
            out.append((alert, routes, gettable))
        return out

    async def list_alerts(self, request: web.Request) -> web.Response:
        """GettableAlerts: the alerts not yet resolved, filtered as Alertmanager's query parameters say."""
        try:
            listed = await self._listed(request)
        except ValueError as exc:
            return json_response(str(exc), 400)
        return json_response([gettable for _, _, gettable in listed])

    async def list_groups(self, request: web.Request) -> web.Response:
        """AlertGroups: the listed alerts by receiver and aggregation group, as Alertmanager groups them."""
        try:
            listed = await self._listed(request)
        except ValueError as exc:
            return json_response(str(exc), 400)
        groups: dict[tuple[str, str], dict[str, object]] = {}
        for alert, routes, gettable in listed:
            for route in routes:
                key = (route.receiver, route.group_key(alert.labels))
                group = groups.setdefault(
                    key,
                    {
                        "labels": route.group_labels(alert.labels),
                        "receiver": {"name": route.receiver},
                        "alerts": [],
                    },
                )
                group["alerts"].append(gettable)  # type: ignore[attr-defined]
        return json_response(list(groups.values()))

    async def status(self, _request: web.Request) -> web.Response:
        """AlertmanagerStatus: the routing file with secrets masked, uptime, version; no cluster."""
        return json_response(
            {
                "cluster": {"status": "disabled", "peers": []},
                "config": {"original": self.config_text},
                "uptime": rfc3339(self.started),
                "versionInfo": {
                    "version": VERSION,
                    "revision": "",
                    "branch": "",
                    "buildUser": "",
                    "buildDate": "",
                    "goVersion": "none (tripwire, Python)",
                },
            }
        )

    async def post_alerts(self, request: web.Request) -> web.Response:
        """Put the posted alerts on the alerts stream as one batch; 200 once they are in Redis."""
        if (refused := _too_large(request)) is not None:
            return refused
        try:
            posted = _POSTABLE_ALERTS.validate_json(await within_body_timeout(request, request.read()))
        except ValidationError as exc:
            return _invalid("invalid alerts", exc)
        now = self.clock.now()
        items: list[dict[str, object]] = []
        for i, alert in enumerate(posted):
            starts = alert.startsAt.timestamp() if alert.startsAt else now
            ends = alert.endsAt.timestamp() if alert.endsAt else None
            if ends is not None and ends < starts:
                return json_response(f"invalid alerts: {i}: start time must be before end time", 400)
            items.append(
                {
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                    "startsAt": rfc3339(starts),
                    "endsAt": rfc3339(ends if ends is not None else ZERO_TIME),
                    "generatorURL": alert.generatorURL,
                    "status": "resolved" if ends is not None and ends <= now else "firing",
                }
            )
        try:
            await self.publish(items)
        except RedisError:
            return json_response("the alerts stream is unavailable; retry", 503, {"Retry-After": "1"})
        return web.Response(status=200)

    async def list_receivers(self, _request: web.Request) -> web.Response:
        return json_response([{"name": name} for name in self.receivers])

    # Silences --------------------------------------------------------------------------------------------
    async def list_silences(self, request: web.Request) -> web.Response:
        try:
            filters = _filters(request)
        except MatcherError as exc:
            return json_response(f"bad matcher in filter: {exc}", 400)
        now = self.clock.now()
        found = [s for s in await self.silences.all(now) if _silence_filter_matches(s, filters)]
        # Alertmanager's order: active, then pending, then expired.
        order = {"active": 0, "pending": 1, "expired": 2}
        found.sort(key=lambda s: (order[s.state(now)], s.ends_at))
        return json_response([s.to_api(now) for s in found])

    async def post_silence(self, request: web.Request) -> web.Response:
        if (refused := _too_large(request)) is not None:
            return refused
        try:
            body = PostableSilence.model_validate_json(await within_body_timeout(request, request.read()))
        except ValidationError as exc:
            return _invalid("silence invalid", exc)
        try:
            silence_id = await self.silences.put(body, self.clock.now())
        except SilenceNotFound:
            return json_response(f"silence {body.id} not found", 404)
        except SilenceError as exc:
            return json_response(f"silence invalid: {exc}", 400)
        return json_response({"silenceID": silence_id})

    async def get_silence(self, request: web.Request) -> web.Response:
        try:
            silence = await self.silences.get(request.match_info["id"], self.clock.now())
        except SilenceNotFound:
            return json_response("silence not found", 404)
        return json_response(silence.to_api(self.clock.now()))

    async def delete_silence(self, request: web.Request) -> web.Response:
        try:
            await self.silences.expire(request.match_info["id"], self.clock.now())
        except SilenceNotFound:
            return json_response("silence not found", 404)
        except SilenceError as exc:
            return json_response(str(exc), 400)
        return web.Response(status=200)
