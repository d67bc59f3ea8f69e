"""The notifier's flag API on aiohttp's test server over a real Redis: auth, validation, 404, If-Match."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from redis.asyncio import Redis

from services.notifier.flags_api import register_flag_api
from shared.clock import FakeClock
from shared.flag_store import FlagStore
from shared.streams import Keys

T0 = 1_700_000_000.0
TOKEN = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def store(redis: Redis, keys: Keys) -> FlagStore:
    return FlagStore(redis, keys, FakeClock(T0))


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def make(store: FlagStore, token: str | None = TOKEN) -> TestClient:
        app = web.Application()
        register_flag_api(app, store, SecretStr(token) if token is not None else None)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(store: FlagStore, make_client: MakeClient) -> TestClient:
    return await make_client(store)


async def put(client: TestClient, key: str, body: Any, **headers: str) -> tuple[int, Any, Any]:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, str | bytes) else {"json": body}
    response = await client.put(f"/api/v1/flags/{key}", headers={**AUTH, **headers}, **kwargs)
    return response.status, await response.json(), response.headers


async def test_put_then_get_and_list(client: TestClient, store: FlagStore):
    status, body, headers = await put(client, "checkout", {"enabled": False, "reason": "incident 42"})
    expected = {
        "key": "checkout",
        "enabled": False,
        "version": 1,
        "updated_at": T0,
        "updated_by": "api",  # the default actor
        "reason": "incident 42",
    }
    assert (status, body, headers["ETag"]) == (200, expected, '"1"')
    await put(client, "alpha", {"enabled": True, "reason": "launch", "actor": "alice"})

    response = await client.get("/api/v1/flags/checkout", headers=AUTH)
    assert (response.status, await response.json(), response.headers["ETag"]) == (200, expected, '"1"')
    response = await client.get("/api/v1/flags", headers=AUTH)
    listed = await response.json()
    assert response.status == 200
    assert [(f["key"], f["enabled"], f["updated_by"]) for f in listed] == [
        ("alpha", True, "alice"),
        ("checkout", False, "api"),
    ]
    record = await store.get("checkout")
    assert record is not None
    assert record.model_dump() == expected
    assert [c.actor for c in await store.history("alpha", 5)] == ["alice"]


async def test_putting_the_same_state_again_is_a_successful_no_op(client: TestClient, store: FlagStore):
    await put(client, "checkout", {"enabled": False, "reason": "first"})
    status, body, _ = await put(client, "checkout", {"enabled": False, "reason": "second", "actor": "bob"})
    assert (status, body["version"], body["reason"], body["updated_by"]) == (200, 1, "first", "api")
    assert len(await store.history("checkout", 5)) == 1


async def test_unknown_flag_is_404_and_an_invalid_key_400(client: TestClient):
    response = await client.get("/api/v1/flags/never-set", headers=AUTH)
    body = await response.json()
    assert (response.status, body["errorType"], body["error"]) == (
        404,
        "not_found",
        "flag 'never-set' not found",
    )
    response = await client.get("/api/v1/flags/bad*key", headers=AUTH)
    assert response.status == 400
    assert "invalid flag key 'bad*key'" in (await response.json())["error"]
    status, body, _ = await put(client, "x" * 201, {"enabled": True, "reason": "r"})
    assert status == 400
    assert "1 to 200 characters" in body["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "invalid flag update: body is not JSON"),
        ("", "invalid flag update: body is not JSON"),
        ([True], "invalid flag update: body: Input should be a valid dictionary"),
        ({"reason": "r"}, "invalid flag update: enabled: Field required"),
        (
            {"enabled": "false", "reason": "r"},
            "invalid flag update: enabled: Input should be a valid boolean",
        ),
        ({"enabled": 0, "reason": "r"}, "invalid flag update: enabled: Input should be a valid boolean"),
        ({"enabled": True}, "invalid flag update: reason: Field required"),
        (
            {"enabled": True, "reason": ""},
            "invalid flag update: reason: String should have at least 1 character",
        ),
        ({"enabled": True, "reason": "   "}, "invalid flag update: reason: Value error, must not be blank"),
        (
            {"enabled": True, "reason": "r" * 501},
            "invalid flag update: reason: String should have at most 500",
        ),
        ({"enabled": True, "reason": 5}, "invalid flag update: reason: Input should be a valid string"),
        (
            {"enabled": True, "reason": "r", "actor": ""},
            "invalid flag update: actor: String should have at least",
        ),
        (
            {"enabled": True, "reason": "r", "actor": None},
            "invalid flag update: actor: Input should be a valid",
        ),
        (
            {"enabled": True, "reason": "r", "on": 1},
            "invalid flag update: on: Extra inputs are not permitted",
        ),
    ],
)
async def test_bad_bodies_are_400_with_the_reason_and_change_nothing(
    client: TestClient, store: FlagStore, body: Any, message: str
):
    await put(client, "checkout", {"enabled": False, "reason": "kill"})
    status, answer, _ = await put(client, "checkout", body)
    assert (status, answer["status"], answer["errorType"]) == (400, "error", "bad_data")
    assert answer["error"].startswith(message), answer["error"]
    record = await store.get("checkout")
    assert record is not None
    assert (record.enabled, record.version, record.reason) == (False, 1, "kill")


async def test_a_body_of_exactly_500_characters_of_reason_is_fine(client: TestClient):
    status, body, _ = await put(client, "checkout", {"enabled": True, "reason": "r" * 500})
    assert (status, len(body["reason"])) == (200, 500)


async def test_oversized_bodies_are_413(client: TestClient, store: FlagStore):
    status, body, _ = await put(client, "checkout", {"enabled": True, "reason": "r", "pad": "x" * 70_000})
    assert status == 413
    assert "exceeds" in body["error"]
    assert await store.get("checkout") is None


async def test_if_match_makes_the_put_conditional(client: TestClient, store: FlagStore):
    # 0: only if the flag does not exist yet.
    status, body, _ = await put(
        client, "checkout", {"enabled": True, "reason": "create"}, **{"If-Match": "0"}
    )
    assert (status, body["version"]) == (200, 1)
    status, body, _ = await put(client, "checkout", {"enabled": False, "reason": "late"}, **{"If-Match": "0"})
    assert (status, body["errorType"], body["currentVersion"]) == (412, "conflict", 1)
    assert body["error"] == "flag 'checkout' is at version 1, not the expected 0"
    record = await store.get("checkout")
    assert record is not None
    assert (record.enabled, record.version) == (True, 1)

    # The ETag form (quoted) is accepted as well as the bare version.
    status, body, headers = await put(
        client, "checkout", {"enabled": False, "reason": "k"}, **{"If-Match": '"1"'}
    )
    assert (status, body["version"], headers["ETag"]) == (200, 2, '"2"')
    status, body, _ = await put(client, "checkout", {"enabled": True, "reason": "k"}, **{"If-Match": "1"})
    assert status == 412
    assert body["currentVersion"] == 2


@pytest.mark.parametrize("header", ["abc", "*", "-1", 'W/"1"', "1.5", ""])
async def test_an_unusable_if_match_is_400(client: TestClient, store: FlagStore, header: str):
    status, body, _ = await put(client, "checkout", {"enabled": True, "reason": "r"}, **{"If-Match": header})
    assert status == 400
    assert body["error"].startswith("If-Match must be a flag version")
    assert await store.get("checkout") is None


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/flags"), ("GET", "/api/v1/flags/checkout"), ("PUT", "/api/v1/flags/checkout")],
)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", TOKEN, f"Basic {TOKEN}"])
async def test_every_route_needs_the_admin_token_when_configured(
    client: TestClient, store: FlagStore, method: str, path: str, authorization: str | None
):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.request(method, path, headers=headers, json={"enabled": False, "reason": "r"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="admin"'
    assert "admin" in (await response.json())["error"]
    assert await store.get("checkout") is None


async def test_without_a_configured_token_the_api_is_open(store: FlagStore, make_client: MakeClient):
    client = await make_client(store, token=None)
    response = await client.put("/api/v1/flags/checkout", json={"enabled": False, "reason": "r"})
    assert response.status == 200
    response = await client.get("/api/v1/flags/checkout")
    assert (response.status, (await response.json())["enabled"]) == (200, False)


async def test_redis_unavailable_is_503(keys: Keys, make_client: MakeClient):
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    client = await make_client(FlagStore(dead, keys, FakeClock(T0)))
    for method, path in [("GET", "/api/v1/flags"), ("GET", "/api/v1/flags/a"), ("PUT", "/api/v1/flags/a")]:
        response = await client.request(method, path, headers=AUTH, json={"enabled": True, "reason": "r"})
        assert response.status == 503, (method, path)
        assert response.headers["Retry-After"] == "1"
    await dead.aclose()


async def test_a_client_that_expects_100_continue_is_asked_for_the_body_only_when_allowed(
    client: TestClient, store: FlagStore
):
    # The body is asked for (100 Continue) only after the token check, so a refused client uploads nothing.
    body = {"enabled": False, "reason": "incident 42"}
    url = "/api/v1/flags/checkout"
    refused = await client.put(url, json=body, headers={"Authorization": "Bearer nope"}, expect100=True)
    assert (refused.status, refused.headers.get("Connection")) == (401, "close")
    allowed = await client.put(url, json=body, headers=AUTH, expect100=True)
    assert allowed.status == 200, await allowed.text()
    assert (await store.get("checkout")).enabled is False
