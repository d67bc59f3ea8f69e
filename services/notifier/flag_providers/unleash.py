"""Unleash through its Admin API (https://docs.getunleash.io/reference/api/unleash).

- read: `GET /api/admin/projects/{project}/features/{flag}` → the `environments` entry whose `name` is the
  target environment, its `enabled`.
- turn off / on: `POST /api/admin/projects/{project}/features/{flag}/environments/{environment}/off` (`/on`),
  no body, answered 200 with an empty body. Idempotent: Unleash sets the environment's enabled column and
  only records an event when a row changed, so turning off an already-off flag is a plain 200.
- `Authorization: <admin or personal access token>` (no "Bearer").

Change requests: when they are enabled for the project and environment and the token may not skip them,
`updateEnabled` throws `PermissionError(SKIP_CHANGE_REQUEST)` before touching anything — HTTP 403 with
`{"name": "PermissionError", "message": "You don't have the required permissions ... you need the
\"SKIP_CHANGE_REQUEST\" permission.", "permissions": ["SKIP_CHANGE_REQUEST"]}` (Unleash
src/lib/features/feature-toggle/feature-toggle-service.ts, `stopWhenChangeRequestsEnabled`; older releases
throw NoAccessError, also 403, with the same permission name in the message). A 403 naming that permission
or change requests is a ProviderRefused: a human has to open the change request. Any other 403 (the token
lacks UPDATE_FEATURE_ENVIRONMENT) is an ordinary non-retryable ProviderError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from services.notifier.flag_providers import FlagState, FlagTarget, ProviderError
from services.notifier.flag_providers.http_core import Answer, HttpProvider

SKIP_CHANGE_REQUEST = "SKIP_CHANGE_REQUEST"


class UnleashProvider(HttpProvider):
    """Unleash: a target names the feature (flag) name, the project id and the environment name. `base_url`
    is the Unleash server's root (e.g. https://unleash.example.com, or .../api's parent on Unleash Cloud)."""

    name = "unleash"
    required = ("project", "environment")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        credential: Callable[[], str],
        timeout: float = 10.0,
    ) -> None:
        super().__init__(session, base_url=base_url, credential=credential, timeout=timeout)

    def _feature_url(self, target: FlagTarget) -> str:
        assert target.project is not None  # check_target ran
        project, flag = quote(target.project, safe=""), quote(target.flag, safe="")
        return f"{self.base_url}/api/admin/projects/{project}/features/{flag}"

    def refusal(self, answer: Answer) -> str | None:
        if answer.status not in (403, 409):
            return None
        body = answer.json if isinstance(answer.json, dict) else {}
        permissions = body.get("permissions")
        named = isinstance(permissions, list) and SKIP_CHANGE_REQUEST in permissions
        text = answer.text.lower()
        if named or SKIP_CHANGE_REQUEST.lower() in text or "change request" in text:
            return "change requests are enabled for this project and environment"
        return None

    async def read(self, target: FlagTarget) -> FlagState:
        """`enabled` of the feature's entry for the target environment."""
        self.check_target(target)
        token = self.credential()
        what = f"read {target.flag!r} in {target.environment!r}"
        answer = await self.call(
            "GET", self._feature_url(target), what=what, headers={"Authorization": token}, secrets=(token,)
        )
        if not answer.ok:
            raise self.failure(answer, what)
        body = answer.json if isinstance(answer.json, dict) else {}
        environments = body.get("environments")
        entry = next(
            (
                env
                for env in (environments if isinstance(environments, list) else [])
                if isinstance(env, dict) and env.get("name") == target.environment
            ),
            None,
        )
        if entry is None or not isinstance(entry.get("enabled"), bool):
            raise ProviderError(
                f"{self.name}: {what}: the feature has no environment {target.environment!r}",
                retryable=False,
                status=answer.status,
                response=answer.summary(),
            )
        summary = answer.summary(
            {
                "name": body.get("name"),
                "project": body.get("project"),
                "environment": target.environment,
                "enabled": entry["enabled"],
            }
        )
        return FlagState(entry["enabled"], summary)

    async def turn_off(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        # The on/off endpoints take no body: Unleash's event log credits the token's user, and the comment
        # and actor live in tripwire's own audit record.
        return await self._toggle("off", target)

    async def turn_on(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        return await self._toggle("on", target)

    async def _toggle(self, state: str, target: FlagTarget) -> dict[str, Any]:
        self.check_target(target)
        token = self.credential()
        assert target.environment is not None
        url = f"{self._feature_url(target)}/environments/{quote(target.environment, safe='')}/{state}"
        what = f"turn {state} {target.flag!r} in {target.environment!r}"
        answer = await self.call("POST", url, what=what, headers={"Authorization": token}, secrets=(token,))
        if not answer.ok:
            raise self.failure(answer, what)
        return answer.summary()
