"""Receivers: each integration is a small notifier with one `notify` method (Alertmanager's layout)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from services.notifier.notification import Notification

if TYPE_CHECKING:
    from services.notifier.nflog import Intent
    from services.notifier.receivers.delivery import Journal


class DeliveryError(Exception):
    """A notification that could not be delivered. `permanent` errors are not worth retrying."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Deferred(DeliveryError):
    """Not yet: the integration wants to be asked again at `until` (e.g. a kill switch waiting for an alert to
    have fired `min_firing_for`). Nothing is recorded, nothing is wrong."""

    def __init__(self, message: str, *, until: float) -> None:
        super().__init__(message, permanent=False)
        self.until = until


class Integration(Protocol):
    name: str  # e.g. "webhook[0]"
    send_resolved: bool

    async def notify(self, notification: Notification, journal: Journal) -> None:
        """Deliver, retrying what is worth retrying and journalling each attempt; raise DeliveryError when it
        cannot be done."""
        ...

    async def reconcile(self, group_key: str, intent: Intent) -> bool:
        """A previous process died while delivering `intent`: was it delivered? True means do not send it
        again. Each integration answers as well as its API allows (ask the service, or trust a dedup key)."""
        ...

    async def close(self) -> None: ...
