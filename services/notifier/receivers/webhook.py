"""The webhook receiver: Alertmanager's v4 JSON payload, POSTed with retries.

5xx, 429 and connection errors are retried with jittered exponential backoff until `retry_deadline`; other 4xx
answers are permanent (the receiver is misconfigured or refuses the payload) and are not retried.
"""

from __future__ import annotations

import logging
import random
from urllib.parse import urlsplit

import aiohttp

from services.notifier.config import WebhookConfig
from services.notifier.notification import Notification
from services.notifier.receivers import DeliveryError
from shared.clock import Clock

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.25
BACKOFF_CAP = 10.0
USER_AGENT = "tripwire-notifier/0.1"


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)]."""
    return rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * (2**attempt)))


def redact(text: str, url: str) -> str:
    """`text` with `url` (and its path) replaced by scheme://host/<redacted>."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname or '?'}/<redacted>"
    text = text.replace(url, shown)
    if parts.path not in ("", "/"):
        text = text.replace(parts.path, "/<redacted>")
    return text


class WebhookIntegration:
    def __init__(
        self, index: int, config: WebhookConfig, session: aiohttp.ClientSession, clock: Clock
    ) -> None:
        self.name = f"webhook[{index}]"
        self.send_resolved = config.send_resolved
        self.config = config
        self.session = session
        self.clock = clock
        self.rng = random.Random()

    def url(self) -> str:
        if self.config.url is not None:
            return self.config.url
        # url_file is read per send so a rotated secret URL needs no restart.
        assert self.config.url_file is not None
        return self.config.url_file.read_text(encoding="utf-8").strip()

    async def notify(self, notification: Notification) -> None:
        payload = notification.webhook_payload(self.config.max_alerts)
        deadline = self.clock.now() + self.config.retry_deadline
        attempt = 0
        while True:
            retryable, reason = await self._attempt(payload)
            if reason is None:
                return
            if not retryable:
                raise DeliveryError(f"{self.name}: {reason}", permanent=True)
            delay = backoff_delay(attempt, self.rng)
            if self.clock.now() + delay > deadline:
                raise DeliveryError(
                    f"{self.name}: gave up after {attempt + 1} attempts: {reason}", permanent=False
                )
            log.warning(
                "webhook delivery failed; retrying",
                extra={"integration": self.name, "reason": reason, "retry_in": round(delay, 3)},
            )
            await self.clock.sleep_until(self.clock.now() + delay)
            attempt += 1

    async def _attempt(self, payload: dict[str, object]) -> tuple[bool, str | None]:
        """One POST: (retryable, None) on success, else (retryable, reason). Reasons never hold the URL,
        whose path is often the secret (Slack-style webhook URLs)."""
        try:
            url = self.url()
        except OSError as exc:
            # A missing or unreadable url_file may be fixed by the operator: retry, and say why.
            return True, f"cannot read url_file {self.config.url_file}: {exc.strerror or exc}"
        try:
            async with self.session.post(
                url,
                json=payload,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={"User-Agent": USER_AGENT},
            ) as response:
                if 200 <= response.status < 300:
                    return False, None
                body = (await response.text())[:200]
                reason = f"HTTP {response.status}: {body}"
                return response.status >= 500 or response.status == 429, reason
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # A URL aiohttp cannot use will not get better by retrying.
            unusable = isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError | ValueError)
            return not unusable, redact(f"{type(exc).__name__}: {exc}", url)

    async def close(self) -> None:
        return None
