"""Local fakes of the feature-flag services the kill switch turns flags off with: LaunchDarkly's REST API v2,
Unleash's Admin API, Flagsmith's Admin API and a receiver of tripwire's signed flag webhook.

Each keeps flags in memory (seed them in the constructor, read them with `flag_on` / `flag_enabled`),
validates the request the way the vendor does (token, content type, body), answers the vendor's statuses and
bodies — including its policy refusals (LaunchDarkly approvals, Unleash and Flagsmith change requests) — and
supports the base's `fail_next`, `hang_next`, `rate_limit` and request log.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from services.notifier.flag_providers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.fakes.http import HOST, Accept, Call, FakeServer, Handler, Outcome, Reply

DEFAULT_LD_TOKEN = "api-00000000-fake-launchdarkly-token"
DEFAULT_UNLEASH_TOKEN = "*:*.fake-unleash-admin-token"
DEFAULT_FLAGSMITH_KEY = "ser.fake-flagsmith-organisation-key"
DEFAULT_WEBHOOK_SECRET = "whsec-fake-flag-webhook-secret"

LD_KINDS = ("turnFlagOn", "turnFlagOff")


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- LaunchDarkly --------------------------------------------------------------------------------------------


def _ld_error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"code": code, "message": message})


class FakeLaunchDarkly(FakeServer):
    """LaunchDarkly REST API v2: `GET` and semantic-patch `PATCH` of `/api/v2/flags/{project}/{flag}`.
    `flags` maps (project, flag) to {environment: on}; `approvals_required` holds (project, flag, environment)
    triples whose changes need an approval (answered 405). `changes` logs every applied patch."""

    def __init__(
        self,
        token: str = DEFAULT_LD_TOKEN,
        *,
        flags: dict[tuple[str, str], dict[str, bool]] | None = None,
        approvals_required: set[tuple[str, str, str]] | None = None,
        host: str = HOST,
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.flags = {key: dict(envs) for key, envs in (flags or {}).items()}
        self.approvals_required = set(approvals_required or ())
        self.versions: dict[tuple[str, str, str], int] = {}
        self.changes: list[dict[str, Any]] = []

    def flag_on(self, project: str, flag: str, env: str) -> bool:
        """The flag's targeting state in `env` (KeyError when unknown)."""
        return self.flags[(project, flag)][env]

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/api/v2/flags/{project}/{flag}", self._get),
            ("PATCH", "/api/v2/flags/{project}/{flag}", self._patch),
        ]

    def failure_body(self, status: int) -> str | dict[str, Any] | None:
        if status == 409:
            return {"code": "optimistic_locking_error", "message": "Conflict: the flag changed concurrently"}
        if status == 429:
            return {"code": "rate_limited", "message": "You've exceeded the API rate limit. Try again later."}
        return {"code": "internal_server_error", "message": "Internal server error"}

    def rate_limited(self, retry_after: int) -> Reply:
        reset = _now_ms() + retry_after * 1000
        return Reply(
            429,
            {"code": "rate_limited", "message": "You've exceeded the API rate limit. Try again later."},
            {"X-Ratelimit-Reset": str(reset), "Retry-After": str(retry_after)},
        )

    def _flag_json(self, project: str, flag: str, only_env: str | None = None) -> dict[str, Any]:
        envs = self.flags[(project, flag)]
        shown = {e: on for e, on in envs.items() if only_env is None or e == only_env}
        return {
            "key": flag,
            "name": flag,
            "kind": "boolean",
            "_version": sum(self.versions.get((project, flag, e), 1) for e in envs),
            "environments": {
                env: {
                    "on": on,
                    "archived": False,
                    "version": self.versions.get((project, flag, env), 1),
                    "lastModified": _now_ms(),
                    "_environmentName": env,
                }
                for env, on in shown.items()
            },
        }

    def _auth(self, call: Call) -> Reply | None:
        # LaunchDarkly takes the bare token; "Bearer <token>" is not a token it knows.
        if call.headers.get("Authorization") != self.token:
            return _ld_error(401, "unauthorized", "Invalid access token")
        return None

    def _get(self, call: Call) -> Outcome:
        problem = self._auth(call)
        if problem:
            return problem
        project, flag = call.match["project"], call.match["flag"]
        if (project, flag) not in self.flags:
            return _ld_error(404, "not_found", "Unknown resource")
        body = self._flag_json(project, flag, call.params.get("env"))
        return Accept(lambda: Reply(200, body))

    def _patch(self, call: Call) -> Outcome:
        problem = self._auth(call)
        if problem:
            return problem
        content_type = call.headers.get("Content-Type", "")
        params = {part.strip().lower() for part in content_type.split(";")[1:]}
        if call.content_type != "application/json" or "domain-model=launchdarkly.semanticpatch" not in params:
            return _ld_error(
                400,
                "invalid_request",
                "A semantic patch needs Content-Type: application/json; "
                "domain-model=launchdarkly.semanticpatch",
            )
        project, flag = call.match["project"], call.match["flag"]
        if (project, flag) not in self.flags:
            return _ld_error(404, "not_found", "Unknown resource")
        body = call.json
        if not call.json_ok or not isinstance(body, dict):
            return _ld_error(400, "invalid_request", "The request body must be a JSON object")
        env = body.get("environmentKey")
        instructions = body.get("instructions")
        comment = body.get("comment", "")
        if not isinstance(instructions, list) or not instructions:
            return _ld_error(400, "invalid_request", "instructions must be a non-empty array")
        kinds = [item.get("kind") if isinstance(item, dict) else None for item in instructions]
        if any(kind not in LD_KINDS for kind in kinds):
            return _ld_error(400, "invalid_request", f"unsupported instruction kinds: {kinds}")
        if not isinstance(comment, str):
            return _ld_error(400, "invalid_request", "comment must be a string")
        if not isinstance(env, str) or env not in self.flags[(project, flag)]:
            return _ld_error(400, "invalid_request", f"environmentKey {env!r} is not an environment")
        if (project, flag, env) in self.approvals_required:
            return _ld_error(
                405,
                "method_not_allowed",
                f"This flag requires approval for changes in environment {env!r}; "
                "create an approval request instead",
            )

        def apply() -> Reply:
            envs = self.flags[(project, flag)]
            for kind in kinds:
                on = kind == "turnFlagOn"
                if envs[env] != on:  # a semantic patch that changes nothing bumps no version
                    envs[env] = on
                    self.versions[(project, flag, env)] = self.versions.get((project, flag, env), 1) + 1
            self.changes.append(
                {"project": project, "flag": flag, "environment": env, "kinds": kinds, "comment": comment}
            )
            return Reply(200, self._flag_json(project, flag))

        return Accept(apply)


# -- Unleash -------------------------------------------------------------------------------------------------


def _unleash_error(status: int, name: str, message: str, **extra: Any) -> Reply:
    return Reply(status, {"id": str(uuid.uuid4()), "name": name, "message": message, **extra})


class FakeUnleash(FakeServer):
    """Unleash Admin API: read a feature and turn it on/off per environment. `flags` maps (project, feature)
    to {environment: enabled}; `change_requests` holds (project, environment) pairs with change requests
    enabled, answered 403 PermissionError naming SKIP_CHANGE_REQUEST as Unleash does. `events` logs the
    feature-environment-enabled/disabled events Unleash stores (only when the state changed)."""

    def __init__(
        self,
        token: str = DEFAULT_UNLEASH_TOKEN,
        *,
        flags: dict[tuple[str, str], dict[str, bool]] | None = None,
        change_requests: set[tuple[str, str]] | None = None,
        host: str = HOST,
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.flags = {key: dict(envs) for key, envs in (flags or {}).items()}
        self.change_requests = set(change_requests or ())
        self.events: list[dict[str, Any]] = []

    def flag_enabled(self, project: str, flag: str, env: str) -> bool:
        """The feature's enabled state in `env` (KeyError when unknown)."""
        return self.flags[(project, flag)][env]

    def routes(self) -> list[tuple[str, str, Handler]]:
        base = "/api/admin/projects/{project}/features/{feature}"
        return [
            ("GET", base, self._get),
            ("POST", base + "/environments/{environment}/on", self._toggle),
            ("POST", base + "/environments/{environment}/off", self._toggle),
        ]

    def failure_body(self, status: int) -> str | dict[str, Any] | None:
        if status == 429:
            return {"message": "Too many requests, please try again later."}
        return {"id": str(uuid.uuid4()), "name": "UnknownError", "message": "Unexpected server error"}

    def _auth(self, call: Call) -> Reply | None:
        if call.headers.get("Authorization") != self.token:
            return _unleash_error(401, "AuthenticationRequired", "You must log in to use Unleash.")
        return None

    def _get(self, call: Call) -> Outcome:
        problem = self._auth(call)
        if problem:
            return problem
        project, feature = call.match["project"], call.match["feature"]
        if (project, feature) not in self.flags:
            return _unleash_error(404, "NotFoundError", f"Could not find feature flag with name {feature}")
        body = {
            "name": feature,
            "project": project,
            "type": "kill-switch",
            "stale": False,
            "environments": [
                {"name": env, "enabled": enabled, "type": "production", "strategies": []}
                for env, enabled in self.flags[(project, feature)].items()
            ],
        }
        return Accept(lambda: Reply(200, body))

    def _toggle(self, call: Call) -> Outcome:
        problem = self._auth(call)
        if problem:
            return problem
        project, feature, env = call.match["project"], call.match["feature"], call.match["environment"]
        enabled = call.path.endswith("/on")
        # Unleash checks change requests first (stopWhenChangeRequestsEnabled), before the feature exists.
        if (project, env) in self.change_requests:
            return _unleash_error(
                403,
                "PermissionError",
                "You don't have the required permissions to perform this operation. To perform this "
                'action, you need the "SKIP_CHANGE_REQUEST" permission.',
                permissions=["SKIP_CHANGE_REQUEST"],
            )
        envs = self.flags.get((project, feature))
        if envs is None:
            return _unleash_error(404, "NotFoundError", f"Could not find feature flag with name {feature}")
        if env not in envs:
            return _unleash_error(
                404, "NotFoundError", f"Could not find environment {env} for feature: {feature}"
            )

        def apply() -> Reply:
            if envs[env] != enabled:
                envs[env] = enabled
                self.events.append(
                    {
                        "type": "feature-environment-enabled" if enabled else "feature-environment-disabled",
                        "project": project,
                        "featureName": feature,
                        "environment": env,
                    }
                )
            return Reply(200)  # res.status(200).end(): no body

        return Accept(apply)


# -- Flagsmith -----------------------------------------------------------------------------------------------


class FakeFlagsmith(FakeServer):
    """Flagsmith Admin API: `update-flag-v1` (experimental) and the environment's feature-state list.
    `flags` maps feature name to {environment key: enabled}; `change_requests` holds environment keys with
    change requests enabled (the experimental endpoint answers 403); `segment_overrides` maps (feature,
    environment key) to the enabled state of a segment override listed before the environment default."""

    def __init__(
        self,
        api_key: str = DEFAULT_FLAGSMITH_KEY,
        *,
        flags: dict[str, dict[str, bool]] | None = None,
        change_requests: set[str] | None = None,
        segment_overrides: dict[tuple[str, str], bool] | None = None,
        host: str = HOST,
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.flags = {name: dict(envs) for name, envs in (flags or {}).items()}
        self.change_requests = set(change_requests or ())
        self.segment_overrides = dict(segment_overrides or {})
        self.updates: list[dict[str, Any]] = []
        self._feature_ids = {name: i for i, name in enumerate(sorted(self.flags), start=1)}
        envs = sorted({env for states in self.flags.values() for env in states} | self.change_requests)
        self._env_ids = {env: i for i, env in enumerate(envs, start=1)}

    def flag_enabled(self, flag: str, env: str) -> bool:
        """The feature's environment-default enabled state in `env` (KeyError when unknown)."""
        return self.flags[flag][env]

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/api/v1/environments/{env}/featurestates/", self._list),
            ("POST", "/api/experiments/environments/{env}/update-flag-v1/", self._update),
        ]

    def failure_body(self, status: int) -> str | dict[str, Any] | None:
        if status == 429:
            return {"detail": "Request was throttled."}
        return "Server Error (500)"  # Django's plain 500 page

    def rate_limited(self, retry_after: int) -> Reply:
        # Django REST framework's throttle answer.
        return Reply(
            429,
            {"detail": f"Request was throttled. Expected available in {retry_after} seconds."},
            {"Retry-After": str(retry_after)},
        )

    def _auth(self, call: Call) -> Reply | None:
        if call.headers.get("Authorization") != f"Api-Key {self.api_key}":
            return Reply(401, {"detail": "Invalid API Key"})
        return None

    def _list(self, call: Call) -> Outcome:
        problem = self._auth(call)
        if problem:
            return problem
        env = call.match["env"]
        if env not in self._env_ids:
            return Reply(404, {"detail": "Environment not found."})
        wanted = call.params.get("feature_name")
        results: list[dict[str, Any]] = []
        for name, states in self.flags.items():
            if env not in states or (wanted is not None and name.lower() != wanted.lower()):
                continue
            if (name, env) in self.segment_overrides:
                results.append(self._state(name, env, self.segment_overrides[(name, env)], segment=1))
            results.append(self._state(name, env, states[env], segment=None))
        body = {"count": len(results), "next": None, "previous": None, "results": results}
        return Accept(lambda: Reply(200, body))

    def _state(self, name: str, env: str, enabled: bool, segment: int | None) -> dict[str, Any]:
        feature_id = self._feature_ids[name]
        return {
            "id": feature_id * 100 + (segment or 0),
            "feature": feature_id,
            "enabled": enabled,
            "environment": self._env_ids[env],
            "identity": None,
            "feature_segment": segment,
            "feature_state_value": None,
        }

    def _update(self, call: Call) -> Outcome:
        problem = self._auth(call)
        if problem:
            return problem
        env = call.match["env"]
        # An unknown environment key fails the permission check: DRF's generic 403.
        if env not in self._env_ids:
            return Reply(403, {"detail": "You do not have permission to perform this action."})
        if env in self.change_requests:
            return Reply(
                403,
                {
                    "detail": "This endpoint cannot be used when change requests are enabled. "
                    "Use the change request workflow instead."
                },
            )
        body = call.json
        if not call.json_ok or not isinstance(body, dict):
            return Reply(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
        errors = _flagsmith_problems(body)
        if errors:
            return Reply(400, errors)
        feature = body["feature"]
        name = feature.get("name")
        if name is None:
            name = next((n for n, i in self._feature_ids.items() if i == feature.get("id")), None)
        if name is None or name not in self.flags or env not in self.flags[name]:
            return Reply(400, [f"Feature '{feature}' not found in project"])

        def apply() -> Reply:
            if "enabled" in body:  # omitted fields are "no change"
                self.flags[name][env] = body["enabled"]
            self.updates.append({"environment": env, "feature": name, "body": body})
            return Reply(204)

        return Accept(apply)


def _flagsmith_problems(body: dict[str, Any]) -> dict[str, Any]:
    """Django REST framework style field errors for an update-flag-v1 body."""
    errors: dict[str, Any] = {}
    feature = body.get("feature")
    if not isinstance(feature, dict):
        errors["feature"] = ["This field is required."]
    elif bool(feature.get("name")) == bool(feature.get("id")):
        errors["feature"] = {"non_field_errors": ["Provide either 'name' or 'id', not both or neither"]}
    if "enabled" in body and not isinstance(body["enabled"], bool):
        errors["enabled"] = ["Must be a valid boolean."]
    value = body.get("value")
    if value is not None and (
        not isinstance(value, dict)
        or value.get("type") not in ("string", "integer", "boolean")
        or not isinstance(value.get("value"), str)
    ):
        errors["value"] = ["Expected {'type': 'string'|'integer'|'boolean', 'value': <string>}"]
    return errors


# -- tripwire's signed flag webhook --------------------------------------------------------------------------

WEBHOOK_FIELDS = ("action", "flag", "environment", "project", "comment", "actor", "timestamp")


class FakeFlagWebhook(FakeServer):
    """A receiver of tripwire's kill-switch webhook at `hook_url`: verifies X-Tripwire-Signature with
    `verify_signature` (401 when missing, wrong or outside `tolerance`), the Bearer `token` when one is set,
    and the body; applies the action to `flags` ((project, flag, environment) → enabled, unknown flags
    count as on) and logs it in `actions`. Answers 200 with a JSON summary, already-in-state included."""

    PATH = "/tripwire/flags"

    def __init__(
        self,
        secret: str = DEFAULT_WEBHOOK_SECRET,
        *,
        token: str | None = None,
        tolerance: float = 300.0,
        host: str = HOST,
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.secret = secret
        self.token = token
        self.tolerance = tolerance
        self.flags: dict[tuple[str | None, str, str | None], bool] = {}
        self.actions: list[dict[str, Any]] = []

    @property
    def hook_url(self) -> str:
        return f"{self.url}{self.PATH}"

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", self.PATH, self._hook)]

    def failure_body(self, status: int) -> str | dict[str, Any] | None:
        return {"error": "injected failure"}

    def _hook(self, call: Call) -> Outcome:
        if self.token is not None and call.headers.get("Authorization") != f"Bearer {self.token}":
            return Reply(401, {"error": "missing or wrong bearer token"})
        timestamp = call.headers.get(TIMESTAMP_HEADER)
        signature = call.headers.get(SIGNATURE_HEADER)
        if not timestamp or not signature:
            return Reply(401, {"error": "missing signature"})
        now = time.time()
        if not verify_signature(self.secret, timestamp, call.body, signature, now, self.tolerance):
            stale = not timestamp.isdigit() or abs(now - int(timestamp)) > self.tolerance
            return Reply(401, {"error": "stale timestamp" if stale else "invalid signature"})
        body = call.json
        if not call.json_ok or not isinstance(body, dict) or set(WEBHOOK_FIELDS) - body.keys():
            return Reply(400, {"error": f"the body must be an object with {', '.join(WEBHOOK_FIELDS)}"})
        if body["action"] not in ("turn_off", "turn_on") or not isinstance(body["flag"], str):
            return Reply(400, {"error": "action must be turn_off or turn_on, flag a string"})
        if str(body["timestamp"]) != timestamp:
            return Reply(400, {"error": "the body's timestamp differs from the signed header"})

        def apply() -> Reply:
            key = (body["project"], body["flag"], body["environment"])
            enabled = body["action"] == "turn_on"
            changed = self.flags.get(key, True) != enabled
            self.flags[key] = enabled
            self.actions.append(body)
            return Reply(
                200,
                {
                    "ok": True,
                    "flag": body["flag"],
                    "environment": body["environment"],
                    "enabled": enabled,
                    "changed": changed,
                },
            )

        return Accept(apply)
