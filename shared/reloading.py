"""What every reloadable config exports: whether the last reload worked, when, how often, and its error."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from shared.yamlfile import ConfigError, ConfigErrors

log = logging.getLogger(__name__)

MAX_ERROR_TEXT = 2000


class ReloadMetrics:
    """tripwire_<what>_reload_success, _last_reload_success_timestamp_seconds, _reloads_total and
    _last_reload_error_info, for one kind of reloadable config ("rules", "routing")."""

    def __init__(self, registry: CollectorRegistry, what: str = "rules") -> None:
        self.success = Gauge(
            f"tripwire_{what}_reload_success", f"1 if the last {what} reload succeeded.", registry=registry
        )
        self.success.set(1)
        self.last_success = Gauge(
            f"tripwire_{what}_last_reload_success_timestamp_seconds",
            f"When the {what} were last loaded successfully.",
            registry=registry,
        )
        self.reloads = Counter(
            f"tripwire_{what}_reloads",
            f"{what.capitalize()} reloads by trigger and outcome.",
            ["trigger", "outcome"],
            registry=registry,
        )
        self.last_error = Info(
            f"tripwire_{what}_last_reload_error",
            "The error of the last failed reload (empty once one succeeds).",
            registry=registry,
        )

    def failed(self, trigger: str, exc: ConfigError | ConfigErrors, what: str) -> list[str]:
        """Record and log a refused reload; returns its errors (each `file:line: message`)."""
        errors = [str(e) for e in exc.errors] if isinstance(exc, ConfigErrors) else [str(exc)]
        self.last_error_text = "; ".join(errors)[:MAX_ERROR_TEXT]
        self.success.set(0)
        self.reloads.labels(trigger, "failed").inc()
        self.last_error.info({"error": self.last_error_text})
        log.error(
            "%s reload failed; the running config stays", what, extra={"trigger": trigger, "errors": errors}
        )
        return errors

    def applied(self, trigger: str, now: float) -> None:
        """Record a reload that applied."""
        self.last_error_text = ""
        self.success.set(1)
        self.last_success.set(now)
        self.reloads.labels(trigger, "applied").inc()
        self.last_error.info({"error": ""})
