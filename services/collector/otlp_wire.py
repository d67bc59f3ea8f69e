"""OTLP metrics requests whose data points keep their attributes as the bytes they arrived in.

Reading a data point's attributes through the protobuf runtime builds Python objects for every KeyValue and
AnyValue: about 4 µs for four attributes, most of what an OTLP data point cost the collector. Yet an SDK
sends the same attribute sets in every export, so the collector maps each distinct set to labels once
(`otlp_metrics.LabelSetCache`) and only needs a key for the rest: the serialized attributes themselves.

`RawAttributesRequest` is ExportMetricsServiceRequest parsed from a copy of the OTLP metrics schema, built
here at import in a private descriptor pool, in which every data point's `attributes` (a repeated KeyValue)
is declared `repeated bytes`. An embedded message and a bytes field share one wire format (length-delimited),
so the same body parses either way; each element is then one serialized KeyValue, which `decode_attributes`
decodes when its set is new. Everything else in the copy is the real schema, field for field.

What the private copy does not check: the inside of those KeyValues (UTF-8, nesting depth, malformed
bytes). So a protobuf body is parsed with the real schema first, which checks everything as before and
costs a tenth of what the attributes did (`otlp._decode`), then with this one for the mapping;
`decode_attributes` only ever sees KeyValues the real parse accepted.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

_REQUEST = "opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest"


def _raw_attributes_pool() -> descriptor_pool.DescriptorPool:
    """The OTLP metrics files, in dependency order, with data point attributes re-declared as bytes."""
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, metrics_pb2, metrics_service_pb2):
        file = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file)
        if module is metrics_pb2:
            changed = 0
            for message in file.message_type:
                if not message.name.endswith("DataPoint"):
                    continue
                for field in message.field:
                    if field.name == "attributes":
                        field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                        field.ClearField("type_name")
                        changed += 1
            if changed == 0:  # not the schema this module knows: fail at start, not on every request
                raise RuntimeError("OTLP metrics schema: no data point type with attributes found")
        pool.Add(file)
    return pool


RawAttributesRequest: type[Message] = message_factory.GetMessageClass(
    _raw_attributes_pool().FindMessageTypeByName(_REQUEST)
)


def raw_attributes_request(request: Message) -> Message:
    """`request` (an ExportMetricsServiceRequest of either schema) as a RawAttributesRequest."""
    if isinstance(request, RawAttributesRequest):
        return request
    return RawAttributesRequest.FromString(request.SerializeToString())


def decode_attributes(attributes: Sequence[bytes]) -> list[KeyValue]:
    """Serialized KeyValues as messages. Raises google.protobuf.message.DecodeError for a malformed one,
    which cannot happen in a request the real schema parsed."""
    try:
        return [KeyValue.FromString(attribute) for attribute in attributes]
    except (ValueError, RecursionError) as exc:  # the pure-Python backend's bad UTF-8 and deep nesting
        raise DecodeError(str(exc)) from exc
