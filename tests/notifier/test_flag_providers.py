"""The kill switch's flag providers against local fakes of LaunchDarkly, Unleash, Flagsmith and a signed
webhook receiver: what each sends (exactly), how it reads each answer (success, idempotent repeat, policy
refusal, rate limit, outage, bad credential) and that no credential ever reaches a message."""

from __future__ import annotations

import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from services.notifier.flag_providers import FlagTarget, ProviderError, ProviderRefused
from services.notifier.flag_providers.flagsmith import FlagsmithProvider
from services.notifier.flag_providers.launchdarkly import SEMANTIC_PATCH, LaunchDarklyProvider
from services.notifier.flag_providers.unleash import UnleashProvider
from services.notifier.flag_providers.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookProvider,
    sign,
    verify_signature,
)
from services.notifier.receivers.delivery import USER_AGENT
from services.notifier.secrets import SecretError
from tests.fakes.flags import (
    DEFAULT_FLAGSMITH_KEY,
    DEFAULT_LD_TOKEN,
    DEFAULT_UNLEASH_TOKEN,
    DEFAULT_WEBHOOK_SECRET,
    FakeFlagsmith,
    FakeFlagWebhook,
    FakeLaunchDarkly,
    FakeUnleash,
)

COMMENT = "HighErrorRate firing for 5m"
ACTOR = "tripwire/kill-switch rule checkout-errors"
LEAKY = "leaky-credential-0123456789"


def const(value: str) -> Callable[[], str]:
    return lambda: value


def broken_secret() -> str:
    raise SecretError("token_file: cannot read /run/secrets/flags: No such file or directory")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


# -- LaunchDarkly --------------------------------------------------------------------------------------------

LD_CHECKOUT = FlagTarget("checkout", environment="production", project="shop")


@pytest.fixture
async def ld() -> AsyncIterator[FakeLaunchDarkly]:
    fake = FakeLaunchDarkly(
        flags={
            ("shop", "checkout"): {"production": True, "staging": True},
            ("shop", "legacy"): {"production": False},
            ("shop", "guarded"): {"production": True},
        },
        approvals_required={("shop", "guarded", "production")},
    )
    await fake.start()
    yield fake
    await fake.stop()


def ld_provider(
    session: aiohttp.ClientSession, fake: FakeLaunchDarkly, token: str = DEFAULT_LD_TOKEN, **kw: Any
) -> LaunchDarklyProvider:
    return LaunchDarklyProvider(session, base_url=fake.url, credential=const(token), **kw)


async def test_launchdarkly_read(session: aiohttp.ClientSession, ld: FakeLaunchDarkly) -> None:
    provider = ld_provider(session, ld)
    state = await provider.read(LD_CHECKOUT)
    assert state.enabled is True
    assert state.response["status"] == 200
    assert state.response["body"]["on"] is True
    assert state.response["body"]["key"] == "checkout"
    assert (await provider.read(FlagTarget("legacy", "production", "shop"))).enabled is False
    request = ld.requests[0]
    assert (request.method, request.path, request.params) == (
        "GET",
        "/api/v2/flags/shop/checkout",
        {"env": "production"},
    )
    assert request.headers["Authorization"] == DEFAULT_LD_TOKEN  # bare token, no "Bearer"
    assert request.headers["User-Agent"] == USER_AGENT


async def test_launchdarkly_turn_off_sends_a_semantic_patch(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    summary = await ld_provider(session, ld).turn_off(LD_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert ld.flag_on("shop", "checkout", "production") is False
    assert ld.flag_on("shop", "checkout", "staging") is True  # only the target environment
    assert summary["status"] == 200
    assert summary["body"]["on"] is False
    assert summary["body"]["environment"] == "production"
    [request] = ld.requests
    assert (request.method, request.path, request.status) == ("PATCH", "/api/v2/flags/shop/checkout", 200)
    assert request.headers["Authorization"] == DEFAULT_LD_TOKEN
    assert request.headers["Content-Type"] == SEMANTIC_PATCH
    assert request.json == {
        "environmentKey": "production",
        "comment": f"{COMMENT} (by {ACTOR})",
        "instructions": [{"kind": "turnFlagOff"}],
    }


async def test_launchdarkly_turn_off_is_idempotent(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    provider = ld_provider(session, ld)
    target = FlagTarget("legacy", "production", "shop")
    first = await provider.turn_off(target, comment=COMMENT, actor=ACTOR)
    second = await provider.turn_off(target, comment=COMMENT, actor=ACTOR)
    assert first["body"]["on"] is False and second["body"]["on"] is False
    assert ld.flag_on("shop", "legacy", "production") is False
    assert ld.versions.get(("shop", "legacy", "production"), 1) == 1  # no change was made
    assert [r.status for r in ld.requests] == [200, 200]


async def test_launchdarkly_turn_on(session: aiohttp.ClientSession, ld: FakeLaunchDarkly) -> None:
    target = FlagTarget("legacy", "production", "shop")
    summary = await ld_provider(session, ld).turn_on(target, comment="re-enabled by alice", actor="alice")
    assert ld.flag_on("shop", "legacy", "production") is True
    assert summary["body"]["on"] is True
    assert ld.requests[0].json["instructions"] == [{"kind": "turnFlagOn"}]


async def test_launchdarkly_approvals_required_is_refused(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    target = FlagTarget("guarded", "production", "shop")
    with pytest.raises(ProviderRefused) as caught:
        await ld_provider(session, ld).turn_off(target, comment=COMMENT, actor=ACTOR)
    assert caught.value.status == 405
    assert caught.value.retryable is False
    assert "approval" in str(caught.value)
    assert caught.value.response["body"]["code"] == "method_not_allowed"
    assert ld.flag_on("shop", "guarded", "production") is True
    assert len(ld.requests) == 1  # refused once, never retried by the provider


async def test_launchdarkly_conflict_is_retryable(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    ld.fail_next(1, 409)
    with pytest.raises(ProviderError) as caught:
        await ld_provider(session, ld).turn_off(LD_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert not isinstance(caught.value, ProviderRefused)
    assert (caught.value.status, caught.value.retryable) == (409, True)
    assert ld.flag_on("shop", "checkout", "production") is True
    # The retry the caller makes goes through.
    await ld_provider(session, ld).turn_off(LD_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert ld.flag_on("shop", "checkout", "production") is False


async def test_launchdarkly_429_honours_retry_after(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    ld.fail_next(1, 429, headers={"Retry-After": "7"})
    with pytest.raises(ProviderError) as caught:
        await ld_provider(session, ld).turn_off(LD_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (429, True, 7.0)


async def test_launchdarkly_429_falls_back_to_ratelimit_reset_in_epoch_ms(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    reset = int(time.time() * 1000) + 30_000
    ld.fail_next(1, 429, headers={"X-Ratelimit-Reset": str(reset)})
    with pytest.raises(ProviderError) as caught:
        await ld_provider(session, ld).read(LD_CHECKOUT)
    assert caught.value.retryable is True
    assert caught.value.retry_after is not None
    assert 25.0 < caught.value.retry_after <= 30.0


async def test_launchdarkly_rate_limiter_of_the_fake(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    ld.rate_limit(0.5, burst=1)
    provider = ld_provider(session, ld)
    await provider.read(LD_CHECKOUT)
    with pytest.raises(ProviderError) as caught:
        await provider.read(LD_CHECKOUT)
    assert caught.value.status == 429
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_launchdarkly_5xx_is_retryable(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly, status: int
) -> None:
    ld.fail_next(1, status)
    with pytest.raises(ProviderError) as caught:
        await ld_provider(session, ld).turn_off(LD_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (status, True, None)
    assert ld.flag_on("shop", "checkout", "production") is True


async def test_launchdarkly_bearer_prefix_or_wrong_token_is_not_retryable(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    for token in (f"Bearer {DEFAULT_LD_TOKEN}", LEAKY):
        with pytest.raises(ProviderError) as caught:
            await ld_provider(session, ld, token=token).turn_off(LD_CHECKOUT, comment=COMMENT, actor=ACTOR)
        assert (caught.value.status, caught.value.retryable) == (401, False)
    assert ld.flag_on("shop", "checkout", "production") is True


async def test_launchdarkly_unknown_flag_or_environment(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    provider = ld_provider(session, ld)
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(FlagTarget("nope", "production", "shop"), comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable) == (404, False)
    with pytest.raises(ProviderError) as caught:
        await provider.read(FlagTarget("checkout", "qa", "shop"))
    assert caught.value.retryable is False
    assert "'qa'" in str(caught.value)
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(FlagTarget("checkout", "qa", "shop"), comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable) == (400, False)


async def test_launchdarkly_target_without_project_is_refused_before_sending(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    with pytest.raises(ProviderError) as caught:
        await ld_provider(session, ld).turn_off(FlagTarget("checkout", "production"), comment="", actor="")
    assert caught.value.retryable is False
    assert "project" in str(caught.value)
    assert ld.requests == []


async def test_launchdarkly_timeout_is_retryable_and_uncertain(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    ld.hang_next(1)
    with pytest.raises(ProviderError) as caught:
        await ld_provider(session, ld, timeout=0.3).turn_off(LD_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert caught.value.retryable is True
    assert "may have been applied" in str(caught.value)
    # The vendor did act: exactly why the caller reads the flag back.
    assert ld.flag_on("shop", "checkout", "production") is False


# -- Unleash -------------------------------------------------------------------------------------------------

UNLEASH_CHECKOUT = FlagTarget("checkout", environment="production", project="default")


@pytest.fixture
async def unleash() -> AsyncIterator[FakeUnleash]:
    fake = FakeUnleash(
        flags={
            ("default", "checkout"): {"development": True, "production": True},
            ("default", "legacy"): {"production": False},
            ("payments", "refunds"): {"production": True},
        },
        change_requests={("payments", "production")},
    )
    await fake.start()
    yield fake
    await fake.stop()


def unleash_provider(
    session: aiohttp.ClientSession, fake: FakeUnleash, token: str = DEFAULT_UNLEASH_TOKEN
) -> UnleashProvider:
    return UnleashProvider(session, base_url=fake.url, credential=const(token))


async def test_unleash_read(session: aiohttp.ClientSession, unleash: FakeUnleash) -> None:
    provider = unleash_provider(session, unleash)
    state = await provider.read(UNLEASH_CHECKOUT)
    assert state.enabled is True
    assert state.response["body"] == {
        "name": "checkout",
        "project": "default",
        "environment": "production",
        "enabled": True,
    }
    assert (await provider.read(FlagTarget("legacy", "production", "default"))).enabled is False
    request = unleash.requests[0]
    assert (request.method, request.path) == ("GET", "/api/admin/projects/default/features/checkout")
    assert request.headers["Authorization"] == DEFAULT_UNLEASH_TOKEN


async def test_unleash_turn_off(session: aiohttp.ClientSession, unleash: FakeUnleash) -> None:
    summary = await unleash_provider(session, unleash).turn_off(
        UNLEASH_CHECKOUT, comment=COMMENT, actor=ACTOR
    )
    assert summary == {"status": 200, "body": ""}
    assert unleash.flag_enabled("default", "checkout", "production") is False
    assert unleash.flag_enabled("default", "checkout", "development") is True
    [request] = unleash.requests
    assert (request.method, request.path) == (
        "POST",
        "/api/admin/projects/default/features/checkout/environments/production/off",
    )
    assert request.headers["Authorization"] == DEFAULT_UNLEASH_TOKEN
    assert request.body == b""
    assert unleash.events == [
        {
            "type": "feature-environment-disabled",
            "project": "default",
            "featureName": "checkout",
            "environment": "production",
        }
    ]


async def test_unleash_turn_off_is_idempotent(session: aiohttp.ClientSession, unleash: FakeUnleash) -> None:
    provider = unleash_provider(session, unleash)
    target = FlagTarget("legacy", "production", "default")
    assert (await provider.turn_off(target, comment=COMMENT, actor=ACTOR))["status"] == 200
    assert (await provider.turn_off(target, comment=COMMENT, actor=ACTOR))["status"] == 200
    assert unleash.flag_enabled("default", "legacy", "production") is False
    assert unleash.events == []  # already off: Unleash changes nothing and records nothing


async def test_unleash_turn_on(session: aiohttp.ClientSession, unleash: FakeUnleash) -> None:
    target = FlagTarget("legacy", "production", "default")
    await unleash_provider(session, unleash).turn_on(target, comment="re-enabled", actor="alice")
    assert unleash.flag_enabled("default", "legacy", "production") is True
    assert unleash.requests[0].path.endswith("/environments/production/on")


async def test_unleash_change_requests_are_refused(
    session: aiohttp.ClientSession, unleash: FakeUnleash
) -> None:
    target = FlagTarget("refunds", "production", "payments")
    with pytest.raises(ProviderRefused) as caught:
        await unleash_provider(session, unleash).turn_off(target, comment=COMMENT, actor=ACTOR)
    assert caught.value.status == 403
    assert "change requests" in str(caught.value)
    assert caught.value.response["body"]["permissions"] == ["SKIP_CHANGE_REQUEST"]
    assert unleash.flag_enabled("payments", "refunds", "production") is True


async def test_unleash_other_403_is_a_plain_error(
    session: aiohttp.ClientSession, unleash: FakeUnleash
) -> None:
    unleash.fail_next(
        1,
        403,
        body={
            "name": "PermissionError",
            "message": 'You need the "UPDATE_FEATURE_ENVIRONMENT" permission.',
            "permissions": ["UPDATE_FEATURE_ENVIRONMENT"],
        },
    )
    with pytest.raises(ProviderError) as caught:
        await unleash_provider(session, unleash).turn_off(UNLEASH_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert not isinstance(caught.value, ProviderRefused)
    assert (caught.value.status, caught.value.retryable) == (403, False)


async def test_unleash_429_and_5xx_are_retryable(
    session: aiohttp.ClientSession, unleash: FakeUnleash
) -> None:
    provider = unleash_provider(session, unleash)
    unleash.fail_next(1, 429, headers={"Retry-After": "12"})
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(UNLEASH_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (429, True, 12.0)
    unleash.fail_next(1, 503)
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(UNLEASH_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable) == (503, True)
    assert unleash.flag_enabled("default", "checkout", "production") is True


async def test_unleash_bad_token_and_unknown_flag_are_not_retryable(
    session: aiohttp.ClientSession, unleash: FakeUnleash
) -> None:
    with pytest.raises(ProviderError) as caught:
        await unleash_provider(session, unleash, token=LEAKY).turn_off(
            UNLEASH_CHECKOUT, comment=COMMENT, actor=ACTOR
        )
    assert (caught.value.status, caught.value.retryable) == (401, False)
    provider = unleash_provider(session, unleash)
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(FlagTarget("nope", "production", "default"), comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable) == (404, False)
    with pytest.raises(ProviderError) as caught:
        await provider.read(FlagTarget("checkout", "qa", "default"))
    assert caught.value.retryable is False


# -- Flagsmith -----------------------------------------------------------------------------------------------

FS_ENV = "env-prod-key"
FS_CHECKOUT = FlagTarget("checkout", environment=FS_ENV)


@pytest.fixture
async def flagsmith() -> AsyncIterator[FakeFlagsmith]:
    fake = FakeFlagsmith(
        flags={
            "checkout": {FS_ENV: True, "env-dev-key": True},
            "legacy": {FS_ENV: False},
            "refunds": {"env-guarded-key": True},
        },
        change_requests={"env-guarded-key"},
        segment_overrides={("legacy", FS_ENV): True},
    )
    await fake.start()
    yield fake
    await fake.stop()


def flagsmith_provider(
    session: aiohttp.ClientSession, fake: FakeFlagsmith, key: str = DEFAULT_FLAGSMITH_KEY
) -> FlagsmithProvider:
    return FlagsmithProvider(session, base_url=fake.url, credential=const(key))


async def test_flagsmith_read_uses_the_environment_default(
    session: aiohttp.ClientSession, flagsmith: FakeFlagsmith
) -> None:
    provider = flagsmith_provider(session, flagsmith)
    assert (await provider.read(FS_CHECKOUT)).enabled is True
    # `legacy` has a segment override that is on, listed first; the environment default is off.
    state = await provider.read(FlagTarget("legacy", FS_ENV))
    assert state.enabled is False
    assert state.response["body"]["enabled"] is False
    request = flagsmith.requests[0]
    assert (request.method, request.path) == ("GET", f"/api/v1/environments/{FS_ENV}/featurestates/")
    assert request.params == {"feature_name": "checkout"}
    assert request.headers["Authorization"] == f"Api-Key {DEFAULT_FLAGSMITH_KEY}"


async def test_flagsmith_turn_off(session: aiohttp.ClientSession, flagsmith: FakeFlagsmith) -> None:
    summary = await flagsmith_provider(session, flagsmith).turn_off(FS_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert summary == {"status": 204, "body": ""}
    assert flagsmith.flag_enabled("checkout", FS_ENV) is False
    assert flagsmith.flag_enabled("checkout", "env-dev-key") is True
    [request] = flagsmith.requests
    assert (request.method, request.path) == (
        "POST",
        f"/api/experiments/environments/{FS_ENV}/update-flag-v1/",
    )
    assert request.headers["Authorization"] == f"Api-Key {DEFAULT_FLAGSMITH_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {"feature": {"name": "checkout"}, "enabled": False}  # the value is left alone


async def test_flagsmith_turn_off_is_idempotent_and_turn_on(
    session: aiohttp.ClientSession, flagsmith: FakeFlagsmith
) -> None:
    provider = flagsmith_provider(session, flagsmith)
    target = FlagTarget("legacy", FS_ENV)
    assert (await provider.turn_off(target, comment=COMMENT, actor=ACTOR))["status"] == 204
    assert (await provider.turn_off(target, comment=COMMENT, actor=ACTOR))["status"] == 204
    assert flagsmith.flag_enabled("legacy", FS_ENV) is False
    await provider.turn_on(target, comment="re-enabled", actor="alice")
    assert flagsmith.flag_enabled("legacy", FS_ENV) is True
    assert flagsmith.requests[-1].json == {"feature": {"name": "legacy"}, "enabled": True}


async def test_flagsmith_change_requests_are_refused(
    session: aiohttp.ClientSession, flagsmith: FakeFlagsmith
) -> None:
    with pytest.raises(ProviderRefused) as caught:
        await flagsmith_provider(session, flagsmith).turn_off(
            FlagTarget("refunds", "env-guarded-key"), comment=COMMENT, actor=ACTOR
        )
    assert caught.value.status == 403
    assert "change requests" in str(caught.value)
    assert flagsmith.flag_enabled("refunds", "env-guarded-key") is True


async def test_flagsmith_unknown_environment_403_is_not_a_refusal(
    session: aiohttp.ClientSession, flagsmith: FakeFlagsmith
) -> None:
    with pytest.raises(ProviderError) as caught:
        await flagsmith_provider(session, flagsmith).turn_off(
            FlagTarget("checkout", "env-unknown"), comment=COMMENT, actor=ACTOR
        )
    assert not isinstance(caught.value, ProviderRefused)
    assert (caught.value.status, caught.value.retryable) == (403, False)


async def test_flagsmith_429_and_5xx_are_retryable(
    session: aiohttp.ClientSession, flagsmith: FakeFlagsmith
) -> None:
    provider = flagsmith_provider(session, flagsmith)
    flagsmith.rate_limit(0.2, burst=1)
    await provider.read(FS_CHECKOUT)
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(FS_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable) == (429, True)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1.0
    assert "throttled" in str(caught.value)
    flagsmith.rate_limit(None)
    flagsmith.fail_next(1, 500)
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(FS_CHECKOUT, comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable) == (500, True)
    assert flagsmith.flag_enabled("checkout", FS_ENV) is True


async def test_flagsmith_bad_key_and_unknown_feature_are_not_retryable(
    session: aiohttp.ClientSession, flagsmith: FakeFlagsmith
) -> None:
    with pytest.raises(ProviderError) as caught:
        await flagsmith_provider(session, flagsmith, key=LEAKY).turn_off(FS_CHECKOUT, comment="", actor="")
    assert (caught.value.status, caught.value.retryable) == (401, False)
    provider = flagsmith_provider(session, flagsmith)
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(FlagTarget("nope", FS_ENV), comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert "not found in project" in str(caught.value)
    with pytest.raises(ProviderError) as caught:
        await provider.read(FlagTarget("nope", FS_ENV))
    assert caught.value.retryable is False


# -- the signed webhook --------------------------------------------------------------------------------------

HOOK_TARGET = FlagTarget("checkout", environment="production", project="shop")


@pytest.fixture
async def hook() -> AsyncIterator[FakeFlagWebhook]:
    fake = await FakeFlagWebhook().start()
    yield fake
    await fake.stop()


def hook_provider(
    session: aiohttp.ClientSession,
    url: str,
    *,
    token: str = "",
    secret: str = DEFAULT_WEBHOOK_SECRET,
    timeout: float = 10.0,
) -> WebhookProvider:
    return WebhookProvider(
        session, base_url=url, credential=const(token), signing_secret=const(secret), timeout=timeout
    )


async def test_webhook_turn_off_is_signed_and_verified(
    session: aiohttp.ClientSession, hook: FakeFlagWebhook
) -> None:
    before = int(time.time())
    summary = await hook_provider(session, hook.hook_url).turn_off(HOOK_TARGET, comment=COMMENT, actor=ACTOR)
    assert summary == {
        "status": 200,
        "body": {
            "ok": True,
            "flag": "checkout",
            "environment": "production",
            "enabled": False,
            "changed": True,
        },
    }
    assert hook.flags[("shop", "checkout", "production")] is False
    [request] = hook.requests
    stamp = request.headers[TIMESTAMP_HEADER]
    assert before <= int(stamp) <= time.time()
    assert request.json == {
        "action": "turn_off",
        "flag": "checkout",
        "environment": "production",
        "project": "shop",
        "comment": COMMENT,
        "actor": ACTOR,
        "timestamp": int(stamp),
    }
    assert request.headers["Content-Type"] == "application/json"
    # Computed independently of `sign`: the documented HMAC-SHA256 of "<timestamp>.<body>".
    digest = hmac.new(DEFAULT_WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + request.body, hashlib.sha256)
    assert request.headers[SIGNATURE_HEADER] == f"sha256={digest.hexdigest()}"
    assert "Authorization" not in request.headers  # an empty credential sends none
    assert hook.actions == [request.json]


async def test_webhook_turn_off_twice_and_turn_on(
    session: aiohttp.ClientSession, hook: FakeFlagWebhook
) -> None:
    provider = hook_provider(session, hook.hook_url)
    await provider.turn_off(HOOK_TARGET, comment=COMMENT, actor=ACTOR)
    again = await provider.turn_off(HOOK_TARGET, comment=COMMENT, actor=ACTOR)
    assert again["status"] == 200 and again["body"]["changed"] is False
    on = await provider.turn_on(HOOK_TARGET, comment="re-enabled", actor="alice")
    assert on["body"]["enabled"] is True
    assert [a["action"] for a in hook.actions] == ["turn_off", "turn_off", "turn_on"]


async def test_webhook_read_is_unknown_and_sends_nothing(
    session: aiohttp.ClientSession, hook: FakeFlagWebhook
) -> None:
    state = await hook_provider(session, hook.hook_url).read(HOOK_TARGET)
    assert state.enabled is None
    assert hook.requests == []


async def test_webhook_bearer_token(session: aiohttp.ClientSession) -> None:
    fake = await FakeFlagWebhook(token="hook-token").start()
    try:
        await hook_provider(session, fake.hook_url, token="hook-token").turn_off(
            HOOK_TARGET, comment="", actor=""
        )
        assert fake.requests[0].headers["Authorization"] == "Bearer hook-token"
        with pytest.raises(ProviderError) as caught:
            await hook_provider(session, fake.hook_url).turn_off(HOOK_TARGET, comment="", actor="")
        assert (caught.value.status, caught.value.retryable) == (401, False)
    finally:
        await fake.stop()


async def test_webhook_wrong_signing_secret_is_refused_by_the_receiver(
    session: aiohttp.ClientSession, hook: FakeFlagWebhook
) -> None:
    with pytest.raises(ProviderError) as caught:
        await hook_provider(session, hook.hook_url, secret="not-the-secret").turn_off(
            HOOK_TARGET, comment=COMMENT, actor=ACTOR
        )
    assert (caught.value.status, caught.value.retryable) == (401, False)
    assert "invalid signature" in str(caught.value)
    assert hook.actions == [] and hook.flags == {}


async def test_webhook_tampered_or_replayed_request_is_refused(
    session: aiohttp.ClientSession, hook: FakeFlagWebhook
) -> None:
    await hook_provider(session, hook.hook_url).turn_off(HOOK_TARGET, comment=COMMENT, actor=ACTOR)
    original = hook.requests[0]
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: original.headers[TIMESTAMP_HEADER],
        SIGNATURE_HEADER: original.headers[SIGNATURE_HEADER],
    }
    # Same signature, another flag: the HMAC no longer matches.
    tampered = original.body.replace(b'"checkout"', b'"payments"')
    async with session.post(hook.hook_url, data=tampered, headers=headers) as response:
        assert response.status == 401
        assert (await response.json()) == {"error": "invalid signature"}
    # A correctly signed request from ten minutes ago: outside the replay window.
    old = str(int(time.time()) - 600)
    body = orjson.dumps({**orjson.loads(original.body), "timestamp": int(old)})
    stale = {**headers, TIMESTAMP_HEADER: old, SIGNATURE_HEADER: sign(DEFAULT_WEBHOOK_SECRET, old, body)}
    async with session.post(hook.hook_url, data=body, headers=stale) as response:
        assert response.status == 401
        assert (await response.json()) == {"error": "stale timestamp"}
    assert len(hook.actions) == 1
    assert ("shop", "payments", "production") not in hook.flags


async def test_webhook_429_and_5xx_are_retryable(
    session: aiohttp.ClientSession, hook: FakeFlagWebhook
) -> None:
    provider = hook_provider(session, hook.hook_url)
    hook.fail_next(1, 429, headers={"Retry-After": "3"})
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(HOOK_TARGET, comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (429, True, 3.0)
    hook.fail_next(1, 502)
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(HOOK_TARGET, comment=COMMENT, actor=ACTOR)
    assert (caught.value.status, caught.value.retryable) == (502, True)
    assert hook.actions == []


async def test_webhook_unreachable_is_retryable_and_hides_the_url_path(
    session: aiohttp.ClientSession,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks/s3cret-path-token"
    with pytest.raises(ProviderError) as caught:
        await hook_provider(session, url, timeout=2.0).turn_off(HOOK_TARGET, comment=COMMENT, actor=ACTOR)
    assert caught.value.retryable is True
    assert "s3cret-path-token" not in str(caught.value)


async def test_webhook_unusable_url_is_not_retryable_and_hides_the_url_path(
    session: aiohttp.ClientSession,
) -> None:
    url = "ftp://127.0.0.1/hooks/s3cret-path-token"
    with pytest.raises(ProviderError) as caught:
        await hook_provider(session, url).turn_off(HOOK_TARGET, comment=COMMENT, actor=ACTOR)
    assert caught.value.retryable is False
    assert "unusable URL" in str(caught.value)
    assert "s3cret-path-token" not in str(caught.value)


def test_verify_signature() -> None:
    body = b'{"action":"turn_off","flag":"checkout"}'
    now = 1_700_000_000.0
    stamp = str(int(now))
    good = sign("secret", stamp, body)
    # A fixed test vector, so a receiver written in another language can check its implementation.
    assert good == "sha256=" + hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert verify_signature("secret", stamp, body, good, now)
    assert verify_signature("secret", stamp, body, good, now + 299)
    assert not verify_signature("secret", stamp, body, good, now + 301)  # replayed too late
    assert not verify_signature("secret", stamp, body, good, now - 301)  # from the future
    assert not verify_signature("other", stamp, body, good, now)
    assert not verify_signature("secret", stamp, body + b" ", good, now)
    assert not verify_signature("secret", str(int(now) + 1), body, good, now)  # timestamp is signed
    assert not verify_signature("secret", stamp, body, good.removeprefix("sha256="), now)
    assert not verify_signature("secret", "yesterday", body, good, now)
    assert not verify_signature("secret", stamp, body, "sha256=ünïcödé", now)
    assert verify_signature("secret", stamp, body, good, now + 60, tolerance=60)
    assert not verify_signature("secret", stamp, body, good, now + 61, tolerance=60)


# -- across providers ----------------------------------------------------------------------------------------


@pytest.fixture
async def fakes(
    ld: FakeLaunchDarkly, unleash: FakeUnleash, flagsmith: FakeFlagsmith, hook: FakeFlagWebhook
) -> dict[str, Any]:
    return {"launchdarkly": ld, "unleash": unleash, "flagsmith": flagsmith, "webhook": hook}


def make_provider(
    name: str, session: aiohttp.ClientSession, fakes: dict[str, Any], credential: Callable[[], str]
) -> tuple[Any, FlagTarget]:
    fake = fakes[name]
    if name == "launchdarkly":
        return LaunchDarklyProvider(session, base_url=fake.url, credential=credential), LD_CHECKOUT
    if name == "unleash":
        return UnleashProvider(session, base_url=fake.url, credential=credential), UNLEASH_CHECKOUT
    if name == "flagsmith":
        return FlagsmithProvider(session, base_url=fake.url, credential=credential), FS_CHECKOUT
    provider = WebhookProvider(
        session, base_url=fake.hook_url, credential=credential, signing_secret=const(DEFAULT_WEBHOOK_SECRET)
    )
    return provider, HOOK_TARGET


PROVIDERS = ["launchdarkly", "unleash", "flagsmith", "webhook"]
VALID = {
    "launchdarkly": DEFAULT_LD_TOKEN,
    "unleash": DEFAULT_UNLEASH_TOKEN,
    "flagsmith": DEFAULT_FLAGSMITH_KEY,
    "webhook": "",
}


@pytest.mark.parametrize("name", PROVIDERS)
async def test_unreadable_secret_is_retryable_and_sends_nothing(
    session: aiohttp.ClientSession, fakes: dict[str, Any], name: str
) -> None:
    provider, target = make_provider(name, session, fakes, broken_secret)
    assert provider.name == name
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(target, comment=COMMENT, actor=ACTOR)
    assert caught.value.retryable is True
    assert "token_file: cannot read /run/secrets/flags" in str(caught.value)
    assert fakes[name].requests == []


@pytest.mark.parametrize("name", ["launchdarkly", "unleash", "flagsmith"])
async def test_wrong_credential_never_appears_in_errors(
    session: aiohttp.ClientSession, fakes: dict[str, Any], name: str
) -> None:
    provider, target = make_provider(name, session, fakes, const(LEAKY))
    for call in (provider.read(target), provider.turn_off(target, comment=COMMENT, actor=ACTOR)):
        with pytest.raises(ProviderError) as caught:
            await call
        assert (caught.value.status, caught.value.retryable) == (401, False)
        assert LEAKY not in str(caught.value)
        assert LEAKY not in repr(caught.value.response)


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_credential_echoed_by_the_vendor_is_scrubbed(
    session: aiohttp.ClientSession, fakes: dict[str, Any], name: str
) -> None:
    secret = VALID[name] or "hook-bearer-token"
    if name == "webhook":
        fakes[name].token = secret
    provider, target = make_provider(name, session, fakes, const(secret))
    fakes[name].fail_next(1, 400, body={"message": f"rejected request with credential {secret}"})
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(target, comment=COMMENT, actor=ACTOR)
    assert caught.value.status == 400 and caught.value.retryable is False
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value.response)
    assert "<redacted>" in str(caught.value)


@pytest.mark.parametrize("name", PROVIDERS)
async def test_long_answers_are_cut_for_the_audit(
    session: aiohttp.ClientSession, fakes: dict[str, Any], name: str
) -> None:
    provider, target = make_provider(name, session, fakes, const(VALID[name]))
    fakes[name].fail_next(1, 503, body="x" * 5000)
    with pytest.raises(ProviderError) as caught:
        await provider.turn_off(target, comment=COMMENT, actor=ACTOR)
    assert caught.value.retryable is True
    assert len(caught.value.response["body"]) <= 500
    assert len(str(caught.value)) < 500


# -- the fakes' own validation (what a provider that got the request wrong would meet) ----------------------


async def test_fake_launchdarkly_validates_semantic_patches(
    session: aiohttp.ClientSession, ld: FakeLaunchDarkly
) -> None:
    url = f"{ld.url}/api/v2/flags/shop/checkout"
    good = {"environmentKey": "production", "instructions": [{"kind": "turnFlagOff"}]}
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("application/json", good, 400),  # a JSON merge patch, not a semantic patch
        (SEMANTIC_PATCH, {**good, "instructions": [{"kind": "deleteFlag"}]}, 400),
        (SEMANTIC_PATCH, {**good, "instructions": []}, 400),
        (SEMANTIC_PATCH, {"instructions": [{"kind": "turnFlagOff"}]}, 400),  # no environmentKey
    ]
    for content_type, body, status in cases:
        headers = {"Authorization": DEFAULT_LD_TOKEN, "Content-Type": content_type}
        async with session.patch(url, data=orjson.dumps(body), headers=headers) as response:
            assert response.status == status, (content_type, body)
    assert ld.flag_on("shop", "checkout", "production") is True
    assert ld.changes == []


async def test_fake_flagsmith_validates_update_bodies(
    session: aiohttp.ClientSession, flagsmith: FakeFlagsmith
) -> None:
    url = f"{flagsmith.url}/api/experiments/environments/{FS_ENV}/update-flag-v1/"
    headers = {"Authorization": f"Api-Key {DEFAULT_FLAGSMITH_KEY}", "Content-Type": "application/json"}
    for body in (
        {"enabled": False},
        {"feature": {"name": "checkout", "id": 1}, "enabled": False},
        {"feature": {"name": "checkout"}, "enabled": "no"},
        {"feature": {"name": "checkout"}, "enabled": False, "value": {"type": "float", "value": "1"}},
    ):
        async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
            assert response.status == 400, body
    # Without the trailing slash Django finds no route.
    async with session.post(url.rstrip("/"), data=b"{}", headers=headers) as response:
        assert response.status == 404
    assert flagsmith.flag_enabled("checkout", FS_ENV) is True
