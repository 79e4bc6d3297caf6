"""Sparkplug B (Eclipse Sparkplug 3.0): the payload, its topics and STATE, and our points in it.

* :mod:`proto.sparkplug.model`: datatypes, metrics, properties, data sets, templates as Python values;
* :mod:`proto.sparkplug.codec`: :func:`encode_payload` / :func:`decode_payload` over the generated
  protobuf module ``sparkplug_b_pb2`` (compiled from ``sparkplug_b.proto``, see docs/sparkplug.md);
* :mod:`proto.sparkplug.topics`: ``spBv1.0/...`` topics and the primary host's STATE messages;
* :mod:`proto.sparkplug.mapping`: :class:`proto.points.Point` to a metric and back (tag types,
  OPC UA StatusCode as ``Quality``, unit as ``engUnit``).
"""

from proto.sparkplug.codec import (
    BDSEQ,
    REBIRTH,
    bdseq_metric,
    bdseq_of,
    decode_payload,
    encode_payload,
    ndeath_payload,
)
from proto.sparkplug.errors import SparkplugError, UnknownMetricError
from proto.sparkplug.model import (
    DataSet,
    DataType,
    MetaData,
    Metric,
    Parameter,
    Payload,
    PropertySet,
    PropertyValue,
    Template,
)

__all__ = [
    "BDSEQ",
    "REBIRTH",
    "DataSet",
    "DataType",
    "MetaData",
    "Metric",
    "Parameter",
    "Payload",
    "PropertySet",
    "PropertyValue",
    "SparkplugError",
    "Template",
    "UnknownMetricError",
    "bdseq_metric",
    "bdseq_of",
    "decode_payload",
    "encode_payload",
    "ndeath_payload",
]
