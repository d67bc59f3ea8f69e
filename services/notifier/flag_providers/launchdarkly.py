"""LaunchDarkly through its REST API v2 (https://launchdarkly.com/docs/api).

- read: `GET /api/v2/flags/{project}/{flag}?env={environment}` → `environments[environment].on`.
- turn off / on: `PATCH /api/v2/flags/{project}/{flag}` as a semantic patch (`Content-Type: application/json;
  domain-model=launchdarkly.semanticpatch`) with one `turnFlagOff` / `turnFlagOn` instruction. Semantic patch
  instructions state the end result, so turning off an already-off flag is a no-op answered 200: idempotent.
- `Authorization: <access token>` (no "Bearer"). 405: approvals are required for that flag in that environment
  (a human must open an approval request) → ProviderRefused. 409: a concurrent change won the race → retry.
  429: wait for Retry-After or else X-Ratelimit-Reset (epoch milliseconds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from services.notifier.flag_providers import FlagState, FlagTarget, ProviderError
from services.notifier.flag_providers.http_core import Answer, HttpProvider
from services.notifier.receivers.delivery import RETRY_AFTER_CAP

DEFAULT_BASE_URL = "https://app.launchdarkly.com"
SEMANTIC_PATCH = "application/json; domain-model=launchdarkly.semanticpatch"
# Pin the API version so a new default version cannot change the answers we parse under us.
API_VERSION = "20240415"


class LaunchDarklyProvider(HttpProvider):
    """LaunchDarkly: a target names the flag key, the project key and the environment key."""

    name = "launchdarkly"
    required = ("project", "environment")
    retryable_statuses = frozenset({408, 409, 429})  # 409: someone else changed the flag meanwhile

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str = DEFAULT_BASE_URL,
        credential: Callable[[], str],
        timeout: float = 10.0,
    ) -> None:
        super().__init__(session, base_url=base_url, credential=credential, timeout=timeout)

    def _url(self, target: FlagTarget) -> str:
        assert target.project is not None  # check_target ran
        return f"{self.base_url}/api/v2/flags/{quote(target.project, safe='')}/{quote(target.flag, safe='')}"

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": token, "LD-API-Version": API_VERSION}

    def refusal(self, answer: Answer) -> str | None:
        if answer.status == 405:
            return "approvals are required to change this flag in this environment"
        return None

    def retry_after(self, answer: Answer) -> float | None:
        seconds = super().retry_after(answer)
        if seconds is not None:
            return seconds
        # LaunchDarkly's own header: when the current rate-limit window resets, in epoch milliseconds.
        try:
            reset_ms = float(answer.headers.get("X-Ratelimit-Reset", ""))
        except ValueError:
            return None
        if not math.isfinite(reset_ms):
            return None
        return min(max(reset_ms / 1000.0 - time.time(), 0.0), RETRY_AFTER_CAP)

    def _environment(self, answer: Answer, target: FlagTarget, what: str) -> dict[str, Any]:
        """The flag's configuration in the target environment from a flag representation."""
        body = answer.json
        environments = body.get("environments") if isinstance(body, dict) else None
        config = environments.get(target.environment) if isinstance(environments, dict) else None
        if not isinstance(config, dict) or not isinstance(config.get("on"), bool):
            raise ProviderError(
                f"{self.name}: {what}: the answer has no environment {target.environment!r} for this flag",
                retryable=False,
                status=answer.status,
                response=answer.summary(),
            )
        return config

    def _summary(self, answer: Answer, target: FlagTarget, config: dict[str, Any]) -> dict[str, Any]:
        body = answer.json if isinstance(answer.json, dict) else {}
        return answer.summary(
            {
                "key": body.get("key"),
                "environment": target.environment,
                "on": config.get("on"),
                "version": config.get("version"),
                "lastModified": config.get("lastModified"),
            }
        )

    async def read(self, target: FlagTarget) -> FlagState:
        """`environments[environment].on` of the flag."""
        self.check_target(target)
        token = self.credential()
        what = f"read {target.flag!r} in {target.environment!r}"
        answer = await self.call(
            "GET",
            self._url(target),
            what=what,
            headers=self._headers(token),
            secrets=(token,),
            params={"env": target.environment or ""},
        )
        if not answer.ok:
            raise self.failure(answer, what)
        config = self._environment(answer, target, what)
        return FlagState(config["on"], self._summary(answer, target, config))

    async def turn_off(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        return await self._patch("turnFlagOff", target, comment=comment, actor=actor)

    async def turn_on(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        return await self._patch("turnFlagOn", target, comment=comment, actor=actor)

    async def _patch(self, kind: str, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        self.check_target(target)
        token = self.credential()
        what = (
            f"{'turn off' if kind == 'turnFlagOff' else 'turn on'} {target.flag!r} in {target.environment!r}"
        )
        # LaunchDarkly records the token's owner as the author; the actor goes in the comment so its audit
        # log names who (or which rule) flipped the flag.
        body = orjson.dumps(
            {
                "environmentKey": target.environment,
                "comment": f"{comment} (by {actor})" if actor else comment,
                "instructions": [{"kind": kind}],
            }
        )
        answer = await self.call(
            "PATCH",
            self._url(target),
            what=what,
            headers={**self._headers(token), "Content-Type": SEMANTIC_PATCH},
            secrets=(token,),
            body=body,
        )
        if not answer.ok:
            raise self.failure(answer, what)
        body_json = answer.json
        environments = body_json.get("environments") if isinstance(body_json, dict) else None
        config = environments.get(target.environment) if isinstance(environments, dict) else None
        if not isinstance(config, dict):
            return answer.summary()  # 2xx is the change made; the shape of the echo is not ours to demand
        return self._summary(answer, target, config)
