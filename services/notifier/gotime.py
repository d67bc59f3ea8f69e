"""Go's time package as Alertmanager's templates use it: time.Duration (an int of nanoseconds printed as
"1h2m3s"), Time.Format with Go's reference layout ("2006-01-02 15:04:05"), time zones, Sub and Round."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.gotemplate import CallError

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_DURATION = (1 << 63) - 1


class Duration(int):
    """time.Duration in nanoseconds: an int to Go's comparisons, printed as "1h2m3s"."""


def aware(t: datetime) -> datetime:
    """A datetime with a zone (naive ones are UTC), as every Go time.Time has a location."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def time_string(t: datetime) -> str:
    """time.Time.String."""
    return format_time(t, "2006-01-02 15:04:05.999999999 -0700 MST")


def _frac_digits(frac: int, prec: int) -> str:
    return "." + f"{frac:0{prec}d}".rstrip("0") if frac else ""


def duration_string(ns: int) -> str:
    """time.Duration.String: "1h2m3.5s", "1.5ms", "0s"."""
    if ns == 0:
        return "0s"
    u = abs(ns)
    if u < 1_000:
        text = f"{u}ns"
    elif u < 1_000_000:
        text = f"{u // 1_000}{_frac_digits(u % 1_000, 3)}µs"
    elif u < 1_000_000_000:
        text = f"{u // 1_000_000}{_frac_digits(u % 1_000_000, 6)}ms"
    else:
        seconds, frac = divmod(u, 1_000_000_000)
        text = f"{seconds % 60}{_frac_digits(frac, 9)}s"
        minutes = seconds // 60
        if minutes:
            text = f"{minutes % 60}m{text}"
            if minutes // 60:
                text = f"{minutes // 60}h{text}"
    return "-" + text if ns < 0 else text


# time.Time.Format with Go's reference layout ("2006-01-02 15:04:05") ----------------------------------------

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_ZONE_LAYOUTS = ("070000", "07:00:00", "0700", "07:00", "07")


def _layout_chunk(layout: str, i: int) -> str | None:
    """The layout element starting at i (Go's nextStdChunk), or None for a literal character."""
    rest = layout[i:]

    def lower_follows(k: int) -> bool:
        return len(rest) > k and "a" <= rest[k] <= "z"

    match rest[0]:
        case "J" if rest.startswith("Jan"):
            if rest.startswith("January"):
                return "January"
            if not lower_follows(3):
                return "Jan"
        case "M" if rest.startswith("Mon"):
            if rest.startswith("Monday"):
                return "Monday"
            if not lower_follows(3):
                return "Mon"
        case "M" if rest.startswith("MST"):
            return "MST"
        case "0" if len(rest) >= 2 and "1" <= rest[1] <= "6":
            return rest[:2]
        case "0" if rest.startswith("002"):
            return "002"
        case "1":
            return "15" if rest.startswith("15") else "1"
        case "2":
            return "2006" if rest.startswith("2006") else "2"
        # "_2006" is a literal "_" before the year.
        case "_" if rest.startswith("_2") and not rest.startswith("_2006"):
            return "_2"
        case "_" if rest.startswith("__2"):
            return "__2"
        case "3" | "4" | "5":
            return rest[0]
        case "P" if rest.startswith("PM"):
            return "PM"
        case "p" if rest.startswith("pm"):
            return "pm"
        case "-" | "Z":
            for zone in _ZONE_LAYOUTS:
                if rest.startswith(zone, 1):
                    return rest[0] + zone
        case "." | "," if len(rest) >= 2 and rest[1] in "09":
            j = 1
            while j < len(rest) and rest[j] == rest[1]:
                j += 1
            # Only a run of one digit, not followed by another digit, is a fractional second.
            if not (j < len(rest) and rest[j].isdigit()):
                return rest[:j]
    return None


def _zone_name(t: datetime) -> str:
    name = t.tzname() or ""
    # An unnamed fixed offset (Go's FixedZone("", ...)) has no abbreviation; Python invents "UTC+02:00".
    if (
        isinstance(t.tzinfo, timezone)
        and t.tzinfo is not UTC
        and re.fullmatch(r"UTC[+-]\d\d:\d\d(:\d\d)?", name)
    ):
        return ""
    return name


def _layout_value(t: datetime, chunk: str) -> str:
    hour12 = t.hour % 12 or 12
    delta = t.utcoffset()
    offset = int(delta.total_seconds()) if delta is not None else 0
    match chunk:
        case "January":
            return _MONTHS[t.month - 1]
        case "Jan":
            return _MONTHS[t.month - 1][:3]
        case "1":
            return str(t.month)
        case "01":
            return f"{t.month:02d}"
        case "Monday":
            return _WEEKDAYS[t.weekday()]
        case "Mon":
            return _WEEKDAYS[t.weekday()][:3]
        case "2":
            return str(t.day)
        case "_2":
            return f"{t.day:2d}"
        case "02":
            return f"{t.day:02d}"
        case "__2":
            return f"{t.timetuple().tm_yday:3d}"
        case "002":
            return f"{t.timetuple().tm_yday:03d}"
        case "2006":
            return f"{t.year:04d}"
        case "06":
            return f"{t.year % 100:02d}"
        case "15":
            return f"{t.hour:02d}"
        case "3":
            return str(hour12)
        case "03":
            return f"{hour12:02d}"
        case "4":
            return str(t.minute)
        case "04":
            return f"{t.minute:02d}"
        case "5":
            return str(t.second)
        case "05":
            return f"{t.second:02d}"
        case "PM":
            return "PM" if t.hour >= 12 else "AM"
        case "pm":
            return "pm" if t.hour >= 12 else "am"
        case "MST":
            name = _zone_name(t)
            return name or _layout_value(t, "-0700")
    if chunk[0] in ".,":
        digits = f"{t.microsecond * 1000:09d}"[: len(chunk) - 1]
        if chunk[1] == "9":
            digits = digits.rstrip("0")
            return chunk[0] + digits if digits else ""
        return chunk[0] + digits
    # Numeric zones: -0700, -07:00, -07, -070000, -07:00:00 and their Z forms (Z when the offset is 0).
    if chunk[0] == "Z" and offset == 0:
        return "Z"
    sign = "-" if offset < 0 else "+"
    offset = abs(offset)
    hours, minutes, seconds = offset // 3600, offset // 60 % 60, offset % 60
    colon = ":" if ":" in chunk else ""
    text = f"{sign}{hours:02d}"
    if chunk[1:] != "07":
        text += f"{colon}{minutes:02d}"
    if chunk[1:] in ("070000", "07:00:00"):
        text += f"{colon}{seconds:02d}"
    return text


def format_time(t: datetime, layout: str) -> str:
    """time.Time.Format."""
    out: list[str] = []
    i = 0
    while i < len(layout):
        chunk = _layout_chunk(layout, i)
        if chunk is None:
            out.append(layout[i])
            i += 1
        else:
            out.append(_layout_value(t, chunk))
            i += len(chunk)
    return "".join(out)


def in_zone(name: str, t: datetime) -> datetime:
    """time.LoadLocation + Time.In."""
    if name in ("", "UTC"):
        return t.astimezone(UTC)
    if name == "Local":
        return t.astimezone()
    try:
        return t.astimezone(ZoneInfo(name))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CallError(f"unknown time zone {name}") from None


def ns_between(later: datetime, earlier: datetime) -> Duration:
    """Time.Sub: later - earlier in nanoseconds, saturated as Go does."""
    ns = (later - earlier) // timedelta(microseconds=1) * 1000
    return Duration(max(-_MAX_DURATION - 1, min(_MAX_DURATION, ns)))  # Go saturates Sub


def duration_round(d: int, m: int, *, truncate: bool) -> Duration:
    """Duration.Round (halves away from zero) or, with truncate, Duration.Truncate."""
    if m <= 0:
        return Duration(d)
    rest = abs(d) % m
    magnitude = abs(d) - rest
    if not truncate and rest + rest >= m:
        magnitude += m  # halves round away from zero
    return Duration(magnitude if d >= 0 else -magnitude)
