"""Flagsmith through its Admin API, with an organisation API key (`Authorization: Api-Key <key>`).

- turn off / on: the experimental `POST /api/experiments/environments/{environment_key}/update-flag-v1/` with
  `{"feature": {"name": flag}, "enabled": false}` → 204 No Content. Omitted fields are "no change"
  (https://docs.flagsmith.com/integrating-with-flagsmith/flagsmith-api-overview/admin-api/updating-flags), so
  the flag's value is left alone; writing the state it already has is a plain 204: idempotent. (Releases
  before that page required a `value` too and answer 400 without it.)
- read: `GET /api/v1/environments/{environment_key}/featurestates/?feature_name={flag}` lists the feature's
  current states in the environment (case-insensitive name match; segment and identity overrides included);
  the environment default is the one with neither `feature_segment` nor `identity`.
- Change requests: the experimental endpoints refuse to run when the environment has them enabled — 403
  `{"detail": "This endpoint cannot be used when change requests are enabled. Use the change request workflow
  instead."}` (Flagsmith api/features/feature_states/views.py, `_check_workflow_not_enabled`) →
  ProviderRefused. Other 403s (the key lacks permission, an unknown environment key) are plain errors.

A target names the feature in `flag` and the environment's key (its client-side API key) in `environment`;
`project` is not used: environment keys are unique across projects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from services.notifier.flag_providers import FlagState, FlagTarget, ProviderError
from services.notifier.flag_providers.http_core import Answer, HttpProvider

DEFAULT_BASE_URL = "https://api.flagsmith.com"


class FlagsmithProvider(HttpProvider):
    """Flagsmith (SaaS by default; `base_url` for a self-hosted API)."""

    name = "flagsmith"
    required = ("environment",)

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str = DEFAULT_BASE_URL,
        credential: Callable[[], str],
        timeout: float = 10.0,
    ) -> None:
        super().__init__(session, base_url=base_url, credential=credential, timeout=timeout)

    def _headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Api-Key {key}"}

    def _environment(self, target: FlagTarget) -> str:
        assert target.environment is not None  # check_target ran
        return quote(target.environment, safe="")

    def refusal(self, answer: Answer) -> str | None:
        if answer.status == 403 and "change request" in answer.text.lower():
            return "change requests are enabled for this environment"
        return None

    async def read(self, target: FlagTarget) -> FlagState:
        """`enabled` of the feature's environment-default state."""
        self.check_target(target)
        key = self.credential()
        what = f"read {target.flag!r} in environment {target.environment!r}"
        answer = await self.call(
            "GET",
            f"{self.base_url}/api/v1/environments/{self._environment(target)}/featurestates/",
            what=what,
            headers=self._headers(key),
            secrets=(key,),
            params={"feature_name": target.flag},
        )
        if not answer.ok:
            raise self.failure(answer, what)
        body = answer.json
        # Paginated ({"count", "next", "results"}) on current releases; a bare list is accepted too.
        results = body.get("results") if isinstance(body, dict) else body
        default = next(
            (
                state
                for state in (results if isinstance(results, list) else [])
                if isinstance(state, dict)
                and state.get("feature_segment") is None
                and state.get("identity") is None
                and isinstance(state.get("enabled"), bool)
            ),
            None,
        )
        if default is None:
            raise ProviderError(
                f"{self.name}: {what}: no such feature in this environment",
                retryable=False,
                status=answer.status,
                response=answer.summary(),
            )
        summary = answer.summary(
            {
                "id": default.get("id"),
                "feature": default.get("feature"),
                "environment": default.get("environment"),
                "enabled": default["enabled"],
            }
        )
        return FlagState(default["enabled"], summary)

    async def turn_off(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        # update-flag-v1 has no comment field; the comment and actor live in tripwire's audit record.
        return await self._update(False, target)

    async def turn_on(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        return await self._update(True, target)

    async def _update(self, enabled: bool, target: FlagTarget) -> dict[str, Any]:
        self.check_target(target)
        key = self.credential()
        what = f"turn {'on' if enabled else 'off'} {target.flag!r} in environment {target.environment!r}"
        answer = await self.call(
            "POST",
            f"{self.base_url}/api/experiments/environments/{self._environment(target)}/update-flag-v1/",
            what=what,
            headers={**self._headers(key), "Content-Type": "application/json"},
            secrets=(key,),
            body=orjson.dumps({"feature": {"name": target.flag}, "enabled": enabled}),
        )
        if not answer.ok:
            raise self.failure(answer, what)
        return answer.summary()
