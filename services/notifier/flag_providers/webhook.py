"""The generic kill switch: a signed HTTP POST to a URL of the operator's choosing — and the small HTTP core
the vendor providers (LaunchDarkly, Unleash, Flagsmith) share.

Wire format of the webhook: `POST <url>` with a JSON body
`{"action": "turn_off"|"turn_on", "flag", "environment", "project", "comment", "actor", "timestamp"}` and

    X-Tripwire-Timestamp: <unix seconds>
    X-Tripwire-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" keyed with the signing secret>

plus `Authorization: Bearer <credential>` when the credential is not empty. A receiver checks the signature
with `verify_signature` (constant-time, with a replay window), answers 2xx when the flag is in the asked state
afterwards — already being in it included, so a repeated call is harmless — and may put a JSON summary in
the body. A webhook cannot be read: `read` reports `enabled=None`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from services.notifier.flag_providers import FlagState, FlagTarget, ProviderError
from services.notifier.flag_providers.http_core import (  # noqa: F401 - re-exported for the fakes
    SIGNATURE_HEADER,
    SIGNATURE_TOLERANCE,
    TIMESTAMP_HEADER,
    Answer,
    HttpProvider,
)
from services.notifier.receivers.delivery import redact


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """The X-Tripwire-Signature value: `sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    header: str,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE,
) -> bool:
    """For receivers: True when `header` (X-Tripwire-Signature) signs `body` at `timestamp`
    (X-Tripwire-Timestamp, unix seconds) with `secret`, and `timestamp` is within `tolerance` seconds of
    `now` either way (a replayed request is refused). Compares in constant time."""
    try:
        stamp = int(timestamp.strip())
    except (ValueError, AttributeError):
        return False
    if not math.isfinite(now) or abs(now - stamp) > tolerance:
        return False
    expected = sign(secret, stamp, body).encode()
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header may carry anything.
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


class WebhookProvider(HttpProvider):
    """A kill switch over a signed webhook (see the module docstring for the wire format). `base_url` is the
    full URL posted to; `credential()` goes out as a Bearer token unless it is empty (the signature alone then
    authenticates); `signing_secret()` keys the signature."""

    name = "webhook"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        credential: Callable[[], str],
        signing_secret: Callable[[], str],
        timeout: float = 10.0,
    ) -> None:
        super().__init__(session, base_url=base_url, credential=credential, timeout=timeout)
        self.base_url = base_url  # the full URL, posted to as given (a trailing slash may matter to it)
        self._signing_secret = signing_secret

    def describe_exception(self, exc: BaseException) -> str:
        # A webhook URL may carry a secret in its path or query (Slack-style); never show more than its host.
        return redact(super().describe_exception(exc), self.base_url)

    async def read(self, target: FlagTarget) -> FlagState:
        """A webhook cannot be read: the state is unknown, and nothing is sent."""
        return FlagState(None, {"reason": "a webhook cannot be read"})

    async def turn_off(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        return await self._send("turn_off", target, comment=comment, actor=actor)

    async def turn_on(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        return await self._send("turn_on", target, comment=comment, actor=actor)

    async def _send(self, action: str, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        self.check_target(target)
        token = self.credential()
        secret = self._read_secret(self._signing_secret, "signing secret")
        if not secret:
            raise ProviderError(f"{self.name}: the signing secret is empty", retryable=False)
        timestamp = int(time.time())
        body = orjson.dumps(
            {
                "action": action,
                "flag": target.flag,
                "environment": target.environment,
                "project": target.project,
                "comment": comment,
                "actor": actor,
                "timestamp": timestamp,
            }
        )
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        what = f"{action.replace('_', ' ')} {target.flag!r}"
        answer = await self.call(
            "POST", self.base_url, what=what, headers=headers, secrets=(token, secret), body=body
        )
        if not answer.ok:
            raise self.failure(answer, what)
        return answer.summary()
