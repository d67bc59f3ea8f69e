"""The pipeline stages alone, with plain values (no Redis, no HTTP)."""

from __future__ import annotations

from services.notifier import stages
from services.notifier.config import InhibitRuleConfig
from services.notifier.inhibition import Inhibitor, InhibitRule
from services.notifier.matchers import Matcher
from services.notifier.routing import Route
from services.notifier.silences import MatcherModel, Silence
from services.notifier.time_intervals import TimeInterval
from shared.alerts import Alert, from_unix

T0 = 1_800_000_000.0


def alert(status: str = "firing", **labels: str) -> Alert:
    return Alert(
        labels={"alertname": "A", **labels},
        startsAt=from_unix(T0),
        endsAt=from_unix(T0 + (60 if status == "resolved" else 600)),
        status=status,  # type: ignore[arg-type]
    )


def route(**kwargs: object) -> Route:
    return Route(
        receiver="r",
        matchers=[Matcher.create("a", "=", "b")],
        group_by=None,
        group_wait=0,
        group_interval=1,
        repeat_interval=1,
        **kwargs,  # type: ignore[arg-type]
    )


def test_inhibit_leaves_out_targets_but_never_a_resolution():
    inhibitor = Inhibitor(
        [InhibitRule(InhibitRuleConfig(source_match={"sev": "crit"}, target_match={"sev": "warn"}))]
    )
    source = alert(sev="crit", name="src")
    kept, dropped = stages.inhibit(
        [alert(sev="warn"), alert("resolved", sev="warn", x="1")], inhibitor, [source]
    )
    assert dropped == 1 and [a.status for a in kept] == ["resolved"]
    assert stages.inhibit([alert(sev="warn")], inhibitor, []) == ([alert(sev="warn")], 0)


def test_time_stages():
    night = {
        "night": TimeInterval.model_validate(
            {"name": "night", "time_intervals": [{"times": [{"start_time": "00:00", "end_time": "06:00"}]}]}
        )
    }
    three_am, noon = T0 - T0 % 86400 + 3 * 3600, T0 - T0 % 86400 + 12 * 3600
    assert stages.mute_time(route(mute_time_intervals=["night"]), three_am, night)
    assert not stages.mute_time(route(mute_time_intervals=["night"]), noon, night)
    assert not stages.active_time(route(active_time_intervals=["night"]), noon, night)
    assert stages.active_time(route(), noon, night)


def test_silence_leaves_out_firing_alerts_an_active_silence_matches():
    matchers = [MatcherModel(name="service", value="batch", isRegex=False)]
    active = Silence("s", matchers, T0 - 10, T0 + 10, "ops", "c", T0)
    kept, dropped = stages.silence([alert(service="batch"), alert(service="web")], [active], T0)
    assert dropped == 1 and [a.labels["service"] for a in kept] == ["web"]
    assert stages.silence([alert(service="batch")], [active], T0 + 20)[1] == 0  # expired by then
