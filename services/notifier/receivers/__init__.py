"""Receivers: each integration is a small notifier with one `notify` method (Alertmanager's layout)."""

from __future__ import annotations

from typing import Protocol

from services.notifier.notification import Notification


class DeliveryError(Exception):
    """A notification that could not be delivered. `permanent` errors are not worth retrying."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Integration(Protocol):
    name: str  # e.g. "webhook[0]"
    send_resolved: bool

    async def notify(self, notification: Notification) -> None:
        """Deliver, retrying what is worth retrying; raise DeliveryError when it cannot be done."""
        ...

    async def close(self) -> None: ...
