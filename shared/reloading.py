"""What every reloadable config exports: whether the last reload worked, when, how often, and its error."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info


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
