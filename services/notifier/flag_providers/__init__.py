"""Feature-flag providers the kill switch turns flags off with: tripwire's built-in store, Unleash,
LaunchDarkly, Flagsmith, and a generic signed webhook. Each is a small class with `read`, `turn_off` and
`turn_on` (the last only for a human re-enable), over aiohttp.

A provider reports what the vendor said, precisely: `ProviderRefused` when the vendor refuses by policy
(LaunchDarkly 405 because approvals are required, an Unleash or Flagsmith change request opened instead of a
change) — never retried, audited and paged; `ProviderError` for failures, `retryable` or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class FlagTarget:
    """Which flag, where: `environment` and `project` as the vendor names them (None where unused)."""

    flag: str
    environment: str | None = None
    project: str | None = None


@dataclass(frozen=True)
class FlagState:
    """A flag's state as read from the provider; `enabled` None when the provider cannot say."""

    enabled: bool | None
    response: dict[str, Any] = field(default_factory=dict)  # a short summary of what the vendor answered


class ProviderError(Exception):
    """The provider call failed. `retryable`: worth trying again (429, 5xx, 409, connection errors)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        response: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.response = response or {}
        self.retry_after = retry_after


class ProviderRefused(ProviderError):
    """The vendor refused by policy (approvals required, change request opened): a human must act."""

    def __init__(
        self, message: str, *, status: int | None = None, response: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, retryable=False, status=status, response=response)


class FlagProvider(Protocol):
    name: str  # "launchdarkly", "unleash", ...

    async def read(self, target: FlagTarget) -> FlagState:
        """The flag's current state (raises ProviderError)."""
        ...

    async def turn_off(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        """Turn the flag off (idempotent: already off is success); returns a summary of the vendor's answer
        for the audit. Raises ProviderRefused / ProviderError."""
        ...

    async def turn_on(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        """Turn the flag back on: only ever for a human's re-enable, never by automation."""
        ...
