"""The Slack receiver, with slack-sdk: an incoming webhook, or a bot token that keeps one message per group.

Webhook mode posts one Block Kit message per notification. Bot-token mode (chat.postMessage to `channel`)
remembers the channel id and `ts` of the group's message; later notifications of the group update that
message in place (chat.update) and reply in its thread, a repeat broadcasts its reply to the channel, and the
group's resolution turns the message green and closes the story. The next firing starts a new message.

Exactly once in effect: every post carries the delivery's id as Slack message metadata, so after a crash
(or a timed-out request) we look in the channel and the thread for it before posting again. An incoming
webhook cannot be read back: a delivery a crash interrupted mid-request is taken as delivered (at most once
for that narrow window; a bot token gives exactly once). slack-sdk's own retries are off (they re-POST on a
read timeout and crash on a fractional Retry-After); `delivery.deliver` retries instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from services.notifier.config import SlackConfig
from services.notifier.nflog import Intent, NotifierState
from services.notifier.notification import Notification
from services.notifier.receivers.delivery import (
    USER_AGENT,
    Attempt,
    Journal,
    RateLimits,
    client_error_attempt,
    deliver,
    http_attempt,
    redact,
)
from services.notifier.receivers.slack_message import MessageOptions, fallback_text, render_message
from services.notifier.secrets import SecretError, expand, read_secret
from services.notifier.templates import TemplateError, render
from shared.clock import Clock

log = logging.getLogger(__name__)
# slack-sdk logs request URLs at debug level, and a webhook URL is a secret.
logging.getLogger("slack_sdk").setLevel(logging.WARNING)

WEB_API = "https://slack.com/api/"
REENABLE = "tripwire_reenable"  # the annotation a kill-switch announcement carries its decision id in
METADATA_EVENT = "tripwire_notification"
# Web API errors worth retrying; any other `ok: false` is a config or payload problem waiting cannot fix.
_RETRYABLE = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
# Answers that mean the token may not read the channel: reconciling is impossible, not just failing now.
_CANNOT_LOOK = {"missing_scope", "not_in_channel", "channel_not_found", "not_allowed_token_type"}
HISTORY_PAGES = 5  # of 200 messages: how far back to look for a post a crash may have lost
# In the message-ref hash beside the group keys (never a group key), per configured channel.
CHANNEL_ID_KEY = "\x00channel-id:"
MAX_REF_FINGERPRINTS = 200  # alerts remembered per group message (to tell a new incident from an update)
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")


class SlackIntegration:
    def __init__(
        self,
        index: int,
        config: SlackConfig,
        *,
        receiver: str,
        state: NotifierState | None,
        session: aiohttp.ClientSession,
        clock: Clock,
        limits: RateLimits,
        silence_url: str | None = None,
    ) -> None:
        self.name = f"slack[{index}]"
        self.config = config
        # Updating the original message on resolution is the point of bot mode, so it sends resolutions
        # unless told not to; webhook mode keeps Alertmanager's default (off).
        explicit = "send_resolved" in config.model_fields_set
        self.send_resolved = config.send_resolved if explicit else config.uses_bot_token()
        self.log_name = f"{receiver}/{self.name}"
        self.state = state
        self.session = session
        self.clock = clock
        self.limits = limits
        self.silence_url = silence_url
        self.rng = random.Random()

    # Delivery -------------------------------------------------------------------------------------------
    async def notify(self, notification: Notification, journal: Journal) -> None:
        message = self.message(notification, test=notification.test)
        if self.config.uses_bot_token():
            attempt = self._bot_attempt(notification, message, journal)
            try:
                destination = f"slack-channel:{self._channel()}"
            except SecretError:
                destination = "slack-channel:?"  # the attempt reports why
        else:
            attempt = self._webhook_attempt(message)
            destination = f"slack-webhook:{self._webhook_id()}"
        await deliver(
            self.name,
            attempt,
            clock=self.clock,
            deadline=self.clock.now() + self.config.retry_deadline,
            journal=journal,
            rng=self.rng,
            bucket=self.limits.bucket(destination, self.config.rate_limit, self.config.burst),
        )

    def message(self, notification: Notification, *, test: bool = False) -> dict[str, Any]:
        """The Block Kit message, with the configured title/text templates applied."""
        data = notification.template_data()
        options = MessageOptions(
            title=self._render("title", self.config.title, data),
            text=self._render("text", self.config.text, data),
            silence_url=self.silence_url,
            max_alerts_listed=self.config.max_alerts_listed,
            test=test,
            reenable=next(
                (
                    a.annotations[REENABLE]
                    for a in notification.firing
                    if REENABLE in a.annotations and a.labels.get("alertname") == "TripwireKillSwitch"
                ),
                None,
            ),
        )
        message = render_message(notification, options)
        for key in ("username", "icon_emoji", "icon_url"):
            value = getattr(self.config, key)
            if value:
                message[key] = value
        return message

    def _render(self, key: str, text: str | None, data: Any) -> str | None:
        if text is None:
            return None
        try:
            return render(text, data)
        except TemplateError as exc:
            # A template that fails on this data must not cost the notification: use the default, say why.
            log.warning("slack template failed; using the default", extra={"field": key, "error": str(exc)})
            return None

    def secrets_problem(self) -> str | None:
        """Why this integration's secrets cannot be read now (checked at start and reload), or None."""
        try:
            if self.config.uses_bot_token():
                read_secret(self.config.token, self.config.token_file, "token")
                self._channel()
            else:
                read_secret(self.config.api_url, self.config.api_url_file, "api_url")
        except SecretError as exc:
            return str(exc)
        return None

    def _channel(self) -> str:
        return expand(self.config.channel or "", "channel")

    def _webhook_id(self) -> str:
        # The URL is the secret: identify the destination by a digest of it.
        try:
            url = read_secret(self.config.api_url, self.config.api_url_file, "api_url")
        except SecretError:
            return "unreadable"
        return hashlib.sha256(url.encode()).hexdigest()[:16]

    def _webhook_attempt(self, message: dict[str, Any]) -> Any:
        async def attempt() -> Attempt:
            try:
                url = read_secret(self.config.api_url, self.config.api_url_file, "api_url")
            except SecretError as exc:
                return Attempt.retry(str(exc))  # the operator may fix the file or the environment
            client = AsyncWebhookClient(
                url, session=self.session, retry_handlers=[], user_agent_prefix=USER_AGENT
            )
            try:
                # slack-sdk applies its own timeout only to sessions it creates: ours is shared.
                async with asyncio.timeout(self.config.timeout):
                    response = await client.send_dict(message)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                return client_error_attempt(exc, url)
            except Exception as exc:  # whatever slack-sdk raises becomes a retry, not a crash
                return Attempt.retry(redact(f"{type(exc).__name__}: {exc}", url), uncertain=True)
            if response.status_code == 200 and response.body == "ok":
                return Attempt.ok()
            status = 502 if response.status_code == 200 else response.status_code  # 200 but not "ok"
            headers = response.headers or {}
            retry_after = headers.get("Retry-After") or headers.get("retry-after")
            return http_attempt(status, response.body or "", retry_after, self.clock.now())

        return attempt

    def _web_client(self) -> AsyncWebClient:
        token = read_secret(self.config.token, self.config.token_file, "token")
        base = expand(self.config.api_url, "api_url") if self.config.api_url else WEB_API
        return AsyncWebClient(
            token=token,
            base_url=base if base.endswith("/") else base + "/",
            session=self.session,
            retry_handlers=[],
            user_agent_prefix=USER_AGENT,
        )

    def _bot_attempt(self, notification: Notification, message: dict[str, Any], journal: Journal) -> Any:
        uncertain = False

        async def attempt() -> Attempt:
            nonlocal uncertain
            try:
                client = self._web_client()
                self._channel()
            except SecretError as exc:
                return Attempt.retry(str(exc))  # the operator may fix the file or the environment
            try:
                # One attempt makes up to three calls (look, update, reply); slack-sdk would not time out
                # on our shared session.
                async with asyncio.timeout(self.config.timeout * 3):
                    if uncertain and await self._posted_or_unknown(client, notification, journal.id):
                        return Attempt.ok()  # the timed-out request did arrive
                    await self._post_or_update(client, notification, message, journal.id)
                return Attempt.ok()
            except SlackApiError as exc:
                return _api_error(exc, self.clock.now())
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = client_error_attempt(exc, client.base_url)
                uncertain = uncertain or outcome.uncertain
                return outcome
            except Exception as exc:  # e.g. Redis, an odd answer: retry, never crash the flush
                uncertain = True
                return Attempt.retry(f"{type(exc).__name__}: {exc}", uncertain=True)

        return attempt

    async def _posted_or_unknown(
        self, client: AsyncWebClient, notification: Notification, delivery: str
    ) -> bool:
        """After a timed-out request: did it arrive? If the channel cannot be read, post again (a duplicate
        beats a lost alert)."""
        if self.state is None:
            return False
        try:
            found = await self._find_posted(client, notification.group_key, delivery)
        except (LookupError, SlackApiError) as exc:
            if isinstance(exc, SlackApiError) and _error_code(exc) not in _CANNOT_LOOK:
                raise
            return False
        if found and notification.status == "resolved":
            await self.state.set_message_ref(self.log_name, notification.group_key, None)
        return found

    async def _post_or_update(
        self, client: AsyncWebClient, notification: Notification, message: dict[str, Any], delivery_id: str
    ) -> None:
        group_key = notification.group_key
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"id": delivery_id}}
        channel = self._channel()
        if self.state is None:  # `tripwire receivers test`: no state, a plain post
            await client.chat_postMessage(channel=channel, **message, metadata=metadata)
            return
        ref = await self._ref(group_key, channel)
        firing = sorted(a.fingerprint for a in notification.firing)
        if ref is not None and firing and not set(firing) & set(ref.get("fingerprints", [])):
            # None of these alerts was in the message: a new incident (the old one's resolution was never
            # sent, say with send_resolved false). It gets its own message, seen in the channel.
            ref = None
        if ref is None:
            posted = await client.chat_postMessage(
                channel=channel, **message, metadata=metadata, unfurl_links=False
            )
            if notification.status == "firing":
                await self._set_ref(group_key, channel, str(posted["channel"]), str(posted["ts"]), firing)
            await self._learn_channel_id(channel, str(posted["channel"]))
            return
        # The original message shows the group as it is now; the thread tells what changed.
        try:
            await client.chat_update(channel=ref["channel"], ts=ref["ts"], **_updatable(message))
        except SlackApiError as exc:
            if _error_code(exc) in _RETRYABLE or exc.response.status_code >= 500:
                raise
            # Deleted, too old, archived...: the update cannot be made; start a fresh message instead.
            log.warning(
                "cannot update the group's Slack message; posting anew", extra={"error": _error_code(exc)}
            )
            await self.state.set_message_ref(self.log_name, group_key, None)
            await self._post_or_update(client, notification, message, delivery_id)
            return
        repeat = notification.status == "firing" and ref.get("fingerprints") == firing[:MAX_REF_FINGERPRINTS]
        await client.chat_postMessage(
            channel=ref["channel"],
            thread_ts=ref["ts"],
            text=_thread_line(notification, repeat),
            metadata=metadata,
            reply_broadcast=repeat,  # a repeat reminds the channel, not only the thread
        )
        if notification.status == "resolved":
            await self.state.set_message_ref(self.log_name, group_key, None)
        elif not repeat:
            await self._set_ref(group_key, channel, ref["channel"], ref["ts"], firing)

    async def _ref(self, group_key: str, channel: str) -> dict[str, Any] | None:
        """The group's message, if it was posted to the channel configured now (a changed `channel` starts
        afresh rather than update a message elsewhere)."""
        assert self.state is not None
        ref = await self.state.message_ref(self.log_name, group_key)
        return ref if ref is not None and ref.get("configured") == channel else None

    async def _set_ref(
        self, group_key: str, configured: str, channel_id: str, ts: str, firing: list[str]
    ) -> None:
        assert self.state is not None
        ref = {
            "configured": configured,
            "channel": channel_id,
            "ts": ts,
            "fingerprints": firing[:MAX_REF_FINGERPRINTS],
        }
        await self.state.set_message_ref(self.log_name, group_key, ref)

    # Reconciliation -------------------------------------------------------------------------------------
    async def reconcile(self, group_key: str, intent: Intent) -> bool:
        if not self.config.uses_bot_token():
            if intent.state != "sending":
                return False  # we gave up on it ourselves: send again (a duplicate beats a lost alert)
            log.warning(
                "a Slack webhook delivery was interrupted mid-request by a restart; assuming it arrived "
                "(webhooks cannot be read back; use a bot token for exact reconciliation)",
                extra={"integration": self.log_name, "delivery": intent.id},
            )
            return True
        client = self._web_client()
        try:
            async with asyncio.timeout(self.config.timeout * 3):
                found = await self._find_posted(client, group_key, intent.id, sorted(intent.firing))
        except (LookupError, SlackApiError) as exc:
            if isinstance(exc, SlackApiError) and _error_code(exc) not in _CANNOT_LOOK:
                raise  # e.g. rate limited: look again at the next flush
            log.warning(
                "cannot read the channel to reconcile an interrupted Slack post; assuming it arrived "
                "(configure the channel by id, or grant channels:history and channels:read)",
                extra={"integration": self.log_name, "delivery": intent.id, "error": str(exc)},
            )
            return True
        if found and not intent.firing:
            await self.state.set_message_ref(self.log_name, group_key, None)  # it was the resolution
        return found

    async def _find_posted(
        self, client: AsyncWebClient, group_key: str, delivery_id: str, firing: list[str] | None = None
    ) -> bool:
        """Is a message with this delivery id in the channel's recent history (or the group's thread)? If
        it is a group's first post, remember it as the group's message. Slack's history is read by channel
        id and newest first; the post we look for is at most minutes old, so a few pages are plenty."""
        assert self.state is not None
        configured = self._channel()
        ref = await self._ref(group_key, configured)
        channel = ref["channel"] if ref else await self._channel_id(client)
        cursor = None
        for _ in range(HISTORY_PAGES):
            history = await client.conversations_history(
                channel=channel, include_all_metadata=True, limit=200, cursor=cursor
            )
            for message in history.get("messages", []):
                if _delivery_id(message) == delivery_id:
                    if ref is None and firing:
                        await self._set_ref(group_key, configured, channel, str(message["ts"]), firing)
                    return True
            cursor = (history.get("response_metadata") or {}).get("next_cursor")
            if not history.get("has_more") or not cursor:
                break
        if ref is None:
            return False
        cursor = None
        for _ in range(HISTORY_PAGES):  # replies come oldest first: follow the pages of a long thread
            replies = await client.conversations_replies(
                channel=ref["channel"], ts=ref["ts"], include_all_metadata=True, limit=200, cursor=cursor
            )
            if any(_delivery_id(m) == delivery_id for m in replies.get("messages", [])):
                return True
            cursor = (replies.get("response_metadata") or {}).get("next_cursor")
            if not replies.get("has_more") or not cursor:
                break
        return False

    async def _channel_id(self, client: AsyncWebClient) -> str:
        """The configured channel's id (history needs it): as configured when it is one, else learnt from an
        earlier post (kept in Redis), else looked up by name (conversations.list, needs channels:read)."""
        configured = self._channel()
        name = configured.lstrip("#")
        if _CHANNEL_ID.match(name):
            return name
        assert self.state is not None
        known = await self.state.message_ref(self.log_name, CHANNEL_ID_KEY + configured)
        if known is not None:
            return str(known["id"])
        cursor = None
        while True:
            page = await client.conversations_list(
                types="public_channel,private_channel", exclude_archived=True, limit=1000, cursor=cursor
            )
            for found in page.get("channels", []):
                if found.get("name") == name:
                    await self._learn_channel_id(configured, str(found["id"]))
                    return str(found["id"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                raise LookupError(f"channel {name!r} not found by conversations.list")

    async def _learn_channel_id(self, configured: str, channel_id: str) -> None:
        if self.state is not None:
            await self.state.set_message_ref(self.log_name, CHANNEL_ID_KEY + configured, {"id": channel_id})

    async def close(self) -> None:
        return None


def _error_code(exc: SlackApiError) -> str:
    """Slack's `error` code, whatever shape the answer had (JSON, or text from a proxy's 5xx)."""
    data = getattr(exc.response, "data", None)
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _api_error(exc: SlackApiError, now: float) -> Attempt:
    response = exc.response
    status = int(getattr(response, "status_code", 0) or getattr(response, "status", 0) or 0)
    error = _error_code(exc)
    detail = error or str(getattr(response, "data", ""))[:200]
    headers = getattr(response, "headers", None) or {}
    retry_after = headers.get("Retry-After") or headers.get("retry-after")
    if error in _RETRYABLE or status == 429 or status >= 500 or status == 0:
        return http_attempt(max(status, 429) if status < 500 else status, detail, retry_after, now)
    return Attempt.refused(f"HTTP {status}: {detail}")


def _delivery_id(message: dict[str, Any]) -> str | None:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != METADATA_EVENT:
        return None
    return (metadata.get("event_payload") or {}).get("id")


def _updatable(message: dict[str, Any]) -> dict[str, Any]:
    """What chat.update takes of a posted message."""
    return {k: v for k, v in message.items() if k in ("text", "blocks", "attachments")}


def _thread_line(notification: Notification, repeat: bool) -> str:
    firing, resolved = len(notification.firing), len(notification.resolved)
    if notification.status == "resolved":
        return f":white_check_mark: Resolved: all {resolved} alert(s). {fallback_text(notification)}"
    if repeat:
        return f":bell: Still firing: {fallback_text(notification)}"
    headline = fallback_text(notification)
    return f":arrows_counterclockwise: Update: {firing} firing, {resolved} resolved. {headline}"
