"""OTLP log records to tripwire log events (`{"service","level","message","labels","timestamp"}`).

- `service`: the resource's `service.name` (OTel's default `unknown_service` when unset).
- `level`: from `severity_number` (the OTel log data model's ranges: 1-4 trace, 5-8 debug, 9-12 info, 13-16
  warn, 17-20 error, 21-24 fatal), else from `severity_text` (common spellings such as WARNING, CRITICAL,
  notice), else `info`.
- `message`: the body; a string as it is, any other value as JSON. Longer than an event allows: truncated.
- `labels`: `instance` (from `service.instance.id`), `service_namespace`, scope labels and promoted resource
  attributes as for metrics, then the record's attributes (sanitised like metric labels; `event_name` too).
  Every event becomes a `log_events_total` sample, so labels are series labels: attributes with a value per
  record (`exception.message`, `exception.stacktrace`, `code.lineno`, trace and span ids copied into
  attributes: `UNBOUNDED_ATTRIBUTES`) are left out, and past `collector.max_labels` the remaining
  attributes are dropped, with a warning in the response, rather than losing the record.
- `timestamp`: `time_unix_nano`, else `observed_time_unix_nano`, else the receive time.

Trace and span ids are not mapped: as labels they would make every record a series of its own.
"""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from services.collector.ingest import IngestLimits, quoted
from services.collector.otlp_metrics import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_NAMESPACE,
    MappedPoint,
    Mapping,
    OtlpOptions,
    ResourceContext,
    any_value_text,
    attribute_labels,
    fit_labels,
    scope_labels,
    timestamp,
)

DEFAULT_SERVICE = "unknown_service"
MAX_MESSAGE_LENGTH = 65536  # shared.events.LogEvent.message
# Attributes whose values are per record, or nearly: as labels each would make a log_events_total series of
# its own. Exception texts, stacks and line numbers (the Python SDK's LoggingHandler adds code.* to every
# record: file and function stay, one series per function is fine), and trace ids that logging
# integrations copy into attributes.
UNBOUNDED_ATTRIBUTES = frozenset(
    {
        "exception.message",
        "exception.stacktrace",
        "code.stacktrace",
        "code.lineno",
        "code.line.number",
        "code.column",
        "code.column.number",
        "trace_id",
        "span_id",
        "trace.id",
        "span.id",
        "otelTraceID",
        "otelSpanID",
        "otelTraceSampled",
        "log.record.uid",
    }
)
# Labels the event's own fields use: attributes with these names become exported_*.
EVENT_FIELDS = ("service", "level")

_SEVERITY_RANGES = ((21, "fatal"), (17, "error"), (13, "warn"), (9, "info"), (5, "debug"), (1, "trace"))
_SEVERITY_TEXTS = {
    "trace": "trace",
    "finest": "trace",
    "finer": "trace",
    "debug": "debug",
    "fine": "debug",
    "config": "debug",
    "info": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "err": "error",
    "severe": "error",
    "fatal": "fatal",
    "critical": "fatal",
    "crit": "fatal",
    "alert": "fatal",
    "emerg": "fatal",
    "emergency": "fatal",
    "panic": "fatal",
}


def level_of(severity_number: int, severity_text: str) -> str:
    """One of trace/debug/info/warn/error/fatal for a record's severity."""
    if 1 <= severity_number <= 24:
        return next(name for floor, name in _SEVERITY_RANGES if severity_number >= floor)
    # OTel's short names carry a digit (WARN2, ERROR3): the word decides.
    text = severity_text.strip().lower().rstrip("0123456789")
    return _SEVERITY_TEXTS.get(text, "info")


def map_logs(
    request: ExportLogsServiceRequest, now: float, limits: IngestLimits, options: OtlpOptions
) -> Mapping:
    """Every log record of `request` as a log event (or a reason it cannot be one)."""
    out = Mapping(stored=2)  # the brackets of the one entry a logs request is stored as
    index = 0  # records are numbered across the whole request, so a reason points at one record
    for r_index, resource_logs in enumerate(request.resource_logs):
        resource = ResourceContext.of(resource_logs.resource, options)
        service = resource.attributes.get(SERVICE_NAME) or DEFAULT_SERVICE
        base: dict[str, str] = {}
        if resource.attributes.get(SERVICE_INSTANCE_ID):
            base["instance"] = resource.attributes[SERVICE_INSTANCE_ID]
        if resource.attributes.get(SERVICE_NAMESPACE):
            base["service_namespace"] = resource.attributes[SERVICE_NAMESPACE]
        for scope_logs in resource_logs.scope_logs:
            fixed = {**base, **scope_labels(scope_logs.scope, scope_logs.schema_url, options)}
            for record in scope_logs.log_records:
                where = f"log record {index} (service {quoted(service)})"
                index += 1
                if len(service) > limits.max_name_length:
                    out.reject(
                        where,
                        f"service.name is longer than {limits.max_name_length} characters "
                        "(collector.max_name_length)",
                    )
                    continue
                event = _event(record, service, fixed, resource.promoted, now, limits, out)
                out.stored += len(orjson.dumps(event)) + 1  # exactly, with its comma
                out.points.append(MappedPoint([event], where, r_index))
    return out


def _event(
    record: LogRecord,
    service: str,
    fixed: dict[str, str],
    promoted: dict[str, str],
    now: float,
    limits: IngestLimits,
    out: Mapping,
) -> dict[str, Any]:
    labels = _labels(record, fixed, promoted, limits, out)
    message = any_value_text(record.body)
    if len(message) > MAX_MESSAGE_LENGTH:
        message = message[: MAX_MESSAGE_LENGTH - 1] + "…"
        out.warn(f"log message truncated to {MAX_MESSAGE_LENGTH} characters")
    ts = timestamp(record.time_unix_nano or record.observed_time_unix_nano, now)
    return {
        "service": service,
        "level": level_of(record.severity_number, record.severity_text),
        "message": message,
        "labels": labels,
        "timestamp": ts,
    }


def _labels(
    record: LogRecord, fixed: dict[str, str], promoted: dict[str, str], limits: IngestLimits, out: Mapping
) -> dict[str, str]:
    """Fixed labels first, then attributes in name order until the limit; over-long ones are dropped. A
    record is never lost over its labels: they describe it, the record is the data."""
    reserved = (*EVENT_FIELDS, *fixed)
    attributes = attribute_labels(record.attributes, reserved, skip=UNBOUNDED_ATTRIBUTES)
    if record.event_name:
        attributes.setdefault("event_name", record.event_name)
    for name, value in promoted.items():
        attributes.setdefault(name, value)
    return fit_labels(fixed, attributes, limits, out, "log attributes")
