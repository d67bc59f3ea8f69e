"""PromQL values: what an expression evaluates to.

Labels are plain dicts (`__name__` included while a sample still has its metric name). Timestamps inside the
engine are integer milliseconds, as in Prometheus, so window boundaries compare exactly; stored samples carry
float seconds and are compared against `ms / 1000`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

Labels = dict[str, str]
METRIC_NAME = "__name__"

# Prometheus' staleness marker: a NaN with a specific bit pattern, distinct from an ordinary NaN value.
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


def is_stale(value: float) -> bool:
    """Whether `value` is the staleness marker (not just any NaN)."""
    return math.isnan(value) and struct.pack("<d", value) == struct.pack("<Q", 0x7FF0000000000002)


def labels_key(labels: Labels) -> tuple[tuple[str, str], ...]:
    """A hashable, canonical form of a label set."""
    return tuple(sorted(labels.items()))


def without_name(labels: Labels) -> Labels:
    if METRIC_NAME not in labels:
        return labels
    return {k: v for k, v in labels.items() if k != METRIC_NAME}


@dataclass(slots=True)
class Sample:
    """One element of an instant vector. `drop_name` defers `__name__` removal to the end of evaluation,
    as Prometheus 3.x does (so `label_replace` etc. can still see it)."""

    labels: Labels
    value: float
    drop_name: bool = False


@dataclass(slots=True)
class Scalar:
    value: float


@dataclass(slots=True)
class String:
    value: str


@dataclass(slots=True)
class RangeSeries:
    """One series of a range vector (matrix): its samples in the window, oldest first."""

    labels: Labels
    timestamps: list[int] = field(default_factory=list)  # milliseconds
    values: list[float] = field(default_factory=list)
    drop_name: bool = False


Vector = list[Sample]
Matrix = list[RangeSeries]
Value = Vector | Scalar | String | Matrix
