"""The console receiver: one readable line per notification on stdout (for `tripwire up` and demos)."""

from __future__ import annotations

import sys
from typing import TextIO

from services.notifier.nflog import Intent
from services.notifier.notification import Notification
from services.notifier.receivers.delivery import Journal

_SKIP_LABELS = {"alertname"}


def format_line(notification: Notification) -> str:
    """One line, e.g. `FIRING[1] HighErrorRate service=checkout: Error rate is 0.053 -> console`."""
    alerts = notification.firing or notification.resolved
    names = sorted({a.name for a in alerts})
    common = notification.common_labels()
    labels = " ".join(f"{k}={v}" for k, v in sorted(common.items()) if k not in _SKIP_LABELS)
    summary = notification.common_annotations().get("summary") or (
        alerts[0].annotations.get("summary", "") if len(alerts) == 1 else ""
    )
    head = f"{notification.status.upper()}[{len(alerts)}] {','.join(names)}"
    parts = [head + (f" {labels}" if labels else "")]
    if summary:
        parts[0] += f": {summary}"
    if notification.firing and notification.resolved:
        parts.append(f"(+{len(notification.resolved)} resolved)")
    parts.append(f"-> {notification.receiver}")
    return " ".join(parts)


class ConsoleIntegration:
    def __init__(self, index: int, send_resolved: bool, stream: TextIO | None = None) -> None:
        self.name = f"console[{index}]"
        self.send_resolved = send_resolved
        self._stream = stream

    async def notify(self, notification: Notification, journal: Journal) -> None:
        stream = self._stream or sys.stdout
        print(format_line(notification), file=stream, flush=True)

    async def reconcile(self, group_key: str, intent: Intent) -> bool:
        return False  # printing a line again is harmless

    async def close(self) -> None:
        return None
