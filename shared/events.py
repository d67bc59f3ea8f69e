"""Metric samples and log events: the collector's JSON API schema and the items carried on the streams.

The same models validate a request at the collector and each item again at the evaluator (anything can XADD
to a stream), so the rules live in one place. Names follow Prometheus' legacy naming rules.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_NAME_LENGTH = 200
MAX_LABEL_VALUE_LENGTH = 4096


# Names repeat across samples (a few dozen per app), so each distinct valid name is checked once. Bounded, so
# a flood of random names cannot grow it without limit (20k names of up to 200 characters: ~6 MB), and
# started over when full, so that a flood cannot keep later real names out of it either.
KNOWN_NAMES_LIMIT = 20_000
_valid_metric_names: set[str] = set()
_valid_label_names: set[str] = set()


def remember_name(cache: set[str], name: str) -> None:
    """Add a name found valid to a cache of them, started over when it holds KNOWN_NAMES_LIMIT."""
    if len(cache) >= KNOWN_NAMES_LIMIT:
        cache.clear()
    cache.add(name)


def _metric_name(value: str) -> str:
    if value in _valid_metric_names:
        return value
    if len(value) > MAX_NAME_LENGTH or not METRIC_NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "metric_name",
            "invalid metric name '{name}': must match [a-zA-Z_:][a-zA-Z0-9_:]* (at most {max} characters)",
            {"name": value[:100], "max": MAX_NAME_LENGTH},
        )
    remember_name(_valid_metric_names, value)
    return value


def _check_label_name(name: str) -> None:
    if name in _valid_label_names:
        return
    if len(name) > MAX_NAME_LENGTH or not LABEL_NAME_RE.fullmatch(name):
        raise PydanticCustomError(
            "label_name",
            "invalid label name '{name}': must match [a-zA-Z_][a-zA-Z0-9_]*",
            {"name": name[:100]},
        )
    if name.startswith("__"):
        raise PydanticCustomError(
            "label_name_reserved",
            "label name '{name}' is reserved: names starting with '__' are internal",
            {"name": name},
        )
    remember_name(_valid_label_names, name)


LISTED_LABEL_PROBLEMS = 10


def _labels(value: dict[str, str]) -> dict[str, str]:
    problems: list[PydanticCustomError] = []  # every bad label, not only the first: one fix, not several
    for name, label_value in value.items():
        if name not in _valid_label_names:  # inlined fast path: this runs for every label of every sample
            try:
                _check_label_name(name)
            except PydanticCustomError as exc:
                problems.append(exc)
        if len(label_value) > MAX_LABEL_VALUE_LENGTH:
            problems.append(
                PydanticCustomError(
                    "label_value_length",
                    "value of label '{name}' is longer than {max} characters",
                    {"name": name, "max": MAX_LABEL_VALUE_LENGTH},
                )
            )
    if len(problems) == 1:
        raise problems[0]
    if problems:
        # A few in full, then a count: an item with 100,000 bad labels must not make an answer bigger
        # than the request.
        listed = "; ".join(problem.message() for problem in problems[:LISTED_LABEL_PROBLEMS])
        if len(problems) > LISTED_LABEL_PROBLEMS:
            listed += f"; and {len(problems) - LISTED_LABEL_PROBLEMS} more"
        raise PydanticCustomError("labels", "{problems}", {"problems": listed})
    return value


# RFC 3339's date-time (section 5.6, with the space its note allows), its time zone as group 1 so that a
# missing one gets its own message.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


def _valid_at_59(value: str) -> bool:
    """Whether a timestamp with seconds `:60` is a real date and time apart from the leap second: an
    impossible date (February 30th) is not RFC 3339, whatever its seconds say."""
    try:
        datetime.fromisoformat((value[:17] + "59" + value[19:]).upper())
    except ValueError:
        return False
    return True


def _timestamp(value: Any) -> float | None:
    """Unix seconds (a JSON number) or an RFC 3339 string with a time zone, as Unix seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise PydanticCustomError("timestamp", "timestamp must be Unix seconds or an RFC 3339 string")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise PydanticCustomError("timestamp", "timestamp must be a finite, non-negative number")
        return float(value)
    if isinstance(value, str):
        form = _RFC3339.fullmatch(value)
        if form is not None and form.group(1) is None:
            raise PydanticCustomError(
                "timestamp",
                "timestamp '{value}' has no time zone (add Z or an offset)",
                {"value": value[:64]},
            )
        try:
            # RFC 3339 allows t and z in lower case (section 5.6); fromisoformat also takes forms it does not.
            parsed = datetime.fromisoformat(value.upper()) if form is not None else None
        except ValueError:  # the right shape, but no such date or time (month 13)
            parsed = None
        if parsed is None and form is not None and value[17:19] == "60" and _valid_at_59(value):
            # RFC 3339 allows it; Prometheus (Go's time.Parse) and Python do not, so neither do we.
            raise PydanticCustomError(
                "timestamp",
                "timestamp '{value}' is a leap second (:60), which is not taken; send :59.999 or the next "
                "second",
                {"value": value[:64]},
            )
        if parsed is None:
            raise PydanticCustomError(
                "timestamp",
                "timestamp '{value}' is not RFC 3339 (such as 2026-12-02T16:10:11.5Z)",
                {"value": value[:64]},
            )
        return parsed.timestamp()
    raise PydanticCustomError("timestamp", "timestamp must be Unix seconds or an RFC 3339 string")


MetricName = Annotated[str, Field(strict=True), AfterValidator(_metric_name)]
Labels = Annotated[dict[str, Annotated[str, Field(strict=True)]], AfterValidator(_labels)]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Timestamp = Annotated[float | None, BeforeValidator(_timestamp)]


class MetricSample(BaseModel):
    """One sample. `increment` adds `value` to a counter the evaluator keeps for the series."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: MetricName
    labels: Labels = Field(default_factory=dict)
    value: FiniteFloat
    kind: Literal["sample", "increment"] = "sample"
    timestamp: Timestamp = None


_SAMPLE_KEYS = frozenset({"name", "labels", "value", "kind", "timestamp"})


def _finite(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    return kind is int and -(2**63) <= value < 2**63  # a huge int would overflow float(): pydantic decides


def fast_sample(item: Any) -> tuple[str, dict[str, str], float, bool, float | None] | None:
    """`item` as (name, labels, value, is_increment, timestamp) if it is a valid sample of the common shape
    (names already seen valid, Unix-seconds timestamp), else None: the caller then validates it with
    MetricSample for the precise error. Same rules, about 8x cheaper than pydantic per sample."""
    if type(item) is not dict or not _SAMPLE_KEYS.issuperset(item):
        return None
    name, value, labels = item.get("name"), item.get("value"), item.get("labels", {})
    if type(name) is not str or name not in _valid_metric_names or type(labels) is not dict:
        return None
    if not _finite(value):
        return None
    for label, label_value in labels.items():
        if label not in _valid_label_names or type(label_value) is not str:
            return None
        if len(label_value) > MAX_LABEL_VALUE_LENGTH:
            return None
    kind = item.get("kind", "sample")
    if kind not in ("sample", "increment"):  # a tuple: `kind` may be unhashable
        return None
    ts = item.get("timestamp")
    if ts is not None and (not _finite(ts) or ts < 0):
        return None
    return name, labels, float(value), kind == "increment", None if ts is None else float(ts)


class WireSample(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A metric sample on the metrics stream as the collector writes it (labels always present, Unix-seconds
    timestamp), decoded by msgspec in C: the types, the `kind` values and the timestamp's sign are checked
    while parsing. `labels` is left as the raw JSON of its object: a consumer that has seen those exact
    bytes before (for this name) needs no dict, and `wire_labels` decodes and checks them when it has not.
    Names are checked by `names_valid`. Items of any other shape take the item-by-item path."""

    name: str
    value: float  # msgspec refuses NaN, infinities and numbers out of float range, as the schema does
    labels: msgspec.Raw
    kind: Literal["sample", "increment"] = "sample"
    timestamp: Annotated[float, msgspec.Meta(ge=0)] | None = None


_WIRE_SAMPLES = msgspec.json.Decoder(list[WireSample])
_WIRE_LABELS = msgspec.json.Decoder(
    dict[str, Annotated[str, msgspec.Meta(max_length=MAX_LABEL_VALUE_LENGTH)]]
)
# msgspec raises DecodeError (ValidationError included) for what it refuses, RecursionError for deep nesting.
WIRE_ERRORS = (msgspec.DecodeError, RecursionError)


def decode_wire_samples(body: bytes) -> list[WireSample] | None:
    """Every item of a JSON array of samples as a WireSample, if all of them have the common shape and
    well-typed values; else None, and the caller parses the array and validates item by item (`fast_sample`,
    then MetricSample for the precise reasons). With `wire_labels` and `names_valid` agreeing on every
    sample, the same verdicts as MetricSample, about 4x cheaper than JSON parsing and `fast_sample`."""
    try:
        wire = _WIRE_SAMPLES.decode(body)
    except WIRE_ERRORS:
        return None
    return wire if raw_labels_unambiguous(body, len(wire)) else None


def raw_labels_unambiguous(body: bytes, samples: int) -> bool:
    """Whether none of the `samples` samples of `body`, each with a `labels` key, has a second one.
    msgspec keeps the last of duplicate keys and never looks inside a raw value it drops, which an
    item-by-item parse would (and might refuse), so such a body must take that path. Told from the bytes:
    without `\\u` escapes (which could spell a key), a key `labels` is the bytes `"labels"`, so there must
    be exactly one per sample. `"labels"` elsewhere (a label value) errs the safe way."""
    if b"\\" in body and b"\\u" in body:  # the first test is a memchr, 60x cheaper than the second
        return False
    return body.count(b'"labels"') == samples


def wire_labels(sample: WireSample) -> dict[str, str] | None:
    """A WireSample's labels, if they are an object of strings within the value-length limit and every
    name (the metric's too) passes MetricSample's rules; else None."""
    try:
        labels = _WIRE_LABELS.decode(sample.labels)
    except WIRE_ERRORS:
        return None
    return labels if names_valid(sample.name, labels) else None


def names_valid(name: str, labels: dict[str, str]) -> bool:
    """Whether a metric name and the label names pass MetricSample's rules (names seen valid are cached)."""
    return metric_name_valid(name) and label_names_valid(labels)


def metric_name_valid(name: str) -> bool:
    """Whether a metric name passes MetricSample's rules (names seen valid are cached)."""
    if name in _valid_metric_names:
        return True
    try:
        _metric_name(name)
    except PydanticCustomError:
        return False
    return True


def label_names_valid(labels: dict[str, str]) -> bool:
    """Whether every label name passes MetricSample's rules (names seen valid are cached)."""
    if _valid_label_names.issuperset(labels):
        return True
    try:
        for label in labels:
            _check_label_name(label)
    except PydanticCustomError:
        return False
    return True


def _lower_level(value: str) -> str:
    # Checked again after lowercasing, which can lengthen a string ("İ" is two characters lowered): what is
    # stored must pass this same schema when the evaluator reads it back.
    lowered = value.lower()
    if len(lowered) > 32:
        raise ValueError("level is longer than 32 characters once lower-cased")
    return lowered


class LogEvent(BaseModel):
    """One log event; every event counts into `log_events_total{service, level, ...labels}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_LABEL_VALUE_LENGTH)]
    level: Annotated[str, Field(strict=True, min_length=1, max_length=32), AfterValidator(_lower_level)]
    message: Annotated[str, Field(strict=True, max_length=65536)] = ""
    labels: Labels = Field(default_factory=dict)
    timestamp: Timestamp = None

    @field_validator("labels")
    @classmethod
    def _no_label_clash(cls, labels: dict[str, str]) -> dict[str, str]:
        # On the field, not the model, so that an ingest error names `labels` as its field.
        clash = {"service", "level"} & labels.keys()
        if clash:
            raise PydanticCustomError(
                "label_clash",
                "labels must not repeat the event's own fields: {names}",
                {"names": ", ".join(sorted(clash))},
            )
        return labels
