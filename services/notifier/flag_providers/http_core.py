"""The small HTTP core the flag providers share (LaunchDarkly, Unleash, Flagsmith, the signed webhook):
one request with the credential read at send time, the vendor's answer classified into a summary or a
ProviderError (retryable or not, Retry-After honoured), and secrets scrubbed from anything kept."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from services.notifier.flag_providers import FlagTarget, ProviderError, ProviderRefused
from services.notifier.receivers.delivery import USER_AGENT, parse_retry_after
from services.notifier.secrets import SecretError

BODY_LIMIT = 500  # characters of a vendor's answer kept for the audit record
DETAIL_LIMIT = 300  # characters of a vendor's error message kept in an exception message
SIGNATURE_HEADER = "X-Tripwire-Signature"
TIMESTAMP_HEADER = "X-Tripwire-Timestamp"
SIGNATURE_TOLERANCE = 300.0  # seconds; Slack and Stripe use the same 5-minute replay window
_REDACTED = "<redacted>"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every non-empty secret replaced: vendors echo odd things, aiohttp errors quote headers."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


def short_body(text: str, parsed: Any | None) -> Any:
    """An answer's body fit for the audit record: parsed JSON when short, else a subset of its top-level
    scalars (long strings cut), else the text cut to BODY_LIMIT characters."""
    if parsed is None or not isinstance(parsed, dict | list):
        return _truncate(text, BODY_LIMIT)
    if len(orjson.dumps(parsed)) <= BODY_LIMIT:
        return parsed
    if not isinstance(parsed, dict):
        return _truncate(text, BODY_LIMIT)
    subset: dict[str, Any] = {"truncated": True}
    for key, value in parsed.items():
        if isinstance(value, dict | list):
            continue  # nested objects are what make vendor answers long (LaunchDarkly's flag has dozens)
        candidate = {**subset, key: _truncate(value, 100) if isinstance(value, str) else value}
        if len(orjson.dumps(candidate)) > BODY_LIMIT:
            break
        subset = candidate
    return subset


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, already scrubbed of the credential: status, headers, text and the text as JSON."""

    status: int
    headers: Mapping[str, str]
    text: str
    json: Any | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def summary(self, body: Any | None = None) -> dict[str, Any]:
        """The audit summary `{"status", "body"}`; `body` overrides the generic shortening of the answer."""
        return {"status": self.status, "body": short_body(self.text, self.json) if body is None else body}

    def detail(self) -> str:
        """The vendor's error message: `message`, `detail` or `error` of a JSON body, else the text."""
        body = self.json
        if isinstance(body, dict):
            for key in ("message", "detail", "error"):
                if isinstance(body.get(key), str) and body[key]:
                    return _truncate(body[key], DETAIL_LIMIT)
        if isinstance(body, list) and body and all(isinstance(item, str) for item in body):
            return _truncate("; ".join(body), DETAIL_LIMIT)  # Django REST framework's non-field errors
        return _truncate(self.text.strip(), DETAIL_LIMIT)


class HttpProvider:
    """What every HTTP flag provider shares: the credential read per request (secrets rotate), one request
    with a deadline, and the usual reading of an answer — 429/408/5xx retryable (after Retry-After), other
    4xx not. Subclasses add their vendor's refusals and retryable statuses."""

    name = "http"
    required: tuple[str, ...] = ()  # FlagTarget fields (besides `flag`) the vendor needs
    retryable_statuses: frozenset[int] = frozenset({408, 429})

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        credential: Callable[[], str],
        timeout: float = 10.0,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._credential = credential

    # -- what subclasses may refine -------------------------------------------------------------------------

    def refusal(self, answer: Answer) -> str | None:
        """Why the vendor refused by policy (approvals, change requests), or None for an ordinary error."""
        return None

    def retry_after(self, answer: Answer) -> float | None:
        """Seconds the vendor asks us to wait (Retry-After, delta-seconds or HTTP-date)."""
        return parse_retry_after(answer.headers.get("Retry-After"), time.time())

    def describe_exception(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    # -- helpers --------------------------------------------------------------------------------------------

    def check_target(self, target: FlagTarget) -> None:
        """Refuse a target missing what the vendor needs before anything is sent: a config error."""
        if not target.flag:
            raise ProviderError(f"{self.name}: the target names no flag", retryable=False)
        for field in self.required:
            if not getattr(target, field):
                raise ProviderError(
                    f"{self.name}: flag {target.flag!r} needs a {field} for this provider", retryable=False
                )

    def credential(self) -> str:
        """The credential now; an unreadable secret is retryable (the operator may fix the file or env)."""
        return self._read_secret(self._credential, "credential")

    def _read_secret(self, source: Callable[[], str], what: str) -> str:
        try:
            return source()
        except SecretError as exc:
            # SecretError messages name where the secret should come from, never its value.
            raise ProviderError(f"{self.name}: {what} unavailable: {exc}", retryable=True) from None

    async def call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: dict[str, str],
        secrets: tuple[str, ...],
        body: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        """Send one request; connection errors and timeouts become retryable ProviderErrors. The answer is
        returned whatever its status, scrubbed of `secrets`."""
        sent = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        try:
            async with self.session.request(
                method,
                url,
                data=body,
                params=params,
                headers=sent,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                raw = await response.read()
                status, answer_headers = response.status, response.headers
        except TimeoutError as exc:
            # The vendor may have acted before the deadline: the caller reads the flag back to know.
            raise ProviderError(
                f"{self.name}: {what}: no answer within {self.timeout:g}s (the change may have been applied)",
                retryable=True,
            ) from exc
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise ProviderError(
                f"{self.name}: {what}: unusable URL: {scrub(self.describe_exception(exc), secrets)}",
                retryable=False,
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(
                f"{self.name}: {what}: {scrub(self.describe_exception(exc), secrets)}", retryable=True
            ) from None
        except ValueError as exc:
            # aiohttp refuses header values with newlines (a malformed secret): retrying cannot help. Its
            # message may quote the value, hence `from None` and the scrub.
            raise ProviderError(
                f"{self.name}: {what}: request refused locally: {scrub(str(exc), secrets)}", retryable=False
            ) from None
        text = scrub(raw.decode("utf-8", "replace"), secrets)
        try:
            parsed: Any | None = orjson.loads(text) if text.strip() else None
        except orjson.JSONDecodeError:
            parsed = None
        return Answer(status, answer_headers, text, parsed)

    def failure(self, answer: Answer, what: str) -> ProviderError:
        """The exception for a non-2xx answer: ProviderRefused for a policy refusal, else a ProviderError
        retryable for 429, 408, 5xx and the vendor's own `retryable_statuses`."""
        detail = answer.detail()
        reason = self.refusal(answer)
        if reason is not None:
            message = f"{self.name} refused to {what}: {reason} (HTTP {answer.status}): {detail}".rstrip(": ")
            return ProviderRefused(message, status=answer.status, response=answer.summary())
        retryable = answer.status in self.retryable_statuses or answer.status >= 500
        return ProviderError(
            f"{self.name}: {what}: HTTP {answer.status}: {detail}".rstrip(": "),
            retryable=retryable,
            status=answer.status,
            response=answer.summary(),
            retry_after=self.retry_after(answer) if retryable else None,
        )
