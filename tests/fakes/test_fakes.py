"""The fakes behave like the services they stand in for: driven by the real clients (slack-sdk's webhook and
Web API clients, plain aiohttp for PagerDuty), they answer Slack's and PagerDuty's statuses and bodies, keep
the state a test asserts on, and inject failures, hangs and rate limits."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.http import FakeServer, Request, serve_in_thread, stop_in_thread
from tests.fakes.pagerduty import DEFAULT_ROUTING_KEY, FakePagerDuty
from tests.fakes.slack import FakeSlackApi, FakeSlackWebhook
from tests.fakes.webhook import FakeWebhook

TOKEN = "xoxb-test-token"


@pytest.fixture
async def slack_hook() -> AsyncIterator[FakeSlackWebhook]:
    fake = await FakeSlackWebhook().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def slack_api() -> AsyncIterator[FakeSlackApi]:
    fake = await FakeSlackApi(token=TOKEN).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def pagerduty() -> AsyncIterator[FakePagerDuty]:
    fake = await FakePagerDuty().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def hook_client(fake: FakeSlackWebhook, **kwargs: Any) -> AsyncWebhookClient:
    # No retries unless a test asks: each answer must reach the test as the fake sent it.
    kwargs.setdefault("retry_handlers", [])
    return AsyncWebhookClient(fake.webhook_url, **kwargs)


def api_client(fake: FakeSlackApi, token: str | None = TOKEN, **kwargs: Any) -> AsyncWebClient:
    kwargs.setdefault("retry_handlers", [])
    return AsyncWebClient(token=token, base_url=fake.base_url, **kwargs)


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


# -- Slack incoming webhook -------------------------------------------------------------------------------


async def test_slack_webhook_accepts_a_message(slack_hook: FakeSlackWebhook) -> None:
    blocks = [header("[FIRING] HighErrorRate"), section("*error rate* 7%"), {"type": "divider"}]
    response = await hook_client(slack_hook).send(text="HighErrorRate firing", blocks=blocks)
    assert (response.status_code, response.body) == (200, "ok")
    assert response.headers["Content-Type"].startswith("text/plain")
    assert slack_hook.messages == [{"text": "HighErrorRate firing", "blocks": blocks}]
    (request,) = slack_hook.requests
    assert (request.method, request.path, request.status) == ("POST", "/services/T000/B000/XXXXXXXX", 200)
    assert request.json == {"text": "HighErrorRate firing", "blocks": blocks}


async def test_slack_webhook_rejects_a_message_without_text(slack_hook: FakeSlackWebhook) -> None:
    response = await hook_client(slack_hook).send_dict({"text": "", "unfurl_links": False})
    assert (response.status_code, response.body) == (400, "no_text")
    assert slack_hook.messages == []


async def test_slack_webhook_rejects_a_body_that_is_not_json(
    slack_hook: FakeSlackWebhook, http: aiohttp.ClientSession
) -> None:
    async with http.post(slack_hook.webhook_url, data=b"text=hello") as response:
        assert (response.status, await response.text()) == (400, "invalid_payload")
        assert response.content_type == "text/plain"


@pytest.mark.parametrize(
    "blocks",
    [
        pytest.param([{"type": "divider"}] * 51, id="51 blocks"),
        pytest.param({"type": "divider"}, id="not a list"),
        pytest.param([{"text": {"type": "plain_text", "text": "x"}}], id="no type"),
        pytest.param([{"type": "sectoin", "text": {"type": "mrkdwn", "text": "x"}}], id="unknown type"),
        pytest.param([header("x" * 151)], id="header 151 chars"),
        pytest.param([{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}], id="header mrkdwn"),
        pytest.param([section("x" * 3001)], id="section 3001 chars"),
        pytest.param([{"type": "section"}], id="section without text or fields"),
        pytest.param(
            [{"type": "context", "elements": [{"type": "mrkdwn", "text": "x"}] * 11}],
            id="context 11 elements",
        ),
        pytest.param([{"type": "actions", "elements": [{"type": "button"}]}], id="button without text"),
    ],
)
async def test_slack_webhook_rejects_invalid_blocks(slack_hook: FakeSlackWebhook, blocks: Any) -> None:
    response = await hook_client(slack_hook).send_dict({"text": "fallback", "blocks": blocks})
    assert (response.status_code, response.body) == (400, "invalid_blocks")
    assert slack_hook.messages == []


async def test_slack_webhook_accepts_blocks_at_the_limits(slack_hook: FakeSlackWebhook) -> None:
    blocks = [header("h" * 150), section("s" * 3000), *[{"type": "divider"}] * 48]
    response = await hook_client(slack_hook).send(text="limits", blocks=blocks)
    assert (response.status_code, response.body) == (200, "ok")


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("no_service", 404),
        ("channel_not_found", 404),
        ("channel_is_archived", 410),
        ("action_prohibited", 403),
    ],
)
async def test_slack_webhook_disabled_answers_a_permanent_error(
    slack_hook: FakeSlackWebhook, reason: str, status: int
) -> None:
    client = hook_client(slack_hook)
    assert (await client.send(text="before")).status_code == 200
    slack_hook.disable(reason)
    response = await client.send(text="after")
    assert (response.status_code, response.body) == (status, reason)
    assert [m["text"] for m in slack_hook.messages] == ["before"]


async def test_slack_webhook_rate_limit_carries_retry_after(slack_hook: FakeSlackWebhook) -> None:
    slack_hook.fail_next(1, status=429, headers={"Retry-After": "2"}, body="rate_limited")
    client = hook_client(slack_hook)
    limited = await client.send(text="first")
    assert (limited.status_code, limited.body, limited.headers["Retry-After"]) == (429, "rate_limited", "2")
    assert slack_hook.messages == []  # a refused call has no effect
    assert (await client.send(text="second")).status_code == 200
    assert [r.status for r in slack_hook.requests] == [429, 200]


async def test_slack_sdk_rate_limit_handler_retries_on_the_fakes_429(slack_hook: FakeSlackWebhook) -> None:
    # Retry-After 0: the handler still parses the header (it crashes on a non-integer) but waits < 1 s.
    slack_hook.fail_next(1, status=429, headers={"Retry-After": "0"}, body="rate_limited")
    client = hook_client(slack_hook, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    response = await client.send(text="retried")
    assert (response.status_code, response.body) == (200, "ok")
    assert [r.status for r in slack_hook.requests] == [429, 200]


async def test_slack_webhook_injected_server_error_defaults_to_slacks_body(
    slack_hook: FakeSlackWebhook,
) -> None:
    slack_hook.fail_next(1, status=500)
    response = await hook_client(slack_hook).send(text="x")
    assert (response.status_code, response.body) == (500, "rollup_error")


async def test_validation_runs_before_an_injected_failure(slack_hook: FakeSlackWebhook) -> None:
    slack_hook.fail_next(1, status=503)
    client = hook_client(slack_hook)
    assert (await client.send_dict({"text": ""})).status_code == 400  # invalid: its own 400, failure kept
    assert (await client.send(text="valid")).status_code == 503
    assert (await client.send(text="valid")).status_code == 200
    assert [r.status for r in slack_hook.requests] == [400, 503, 200]


# -- Slack Web API ----------------------------------------------------------------------------------------


async def test_slack_api_post_update_and_history(slack_api: FakeSlackApi) -> None:
    client = api_client(slack_api)
    metadata = {"event_type": "tripwire_group", "event_payload": {"group_key": "g1"}}
    posted = await client.chat_postMessage(
        channel="#alerts", text="firing", blocks=[section(":red_circle: firing")], metadata=metadata
    )
    assert posted["ok"] is True
    assert posted["channel"] == "C0ALERTS"
    ts = posted["ts"]
    assert posted["message"]["text"] == "firing"

    updated = await client.chat_update(
        channel="C0ALERTS", ts=ts, text="resolved", blocks=[section("resolved")]
    )
    assert (updated["channel"], updated["ts"], updated["text"]) == ("C0ALERTS", ts, "resolved")

    history = await client.conversations_history(channel="C0ALERTS", include_all_metadata=True)
    assert history["has_more"] is False
    (message,) = history["messages"]
    assert (message["ts"], message["text"], message["blocks"]) == (ts, "resolved", [section("resolved")])
    assert message["metadata"] == metadata
    assert "edited" in message

    # The fake saw what the real client sends: JSON + Bearer for chat.*, a GET with query params for history.
    (post,) = slack_api.calls("chat.postMessage")
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert post.headers["Content-Type"].startswith("application/json")
    assert post.json is not None
    assert post.json["channel"] == "#alerts"
    (read,) = slack_api.calls("conversations.history")
    assert (read.method, read.params["channel"], read.params["include_all_metadata"]) == (
        "GET",
        "C0ALERTS",
        "1",
    )
    assert slack_api.messages("alerts")[0]["text"] == "resolved"


async def test_slack_api_ts_is_unique_and_increasing(slack_api: FakeSlackApi) -> None:
    client = api_client(slack_api)
    stamps = [(await client.chat_postMessage(channel="C0ALERTS", text=f"m{i}"))["ts"] for i in range(5)]
    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 5
    assert all(len(ts.split(".")[1]) == 6 for ts in stamps)


async def test_slack_api_threads_and_broadcasts(slack_api: FakeSlackApi) -> None:
    client = api_client(slack_api)
    parent = (await client.chat_postMessage(channel="alerts", text="firing"))["ts"]
    quiet = await client.chat_postMessage(channel="C0ALERTS", text="still firing", thread_ts=parent)
    loud = await client.chat_postMessage(
        channel="C0ALERTS", text="resolved", thread_ts=parent, reply_broadcast=True
    )
    assert quiet["message"]["thread_ts"] == parent

    history = await client.conversations_history(channel="C0ALERTS")
    # Newest first; a plain reply stays in its thread, a broadcast reply shows in the channel too.
    assert [m["ts"] for m in history["messages"]] == [loud["ts"], parent]
    assert history["messages"][1]["reply_count"] == 2

    replies = await client.conversations_replies(channel="C0ALERTS", ts=parent)
    assert [m["text"] for m in replies["messages"]] == ["firing", "still firing", "resolved"]

    (top,) = slack_api.messages("#alerts")
    assert (top["ts"], top["text"]) == (parent, "firing")
    assert [(r["text"], r["broadcast"]) for r in top["replies"]] == [
        ("still firing", False),
        ("resolved", True),
    ]


async def test_slack_api_history_window_and_pages(slack_api: FakeSlackApi) -> None:
    client = api_client(slack_api)
    stamps = [(await client.chat_postMessage(channel="C0ALERTS", text=f"m{i}"))["ts"] for i in range(3)]
    newer = await client.conversations_history(channel="C0ALERTS", oldest=stamps[0])
    assert [m["text"] for m in newer["messages"]] == ["m2", "m1"]  # oldest is exclusive by default
    first = await client.conversations_history(channel="C0ALERTS", limit=2)
    assert ([m["text"] for m in first["messages"]], first["has_more"]) == (["m2", "m1"], True)
    cursor = first["response_metadata"]["next_cursor"]
    rest = await client.conversations_history(channel="C0ALERTS", limit=2, cursor=cursor)
    assert ([m["text"] for m in rest["messages"]], rest["has_more"]) == (["m0"], False)


@pytest.mark.parametrize(("token", "error"), [("xoxb-wrong", "invalid_auth"), (None, "not_authed")])
async def test_slack_api_rejects_a_bad_token(slack_api: FakeSlackApi, token: str | None, error: str) -> None:
    with pytest.raises(SlackApiError) as failed:
        await api_client(slack_api, token=token).chat_postMessage(channel="C0ALERTS", text="x")
    assert failed.value.response.status_code == 200  # Slack reports API errors as HTTP 200, ok: false
    assert failed.value.response["error"] == error
    assert slack_api.messages("C0ALERTS") == []


async def test_slack_api_auth_test(slack_api: FakeSlackApi) -> None:
    answer = await api_client(slack_api).auth_test()
    assert answer["ok"] is True
    assert answer["user_id"]
    assert answer["team_id"]


async def test_slack_api_errors(slack_api: FakeSlackApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIP_SLACK_SDK_WARNING", "1")  # the missing text is the point here
    client = api_client(slack_api)

    async def error_of(call: Any) -> str:
        with pytest.raises(SlackApiError) as failed:
            await call
        return str(failed.value.response["error"])

    assert await error_of(client.chat_postMessage(channel="#nope", text="x")) == "channel_not_found"
    assert await error_of(client.chat_postMessage(channel="C0ALERTS", text="")) == "no_text"
    blocks = [{"type": "divider"}] * 51
    assert (
        await error_of(client.chat_postMessage(channel="C0ALERTS", text="x", blocks=blocks))
        == "invalid_blocks"
    )
    assert (
        await error_of(client.chat_update(channel="C0ALERTS", ts="1.000001", text="x")) == "message_not_found"
    )
    ts = (await client.chat_postMessage(channel="C0ALERTS", text="x"))["ts"]
    # chat.update and conversations.history want the channel id, not its name.
    assert await error_of(client.chat_update(channel="alerts", ts=ts, text="y")) == "channel_not_found"
    assert await error_of(client.conversations_history(channel="#alerts")) == "channel_not_found"
    assert await error_of(client.api_call("chat.nonsense", json={})) == "unknown_method"
    assert [m["text"] for m in slack_api.messages("C0ALERTS")] == ["x"]


async def test_slack_api_rate_limit(slack_api: FakeSlackApi) -> None:
    slack_api.fail_next(
        1, status=429, headers={"Retry-After": "1"}, body={"ok": False, "error": "ratelimited"}
    )
    client = api_client(slack_api)
    with pytest.raises(SlackApiError) as failed:
        await client.chat_postMessage(channel="C0ALERTS", text="x")
    assert failed.value.response.status_code == 429
    assert failed.value.response.headers["Retry-After"] == "1"
    assert failed.value.response["error"] == "ratelimited"
    assert slack_api.messages("C0ALERTS") == []
    await client.chat_postMessage(channel="C0ALERTS", text="x")
    assert [r.status for r in slack_api.calls("chat.postMessage")] == [429, 200]


async def test_slack_api_accepts_form_encoded_calls(
    slack_api: FakeSlackApi, http: aiohttp.ClientSession
) -> None:
    # Slack also takes form posts with the token as an argument and blocks as a JSON string.
    form = {"token": TOKEN, "channel": "C0ALERTS", "text": "form", "blocks": json.dumps([section("form")])}
    async with http.post(slack_api.base_url + "chat.postMessage", data=form) as response:
        body = await response.json()
    assert body["ok"] is True, body
    assert slack_api.messages("C0ALERTS")[0]["blocks"] == [section("form")]


# -- hangs: the effect happens, the answer never comes ------------------------------------------------------


async def test_hang_next_applies_the_effect_but_never_answers(slack_api: FakeSlackApi) -> None:
    slack_api.hang_next()
    client = api_client(slack_api, timeout=0.3)
    with pytest.raises(asyncio.TimeoutError):
        await client.chat_postMessage(channel="C0ALERTS", text="posted, unanswered")
    assert [m["text"] for m in slack_api.messages("C0ALERTS")] == ["posted, unanswered"]
    (call,) = slack_api.calls("chat.postMessage")
    assert call.status == 0
    # Only the next call hangs.
    answered = await api_client(slack_api).chat_postMessage(channel="C0ALERTS", text="answered")
    assert answered["ok"] is True


async def test_hung_call_is_dropped_on_stop(pagerduty: FakePagerDuty, http: aiohttp.ClientSession) -> None:
    pagerduty.hang_next()
    pending = asyncio.ensure_future(http.post(pagerduty.enqueue_url, json=trigger("k-hang")))
    await pagerduty.wait_for(lambda: pagerduty.requests, what="the hung request")
    assert pagerduty.incidents["k-hang"].status == "triggered"
    await pagerduty.stop()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await pending


# -- PagerDuty --------------------------------------------------------------------------------------------


def trigger(dedup_key: str | None = None, **payload: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "routing_key": DEFAULT_ROUTING_KEY,
        "event_action": "trigger",
        "payload": {"summary": "HighErrorRate", "source": "tripwire", "severity": "critical", **payload},
        "links": [{"href": "https://runbooks.example/high-error-rate", "text": "runbook"}],
        "client": "tripwire",
    }
    if dedup_key is not None:
        event["dedup_key"] = dedup_key
    return event


def follow_up(action: str, dedup_key: str) -> dict[str, Any]:
    return {"routing_key": DEFAULT_ROUTING_KEY, "event_action": action, "dedup_key": dedup_key}


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as response:
        text = await response.text()
        return response.status, json.loads(text) if response.content_type == "application/json" else text


async def test_pagerduty_dedups_and_follows_the_incident(
    pagerduty: FakePagerDuty, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, pagerduty.enqueue_url, trigger("group-1"))
    assert (status, body) == (
        202,
        {"status": "success", "message": "Event processed", "dedup_key": "group-1"},
    )
    assert (await post(http, pagerduty.enqueue_url, trigger("group-1")))[0] == 202
    assert list(pagerduty.incidents) == ["group-1"]
    assert len(pagerduty.incidents["group-1"].events) == 2  # the repeat is a log entry, not a new incident

    assert (await post(http, pagerduty.enqueue_url, follow_up("acknowledge", "group-1")))[0] == 202
    assert pagerduty.incidents["group-1"].status == "acknowledged"
    assert (await post(http, pagerduty.enqueue_url, follow_up("resolve", "group-1")))[0] == 202
    assert pagerduty.incidents["group-1"].status == "resolved"

    # After a resolve the same key opens a new incident.
    assert (await post(http, pagerduty.enqueue_url, trigger("group-1")))[0] == 202
    assert pagerduty.incidents["group-1"].status == "triggered"
    assert [i.status for i in pagerduty.history] == ["resolved", "triggered"]
    assert [e["event_action"] for e in pagerduty.events] == [
        "trigger",
        "trigger",
        "acknowledge",
        "resolve",
        "trigger",
    ]


async def test_pagerduty_generates_a_dedup_key(pagerduty: FakePagerDuty, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, pagerduty.enqueue_url, trigger())
    assert status == 202
    assert len(body["dedup_key"]) == 32
    assert pagerduty.incidents[body["dedup_key"]].status == "triggered"


async def test_pagerduty_drops_follow_ups_for_unknown_keys(
    pagerduty: FakePagerDuty, http: aiohttp.ClientSession
) -> None:
    assert (await post(http, pagerduty.enqueue_url, follow_up("resolve", "never-triggered")))[0] == 202
    assert pagerduty.incidents == {}


def _oversized() -> dict[str, Any]:
    return trigger("big", custom_details={"blob": "x" * (512 * 1024)})


@pytest.mark.parametrize(
    ("event", "mentions"),
    [
        pytest.param(trigger("k", severity="fatal"), "severity", id="bad severity"),
        pytest.param({**trigger("k"), "routing_key": "short"}, "routing_key", id="short routing key"),
        pytest.param({**trigger("k"), "event_action": "escalate"}, "event_action", id="bad action"),
        pytest.param(
            {"routing_key": DEFAULT_ROUTING_KEY, "event_action": "resolve"}, "dedup_key", id="no key"
        ),
        pytest.param(trigger("k" * 256), "dedup_key", id="dedup key 256 chars"),
        pytest.param(trigger("k", summary="s" * 1025), "summary", id="summary 1025 chars"),
        pytest.param(trigger("k", summary=""), "summary", id="empty summary"),
        pytest.param(trigger("k", source=""), "source", id="empty source"),
        pytest.param(trigger("k", timestamp="yesterday"), "timestamp", id="bad timestamp"),
        pytest.param({**trigger("k"), "links": [{"text": "no href"}]}, "links", id="link without href"),
        pytest.param({**trigger("k"), "images": [{"alt": "no src"}]}, "images", id="image without src"),
        pytest.param({**trigger("k"), "payload": None}, "payload", id="no payload"),
        pytest.param(["not", "an", "object"], "object", id="not an object"),
        pytest.param(_oversized(), "bytes", id="over 512 KB"),
    ],
)
async def test_pagerduty_rejects_invalid_events(
    pagerduty: FakePagerDuty, http: aiohttp.ClientSession, event: Any, mentions: str
) -> None:
    status, body = await post(http, pagerduty.enqueue_url, event)
    assert status == 400
    assert (body["status"], body["message"]) == ("invalid event", "Event object is invalid")
    assert any(mentions in error for error in body["errors"]), body["errors"]
    assert pagerduty.events == []
    assert pagerduty.incidents == {}


async def test_pagerduty_rejects_malformed_json(
    pagerduty: FakePagerDuty, http: aiohttp.ClientSession
) -> None:
    async with http.post(pagerduty.enqueue_url, data=b"{not json") as response:
        assert response.status == 400
        assert (await response.json())["status"] == "invalid event"


async def test_pagerduty_accepts_a_full_trigger(
    pagerduty: FakePagerDuty, http: aiohttp.ClientSession
) -> None:
    event = trigger(
        "full",
        timestamp="2015-07-17T08:42:58.315+0000",
        component="api",
        group="prod",
        custom_details={"value": 0.07},
    )
    event["payload"]["class"] = "error rate"
    event["images"] = [
        {"src": "https://graphs.example/1.png", "href": "https://graphs.example", "alt": "graph"}
    ]
    event["client_url"] = "https://tripwire.example"
    assert (await post(http, pagerduty.enqueue_url, event))[0] == 202
    assert pagerduty.events == [event]


async def test_pagerduty_require_key(http: aiohttp.ClientSession) -> None:
    fake = await FakePagerDuty(routing_key="a" * 32, require_key=True).start()
    try:
        status, body = await post(http, fake.enqueue_url, trigger("k"))  # the default key: not this one's
        assert status == 400
        assert any("routing_key" in e for e in body["errors"])
        assert (await post(http, fake.enqueue_url, {**trigger("k"), "routing_key": "a" * 32}))[0] == 202
    finally:
        await fake.stop()


async def test_pagerduty_change_events(pagerduty: FakePagerDuty, http: aiohttp.ClientSession) -> None:
    change = {
        "routing_key": DEFAULT_ROUTING_KEY,
        "payload": {"summary": "kill switch: checkout-v2 turned off", "source": "tripwire"},
        "links": [{"href": "https://tripwire.example/audit/1"}],
    }
    assert (await post(http, pagerduty.change_url, change))[0] == 202
    assert pagerduty.changes == [change]
    status, body = await post(http, pagerduty.change_url, {"routing_key": DEFAULT_ROUTING_KEY, "payload": {}})
    assert status == 400
    assert any("summary" in e for e in body["errors"])
    assert pagerduty.events == []


async def test_pagerduty_injected_failures(pagerduty: FakePagerDuty, http: aiohttp.ClientSession) -> None:
    pagerduty.fail_next(1, status=429, body={"status": "throttle event", "message": "slow down"})
    pagerduty.fail_next(1, status=502)
    assert await post(http, pagerduty.enqueue_url, trigger("k")) == (
        429,
        {"status": "throttle event", "message": "slow down"},
    )
    assert (await post(http, pagerduty.enqueue_url, trigger("k")))[0] == 502
    assert pagerduty.incidents == {}
    assert (await post(http, pagerduty.enqueue_url, trigger("k")))[0] == 202
    assert [r.status for r in pagerduty.requests] == [429, 502, 202]


# -- the shared base --------------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after(slack_api: FakeSlackApi) -> None:
    # A slow rate, so the second call is over the limit however slow the machine is.
    slack_api.rate_limit(0.01)
    client = api_client(slack_api)
    await client.chat_postMessage(channel="C0ALERTS", text="first")
    with pytest.raises(SlackApiError) as failed:
        await client.chat_postMessage(channel="C0ALERTS", text="too soon")
    assert failed.value.response.status_code == 429
    assert 1 <= int(failed.value.response.headers["Retry-After"]) <= 100
    slack_api.rate_limit(None)
    await client.chat_postMessage(channel="C0ALERTS", text="unlimited again")
    assert [m["text"] for m in slack_api.messages("C0ALERTS")] == ["first", "unlimited again"]


async def test_unknown_paths_are_logged(pagerduty: FakePagerDuty, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{pagerduty.url}/v1/enqueue", json={}) as response:
        assert response.status == 404
    assert [(r.path, r.status) for r in pagerduty.requests] == [("/v1/enqueue", 404)]


def test_request_repr_hides_credentials() -> None:
    request = Request(0.0, "POST", "/api/x", {"Authorization": "Bearer xoxb-secret"}, b"", None, 200)
    assert "xoxb-secret" not in repr(request)


def test_serve_in_thread_from_sync_code() -> None:
    fake = serve_in_thread(FakePagerDuty())
    try:
        data = json.dumps(trigger("threaded")).encode()
        request = urllib.request.Request(fake.url + "/v2/enqueue", data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202
        assert fake.incidents["threaded"].status == "triggered"
    finally:
        stop_in_thread(fake)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(fake.url + "/v2/enqueue", timeout=2)


async def test_serve_in_thread_stopped_from_another_loop(http: aiohttp.ClientSession) -> None:
    fake = serve_in_thread(FakeSlackWebhook())
    try:
        async with http.post(fake.webhook_url, json={"text": "from the test loop"}) as response:
            assert (response.status, await response.text()) == (200, "ok")
        assert fake.messages == [{"text": "from the test loop"}]
    finally:
        await fake.stop()  # the fake's loop runs in its own thread: stop() hands over to it
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.post(fake.webhook_url, json={"text": "after stop"})


def test_fakes_serve_from_their_own_process() -> None:
    command = [sys.executable, "-m", "tests.fakes.http", "slack-api", "pagerduty"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            fakes = json.loads(process.stdout.readline())
            assert fakes["slack-api"]["endpoint"] == fakes["slack-api"]["url"] + "/api/"
            data = json.dumps(trigger("from-a-process")).encode()
            request = urllib.request.Request(fakes["pagerduty"]["endpoint"], data=data, method="POST")
            request.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(request, timeout=5) as response:
                assert json.load(response)["dedup_key"] == "from-a-process"
            auth_test = fakes["slack-api"]["endpoint"] + "auth.test"
            with urllib.request.urlopen(auth_test, data=b"", timeout=5) as response:
                assert json.load(response) == {"ok": False, "error": "not_authed"}
        finally:
            process.terminate()
            process.wait(timeout=10)


# -- the Alertmanager webhook fake on the shared base --------------------------------------------------------


def alertmanager_body(status: str = "firing") -> dict[str, Any]:
    alert = {
        "status": status,
        "labels": {"alertname": "HighErrorRate"},
        "annotations": {},
        "startsAt": "2025-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://tripwire/graph",
        "fingerprint": "0123456789abcdef",
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "hook",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate"},
        "commonAnnotations": {},
        "externalURL": "http://tripwire",
        "alerts": [alert],
    }


async def test_webhook_fake_keeps_its_api(http: aiohttp.ClientSession) -> None:
    fake = await FakeWebhook().start()
    try:
        assert isinstance(fake, FakeServer)
        assert fake.url.endswith("/hook")
        fake.fail_next(1, status=429, headers={"Retry-After": "3"})
        async with http.post(fake.url + "/team-a", json=alertmanager_body()) as response:
            assert (response.status, response.headers["Retry-After"]) == (429, "3")
        async with http.post(fake.url, json={"version": "4"}) as response:
            assert response.status == 400
        fake.fail_next(5)
        fake.failures.clear()  # the receiver is healthy again
        async with http.post(fake.url, json=alertmanager_body("resolved")) as response:
            assert (response.status, await response.text()) == (200, "ok")
        assert [(r.path, r.status) for r in fake.received] == [
            ("/hook/team-a", 429),
            ("/hook", 400),
            ("/hook", 200),
        ]
        assert [b["status"] for b in fake.delivered] == ["resolved"]
    finally:
        await fake.stop()
