"""Integration health: a receiver that refuses us permanently (Slack 404 no_service, PagerDuty 400) is a
configuration error someone must fix. It is not retried; it is marked unhealthy here, exported as a metric
and listed on `/readyz` until it next delivers."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger(__name__)


class IntegrationHealth:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "tripwire_notifier_integration_healthy",
            "0 while an integration's last delivery was refused permanently (a config error), else 1.",
            ["receiver", "integration"],
            registry=registry,
        )
        self.unhealthy: dict[tuple[str, str], str] = {}
        # The gauge's series, kept here: prometheus-client has no public listing of a metric's children.
        self.exported: set[tuple[str, str]] = set()

    def delivered(self, receiver: str, integration: str) -> None:
        self.gauge.labels(receiver, integration).set(1)
        self.exported.add((receiver, integration))
        if self.unhealthy.pop((receiver, integration), None) is not None:
            log.info("integration healthy again", extra={"receiver": receiver, "integration": integration})

    def refused(self, receiver: str, integration: str, reason: str) -> None:
        self.gauge.labels(receiver, integration).set(0)
        self.exported.add((receiver, integration))
        self.unhealthy[(receiver, integration)] = reason

    def retain(self, present: set[tuple[str, str]]) -> None:
        """Forget integrations a reload removed (their gauge series too)."""
        for key in [k for k in self.unhealthy if k not in present]:
            del self.unhealthy[key]
        for labels in self.exported - present:
            self.gauge.remove(*labels)
        self.exported &= present

    def details(self) -> dict[str, object]:
        """For `/readyz`: each unhealthy integration and why. The notifier stays ready (its API and the other
        receivers work); the details say what to fix."""
        return {
            "unhealthy_integrations": [
                {"receiver": r, "integration": i, "reason": reason}
                for (r, i), reason in sorted(self.unhealthy.items())
            ]
        }
