"""Alerts as they travel on `tripwire:alerts`: the Alertmanager API v2 alert object, plus its fingerprint.

The fingerprint is Alertmanager's (prometheus/common `LabelSet.Fingerprint`): FNV-1a 64 over the label names
sorted bytewise, each written as `name 0xFF value 0xFF`, printed as 16 hex digits. Matching it exactly keeps
our dedup, silences and notification logs interchangeable with Alertmanager's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_FNV64_OFFSET = 14695981039346656037
_FNV64_PRIME = 1099511628211
_MASK64 = (1 << 64) - 1
_SEPARATOR = 0xFF

# Alertmanager writes this for "no end time" on firing alerts in webhook payloads.
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set, e.g. {job="foo",severity="warning"} -> 9266ef3da838ad95."""
    h = _FNV64_OFFSET
    for name in sorted(labels, key=str.encode):
        for chunk in (name.encode(), labels[name].encode()):
            for byte in chunk:
                h = ((h ^ byte) * _FNV64_PRIME) & _MASK64
            h = ((h ^ _SEPARATOR) * _FNV64_PRIME) & _MASK64
    return f"{h:016x}"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("time must carry a time zone")
    return value.astimezone(UTC)


UtcTime = Annotated[datetime, AfterValidator(_utc)]


def from_unix(seconds: float) -> datetime:
    """A Unix timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def rfc3339(moment: float | datetime) -> str:
    """A time (Unix seconds or aware datetime) as the APIs write it: RFC 3339 in UTC with a `Z`."""
    value = from_unix(moment) if isinstance(moment, int | float) else moment.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


class Alert(BaseModel):
    """An alert as Alertmanager's API v2 posts it, with `fingerprint` and `status` filled in."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: UtcTime = Field(alias="startsAt")
    ends_at: UtcTime = Field(default=ZERO_TIME, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""
    status: Literal["firing", "resolved"] = "firing"

    @model_validator(mode="after")
    def _fill_fingerprint(self) -> Alert:
        if not self.labels.get("alertname"):
            raise ValueError("an alert needs a non-empty 'alertname' label")
        expected = fingerprint(self.labels)
        if self.fingerprint and self.fingerprint != expected:
            raise ValueError(f"fingerprint {self.fingerprint} does not match the labels ({expected})")
        object.__setattr__(self, "fingerprint", expected)
        return self

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    def is_resolved(self) -> bool:
        return self.status == "resolved"

    def to_wire(self) -> dict[str, object]:
        """The JSON object we put on streams and webhooks (camelCase, RFC 3339 times)."""
        return self.model_dump(mode="json", by_alias=True)
