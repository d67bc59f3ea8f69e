"""Silences: the pure rules, the v2 API on a real Redis, the real `amtool` against it, and the mute stage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from services.notifier.silences import MatcherModel, PostableSilence, SilenceError, SilenceStore, validate
from shared.alerts import from_unix
from shared.clock import FakeClock
from tests.notifier.running import AMTOOL, NO_AMTOOL, amtool, running_notifier
from tests.notifier.test_dispatcher import T0, alert, deliver, dispatcher_for
from tests.polling import eventually


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def body(**changes: object) -> PostableSilence:
    data: dict[str, object] = {
        "matchers": [{"name": "alertname", "value": "HighErrorRate", "isRegex": False}],
        "startsAt": from_unix(T0),
        "endsAt": from_unix(T0 + 3600),
        "createdBy": "oncall",
        "comment": "deploying a fix",
    }
    return PostableSilence.model_validate({**data, **changes})


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"matchers": []}, "at least one matcher required"),
        ({"matchers": [{"name": "a", "value": ".*", "isRegex": True}]}, "must not match the empty string"),
        ({"matchers": [{"name": "a", "value": "(", "isRegex": True}]}, "invalid label matcher"),
        ({"endsAt": from_unix(T0 - 1)}, "end time must not be before start time"),
    ],
)
def test_invalid_silences_are_refused_with_the_reason(changes: dict, error: str):
    with pytest.raises(SilenceError, match=error):
        validate(body(**changes), T0)


def test_a_silence_ending_in_the_past_is_refused_and_a_past_start_is_now():
    with pytest.raises(SilenceError, match="in the past"):
        validate(body(startsAt=from_unix(T0 - 100), endsAt=from_unix(T0 - 10)), T0)
    _, starts, _ = validate(body(startsAt=from_unix(T0 - 100)), T0)
    assert starts == T0


async def test_store_states_update_in_place_and_expire(redis, keys):
    store = SilenceStore(redis, keys)
    sid = await store.put(body(startsAt=from_unix(T0 + 60)), T0)
    assert (await store.get(sid, T0)).state(T0) == "pending"
    assert (await store.get(sid, T0)).state(T0 + 60) == "active"
    # Extending an active silence keeps its id; changing its matchers makes a new one and expires the old.
    same = await store.put(body(id=sid, endsAt=from_unix(T0 + 7200)), T0 + 100)
    assert same == sid and (await store.get(sid, T0)).ends_at == T0 + 7200
    other = await store.put(
        body(id=sid, matchers=[MatcherModel(name="service", value="checkout", isRegex=False)]), T0 + 200
    )
    assert other != sid and (await store.get(sid, T0 + 200)).state(T0 + 200) == "expired"
    await store.expire(other, T0 + 300)
    assert (await store.get(other, T0 + 300)).state(T0 + 300) == "expired"
    with pytest.raises(SilenceError, match="already expired"):
        await store.expire(other, T0 + 400)


async def test_a_silenced_alert_is_not_delivered_until_the_silence_expires(redis, keys, webhook, session):
    clock = FakeClock(T0 + 10)
    d = dispatcher_for(redis, keys, webhook.url, session, clock)
    d.silences = SilenceStore(redis, keys)
    sid = await d.silences.put(body(), clock.now())
    await deliver(d, "1-0", [alert()])
    assert webhook.delivered == []
    assert d.metrics.silenced._value.get() == 1
    await d.silences.expire(sid, clock.now())
    await deliver(d, "2-0", [alert()])  # the evaluator's next re-send
    assert [b["status"] for b in webhook.delivered] == ["firing"]


@pytest.fixture
async def notifier(make_config) -> AsyncIterator[tuple[TestClient, int]]:
    config = make_config()
    config.admin_token = SecretStr("s3cret")
    async with running_notifier(config, consume=False) as (_, client):
        yield client, client.server.port


ADMIN = {"Authorization": "Bearer s3cret"}


async def test_v2_silence_api_shapes(notifier):
    client, _ = notifier
    now = datetime.now().astimezone()
    payload = {
        "matchers": [{"name": "alertname", "value": "HighErrorRate", "isRegex": False, "isEqual": True}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "oncall",
        "comment": "fix on the way",
    }
    assert (await client.post("/api/v2/silences", json=payload)).status == 401
    created = await client.post("/api/v2/silences", json=payload, headers=ADMIN)
    assert created.status == 200
    sid = (await created.json())["silenceID"]
    (listed,) = await (
        await client.get("/api/v2/silences", params={"filter": 'alertname="HighErrorRate"'})
    ).json()
    assert listed["id"] == sid and listed["status"] == {"state": "active"}
    assert set(listed) == {
        "id",
        "status",
        "updatedAt",
        "matchers",
        "startsAt",
        "endsAt",
        "createdBy",
        "comment",
    }
    assert await (await client.get("/api/v2/silences", params={"filter": 'alertname="Other"'})).json() == []
    bad = await client.post("/api/v2/silences", json={**payload, "matchers": []}, headers=ADMIN)
    assert bad.status == 400 and "at least one matcher" in await bad.json()
    assert (await client.delete(f"/api/v2/silence/{sid}", headers=ADMIN)).status == 200
    assert (await (await client.get(f"/api/v2/silence/{sid}")).json())["status"]["state"] == "expired"
    assert (await client.get("/api/v2/silence/nope")).status == 404


@pytest.mark.skipif(AMTOOL is None, reason=NO_AMTOOL)
async def test_the_real_amtool_adds_queries_and_expires_silences(make_config):
    # No admin token here: amtool 0.25 cannot send a bearer token without an http config file.
    async with running_notifier(make_config(), consume=False) as (_, client):
        port = client.port
        code, out, err = await amtool(
            port, "silence", "add", "alertname=HighErrorRate", "--comment=fix", "--author=oncall"
        )
        assert code == 0, err
        sid = out.strip()
        code, out, err = await amtool(port, "silence", "query", "-q")
        assert code == 0 and out.split() == [sid], err
        code, out, err = await amtool(port, "silence", "query", "alertname=HighErrorRate")
        assert code == 0 and sid in out and "fix" in out, err
        code, _, err = await amtool(port, "silence", "expire", sid)
        assert code == 0, err
        code, out, err = await amtool(port, "silence", "query", "-q")
        assert code == 0 and out.split() == [], err
        code, out, err = await amtool(port, "silence", "query", "-q", "--expired")
        assert out.split() == [sid], err


@pytest.mark.skipif(AMTOOL is None, reason=NO_AMTOOL)
async def test_amtool_silence_holds_back_delivery_until_expired(make_config, tmp_path, webhook):
    """The issue's acceptance, end to end with the real amtool: add a silence, see the matching alert
    reported silenced and not delivered, expire it, see it delivered."""
    routing = tmp_path / "am.yml"
    routing.write_text(
        "route: {receiver: hook, group_by: [alertname], group_wait: 0s, group_interval: 1s}\n"
        f"receivers: [{{name: hook, webhook_configs: [{{url: '{webhook.url}'}}]}}]\n"
    )
    async with running_notifier(make_config(alerting={"config_file": str(routing)})) as (_, client):
        port = client.port
        code, out, err = await amtool(port, "silence", "add", "alertname=Down", "-c", "known", "-a", "me")
        assert code == 0, err
        sid = out.strip()
        assert (await client.post("/api/v2/alerts", json=[{"labels": {"alertname": "Down"}}])).status == 200

        async def reported_silenced() -> bool:
            code, out, _ = await amtool(port, "alert", "query", "--silenced", "alertname=Down")
            return code == 0 and "Down" in out

        await eventually(reported_silenced, timeout=15, what="amtool to report the alert silenced")
        code, out, _ = await amtool(port, "alert", "query", "alertname=Down")  # active only
        assert "Down" not in out
        await asyncio.sleep(2.5)  # a deliberate window (absence cannot be polled): two group_intervals
        assert webhook.delivered == []
        code, _, err = await amtool(port, "silence", "expire", sid)
        assert code == 0, err
        await eventually(lambda: _delivered(webhook), timeout=15, what="the delivery once unsilenced")
        assert [a["labels"]["alertname"] for a in webhook.delivered[0]["alerts"]] == ["Down"]


async def _delivered(webhook) -> bool:
    return bool(webhook.delivered)


def test_a_recurring_silence_mutes_only_inside_its_windows():
    from services.notifier.silences import Silence
    from services.notifier.time_intervals import TimeIntervalEntry

    sunday_night = TimeIntervalEntry.model_validate(
        {"weekdays": ["sunday"], "times": [{"start_time": "02:00", "end_time": "04:00"}]}
    )
    matchers = [MatcherModel(name="service", value="batch", isRegex=False)]
    silence = Silence("s", matchers, 0.0, 4e9, "ops", "weekly maintenance", 0.0, [sunday_night])
    labels = {"alertname": "Down", "service": "batch"}
    assert silence.mutes(labels, datetime(2026, 11, 29, 3, 0, tzinfo=UTC).timestamp())  # a Sunday, 03:00
    assert not silence.mutes(labels, datetime(2026, 11, 29, 5, 0, tzinfo=UTC).timestamp())
    assert not silence.mutes(labels, datetime(2026, 11, 30, 3, 0, tzinfo=UTC).timestamp())  # Monday
    # It survives the round trip through Redis' JSON and shows in the API shape.
    again = Silence.loads(silence.dumps())
    assert again.mutes(labels, datetime(2026, 11, 29, 3, 0, tzinfo=UTC).timestamp())
    assert silence.to_api(0.0)["timeIntervals"][0]["weekdays"] == ["sunday"]


async def test_a_recurring_silence_is_posted_through_the_api(notifier):
    client, _ = notifier
    now = datetime.now().astimezone()
    payload = {
        "matchers": [{"name": "service", "value": "batch", "isRegex": False}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(days=365)).isoformat(),
        "createdBy": "ops",
        "comment": "weekly maintenance",
        "timeIntervals": [{"weekdays": ["sunday"], "times": [{"start_time": "02:00", "end_time": "04:00"}]}],
    }
    created = await client.post("/api/v2/silences", json=payload, headers=ADMIN)
    assert created.status == 200, await created.text()
    bad = {**payload, "timeIntervals": [{"weekdays": ["someday"]}]}
    refused = await client.post("/api/v2/silences", json=bad, headers=ADMIN)
    assert refused.status == 400 and "invalid weekday" in await refused.json()
