"""Reloading the routing file: on SIGHUP, on `POST /-/reload`, or when the file changes on disk.

A new routing file applies only if all of it is valid and the notifier can deliver through every receiver a
route uses; otherwise the running config stays, the errors are logged, and `tripwire_routing_reload_success`
drops to 0 with the error in `tripwire_routing_last_reload_error`. Groups of routes that are gone are routed
again through the new tree at their next flush, so no alert is lost by a reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.notifier.config import RoutingConfig, load_routing
from shared.clock import Clock
from shared.reloading import ReloadMetrics
from shared.yamlfile import ConfigError, ConfigErrors

log = logging.getLogger(__name__)

WATCH_INTERVAL = 5.0  # seconds between checks of the routing file's mtime and size


@dataclass
class RoutingReloader:
    path: Path
    apply: Callable[[RoutingConfig], Awaitable[None]]  # raises ConfigError if the notifier cannot run it
    clock: Clock
    metrics: ReloadMetrics
    last_error: str = ""
    _stamp: tuple[int, int] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self._stamp = self.file_stamp()
        self.metrics.last_success.set(self.clock.now())

    def file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    async def reload(self, trigger: str) -> list[str]:
        """Load the routing file and apply it if all of it is valid; returns the errors (empty: applied)."""
        async with self._lock:
            self._stamp = self.file_stamp()
            try:
                routing = load_routing(self.path)
                await self.apply(routing)
            except (ConfigErrors, ConfigError) as exc:
                errors = self.metrics.failed(trigger, exc, "routing")
                self.last_error = self.metrics.last_error_text
                return errors
            self.last_error = ""
            self.metrics.applied(trigger, self.clock.now())
            log.info("routing reloaded", extra={"trigger": trigger, "receivers": len(routing.receivers)})
            return []

    async def watch(self) -> None:
        """Reload when the routing file changes (checked every WATCH_INTERVAL seconds of real time)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.file_stamp() != self._stamp:
                await self.reload("file_change")
