"""The webhook receiver: Alertmanager's v4 JSON payload, POSTed with retries.

5xx, 429 and connection errors are retried with jittered exponential backoff until `retry_deadline`; other 4xx
answers are permanent (the receiver is misconfigured or refuses the payload) and are not retried.
"""

from __future__ import annotations

import logging
import random

import aiohttp

from services.notifier.config import WebhookConfig
from services.notifier.nflog import Intent
from services.notifier.notification import Notification
from services.notifier.receivers.delivery import (
    USER_AGENT,
    Attempt,
    Journal,
    client_error_attempt,
    deliver,
    http_attempt,
    redact,
)
from shared.clock import Clock

log = logging.getLogger(__name__)


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

    async def notify(self, notification: Notification, journal: Journal) -> None:
        payload = notification.webhook_payload(self.config.max_alerts)

        async def attempt() -> Attempt:
            return await self._attempt(payload, journal.id)

        await deliver(
            self.name,
            attempt,
            clock=self.clock,
            deadline=self.clock.now() + self.config.retry_deadline,
            journal=journal,
            rng=self.rng,
        )

    async def reconcile(self, group_key: str, intent: Intent) -> bool:
        # A webhook cannot be asked what it received: send again (at least once, as Alertmanager does). The
        # Idempotency-Key header carries the same id, so a receiver that cares can drop the repeat.
        return False

    async def _attempt(self, payload: dict[str, object], idempotency_key: str) -> Attempt:
        try:
            url = self.url()
        except OSError as exc:
            # A missing or unreadable url_file may be fixed by the operator: retry, and say why.
            return Attempt.retry(f"cannot read url_file {self.config.url_file}: {exc.strerror or exc}")
        try:
            async with self.session.post(
                url,
                json=payload,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={"User-Agent": USER_AGENT, "Idempotency-Key": idempotency_key},
            ) as response:
                body = "" if response.status < 300 else await response.text()
                return http_attempt(
                    response.status, body, response.headers.get("Retry-After"), self.clock.now()
                )
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return client_error_attempt(exc, url)
        except Exception as exc:  # whatever else: a retry, never a crashed flush
            return Attempt.retry(redact(f"{type(exc).__name__}: {exc}", url), uncertain=True)

    async def close(self) -> None:
        return None
