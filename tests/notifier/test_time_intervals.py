"""Time intervals: Alertmanager's matching rules, load-time errors with positions, routes muted by time."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from services.notifier import stages
from services.notifier.config import load_routing
from services.notifier.routing import Route
from services.notifier.time_intervals import TimeInterval
from shared.alerts import Alert, from_unix
from shared.clock import FakeClock
from shared.yamlfile import ConfigErrors
from tests.notifier.test_dispatcher import dispatcher_for


def at(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def interval(**entry: object) -> TimeInterval:
    return TimeInterval.model_validate({"name": "x", "time_intervals": [entry]})


def test_times_include_the_start_and_exclude_the_end():
    hours = interval(times=[{"start_time": "09:00", "end_time": "17:00"}])
    assert hours.contains(at(2026, 11, 24, 9, 0))
    assert hours.contains(at(2026, 11, 24, 16, 59))
    assert not hours.contains(at(2026, 11, 24, 17, 0))
    assert interval(times=[{"start_time": "22:00", "end_time": "24:00"}]).contains(at(2026, 11, 24, 23, 59))


def test_weekdays_months_years_and_ranges():
    workdays = interval(weekdays=["monday:friday"])
    assert workdays.contains(at(2026, 11, 27, 12))  # a Friday
    assert not workdays.contains(at(2026, 11, 28, 12))  # a Saturday
    assert interval(weekdays=["sunday"]).contains(at(2026, 11, 29, 12))
    assert interval(months=["november", "1:2"]).contains(at(2026, 11, 1))
    assert interval(months=["1:2"]).contains(at(2026, 2, 28))
    assert not interval(months=["1:2"]).contains(at(2026, 3, 1))
    assert interval(years=["2025:2026"]).contains(at(2026, 1, 1))


def test_negative_days_of_month_count_from_the_end():
    last_days = interval(days_of_month=["-3:-1"])
    assert last_days.contains(at(2026, 2, 26)) and last_days.contains(at(2026, 2, 28))
    assert not last_days.contains(at(2026, 2, 25))
    assert interval(days_of_month=["25:31"]).contains(at(2026, 2, 28))  # clamped to the month


def test_the_location_decides_the_local_time():
    berlin = interval(times=[{"start_time": "09:00", "end_time": "10:00"}], location="Europe/Berlin")
    assert berlin.contains(at(2026, 11, 24, 8, 30))  # 09:30 in Berlin (UTC+1 in November)
    assert not berlin.contains(at(2026, 11, 24, 9, 30))


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"times": [{"start_time": "17:00", "end_time": "09:00"}]}, "must be before end time"),
        ({"times": [{"start_time": "9:00", "end_time": "10:00"}]}, "must be HH:MM"),
        ({"weekdays": ["funday"]}, "invalid weekday"),
        ({"weekdays": ["friday:monday"]}, "starts after it ends"),
        ({"days_of_month": ["0"]}, "invalid day of month"),
        ({"months": ["13"]}, "invalid month"),
        ({"location": "Mars/Olympus"}, "unknown location"),
    ],
)
def test_bad_intervals_are_refused_with_the_reason(entry: dict, error: str):
    with pytest.raises(ValidationError, match=error):
        interval(**entry)


def test_routing_file_errors_name_the_line(tmp_path: Path):
    path = tmp_path / "am.yml"
    path.write_text(
        "route:\n  receiver: r\n  routes:\n    - receiver: r\n      mute_time_intervals: [nope]\n"
        "receivers: [{name: r}]\n"
        "time_intervals:\n  - name: night\n    time_intervals:\n      - weekdays: [someday]\n"
    )
    with pytest.raises(ConfigErrors) as caught:
        load_routing(path)
    assert any(f"{path}:10:" in str(e) and "invalid weekday" in str(e) for e in caught.value.errors)
    path.write_text(
        "route:\n  receiver: r\n  routes:\n    - receiver: r\n      mute_time_intervals: [nope]\n"
        "receivers: [{name: r}]\n"
    )
    with pytest.raises(ConfigErrors, match='undefined time interval "nope"'):
        load_routing(path)


async def test_a_route_muted_by_time_sends_at_the_first_flush_after_the_mute(redis, keys, webhook):
    night = interval(times=[{"start_time": "00:00", "end_time": "06:00"}])
    clock = FakeClock(at(2027, 1, 15, 5, 59))
    async with aiohttp.ClientSession() as session:
        d = dispatcher_for(redis, keys, webhook.url, session, clock)
        d.tree.mute_time_intervals = ["night"]  # (the root cannot have them in a file; fine for this test)
        d.intervals = {"night": night}
        alert = Alert(
            labels={"alertname": "Down"},
            startsAt=from_unix(clock.now()),
            endsAt=from_unix(clock.now() + 3600),
        )
        await d.dispatch("1-0", [alert])
        assert await d.flush_due() == 1 and webhook.delivered == []
        assert d.metrics.time_muted._value.get() == 1
        clock.set(at(2027, 1, 15, 6, 0))  # the mute ends; the group's next flush (1 s interval) sends it
        assert await d.flush_due() == 1
        assert len(webhook.delivered) == 1


def test_active_intervals_send_only_inside_them():
    route = Route(
        receiver="r",
        matchers=[],
        group_by=None,
        group_wait=0,
        group_interval=1,
        repeat_interval=1,
        active_time_intervals=["workhours"],
    )
    hours = {"workhours": interval(times=[{"start_time": "09:00", "end_time": "17:00"}])}
    assert stages.active_time(route, at(2026, 11, 24, 10), hours)
    assert not stages.active_time(route, at(2026, 11, 24, 20), hours)
    assert not stages.mute_time(route, at(2026, 11, 24, 20), hours)  # no mute intervals on this route
