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
MAX_ERROR_TEXT = 2000


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
                errors = [str(e) for e in exc.errors] if isinstance(exc, ConfigErrors) else [str(exc)]
                self.last_error = "; ".join(errors)[:MAX_ERROR_TEXT]
                self.metrics.success.set(0)
                self.metrics.reloads.labels(trigger, "failed").inc()
                self.metrics.last_error.info({"error": self.last_error})
                log.error(
                    "routing reload failed; the previous routing keeps running",
                    extra={"trigger": trigger, "errors": errors},
                )
                return errors
            self.last_error = ""
            self.metrics.success.set(1)
            self.metrics.last_success.set(self.clock.now())
            self.metrics.reloads.labels(trigger, "applied").inc()
            self.metrics.last_error.info({"error": ""})
            log.info("routing reloaded", extra={"trigger": trigger, "receivers": len(routing.receivers)})
            return []

    async def watch(self) -> None:
        """Reload when the routing file changes (checked every WATCH_INTERVAL seconds of real time)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.file_stamp() != self._stamp:
                await self.reload("file_change")
