"""Integration health: what a reload removes is forgotten, gauge series included."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.notifier.health import IntegrationHealth

GAUGE = "tripwire_notifier_integration_healthy"


def test_retain_forgets_removed_integrations_and_their_series():
    registry = CollectorRegistry()
    health = IntegrationHealth(registry)
    health.delivered("oncall", "slack[0]")
    health.refused("oncall", "pagerduty[0]", "routing key refused")
    health.refused("team", "webhook[0]", "404")

    health.retain({("oncall", "slack[0]"), ("team", "webhook[0]")})

    def value(receiver: str, integration: str) -> float | None:
        return registry.get_sample_value(GAUGE, {"receiver": receiver, "integration": integration})

    assert value("oncall", "slack[0]") == 1
    assert value("oncall", "pagerduty[0]") is None
    assert value("team", "webhook[0]") == 0
    assert health.unhealthy == {("team", "webhook[0]"): "404"}
    health.retain(set())
    assert value("oncall", "slack[0]") is None and value("team", "webhook[0]") is None
    assert health.details() == {"unhealthy_integrations": []}
