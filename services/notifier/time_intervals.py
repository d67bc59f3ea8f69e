"""Alertmanager's time intervals: named sets of times of day, weekdays, days of month, months and years in a
location, used by routes' `mute_time_intervals` and `active_time_intervals`.

A named interval is in effect when any of its entries is; an entry is when every field it gives matches (a
field left out matches always). Times are `HH:MM` with the start included and the end excluded (`24:00`
allowed); ranges are inclusive (`monday:friday`, `1:5`); a negative day of month counts from the month's end
(`-1` is its last day). The location is an IANA zone name, UTC when left out.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

WEEKDAYS = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
MONTHS = [name.lower() for name in calendar.month_name[1:]]
_TIME = re.compile(r"^(\d{2}):(\d{2})$")


def _minutes(text: str) -> int:
    found = _TIME.match(text)
    if not found:
        raise ValueError(f"invalid time {text!r}: must be HH:MM")
    hours, minutes = int(found.group(1)), int(found.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"invalid time {text!r}: must be between 00:00 and 24:00")
    return hours * 60 + minutes


def _range(text: str, parse: Any, what: str) -> tuple[int, int]:
    start_text, sep, end_text = str(text).partition(":")
    start = parse(start_text.strip())
    end = parse(end_text.strip()) if sep else start
    if (start < 0) == (end < 0) and start > end:  # mixed signs (days of month) are checked per month
        raise ValueError(f"{what} range {text!r} starts after it ends")
    return start, end


def _named(names: list[str], what: str) -> Any:
    def parse(text: str) -> int:
        lowered = text.lower()
        if lowered in names:
            return names.index(lowered) + (1 if what == "month" else 0)
        if what == "month" and lowered.isdigit() and 1 <= int(lowered) <= 12:
            return int(lowered)
        raise ValueError(f"invalid {what} {text!r}")

    return parse


def _day_of_month(text: str) -> int:
    try:
        day = int(text)
    except ValueError:
        raise ValueError(f"invalid day of month {text!r}") from None
    if day == 0 or not -31 <= day <= 31:
        raise ValueError(f"invalid day of month {text!r}: must be 1 to 31, or -31 to -1 from the end")
    return day


def _year(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"invalid year {text!r}")
    return int(text)


class TimeRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_time: str
    end_time: str

    @field_validator("start_time", "end_time")
    @classmethod
    def _valid(cls, value: str) -> str:
        _minutes(value)
        return value

    def span(self) -> tuple[int, int]:
        start, end = _minutes(self.start_time), _minutes(self.end_time)
        if start >= end:
            raise ValueError(f"start time {self.start_time} must be before end time {self.end_time}")
        return start, end


class TimeIntervalEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    times: list[TimeRange] = Field(default_factory=list)
    weekdays: list[str] = Field(default_factory=list)
    days_of_month: list[str] = Field(default_factory=list)
    months: list[str] = Field(default_factory=list)
    years: list[str] = Field(default_factory=list)
    location: str = "UTC"

    @field_validator("weekdays", "days_of_month", "months", "years", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("location")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown location {value!r} (an IANA zone, e.g. Europe/Berlin)") from None
        return value

    _times: list[tuple[int, int]] = PrivateAttr(default_factory=list)
    _weekdays: list[tuple[int, int]] = PrivateAttr(default_factory=list)
    _days: list[tuple[int, int]] = PrivateAttr(default_factory=list)
    _months: list[tuple[int, int]] = PrivateAttr(default_factory=list)
    _years: list[tuple[int, int]] = PrivateAttr(default_factory=list)
    _zone: ZoneInfo = PrivateAttr(default_factory=lambda: ZoneInfo("UTC"))

    @model_validator(mode="after")
    def _parse(self) -> TimeIntervalEntry:
        # Parse everything once; a bad value is a validation error (with its file:line) at load time.
        self._times = [t.span() for t in self.times]
        self._weekdays = [_range(w, _named(WEEKDAYS, "weekday"), "weekday") for w in self.weekdays]
        self._days = [_range(d, _day_of_month, "day of month") for d in self.days_of_month]
        self._months = [_range(m, _named(MONTHS, "month"), "month") for m in self.months]
        self._years = [_range(y, _year, "year") for y in self.years]
        self._zone = ZoneInfo(self.location)
        return self

    def contains(self, moment: float) -> bool:
        """Whether Unix time `moment` falls in this entry."""
        local = datetime.fromtimestamp(moment, tz=UTC).astimezone(self._zone)
        if self._times:
            minute = local.hour * 60 + local.minute
            if not any(start <= minute < end for start, end in self._times):
                return False
        weekday = (local.weekday() + 1) % 7  # Python: Monday=0; Alertmanager: Sunday=0
        if self._weekdays and not any(a <= weekday <= b for a, b in self._weekdays):
            return False
        if self._days:
            last = calendar.monthrange(local.year, local.month)[1]
            if not any(_in_days(local.day, a, b, last) for a, b in self._days):
                return False
        if self._months and not any(a <= local.month <= b for a, b in self._months):
            return False
        return not self._years or any(a <= local.year <= b for a, b in self._years)


def _in_days(day: int, start: int, end: int, last: int) -> bool:
    # Negative days count from the month's end; a range reaching past the month is clamped to it.
    first = start if start > 0 else max(last + start + 1, 1)
    final = end if end > 0 else last + end + 1
    return first <= day <= min(final, last)


class TimeInterval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    time_intervals: list[TimeIntervalEntry] = Field(default_factory=list)

    def contains(self, moment: float) -> bool:
        return any(entry.contains(moment) for entry in self.time_intervals)
