"""The notifier's HTTP API for tripwire's built-in flags (the kill switches' own flag store).

    GET /api/v1/flags          every flag, a JSON array of FlagRecords sorted by key
    GET /api/v1/flags/{key}    one FlagRecord (404 if the flag was never set)
    PUT /api/v1/flags/{key}    {"enabled": bool, "reason": str, "actor": str?} -> the FlagRecord

All of them need the admin bearer token when one is configured: flag states say which features were killed
and why, which is not for anonymous readers. A PUT may carry `If-Match: <version>` (the FlagRecord's
`version`, bare or quoted as an ETag; 0 = the flag must not exist yet) and gets 412 if the flag moved on.
Setting the state a flag already has is a successful no-op (same version). Responses carry
`ETag: "<version>"`.
Errors use the shared JSON error shape ({"status": "error", "errorType", "error"}); a refused request
changes nothing.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, ValidationError, field_validator
from redis.exceptions import RedisError

from shared.flag_store import FlagConflict, FlagRecord, FlagStore, validate_key
from shared.webapp import (
    BODY_TIMEOUT,
    BadBody,
    BodyTooLarge,
    add_body_route,
    error_response,
    json_response,
    read_body,
    require_token,
)

MAX_BODY = 64 * 1024


class FlagUpdate(BaseModel):
    """The body of PUT /api/v1/flags/{key}."""

    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool  # strict: "false" (a string) must not silently turn a flag on
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    actor: Annotated[str, Field(min_length=1, max_length=200)] = "api"

    @field_validator("reason", "actor")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def _record(record: FlagRecord, status: int = 200) -> web.Response:
    return json_response(record.model_dump(), status, headers={"ETag": f'"{record.version}"'})


def _invalid_body(exc: ValidationError) -> web.Response:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return error_response(400, "bad_data", f"invalid flag update: {where}: {first['msg']}")


def _unavailable() -> web.Response:
    return error_response(503, "unavailable", "the flag store is unavailable; retry", {"Retry-After": "1"})


def _expected_version(request: web.Request) -> int | None:
    """The If-Match header as a flag version (None when absent). Raises ValueError when unusable."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    text = header.strip()
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        text = text[1:-1]
    if not text.isdigit():
        raise ValueError(f"If-Match must be a flag version (a non-negative integer), got {header!r}")
    return int(text)


def _key(request: web.Request) -> str:
    return validate_key(request.match_info["key"])


class FlagsApi:
    """The handlers, over one FlagStore."""

    def __init__(self, store: FlagStore) -> None:
        self.store = store

    async def list_flags(self, _request: web.Request) -> web.Response:
        """Every flag, sorted by key."""
        try:
            flags = await self.store.all()
        except RedisError:
            return _unavailable()
        return json_response([record.model_dump() for record in flags.values()])

    async def get_flag(self, request: web.Request) -> web.Response:
        """One flag; 404 if it was never set."""
        try:
            key = _key(request)
            record = await self.store.get(key)
        except ValueError as exc:
            return error_response(400, "bad_data", str(exc))
        except RedisError:
            return _unavailable()
        if record is None:
            return error_response(404, "not_found", f"flag {key!r} not found")
        return _record(record)

    async def put_flag(self, request: web.Request) -> web.Response:
        """Turn a flag on or off (creating it on first use); honours If-Match."""
        try:
            key = _key(request)
            expected = _expected_version(request)
        except ValueError as exc:
            return error_response(400, "bad_data", str(exc))
        try:
            raw = await read_body(request, MAX_BODY, request.app.get(BODY_TIMEOUT))
        except BodyTooLarge as exc:
            return error_response(413, "bad_data", str(exc))
        except BadBody as exc:
            return error_response(400, "bad_data", str(exc))
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return error_response(400, "bad_data", f"invalid flag update: body is not JSON: {exc}")
        try:
            update = FlagUpdate.model_validate(data)
        except ValidationError as exc:
            return _invalid_body(exc)
        try:
            record = await self.store.set(
                key, update.enabled, actor=update.actor, reason=update.reason, expected_version=expected
            )
        except FlagConflict as exc:
            return error_response(412, "conflict", str(exc), currentVersion=exc.actual)
        except RedisError:
            return _unavailable()
        return _record(record)


def register_flag_api(app: web.Application, store: FlagStore, admin_token: SecretStr | None) -> None:
    """Add the flag routes to `app`, all behind the admin token when one is configured."""
    api, admin_only = FlagsApi(store), require_token(admin_token, "admin")
    app.router.add_get("/api/v1/flags", admin_only(api.list_flags))
    app.router.add_get("/api/v1/flags/{key}", admin_only(api.get_flag))
    add_body_route(app.router, "PUT", "/api/v1/flags/{key}", admin_only(api.put_flag))
