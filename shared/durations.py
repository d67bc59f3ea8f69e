"""Prometheus durations (`1h30m`, `5m`, `250ms`, `1d`), as used in every config and rule file."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, ValidationInfo
from pydantic_core import PydanticCustomError

_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_DURATION_RE = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_ORDER = ("y", "w", "d", "h", "m", "s", "ms")
# The validation context of a model read from a YAML file: there a duration is a string with its unit, as
# Prometheus and Alertmanager read it (a bare `30` is refused, `0` taken), not seconds as in Python code.
FROM_FILE = {"durations": "file"}


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration string; raises ValueError with the reason."""
    if text == "0":
        return 0.0
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None or not any(match.groups()):
        raise ValueError(f"not a valid duration string: {text!r} (examples: 30s, 5m, 1h30m, 250ms)")
    return float(sum(int(v) * _UNITS[u] for u, v in zip(_ORDER, match.groups(), strict=True) if v))


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration string for `seconds` (`0s` for zero)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit in _ORDER:
        size = round(_UNITS[unit] * 1000)
        if ms >= size:
            count, ms = divmod(ms, size)
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _validate(value: Any, info: ValidationInfo) -> float:
    if isinstance(value, bool):
        raise PydanticCustomError("duration", "expected a duration such as 30s or 5m, got a boolean")
    if isinstance(value, int | float) and value != 0 and (info.context or {}).get("durations") == "file":
        raise PydanticCustomError(
            "duration", f"a duration needs a unit: {value!r} is not one (write 30s, 5m, 1h30m)"
        )
    if isinstance(value, int | float):
        # Seconds, given as numbers in Python code (tests, defaults); files say durations with units.
        if value < 0:
            raise PydanticCustomError("duration", "duration must not be negative")
        if not math.isfinite(value):  # YAML's .inf and .nan are numbers too
            raise PydanticCustomError("duration", f"duration must be finite, got {value}")
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise PydanticCustomError("duration", str(exc)) from None
    raise PydanticCustomError("duration", "expected a duration such as 30s or 5m")


# A duration in seconds that reads and writes Prometheus duration strings.
Duration = Annotated[float, BeforeValidator(_validate), PlainSerializer(format_duration, return_type=str)]
