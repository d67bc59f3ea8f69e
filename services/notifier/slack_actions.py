"""`POST /slack/actions`: the human way back from a kill-switch flip.

A kill-switch announcement in Slack carries a "Re-enable flag" button whose value is the decision id. Slack
posts the click here, signed with the app's signing secret. The request is verified with slack-sdk's
SignatureVerifier (HMAC-SHA256 of `v0:{timestamp}:{raw body}`, at most 5 minutes old) before anything is read
from it; unsigned, badly signed or stale requests get 401 and change nothing. A valid click turns the flag
back on through the same provider that turned it off, audits who did it, and replaces the Slack message (via
the `response_url` Slack gave) to say so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.signature import SignatureVerifier

from services.notifier.flag_providers import FlagTarget, ProviderError
from services.notifier.killswitch import DecisionLog
from services.notifier.receivers.flag_off import REENABLE_OUTCOMES, FlagOffIntegration
from services.notifier.receivers.slack_message import REENABLE_ACTION
from shared.clock import Clock
from shared.webapp import json_response, within_body_timeout

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # Slack's interaction payloads are a few KB


class SlackUser(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=64)
    username: str = Field(default="", max_length=200)
    name: str = Field(default="", max_length=200)


class SlackAction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    action_id: str = Field(max_length=255)
    value: str = Field(default="", max_length=2000)


class BlockActions(BaseModel):
    """The part of Slack's `block_actions` payload we act on; the rest is ignored."""

    model_config = ConfigDict(extra="ignore")
    type: str
    user: SlackUser
    actions: list[SlackAction] = Field(default_factory=list, max_length=20)
    response_url: str | None = Field(default=None, max_length=2000)


class _SlackClock:
    """slack-sdk's verifier asks its clock for the time: give it ours, so tests can inject one."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock.now()


class SlackActions:
    def __init__(
        self,
        signing_secret: Callable[[], str | None],
        decisions: DecisionLog,
        integrations: Callable[[], list[FlagOffIntegration]],
        session: aiohttp.ClientSession,
        clock: Clock,
    ) -> None:
        self.signing_secret = signing_secret
        self.decisions = decisions
        self.integrations = integrations
        self.session = session
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        secret = self.signing_secret()
        if not secret:
            return json_response({"error": "slack actions are not configured (no signing secret)"}, 404)
        if request.content_length is None or request.content_length > MAX_BODY:
            return json_response({"error": "a Content-Length of at most 64 KiB is required"}, 413)
        body = await within_body_timeout(request, request.read())  # whole: the signature covers all of it
        verifier = SignatureVerifier(secret, clock=_SlackClock(self.clock))  # type: ignore[arg-type]
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        signature = request.headers.get("X-Slack-Signature")
        try:
            valid = verifier.is_valid(body, timestamp, signature)
        except ValueError:  # a timestamp that is not a number
            valid = False
        if not valid:
            log.warning("slack action refused: bad or stale signature", extra={"remote": request.remote})
            return json_response({"error": "invalid or stale Slack signature"}, 401)
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
            payload = BlockActions.model_validate(orjson.loads(form["payload"][0]))
        except (UnicodeDecodeError, ValueError, KeyError, IndexError, ValidationError) as exc:
            return json_response({"error": f"not a Slack interaction payload: {type(exc).__name__}"}, 400)
        clicks = [a for a in payload.actions if a.action_id == REENABLE_ACTION]
        if payload.type != "block_actions" or not clicks:
            return web.Response(status=200)  # another button (a link): nothing for us to do
        # Slack wants an answer within 3 seconds; the vendor call may take longer. The outcome reaches the
        # user through response_url (and the audit).
        task = asyncio.create_task(self._reenable_and_reply(clicks[0].value, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.Response(status=200)

    async def _reenable_and_reply(self, decision_id: str, payload: BlockActions) -> None:
        try:
            text = await self.reenable(decision_id, payload.user)
        except Exception:
            log.exception("slack action: re-enable failed")
            text = "Re-enabling failed unexpectedly; see the notifier's log. Nothing may have changed."
        if payload.response_url:
            await self._reply(payload.response_url, text)

    async def drain(self, within: float | None = None) -> None:
        """Wait for re-enables in progress (tests; shutdown), given `within`, at most that many seconds."""
        try:
            async with asyncio.timeout(within):
                while self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
        except TimeoutError:
            log.warning("slack actions still re-enabling at shutdown", extra={"count": len(self._tasks)})

    async def reenable(self, decision_id: str, user: SlackUser) -> str:
        """Turn the flag of a decision back on, as `user`; returns what to tell them."""
        actor = f"slack:{user.id}" + (
            f" ({user.username or user.name})" if user.username or user.name else ""
        )
        decision = await self.decisions.get(decision_id)
        if decision is None:
            return f"Unknown kill-switch decision {decision_id!r}: nothing re-enabled."
        if decision.outcome not in REENABLE_OUTCOMES:
            # Only what tripwire itself turned off may be turned back on from here.
            return (
                f"Decision {decision.id} did not turn {decision.flag} off ({decision.outcome}): nothing done."
            )
        integration = next(
            (
                i
                for i in self.integrations()
                if i.receiver == decision.receiver
                and i.name == (decision.integration or i.name)
                and i.provider.name == decision.provider
            ),
            None,
        )
        if integration is None:
            return (
                f"The receiver that turned {decision.flag} off is no longer configured: re-enable it by hand."
            )
        target = FlagTarget(decision.flag, decision.environment, decision.project)
        comment = f"re-enabled by {actor} from Slack (kill-switch decision {decision.id})"
        now = self.clock.now()
        try:
            response = await integration.provider.turn_on(target, comment=comment, actor=actor)
        except ProviderError as exc:
            await self.decisions.record(decision, "re_enable_failed", actor, {"error": str(exc)}, now)
            return f"Could not re-enable flag {decision.flag}: {exc}"
        await self.decisions.record(decision, "re_enabled", actor, response, now)
        log.warning("flag re-enabled by a human", extra={"flag": decision.flag, "actor": actor})
        return (
            f":large_green_circle: Flag *{decision.flag}* re-enabled by <@{user.id}> ({decision.provider})."
        )

    async def _reply(self, response_url: str, text: str) -> None:
        """Replace the announcement with the outcome (Slack's response_url; best effort: the audit has it)."""
        if not response_url.startswith("https://") and not _local(response_url):
            log.warning("slack action: refusing a non-https response_url")
            return
        message: dict[str, Any] = {"replace_original": True, "text": text}
        try:
            async with self.session.post(
                response_url, json=message, timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                if response.status >= 300:
                    log.warning(
                        "slack action: response_url refused the update", extra={"status": response.status}
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack action: could not update the message", extra={"error": str(exc)})


def _local(url: str) -> bool:
    # The Slack fakes (tests, demo) listen on plain http on loopback.
    return url.startswith(("http://127.0.0.1:", "http://localhost:"))
