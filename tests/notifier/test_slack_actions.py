"""POST /slack/actions: the signed "Re-enable flag" click turns a kill-switched flag back on, audits the user
and updates the Slack message; unsigned, badly signed or stale requests get 401 and change nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import orjson
import pytest
import yaml
from slack_sdk.signature import SignatureVerifier

from shared.clock import SystemClock
from shared.flag_store import FlagStore
from tests.fakes.slack import FakeSlackWebhook
from tests.notifier.running import running_notifier
from tests.polling import eventually

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ALERT = {"labels": {"alertname": "HighErrorRate", "service": "checkout", "flag": "new-checkout"}}


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlackWebhook]:
    fake = await FakeSlackWebhook().start()
    yield fake
    await fake.stop()


def click(decision: str, response_url: str) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": "U0ONCALL", "username": "ada"},
        "actions": [{"action_id": "tripwire_reenable", "value": decision, "type": "button"}],
        "response_url": response_url,
    }
    return urlencode({"payload": orjson.dumps(payload).decode()}).encode()


def signed(body: bytes, at: float | None = None, secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature or "",
        "Content-Type": "application/x-www-form-urlencoded",
    }


@pytest.fixture
async def flipped(make_config, redis, keys, tmp_path: Path):
    """A notifier whose kill switch has just turned `new-checkout` off; yields (client, decision id)."""
    routing = tmp_path / "am.yml"
    routing.write_text(
        yaml.safe_dump(
            {
                "route": {"receiver": "rollback", "group_by": ["flag"], "group_wait": "0s"},
                "receivers": [
                    {
                        "name": "rollback",
                        "flag_off_configs": [{"provider": "builtin", "flag": "{{ .CommonLabels.flag }}"}],
                    }
                ],
            }
        )
    )
    config = make_config(
        alerting={"config_file": str(routing)}, notifier={"startup_wait": "0s"}, slack_signing_secret=SECRET
    )
    async with running_notifier(config) as (_, client):
        response = await client.post("/api/v2/alerts", json=[ALERT])
        assert response.status == 200
        store = FlagStore(redis, keys, SystemClock())

        async def off() -> bool:
            record = await store.get("new-checkout")
            return record is not None and not record.enabled

        async def audited() -> bool:
            return await redis.xlen(keys.audit) > 0

        await eventually(off, timeout=10, what="the kill switch to turn the flag off")
        # The flip and its audit record are two writes: wait for the second too.
        await eventually(audited, timeout=10, what="the kill switch's audit record")
        [(_, entry)] = await redis.xrange(keys.audit)
        yield client, entry[b"decision"].decode(), store


async def test_a_signed_click_re_enables_audits_the_user_and_updates_the_message(flipped, slack, redis, keys):
    client, decision, store = flipped
    body = click(decision, slack.webhook_url)
    response = await client.post("/slack/actions", data=body, headers=signed(body))
    assert response.status == 200  # at once (Slack's 3-second limit); the outcome follows via response_url
    await eventually(lambda: _value(slack.messages), timeout=10, what="the message update")
    record = await store.get("new-checkout")
    assert record is not None and record.enabled is True and record.updated_by.startswith("slack:U0ONCALL")
    entries = [e for _, e in await redis.xrange(keys.audit)]
    assert entries[-1][b"outcome"] == b"re_enabled" and entries[-1][b"actor"].startswith(b"slack:U0ONCALL")
    [update] = slack.messages
    assert update["replace_original"] is True and "re-enabled by <@U0ONCALL>" in update["text"]


@pytest.mark.parametrize(
    "headers",
    [
        {},  # unsigned
        {"X-Slack-Request-Timestamp": "0", "X-Slack-Signature": "v0=deadbeef"},
        "wrong-secret",
        "stale",
    ],
)
async def test_unsigned_bad_or_stale_requests_get_401_and_change_nothing(
    flipped, slack, redis, keys, headers
):
    client, decision, store = flipped
    body = click(decision, slack.webhook_url)
    if headers == "wrong-secret":
        headers = signed(body, secret="not-the-secret")
    elif headers == "stale":
        headers = signed(body, at=time.time() - 6 * 60)  # Slack's window is 5 minutes
    audit_before = await redis.xlen(keys.audit)
    response = await client.post("/slack/actions", data=body, headers=headers)
    assert response.status == 401
    record = await store.get("new-checkout")
    assert record is not None and record.enabled is False
    assert await redis.xlen(keys.audit) == audit_before
    assert slack.requests == []


async def test_a_signed_click_on_a_decision_that_flipped_nothing_changes_nothing(flipped, slack, redis, keys):
    client, decision, store = flipped
    raw = await redis.hget(f"{keys.audit}:killswitch:decisions", decision)
    data = orjson.loads(raw)
    data["outcome"] = "already_off"  # someone else had turned it off: not ours to undo
    await redis.hset(f"{keys.audit}:killswitch:decisions", decision, orjson.dumps(data))
    body = click(decision, slack.webhook_url)
    response = await client.post("/slack/actions", data=body, headers=signed(body))
    assert response.status == 200
    [update] = await eventually(lambda: _value(slack.messages), timeout=10, what="the reply")
    assert "nothing done" in update["text"]
    record = await store.get("new-checkout")
    assert record is not None and record.enabled is False


async def _value(value: object) -> object:
    return value
