"""A notification: one aggregation group's alerts, ready for a receiver, and its webhook (v4) payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.alerts import ZERO_TIME, Alert

if TYPE_CHECKING:
    from services.notifier.templates import TemplateData


@dataclass(frozen=True)
class Notification:
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: list[Alert]
    external_url: str
    test: bool = False  # sent by `tripwire receivers test`: marked as such wherever it shows

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if not a.is_resolved()]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if a.is_resolved()]

    @property
    def status(self) -> str:
        return "firing" if self.firing else "resolved"

    def common_labels(self) -> dict[str, str]:
        return _common([a.labels for a in self.alerts])

    def common_annotations(self) -> dict[str, str]:
        return _common([a.annotations for a in self.alerts])

    def template_data(self) -> TemplateData:
        """What Alertmanager's templates see (`.Status`, `.Alerts`, `.CommonLabels`, ...)."""
        from services.notifier.templates import AlertData, TemplateData

        return TemplateData(
            receiver=self.receiver,
            status=self.status,
            alerts=[
                AlertData(
                    status=a.status,
                    labels=a.labels,
                    annotations=a.annotations,
                    starts_at=a.starts_at,
                    ends_at=a.ends_at,
                    generator_url=a.generator_url,
                    fingerprint=a.fingerprint,
                )
                for a in self.alerts
            ],
            group_labels=self.group_labels,
            common_labels=self.common_labels(),
            common_annotations=self.common_annotations(),
            external_url=self.external_url,
        )

    def webhook_payload(self, max_alerts: int = 0) -> dict[str, Any]:
        """Alertmanager's webhook body, version "4" (firing alerts carry the zero endsAt)."""
        alerts = self.alerts[:max_alerts] if max_alerts else self.alerts
        return {
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": len(self.alerts) - len(alerts),
            "status": self.status,
            "receiver": self.receiver,
            "groupLabels": self.group_labels,
            "commonLabels": self.common_labels(),
            "commonAnnotations": self.common_annotations(),
            "externalURL": self.external_url,
            "alerts": [
                {
                    "status": a.status,
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": _time(a.to_wire()["startsAt"]),
                    "endsAt": a.to_wire()["endsAt"] if a.is_resolved() else _time(ZERO_TIME.isoformat()),
                    "generatorURL": a.generator_url,
                    "fingerprint": a.fingerprint,
                }
                for a in alerts
            ],
        }


def _time(value: object) -> str:
    text = str(value)
    return text.replace("+00:00", "Z")


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    common = dict(maps[0])
    for other in maps[1:]:
        common = {k: v for k, v in common.items() if other.get(k) == v}
    return common
