"""OTLP metrics to tripwire samples, as the OpenTelemetry-to-Prometheus compatibility spec maps them.

Spec: https://opentelemetry.io/docs/specs/otel/compatibility/prometheus_and_openmetrics/ ("OTLP Metric points
to Prometheus"). What we do, section by section:

- Metric names, as Prometheus 3's OTLP receiver names them by default (UnderscoreEscapingWithSuffixes):
  runs of characters outside `[a-zA-Z0-9:]` become one `_`, the unit is added as a word (`s` -> `_seconds`,
  `By/s` -> `_bytes_per_second`; nothing for `1` or an annotation such as `{request}`) unless the name has it
  already, monotonic sums end in `_total` and gauges of unit `1` in `_ratio`.
  `OtlpOptions.metric_suffixes=False` (`collector.otlp_metric_suffixes: false`) keeps names as sent, only
  sanitised, with `_total` on counters.
- Attribute keys: invalid characters become `_`, runs of `_` collapse to one.
- Resource attributes: `service.namespace`/`service.name` become `job`, `service.instance.id` becomes
  `instance`; the other resource attributes go on one `target_info` sample per resource and request (value 1,
  labels `job`, `instance` and the attributes; none for a resource with neither, which it could not be
  joined on), not onto every series ("MUST NOT" unless configured: see
  `OtlpOptions.promote_resource_attributes`).
- Instrumentation scope: `otel_scope_name`, `otel_scope_version`, `otel_scope_schema_url` and
  `otel_scope_<attribute>` labels on every point whose scope has a name (the spec's default, and Prometheus'
  `promote_scope_metadata`).
- Gauge and non-monotonic cumulative Sum: samples. Monotonic cumulative Sum: samples of the running total (a
  Prometheus counter). Monotonic delta Sum: `increment` items, which the evaluator accumulates into the same
  counter. Non-monotonic delta Sum: rejected (the spec drops it: a delta of a level is no series).
- Histogram: `_bucket{le=...}` (cumulative over `le`, then `+Inf` = count), `_sum` (when set), `_count`; as
  samples when cumulative, as increments of the same series when delta (the spec's "aggregate delta into
  cumulative", done by the evaluator).
- Summary: `{quantile=...}` samples plus `_sum` and `_count`; a quantile without a finite value (NaN, from an
  idle window) is dropped with a warning, the rest of the point kept.
- Exponential histogram: rejected with a reason (its cumulative form maps to a native histogram, which
  tripwire does not store).
- Points flagged NO_RECORDED_VALUE (a staleness signal we cannot represent) are skipped, not rejected.

This module also holds the attribute and label helpers the log mapping shares (`otlp_logs`).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from google.protobuf.message import Message
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    DataPointFlags,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from services.collector.ingest import IngestLimits, quoted
from services.collector.otlp_wire import decode_attributes, raw_attributes_request

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NO_RECORDED_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK

SERVICE_NAME = "service.name"
SERVICE_NAMESPACE = "service.namespace"
SERVICE_INSTANCE_ID = "service.instance.id"
IDENTIFYING_ATTRIBUTES = frozenset({SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID})
LISTED_REASONS = 100  # (where, reason) pairs kept for the response; the count is always exact

EXPONENTIAL_REASON = (
    "exponential histograms are not supported: their Prometheus form is a native histogram, which tripwire "
    "does not store; configure the SDK for explicit-bucket histograms (e.g. "
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=explicit_bucket_histogram)"
)


# Options, limits and the mapping result ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OtlpOptions:
    """Choices the spec leaves configurable; the defaults are the spec's defaults."""

    # otel_scope_name / otel_scope_version labels ("MUST ... by default"; SHOULD be possible to disable).
    scope_labels: bool = True
    # One target_info sample per resource per request, carrying the non-identifying resource attributes.
    target_info: bool = True
    # Resource attributes (OTel names, e.g. "deployment.environment") also copied onto every series/event
    # ("MAY be copied to labels ... if required by the exporter configuration").
    promote_resource_attributes: frozenset[str] = frozenset()
    # Unit words and type suffixes on metric names ("SHOULD"; Prometheus' OTLP receiver's default).
    metric_suffixes: bool = True


@dataclass(slots=True)
class MappedPoint:
    """One OTLP data point (or log record) as the stream items that represent it, kept or dropped whole:
    a histogram missing one bucket would be worse than no histogram."""

    items: list[dict[str, Any]]
    where: str
    resource: int
    counted: bool = True  # False for items we synthesise (target_info): not a data point of the sender's


def label_bytes(labels: dict[str, str]) -> int:
    """Bytes `labels` take in an item's JSON, exactly: escapes count (a control character is 6 bytes)."""
    return len(orjson.dumps(labels))


# An item's JSON beyond its name and labels: keys, punctuation, the longest value and timestamp (104 bytes).
ITEM_BYTES = 110


@dataclass(slots=True)
class Mapping:
    """The result of mapping one request: the points, and what was rejected, skipped or adjusted."""

    points: list[MappedPoint] = field(default_factory=list)
    # Estimated bytes the points' items take once encoded for the stream. The request's attributes are sent
    # once a point but stored once an item (a histogram's on every bucket), so a small body can stand for
    # any amount: the receiver refuses a request past collector.otlp_max_stored_bytes before encoding it.
    stored: int = 0
    rejected: int = 0
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (which point, why), the first ones
    skipped: int = 0
    warnings: dict[str, int] = field(default_factory=dict)

    def reject(self, where: str, reason: str, count: int = 1) -> None:
        self.rejected += count
        if len(self.reasons) < LISTED_REASONS:
            self.reasons.append((where, reason))

    def charge(self, items: int, labels: dict[str, str], size: int) -> None:
        """Count `items` items carrying `labels` (shared by them) plus `size` bytes of their own each."""
        self.stored += items * (ITEM_BYTES + size + label_bytes(labels))

    def warn(self, message: str) -> None:
        """A change we made to accepted data (counted per kind, so a flood stays one line)."""
        self.warnings[message] = self.warnings.get(message, 0) + 1


# Names, attribute values, labels ----------------------------------------------------------------------------
_INVALID_METRIC_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_UNDERSCORES = re.compile(r"__+")
_NAME_TOKEN_SEPARATORS = re.compile(r"[^a-zA-Z0-9:]+")
_NAME_CACHE_LIMIT = 10_000
_metric_names: dict[tuple[str, str, str, bool], str] = {}
_label_names: dict[str, str] = {}

# The words Prometheus' OTLP translator writes for UCUM units; a unit not listed is written as itself.
_UNIT_WORDS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNIT_WORDS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
COUNTER, GAUGE = "counter", "gauge"  # the kinds metric_name treats specially; others: their data type


def metric_name(name: str, unit: str, kind: str, suffixes: bool = True) -> str:
    """The Prometheus name of an OTLP metric ("" if its name has nothing usable). `kind` is COUNTER for a
    monotonic sum, GAUGE for a gauge, else the data type.

    With `suffixes`, as Prometheus' OTLP translator (normalizeName): the name's runs of characters outside
    `[a-zA-Z0-9:]` become one `_` (none at either end); the unit's word is appended unless the name already
    has it as a word; a counter's `total` and a unit-`1` gauge's `ratio` move to the end. Without: invalid
    characters become `_`, runs of `_` collapse (spec: "MUST"), and a counter gets `_total` unless it ends so.
    """
    key = (name, unit, kind, suffixes)
    known = _metric_names.get(key)
    if known is not None:
        return known
    if suffixes:
        words = [word for word in _NAME_TOKEN_SEPARATORS.split(name) if word]
        if words:
            words = _with_suffixes(words, unit, kind)
        clean = "_".join(words)
    else:
        clean = _UNDERSCORES.sub("_", _INVALID_METRIC_CHARS.sub("_", name))
        if kind == COUNTER and clean and not clean.endswith("_total"):
            clean += "_total"
    if clean[:1].isdigit():
        clean = "_" + clean  # a name may not start with a digit
    if len(_metric_names) < _NAME_CACHE_LIMIT:
        _metric_names[key] = clean
    return clean


def _with_suffixes(words: list[str], unit: str, kind: str) -> list[str]:
    main_unit, _, per_unit = unit.partition("/")
    main = _unit_word(main_unit, _UNIT_WORDS)
    per = _unit_word(per_unit, _PER_UNIT_WORDS)
    per = _clean_unit("per_" + per) if per else ""
    main = _clean_unit(main)
    if main in words:
        main = ""
    per = "" if per == "per_" else per.removesuffix("_")  # "per_": a per-unit of no name characters
    if per in words:
        per = ""
    if per:
        main = main.removesuffix("_")
    words = words + [word for word in (main, per) if word]
    if kind == COUNTER:
        words = [word for word in words if word != "total"] + ["total"]
    if kind == GAUGE and unit == "1":
        words = [word for word in words if word != "ratio"] + ["ratio"]
    return words


def _unit_word(unit: str, words: dict[str, str]) -> str:
    """A unit part's word: "" when blank or an annotation (`{request}`), else the known word or the unit."""
    unit = unit.strip()
    if not unit or "{" in unit or "}" in unit:
        return ""
    return words.get(unit, unit)


def _clean_unit(unit: str) -> str:
    """A unit word made of name characters: others become `_`, runs of `_` collapse, no `_` in front."""
    return _UNDERSCORES.sub("_", _NAME_TOKEN_SEPARATORS.sub("_", unit)).removeprefix("_")


def sanitize_label_name(key: str) -> str:
    """A Prometheus label name for an attribute key ("" if nothing is left). A leading digit gets `key_`,
    as Prometheus' own OTLP translator does; collapsing `_` runs also keeps names clear of reserved `__`."""
    known = _label_names.get(key)
    if known is not None:
        return known
    clean = _UNDERSCORES.sub("_", _INVALID_LABEL_CHARS.sub("_", key))
    if clean[:1].isdigit():
        clean = "key_" + clean
    if len(_label_names) < _NAME_CACHE_LIMIT:
        _label_names[key] = clean
    return clean


def format_float(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64), as Prometheus' OTLP translator writes `le` and `quantile`
    (1 -> "1", 0.005 -> "0.005", never an exponent), so rules written against Prometheus match."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")  # repr is the shortest round-trip form
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _json_value(value: AnyValue) -> Any:
    """An AnyValue as plain JSON data (bytes as base64, non-finite doubles as strings)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else format_float(number)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "array_value":
        return [_json_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _json_value(kv.value) for kv in value.kvlist_value.values}
    return None


def attribute_text(value: AnyValue) -> str:
    """An attribute value as a label value, as Go's pdata AsString() writes it, so that label values are
    Prometheus' own: strings as they are, numbers as JSON writes them (0.5, 1e+21, 1e-7), arrays and maps as
    JSON with sorted keys (one holding NaN or an infinity has none: ""). One difference: a non-finite
    double alone is NaN, +Inf or -Inf, not Go's "json: unsupported value: NaN"."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        number = value.double_value
        return _json_number(number) if math.isfinite(number) else format_float(number)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind in ("array_value", "kvlist_value"):
        try:
            return _go_json(value)
        except ValueError:  # Go's json.Marshal refuses NaN and infinities; AsString keeps the empty result
            return ""
    return ""  # unset, or a kind we do not map (string_value_strindex refers to a profiles dictionary)


def _json_number(number: float) -> str:
    """A finite double as Go's encoding/json writes it (ES6 number to string): no exponent from 1e-6 up to
    1e21, an unpadded one outside (1e+21, 1.5e-7)."""
    magnitude = abs(number)
    if magnitude == 0 or 1e-6 <= magnitude < 1e21:
        return format_float(number)
    sign, coefficient, exponent = Decimal(repr(number)).normalize().as_tuple()
    text = "".join(map(str, coefficient))
    power = int(exponent) + len(text) - 1
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'+' if power >= 0 else '-'}{abs(power)}"


# What Go's encoding/json escapes beyond what Python's json does: U+2028 and U+2029 (it escapes them for
# JavaScript). Current pdata marshals with HTML escaping off (marshalJSONNoHTMLEscape): <, > and & stay as
# they are. Older pdata used json.Marshal, which wrote them as \u003c, \u003e and \u0026.
_GO_ONLY_ESCAPES = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029"})


def _go_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_GO_ONLY_ESCAPES)


def _go_json(value: AnyValue) -> str:
    """An AnyValue as Go's json.Marshal writes its AsRaw() form: maps with sorted keys, numbers as
    `_json_number`, bytes as base64. Raises ValueError for NaN or an infinity, as Go does."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _go_string(value.string_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        if not math.isfinite(value.double_value):
            raise ValueError("unsupported value")
        return _json_number(value.double_value)
    if kind == "bytes_value":
        return '"' + base64.b64encode(value.bytes_value).decode() + '"'
    if kind == "array_value":
        return "[" + ",".join(_go_json(v) for v in value.array_value.values) + "]"
    if kind == "kvlist_value":
        # A Go map: the last of repeated keys counts, and keys are written sorted.
        members = {kv.key: kv.value for kv in value.kvlist_value.values}
        return "{" + ",".join(_go_string(key) + ":" + _go_json(members[key]) for key in sorted(members)) + "}"
    return "null"


def any_value_text(value: AnyValue) -> str:
    """A log body as message text: a string as it is, anything else as JSON."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    json_value = _json_value(value)
    return "" if json_value is None else orjson.dumps(json_value).decode()


def fit_labels(
    labels: dict[str, str], attributes: dict[str, str], limits: IngestLimits, out: Mapping, what: str
) -> dict[str, str]:
    """`labels`, then the `attributes` that fit the label limits, in name order until collector.max_labels.
    One too long or past the count is dropped with a warning naming `what`, not the sample or record it
    describes: a Java command line (process.command_line) is longer than 4096 characters."""
    labels = dict(labels)
    dropped_long = dropped_over = 0
    for name in sorted(attributes):
        value = attributes[name]
        if len(name) > limits.max_label_name_length or len(value) > limits.max_label_value_length:
            dropped_long += 1
        elif len(labels) >= limits.max_labels:
            dropped_over += 1
        else:
            labels[name] = value
    if dropped_long:
        out.warn(
            f"{what} longer than collector.max_label_name_length / max_label_value_length were dropped from "
            "labels"
        )
    if dropped_over:
        out.warn(f"{what} past collector.max_labels ({limits.max_labels} labels) were dropped")
    return labels


def attribute_labels(
    attributes: Iterable[KeyValue],
    reserved: Sequence[str] | frozenset[str] = (),
    skip: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Attributes as labels: keys sanitised, keys in `reserved` (labels we set ourselves) renamed
    `exported_<key>` as Prometheus does with clashing target labels, keys in `skip` left out. Keys that
    sanitise alike get their values joined with `;` in the order of the original keys (spec: "MUST"). Empty
    values are dropped: in Prometheus an empty label is no label."""
    labels: dict[str, str] = {}
    sources: dict[str, list[tuple[str, str]]] = {}
    for kv in attributes:
        if kv.key in skip:
            continue
        name = sanitize_label_name(kv.key)
        if not name:
            continue
        if name in reserved:
            name = "exported_" + name
        text = attribute_text(kv.value)
        if name in sources:
            sources[name].append((kv.key, text))
        else:
            sources[name] = [(kv.key, text)]
    for name, pairs in sources.items():
        text = pairs[0][1] if len(pairs) == 1 else ";".join(v for _, v in sorted(pairs))
        if text:
            labels[name] = text
    return labels


def check_labels(labels: dict[str, str], limits: IngestLimits, added: int = 0) -> str | None:
    """Why `labels` (plus `added` more, set per item) break the collector's limits, or None."""
    count = len(labels) + added
    if count > limits.max_labels:
        return f"{count} labels; the limit is {limits.max_labels} (collector.max_labels)"
    for name, value in labels.items():
        if len(name) > limits.max_label_name_length:
            return (
                f"label name {name[:64]!r}... is longer than {limits.max_label_name_length} characters "
                "(collector.max_label_name_length)"
            )
        if len(value) > limits.max_label_value_length:
            return (
                f"value of label {name!r} is longer than {limits.max_label_value_length} characters "
                "(collector.max_label_value_length)"
            )
    return None


@dataclass(frozen=True, slots=True)
class ResourceContext:
    """What one resource contributes: identity labels (job/instance), promoted attributes, target_info's."""

    attributes: dict[str, str]
    identity: dict[str, str]
    promoted: dict[str, str]
    info: dict[str, str]

    @classmethod
    def of(cls, resource: Resource, options: OtlpOptions) -> ResourceContext:
        attributes = {kv.key: attribute_text(kv.value) for kv in resource.attributes}
        identity: dict[str, str] = {}
        name, namespace = attributes.get(SERVICE_NAME, ""), attributes.get(SERVICE_NAMESPACE, "")
        # job = "<service.namespace>/<service.name>", or the name alone; no name, no job (as Prometheus).
        if name:
            identity["job"] = f"{namespace}/{name}" if namespace else name
        if attributes.get(SERVICE_INSTANCE_ID):
            identity["instance"] = attributes[SERVICE_INSTANCE_ID]
        promoted = attribute_labels(
            (kv for kv in resource.attributes if kv.key in options.promote_resource_attributes),
            reserved=tuple(identity),
        )
        info = attribute_labels(
            (kv for kv in resource.attributes if kv.key not in IDENTIFYING_ATTRIBUTES),
            reserved=("job", "instance"),
        )
        return cls(attributes=attributes, identity=identity, promoted=promoted, info=info)


def scope_labels(scope: InstrumentationScope, schema_url: str, options: OtlpOptions) -> dict[str, str]:
    """otel_scope_name, otel_scope_version, otel_scope_schema_url (of the ScopeMetrics or ScopeLogs) and an
    otel_scope_<key> label per scope attribute, as Prometheus' translator promotes scope metadata; none for a
    scope without a name (a version alone names nothing). As there, name, version and schema URL are set
    after the attributes, so an attribute keyed `name` cannot spoof or remove them. Empty values are no
    labels."""
    if not options.scope_labels or not scope.name:
        return {}
    labels: dict[str, str] = {}
    for kv in scope.attributes:
        text = attribute_text(kv.value)
        if text:
            labels[sanitize_label_name("otel_scope_" + kv.key)] = text
    labels["otel_scope_name"] = scope.name
    for name, value in (("otel_scope_version", scope.version), ("otel_scope_schema_url", schema_url)):
        if value:
            labels[name] = value
        else:
            labels.pop(name, None)  # as labels.Builder.Set with "": the scope's own (empty) value wins
    return labels


def timestamp(time_unix_nano: int, now: float) -> float:
    """Unix seconds; an unset time (0) is the receive time, as the JSON API does for a missing timestamp."""
    return time_unix_nano / 1e9 if time_unix_nano else now


# Metrics ----------------------------------------------------------------------------------------------------
# What the cache's contents are estimated to cost in memory: Python objects cost well beyond their text.
_ENTRY_OVERHEAD = 400  # the key and value tuples, the labels dict, the table slot
_ATTRIBUTE_OVERHEAD = 40  # one bytes object in the key
_LABEL_OVERHEAD = 100  # a dict slot and a str object per label
_CONTEXT_OVERHEAD = 500  # a context's tuples and its table slot
# A non-ASCII str holds up to 4 bytes a character, and once encoded for the stream its UTF-8 form too.
_NON_ASCII_FACTOR = 8
ENTRY_LIMIT_BYTES = 16_384  # a bigger label set is mapped every time rather than remembered
CONTEXT_LIMIT = 1024  # characters of fixed and promoted labels beyond which a series does not use the cache
_UNCACHED = -1  # the token of such a series


def _text_cost(values: Iterable[str]) -> int:
    """Estimated bytes of the strings' text."""
    text = "".join(values)
    return len(text) if text.isascii() else len(text) * _NON_ASCII_FACTOR


# A point's labels, why they break the limits (None: they don't), and their bytes in an item's JSON.
_Labels = tuple[dict[str, str], str | None, int]


class LabelSetCache:
    """Labels already mapped from a data point's serialized attributes, across requests: an SDK sends the
    same attribute sets in every export, and mapping one costs about 10x looking it up. Keyed by the
    series context (a token per distinct limits, fixed and promoted labels and per-item label names) and
    the attributes' bytes; the value is the mapped labels and why they break the limits, or None. Keep one
    per receiver; requests are mapped in worker threads at once.

    Bounded by estimated memory, contexts and entries together: each costs its text (non-ASCII counted at
    its worst) plus a per-object overhead, which errs high; the cache starts over when the next would pass
    `max_bytes`. An entry over ENTRY_LIMIT_BYTES is not remembered, nor are series whose own labels pass
    CONTEXT_LIMIT characters. The cached label dicts are shared by every item that carries them: nothing
    may modify them."""

    __slots__ = ("_bytes", "_counter", "_entries", "_lock", "_tokens", "max_bytes")

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._tokens: dict[tuple[Any, ...], int] = {}
        self._entries: dict[tuple[int, tuple[bytes, ...]], _Labels] = {}
        self._bytes = 0
        # Misses only (a token per series per request, an entry per new label set): cheap to serialize.
        self._lock = threading.Lock()
        self._counter = itertools.count()  # tokens are never reused: a series may hold one across a clear

    def token(self, limits: IngestLimits, fixed: dict[str, str], promoted: dict[str, str], extra: Any) -> int:
        """The key of one series context, or _UNCACHED for one too big to remember."""
        chars = sum(len(k) + len(v) for labels in (fixed, promoted) for k, v in labels.items())
        if chars > CONTEXT_LIMIT:
            return _UNCACHED
        context = (limits, tuple(fixed.items()), tuple(promoted.items()), extra)
        with self._lock:
            token = self._tokens.get(context)
            if token is None:
                cost = _CONTEXT_OVERHEAD + _LABEL_OVERHEAD * (len(fixed) + len(promoted) + len(extra))
                self._make_room(cost + chars + _text_cost(itertools.chain(fixed.values(), promoted.values())))
                token = self._tokens[context] = next(self._counter)
        return token

    def get(self, key: tuple[int, tuple[bytes, ...]]) -> _Labels | None:
        return self._entries.get(key)

    def put(self, key: tuple[int, tuple[bytes, ...]], value: _Labels) -> None:
        attributes, labels = key[1], value[0]
        cost = (
            _ENTRY_OVERHEAD
            + len(b"".join(attributes))
            + _ATTRIBUTE_OVERHEAD * len(attributes)
            + len("".join(labels))  # names: ASCII, sanitised
            + _text_cost(labels.values())
            + _LABEL_OVERHEAD * len(labels)
        )
        if cost > ENTRY_LIMIT_BYTES:
            return
        with self._lock:
            if key not in self._entries:
                self._make_room(cost)
                self._entries[key] = value

    def _make_room(self, cost: int) -> None:
        """Count `cost` in; first start over if it would pass the budget (the lock is held)."""
        if self._bytes + cost > self.max_bytes:
            # Tokens handed out stay unique (the counter goes on), so a series holding one is still right.
            self._entries.clear()
            self._tokens.clear()
            self._bytes = 0
        self._bytes += cost


@dataclass(slots=True)
class _Series:
    """Labels every point of one metric starts from: identity and scope labels win over point attributes
    (clashing attributes become exported_*), promoted resource attributes give way to them."""

    fixed: dict[str, str]
    promoted: dict[str, str]
    limits: IngestLimits
    cache: LabelSetCache
    _tokens: dict[tuple[str, ...], int] = field(default_factory=dict)

    def labels(self, attributes: Sequence[bytes], extra: tuple[str, ...] = ()) -> _Labels:
        """The point's labels from its serialized attributes (see `otlp_wire`), why they break the limits
        (None if they don't) and their bytes in an item (`label_bytes`). `extra` names labels the caller
        adds per item (le, quantile): attributes with those names become exported_*. The labels are
        shared: do not modify them."""
        token = self._tokens.get(extra)
        if token is None:
            token = self._tokens[extra] = self.cache.token(self.limits, self.fixed, self.promoted, extra)
        key = (token, tuple(attributes))
        known = self.cache.get(key)
        if known is not None:
            return known
        labels = attribute_labels(decode_attributes(attributes), (*self.fixed, *extra))
        for name, value in self.promoted.items():
            labels.setdefault(name, value)
        labels.update(self.fixed)
        mapped = labels, check_labels(labels, self.limits, len(extra)), label_bytes(labels)
        if token != _UNCACHED:
            self.cache.put(key, mapped)
        return mapped


def _item(name: str, labels: dict[str, str], value: float, kind: str, ts: float) -> dict[str, Any]:
    return {"name": name, "labels": labels, "value": value, "kind": kind, "timestamp": ts}


def _number(point: NumberDataPoint) -> float | None:
    which = point.WhichOneof("value")
    if which == "as_double":
        return point.as_double
    if which == "as_int":
        return float(point.as_int)
    return None


def map_metrics(
    request: Message,
    now: float,
    limits: IngestLimits,
    options: OtlpOptions,
    cache: LabelSetCache | None = None,
) -> Mapping:
    """Every data point of `request` (an ExportMetricsServiceRequest, best a RawAttributesRequest: see
    `otlp_wire`) as stream items, or a reason it cannot be one. Pass the receiver's `cache` to map each
    attribute set once; raises google.protobuf.message.DecodeError for a malformed attribute."""
    request = raw_attributes_request(request)
    cache = cache if cache is not None else LabelSetCache()
    out = Mapping()
    for r_index, resource_metrics in enumerate(request.resource_metrics):
        resource = ResourceContext.of(resource_metrics.resource, options)
        first = len(out.points)
        for scope_metrics in resource_metrics.scope_metrics:
            series = _Series(
                fixed={
                    **resource.identity,
                    **scope_labels(scope_metrics.scope, scope_metrics.schema_url, options),
                },
                promoted=resource.promoted,
                limits=limits,
                cache=cache,
            )
            for metric in scope_metrics.metrics:
                _map_metric(metric, series, now, r_index, out, options.metric_suffixes)
        # Without job or instance a target_info joins to nothing (Prometheus' translator skips it too).
        if options.target_info and resource.info and resource.identity and len(out.points) > first:
            # Stamped with the receive time: "this resource reported now", inside the window whatever the
            # points' own times (a rejected one must not take target_info with it).
            info = fit_labels(resource.identity, resource.info, limits, out, "resource attributes")
            out.charge(1, info, len("target_info"))
            out.points.append(
                MappedPoint(
                    items=[_item("target_info", info, 1.0, "sample", now)],
                    where=f"target_info of resource {r_index}",
                    resource=r_index,
                    counted=False,
                )
            )
    return out


def _map_metric(
    metric: Metric, series: _Series, now: float, resource: int, out: Mapping, suffixes: bool
) -> None:
    data_type = metric.WhichOneof("data")
    if data_type is None:
        return  # a metric without data carries no points
    data = getattr(metric, data_type)
    points = data.data_points
    label = f"metric {quoted(metric.name)}"
    if not points:
        return
    if data_type == "exponential_histogram":
        out.reject(label, EXPONENTIAL_REASON, len(points))
        return
    if data_type == "sum" and data.is_monotonic:
        kind = COUNTER
    else:
        kind = GAUGE if data_type == "gauge" else data_type
    base = metric_name(metric.name, metric.unit, kind, suffixes)
    if not base:
        out.reject(label, "metric has no name", len(points))
        return
    # The longest name its points are stored under must fit too.
    if len(base + _LONGEST_SUFFIX.get(data_type, "")) > series.limits.max_name_length:
        out.reject(
            label,
            f"metric name is longer than {series.limits.max_name_length} characters "
            "(collector.max_name_length)",
            len(points),
        )
        return
    if data_type == "gauge":
        _map_numbers(points, base, "sample", series, now, resource, label, out)
    elif data_type == "sum":
        temporality, monotonic = data.aggregation_temporality, data.is_monotonic
        if temporality == CUMULATIVE:
            _map_numbers(points, base, "sample", series, now, resource, label, out)
        elif temporality == DELTA and monotonic:
            _map_numbers(points, base, "increment", series, now, resource, label, out)
        elif temporality == DELTA:
            out.reject(
                label,
                "non-monotonic sums with delta temporality have no Prometheus form (the spec drops them); "
                "export UpDownCounters with cumulative temporality",
                len(points),
            )
        else:
            out.reject(label, "aggregation temporality is unspecified", len(points))
    elif data_type == "histogram":
        if data.aggregation_temporality not in (CUMULATIVE, DELTA):
            out.reject(label, "aggregation temporality is unspecified", len(points))
            return
        kind = "sample" if data.aggregation_temporality == CUMULATIVE else "increment"
        for index, point in enumerate(points):
            _map_histogram(point, base, kind, series, now, resource, f"{label} point {index}", out)
    elif data_type == "summary":
        for index, point in enumerate(points):
            _map_summary(point, base, series, now, resource, f"{label} point {index}", out)
    else:  # a data type newer than this code
        out.reject(label, f"metric type {data_type!r} is not supported", len(points))


SUMMARY_NAN_WARNING = (
    "summary quantiles without a finite value (NaN: no observations in the window) were dropped; the "
    "points' _sum and _count were kept"
)
_LONGEST_SUFFIX = {"histogram": "_bucket", "summary": "_count"}


def _map_summary(
    point: SummaryDataPoint, base: str, series: _Series, now: float, resource: int, where: str, out: Mapping
) -> None:
    if point.flags & NO_RECORDED_VALUE:
        out.skipped += 1
        return
    labels, problem, size = series.labels(point.attributes, ("quantile",))
    if problem:
        out.reject(where, problem)
        return
    ts = timestamp(point.time_unix_nano, now)
    quantiles = sorted(point.quantile_values, key=lambda q: q.quantile)
    items = [
        _item(base, {**labels, "quantile": format_float(q.quantile)}, q.value, "sample", ts)
        for q in quantiles
        if math.isfinite(q.value)
    ]
    extra = sum(len(item["labels"]["quantile"]) + 14 for item in items)  # `,"quantile":"` and `"`
    if len(items) < len(quantiles):
        # A summary over an idle window has NaN quantiles and a real _sum and _count; the stream carries
        # finite values only, and the rest of the point is still worth keeping.
        out.warn(SUMMARY_NAN_WARNING)
    items.append(_item(base + "_sum", labels, point.sum, "sample", ts))
    items.append(_item(base + "_count", labels, float(point.count), "sample", ts))
    out.stored += len(items) * (ITEM_BYTES + len(base) + 6 + size) + extra
    out.points.append(MappedPoint(items, where, resource))


def summary_items(point: SummaryDataPoint) -> int:
    """How many items a summary point maps to: its quantiles with a finite value, `_sum` and `_count` (as
    `histogram_items`, before mapping)."""
    if point.flags & NO_RECORDED_VALUE:
        return 0
    return sum(1 for q in point.quantile_values if math.isfinite(q.value)) + 2


def histogram_items(point: HistogramDataPoint) -> int:
    """How many items `_map_histogram` makes of a point: a bucket per count (the +Inf one alone when there are
    no counts), `_sum` when the point has one, and `_count`; none for a point it skips or refuses for its
    shape (its labels are not looked at). Counted on the decoded message, before mapping, to refuse oversized
    requests cheaply."""
    if point.flags & NO_RECORDED_VALUE or _histogram_shape_problem(point) is not None:
        return 0
    return max(len(point.bucket_counts), 1) + point.HasField("sum") + 1


def _histogram_shape_problem(point: HistogramDataPoint) -> str | None:
    """Why a histogram point's buckets have no Prometheus form (None: they do)."""
    bounds, counts = point.explicit_bounds, point.bucket_counts
    if counts and len(counts) != len(bounds) + 1:
        return f"{len(counts)} bucket_counts for {len(bounds)} explicit_bounds (expected {len(bounds) + 1})"
    if any(not math.isfinite(b) for b in bounds) or any(a >= b for a, b in itertools.pairwise(bounds)):
        return "explicit_bounds must be finite and strictly increasing"
    return None


def _map_numbers(
    points: Sequence[NumberDataPoint],
    name: str,
    kind: str,
    series: _Series,
    now: float,
    resource: int,
    label: str,
    out: Mapping,
) -> None:
    for index, point in enumerate(points):
        where = f"{label} point {index}"
        if point.flags & NO_RECORDED_VALUE:
            out.skipped += 1
            continue
        value = _number(point)
        if value is None:
            out.reject(where, "data point has no value")
            continue
        if kind == "increment" and value < 0:
            out.reject(where, f"a monotonic delta sum cannot decrease (value {format_float(value)})")
            continue
        labels, problem, size = series.labels(point.attributes)
        if problem:
            out.reject(where, problem)
            continue
        ts = timestamp(point.time_unix_nano, now)
        out.stored += ITEM_BYTES + len(name) + size
        out.points.append(MappedPoint([_item(name, labels, value, kind, ts)], where, resource))


def _map_histogram(
    point: HistogramDataPoint,
    base: str,
    kind: str,
    series: _Series,
    now: float,
    resource: int,
    where: str,
    out: Mapping,
) -> None:
    if point.flags & NO_RECORDED_VALUE:
        out.skipped += 1
        return
    problem = _histogram_shape_problem(point)
    if problem is not None:
        out.reject(where, problem)
        return
    bounds, counts = list(point.explicit_bounds), list(point.bucket_counts)
    labels, problem, size = series.labels(point.attributes, ("le",))
    if problem:
        out.reject(where, problem)
        return
    ts = timestamp(point.time_unix_nano, now)
    bucket = base + "_bucket"
    items: list[dict[str, Any]] = []
    cumulative = 0
    # Buckets count per interval; Prometheus' `le` buckets count everything at or below the bound.
    extra = 0  # the `le` labels' bytes: `,"le":"` and `"` around each bound
    for bound, count in zip(bounds, counts, strict=False):  # no counts: only the +Inf bucket
        cumulative += count
        le = format_float(bound)
        extra += len(le) + 8
        items.append(_item(bucket, {**labels, "le": le}, float(cumulative), kind, ts))
    items.append(_item(bucket, {**labels, "le": "+Inf"}, float(point.count), kind, ts))
    if point.HasField("sum"):
        items.append(_item(base + "_sum", labels, point.sum, kind, ts))
    items.append(_item(base + "_count", labels, float(point.count), kind, ts))
    out.stored += len(items) * (ITEM_BYTES + len(bucket) + size) + extra + 12  # 12: the +Inf one
    out.points.append(MappedPoint(items, where, resource))
