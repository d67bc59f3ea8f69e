"""Alertmanager's template data as Go types: the notification data (`.Receiver`, `.Alerts`...), template.KV
and its methods (`.SortedPairs`, `.Names`, `.Remove`...), `.Alerts.Firing`, and the time.Time and
time.Duration methods templates call, described to the shared engine as a Model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.notifier.gotime import (
    EPOCH,
    ZERO_TIME,
    Duration,
    aware,
    duration_round,
    duration_string,
    format_time,
    ns_between,
    time_string,
)
from shared.gotemplate import ABSENT, Func, Model
from shared.gotemplate.values import bounded


@dataclass(frozen=True)
class AlertData:
    """One alert as Alertmanager's templates see it (`.Alerts` elements)."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    generator_url: str
    fingerprint: str


@dataclass(frozen=True)
class TemplateData:
    """Alertmanager's notification data, the dot of a receiver template."""

    receiver: str
    status: str
    alerts: list[AlertData]
    group_labels: dict[str, str]
    common_labels: dict[str, str]
    common_annotations: dict[str, str]
    external_url: str


class KV(dict[str, str]):
    """Alertmanager's template.KV: a label or annotation set."""

    def sorted_pairs(self) -> Pairs:
        """template.KV.SortedPairs: alertname first, the rest by name."""
        names = sorted(self)
        if "alertname" in self:
            names.remove("alertname")
            names.insert(0, "alertname")
        return Pairs(Pair(name, self[name]) for name in names)


@dataclass(frozen=True, slots=True)
class Pair:
    """template.Pair."""

    Name: str
    Value: str


class Pairs(list[Pair]):
    """template.Pairs, what `.SortedPairs` returns."""


class Alerts(list[AlertData]):
    """template.Alerts, the type of `.Alerts` (it has `.Firing` and `.Resolved`)."""


def kv_string(pairs: Iterable[Pair]) -> str:
    """template.Pairs.String: "a=1, b=2"."""
    return bounded((f"{p.Name}={p.Value}" for p in pairs), ", ")


def _remove(kv: KV, *keys: list[str]) -> KV:
    drop = {key for group in keys for key in group}
    return KV({k: v for k, v in kv.items() if k not in drop})


DATA_FIELDS = (
    "Receiver",
    "Status",
    "Alerts",
    "GroupLabels",
    "CommonLabels",
    "CommonAnnotations",
    "ExternalURL",
)
ALERT_FIELDS = ("Status", "Labels", "Annotations", "StartsAt", "EndsAt", "GeneratorURL", "Fingerprint")

_KV_METHODS: dict[str, Func] = {
    "SortedPairs": Func(lambda kv: kv.sorted_pairs()),
    "Names": Func(lambda kv: [p.Name for p in kv.sorted_pairs()]),
    "Values": Func(lambda kv: [p.Value for p in kv.sorted_pairs()]),
    # Alertmanager's Remove takes a []string; single names are accepted too.
    "Remove": Func(_remove, (), "keys"),
    "String": Func(lambda kv: kv_string(kv.sorted_pairs())),
}
_PAIRS_METHODS: dict[str, Func] = {
    "Names": Func(lambda ps: [p.Name for p in ps]),
    "Values": Func(lambda ps: [p.Value for p in ps]),
    "String": Func(kv_string),
}
_ALERTS_METHODS: dict[str, Func] = {
    "Firing": Func(lambda alerts: [a for a in alerts if a.status == "firing"]),
    "Resolved": Func(lambda alerts: [a for a in alerts if a.status == "resolved"]),
}
_TIME_METHODS: dict[str, Func] = {
    "Format": Func(format_time, ("string",)),
    "String": Func(time_string),
    "Unix": Func(lambda t: (t - EPOCH) // timedelta(seconds=1)),
    "UnixMilli": Func(lambda t: (t - EPOCH) // timedelta(milliseconds=1)),
    "UTC": Func(lambda t: t.astimezone(UTC)),
    "Local": Func(lambda t: t.astimezone()),
    "IsZero": Func(lambda t: t == ZERO_TIME),
    "Year": Func(lambda t: t.year),
    "YearDay": Func(lambda t: t.timetuple().tm_yday),
    "Day": Func(lambda t: t.day),
    "Hour": Func(lambda t: t.hour),
    "Minute": Func(lambda t: t.minute),
    "Second": Func(lambda t: t.second),
    "Sub": Func(ns_between, ("time.Time",)),
    "Add": Func(lambda t, ns: t + timedelta(microseconds=ns // 1000), ("int",)),
}
_DURATION_METHODS: dict[str, Func] = {
    "String": Func(duration_string),
    "Seconds": Func(lambda d: d / 1e9),
    "Minutes": Func(lambda d: d / 6e10),
    "Hours": Func(lambda d: d / 3.6e12),
    "Milliseconds": Func(lambda d: abs(d) // 1_000_000 * (1 if d >= 0 else -1)),
    "Round": Func(lambda d, m: duration_round(d, m, truncate=False), ("int",)),
    "Truncate": Func(lambda d, m: duration_round(d, m, truncate=True), ("int",)),
}


class AlertmanagerModel(Model):
    """Alertmanager's Go types: *template.Data, template.Alert, KV, Pairs, Pair, Alerts, time.Time and
    time.Duration."""

    def type_name(self, value: object) -> str:
        match value:
            case Duration():
                return "time.Duration"
            case datetime():
                return "time.Time"
            case KV():
                return "template.KV"
            case Pairs():
                return "template.Pairs"
            case Pair():
                return "template.Pair"
            case Alerts():
                return "template.Alerts"
            case AlertData():
                return "template.Alert"
            case TemplateData():
                return "*template.Data"
        return super().type_name(value)

    def field(self, value: object, name: str) -> object:
        if isinstance(value, TemplateData):
            match name:
                case "Receiver":
                    return value.receiver
                case "Status":
                    return value.status
                case "Alerts":
                    return Alerts(value.alerts)
                case "GroupLabels":
                    return KV(value.group_labels)
                case "CommonLabels":
                    return KV(value.common_labels)
                case "CommonAnnotations":
                    return KV(value.common_annotations)
                case "ExternalURL":
                    return value.external_url
        elif isinstance(value, AlertData):
            match name:
                case "Status":
                    return value.status
                case "Labels":
                    return KV(value.labels)
                case "Annotations":
                    return KV(value.annotations)
                case "StartsAt":
                    return aware(value.starts_at)
                case "EndsAt":
                    return aware(value.ends_at)
                case "GeneratorURL":
                    return value.generator_url
                case "Fingerprint":
                    return value.fingerprint
        elif isinstance(value, Pair) and name in ("Name", "Value"):
            return getattr(value, name)
        return ABSENT

    def method(self, value: object, name: str) -> Func | None:
        match value:
            case KV():
                return _KV_METHODS.get(name)
            case Pairs():
                return _PAIRS_METHODS.get(name)
            case Alerts():
                return _ALERTS_METHODS.get(name)
            case datetime():
                return _TIME_METHODS.get(name)
            case Duration():
                return _DURATION_METHODS.get(name)
        return None

    def struct(self, value: object) -> list[tuple[str, object]] | None:
        if isinstance(value, TemplateData):
            names: Iterable[str] = DATA_FIELDS
        elif isinstance(value, AlertData):
            names = ALERT_FIELDS
        elif isinstance(value, Pair):
            names = ("Name", "Value")
        else:
            return None
        return [(name, self.field(value, name)) for name in names]

    def is_pointer(self, value: object) -> bool:
        return isinstance(value, TemplateData)  # the data is a *Data in Alertmanager

    def stringer(self, value: object) -> str | None:
        match value:
            case Duration():
                return duration_string(value)
            case datetime():
                return time_string(value)
            case KV():
                return kv_string(value.sorted_pairs())
            case Pairs():
                return kv_string(value)
        return None

    def comparable(self, value: object) -> bool:
        return isinstance(value, datetime | Pair)


MODEL = AlertmanagerModel()
