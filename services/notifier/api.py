"""The notifier's Alertmanager API v2 routes, in Alertmanager's shapes so `amtool` works against it.

Today: silences (`GET/POST /api/v2/silences`, `GET/DELETE /api/v2/silence/{id}`). Writes need the admin token
when one is configured. Errors are a JSON string body, as Alertmanager answers.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import SecretStr, ValidationError

from services.notifier.matchers import MatcherError, parse_matcher
from services.notifier.silences import PostableSilence, Silence, SilenceError, SilenceNotFound, SilenceStore
from shared.clock import Clock
from shared.webapp import json_response, require_token

MAX_BODY = 1024 * 1024


def _filter_matches(silence: Silence, filters: list) -> bool:
    """Alertmanager's silence filter: the filter matchers are applied to the silence's equality matchers
    seen as a label set."""
    labels = {m.name: m.value for m in silence.matchers if m.isEqual and not m.isRegex}
    return all(f.matches(labels) for f in filters)


def add_routes(app: web.Application, silences: SilenceStore, clock: Clock, admin: SecretStr | None) -> None:
    """Register the v2 silence routes on `app`."""

    async def list_silences(request: web.Request) -> web.Response:
        try:
            filters = [parse_matcher(text) for text in request.query.getall("filter", [])]
        except MatcherError as exc:
            return json_response(f"bad matcher in filter: {exc}", 400)
        now = clock.now()
        found = [s for s in await silences.all(now) if _filter_matches(s, filters)]
        # Alertmanager's order: active, then pending, then expired.
        order = {"active": 0, "pending": 1, "expired": 2}
        found.sort(
            key=lambda s: (order[s.state(now)], s.ends_at if s.state(now) != "pending" else s.starts_at)
        )
        return json_response([s.to_api(now) for s in found])

    async def post_silence(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return json_response(f"request body exceeds {MAX_BODY} bytes", 413)
        try:
            body = PostableSilence.model_validate_json(await request.read())
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            return json_response(f"silence invalid: {where}: {first['msg']}", 400)
        try:
            silence_id = await silences.put(body, clock.now())
        except SilenceNotFound:
            return json_response(f"silence {body.id} not found", 404)
        except SilenceError as exc:
            return json_response(f"silence invalid: {exc}", 400)
        return json_response({"silenceID": silence_id})

    async def get_silence(request: web.Request) -> web.Response:
        try:
            silence = await silences.get(request.match_info["id"], clock.now())
        except SilenceNotFound:
            return json_response("silence not found", 404)
        return json_response(silence.to_api(clock.now()))

    async def delete_silence(request: web.Request) -> web.Response:
        try:
            await silences.expire(request.match_info["id"], clock.now())
        except SilenceNotFound:
            return json_response("silence not found", 404)
        except SilenceError as exc:
            return json_response(str(exc), 400)
        return web.Response(status=200)

    guarded = require_token(admin, "admin")
    app.router.add_get("/api/v2/silences", list_silences)
    app.router.add_post("/api/v2/silences", guarded(post_silence))
    app.router.add_get("/api/v2/silence/{id}", get_silence)
    app.router.add_delete("/api/v2/silence/{id}", guarded(delete_silence))
