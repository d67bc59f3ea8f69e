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
)
from services.notifier.receivers.slack_message import MessageOptions, fallback_text, render_message
from services.notifier.secrets import SecretError, expand, read_secret
from services.notifier.templates import TemplateError, render
from shared.clock import Clock

log = logging.getLogger(__name__)

WEB_API = "https://slack.com/api/"
METADATA_EVENT = "tripwire_notification"
# Web API errors worth retrying; any other `ok: false` is a config or payload problem waiting cannot fix.
_RETRYABLE = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
# Answers that mean the token may not read the channel: reconciling is impossible, not just failing now.
_CANNOT_LOOK = {"missing_scope", "not_in_channel", "channel_not_found", "not_allowed_token_type"}
HISTORY_PAGES = 5  # of 200 messages: how far back to look for a post a crash may have lost
CHANNEL_ID_KEY = "\x00channel-id"  # in the message-ref hash, beside the group keys (never a group key)
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
                url,
                timeout=max(1, int(self.config.timeout)),
                session=self.session,
                retry_handlers=[],
                user_agent_prefix=USER_AGENT,
            )
            try:
                response = await client.send_dict(message)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                return client_error_attempt(exc, url)
            if response.status_code == 200 and response.body == "ok":
                return Attempt.ok()
            status = 502 if response.status_code == 200 else response.status_code  # 200 but not "ok"
            retry_after = (response.headers or {}).get("Retry-After") or (response.headers or {}).get(
                "retry-after"
            )
            return http_attempt(status, response.body or "", retry_after, self.clock.now())

        return attempt

    def _web_client(self) -> AsyncWebClient:
        token = read_secret(self.config.token, self.config.token_file, "token")
        base = expand(self.config.api_url, "api_url") if self.config.api_url else WEB_API
        return AsyncWebClient(
            token=token,
            base_url=base if base.endswith("/") else base + "/",
            timeout=max(1, int(self.config.timeout)),
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
                if uncertain and await self._find_posted(client, notification.group_key, journal.id):
                    return Attempt.ok()  # the timed-out request did arrive
                await self._post_or_update(client, notification, message, journal.id)
                return Attempt.ok()
            except SlackApiError as exc:
                return self._api_error(exc)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = client_error_attempt(exc, client.base_url)
                uncertain = uncertain or outcome.uncertain
                return outcome

        return attempt

    def _api_error(self, exc: SlackApiError) -> Attempt:
        response = exc.response
        error = str(response.get("error", "")) if isinstance(response.data, dict) else ""
        detail = error or str(response.data)[:200]
        retry_after = response.headers.get("Retry-After") or response.headers.get("retry-after")
        if error in _RETRYABLE or response.status_code == 429 or response.status_code >= 500:
            return http_attempt(max(response.status_code, 429), detail, retry_after, self.clock.now())
        return Attempt.refused(f"HTTP {response.status_code}: {detail}")

    async def _post_or_update(
        self, client: AsyncWebClient, notification: Notification, message: dict[str, Any], delivery_id: str
    ) -> None:
        group_key = notification.group_key
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"id": delivery_id}}
        if self.state is None:  # `tripwire receivers test`: no state, a plain post
            await client.chat_postMessage(channel=self._channel(), **message, metadata=metadata)
            return
        ref = await self.state.message_ref(self.log_name, group_key)
        firing = sorted(a.fingerprint for a in notification.firing)
        digest = hashlib.sha256("\n".join(firing).encode()).hexdigest()[:16]
        if ref is None:
            if notification.status == "resolved":
                # Its firing message is unknown (sent before a bot token was configured, or long ago).
                await client.chat_postMessage(channel=self._channel(), **message, metadata=metadata)
                return
            posted = await client.chat_postMessage(
                channel=self._channel(), **message, metadata=metadata, unfurl_links=False
            )
            await self.state.set_message_ref(
                self.log_name, group_key, {"channel": posted["channel"], "ts": posted["ts"], "firing": digest}
            )
            await self._learn_channel_id(str(posted["channel"]))
            return
        # The original message shows the group as it is now; the thread tells what changed.
        try:
            await client.chat_update(channel=ref["channel"], ts=ref["ts"], **_updatable(message))
        except SlackApiError as exc:
            if exc.response.get("error") != "message_not_found":
                raise
            await self.state.set_message_ref(self.log_name, group_key, None)  # deleted: start afresh
            await self._post_or_update(client, notification, message, delivery_id)
            return
        repeat = notification.status == "firing" and ref.get("firing") == digest
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
            await self.state.set_message_ref(self.log_name, group_key, {**ref, "firing": digest})

    # Reconciliation -------------------------------------------------------------------------------------
    async def reconcile(self, group_key: str, intent: Intent) -> bool:
        if not self.config.uses_bot_token():
            log.warning(
                "a Slack webhook delivery was interrupted mid-request; assuming it arrived (webhooks cannot "
                "be read back; use a bot token for exact reconciliation)",
                extra={"integration": self.log_name, "delivery": intent.id},
            )
            return True
        client = self._web_client()
        try:
            return await self._find_posted(client, group_key, intent.id)
        except (LookupError, SlackApiError) as exc:
            if isinstance(exc, SlackApiError) and exc.response.get("error") not in _CANNOT_LOOK:
                raise  # e.g. rate limited: look again at the next flush
            log.warning(
                "cannot read the channel to reconcile an interrupted Slack post; assuming it arrived "
                "(configure the channel by id, or grant channels:history and channels:read)",
                extra={"integration": self.log_name, "delivery": intent.id, "error": str(exc)},
            )
            return True

    async def _find_posted(self, client: AsyncWebClient, group_key: str, delivery_id: str) -> bool:
        """Is a message with this delivery id in the channel's recent history (or the group's thread)? If
        it is a group's first post, remember it as the group's message. Slack's history is read by channel
        id and newest first; the post we look for is at most minutes old, so a few pages are plenty."""
        assert self.state is not None
        ref = await self.state.message_ref(self.log_name, group_key)
        channel = ref["channel"] if ref else await self._channel_id(client)
        cursor = None
        for _ in range(HISTORY_PAGES):
            history = await client.conversations_history(
                channel=channel, include_all_metadata=True, limit=200, cursor=cursor
            )
            for message in history.get("messages", []):
                if _delivery_id(message) == delivery_id:
                    if ref is None:
                        ref = {"channel": channel, "ts": message["ts"]}
                        await self.state.set_message_ref(self.log_name, group_key, ref)
                    return True
            cursor = (history.get("response_metadata") or {}).get("next_cursor")
            if not history.get("has_more") or not cursor:
                break
        if ref is not None:
            replies = await client.conversations_replies(
                channel=ref["channel"], ts=ref["ts"], include_all_metadata=True, limit=200
            )
            return any(_delivery_id(m) == delivery_id for m in replies.get("messages", []))
        return False

    async def _channel_id(self, client: AsyncWebClient) -> str:
        """The configured channel's id (history needs it): as configured when it is one, else learnt from an
        earlier post (kept in Redis), else looked up by name (conversations.list, needs channels:read)."""
        channel = self._channel().lstrip("#")
        if _CHANNEL_ID.match(channel):
            return channel
        assert self.state is not None
        known = await self.state.message_ref(self.log_name, CHANNEL_ID_KEY)
        if known is not None:
            return known["id"]
        cursor = None
        while True:
            page = await client.conversations_list(
                types="public_channel,private_channel", exclude_archived=True, limit=1000, cursor=cursor
            )
            for found in page.get("channels", []):
                if found.get("name") == channel:
                    await self._learn_channel_id(str(found["id"]))
                    return str(found["id"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                raise LookupError(f"channel {channel!r} not found by conversations.list")

    async def _learn_channel_id(self, channel_id: str) -> None:
        if self.state is not None:
            await self.state.set_message_ref(self.log_name, CHANNEL_ID_KEY, {"id": channel_id})

    async def close(self) -> None:
        return None


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
