"""Reloading the rule set: on SIGHUP, on `POST /-/reload`, or when a rule file changes on disk.

A new rule set applies only if every file of it is valid; otherwise the running rules stay, the errors are
logged, and `tripwire_rules_reload_success` drops to 0 with the error in `tripwire_rules_last_reload_error`.
Rules that are still there (same kind, name and labels) keep their alert state, as Prometheus does.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from services.evaluator.evaluation import Evaluator
from services.evaluator.rules.files import load_rule_files
from services.evaluator.rules.group import history_needed
from shared.clock import Clock
from shared.config import Config, rule_file_paths
from shared.reloading import ReloadMetrics
from shared.yamlfile import ConfigError, ConfigErrors

log = logging.getLogger(__name__)

WATCH_INTERVAL = 5.0  # seconds between checks of the rule files' mtimes and sizes

FilesSnapshot = tuple[tuple[str, int, int], ...]


@dataclass
class ReloadOutcome:
    ok: bool
    errors: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class RuleReloader:
    config: Config
    evaluator: Evaluator
    clock: Clock
    metrics: ReloadMetrics
    last_error: str = ""
    _snapshot: FilesSnapshot = ()
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self._snapshot = self.files_snapshot()
        self.metrics.last_success.set(self.clock.now())

    def files_snapshot(self) -> FilesSnapshot:
        """Which rule files exist now (globs re-expanded), with mtime and size: a change means reload."""
        snapshot = []
        for path in rule_file_paths(self.config):
            try:
                stat = Path(path).stat()
            except OSError:
                continue
            snapshot.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(snapshot)

    async def reload(self, trigger: str) -> ReloadOutcome:
        """Load every rule file; apply the new set only if all of it is valid."""
        async with self._lock:
            self._snapshot = self.files_snapshot()
            try:
                paths = rule_file_paths(self.config)
                groups = load_rule_files(paths, self.config.global_.evaluation_interval)
            except (ConfigErrors, ConfigError) as exc:
                errors = self.metrics.failed(trigger, exc, "rules")
                self.last_error = self.metrics.last_error_text
                return ReloadOutcome(False, errors)
            counts = await self.evaluator.replace_groups(groups)
            # Rules may now read further back: keep more history from here on.
            self.evaluator.store.retention = max(
                self.evaluator.store.retention, history_needed(groups, self.config.evaluator.lookback)
            )
            self.last_error = ""
            self.metrics.applied(trigger, self.clock.now())
            log.info("rules reloaded", extra={"trigger": trigger, **counts})
            return ReloadOutcome(True, counts=counts)

    async def watch(self) -> None:
        """Reload when a rule file appears, disappears or changes (checked every WATCH_INTERVAL seconds of
        real time; a file caught half-written fails, and is picked up again when it changes once more)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.files_snapshot() != self._snapshot:
                await self.reload("file_change")
