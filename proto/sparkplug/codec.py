"""Sparkplug B payloads to bytes and back, over the generated protobuf classes.

:func:`encode_payload` writes a :class:`~proto.sparkplug.model.Payload`; :func:`decode_payload`
reads untrusted bytes and either returns a complete Payload or raises
:class:`~proto.sparkplug.errors.SparkplugError` (a :class:`proto.errors.ContractError`) saying
what is wrong: no protobuf exception gets out, and what one payload may cost is bounded
(:data:`~proto.sparkplug.model.MAX_PAYLOAD_BYTES`, :data:`~proto.sparkplug.model.MAX_VALUES`).

DATA and CMD messages usually carry no datatype (the specification says they should not): the
decoder then takes it from ``declared``, the datatypes the births declared by alias and by name,
and raises :class:`~proto.sparkplug.errors.UnknownMetricError` for a metric it cannot type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import DecodeError

from proto.sparkplug import sparkplug_b_pb2 as pb
from proto.sparkplug.errors import SparkplugError
from proto.sparkplug.model import (
    ARRAY_TYPES,
    BY_NUMBER,
    MAX_DEPTH,
    MAX_METRICS,
    MAX_PAYLOAD_BYTES,
    METRIC_TYPES,
    PROPERTY_TYPES,
    SCALAR_TYPES,
    DataSet,
    DataType,
    Declared,
    FrozenPropertySet,
    MetaData,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    Template,
)
from proto.sparkplug.reader import Reader
from proto.sparkplug.values import check_name, check_text, describe, pack_array, put_scalar

#: the metric every NBIRTH and NDEATH carries: the birth/death sequence number, an Int64 (0..255)
BDSEQ = "bdSeq"
#: the Boolean metric of NBIRTH a host writes true (NCMD) to ask for every birth again
REBIRTH = "Node Control/Rebirth"
_METADATA_FIELDS = MetaData._fields


# ---------------------------------------------------------------------------------------- encode

def encode_payload(payload: Payload, *, with_datatypes: bool = True) -> bytes:
    """The bytes of ``payload``. ``with_datatypes=False`` leaves every metric's datatype off the
    wire (DATA and CMD messages, where the births declared them)."""
    msg = pb.Payload()
    try:
        if payload.timestamp is not None:
            msg.timestamp = payload.timestamp
        if payload.seq is not None:
            if type(payload.seq) is not int or not 0 <= payload.seq <= 255:
                raise SparkplugError(f"seq must be 0..255, got {describe(payload.seq)}")
            msg.seq = payload.seq
        if payload.uuid is not None:
            msg.uuid = check_text(payload.uuid, "uuid")
        if payload.body is not None:
            msg.body = bytes(payload.body)
    except (ValueError, TypeError) as exc:
        raise SparkplugError(f"payload header: {exc}") from None
    add = msg.metrics.add
    for metric in payload.metrics:
        _put_metric(add(), metric, with_datatypes, 0)
    return msg.SerializeToString()


def _label(metric: Metric) -> str:
    if metric.name is not None:
        return f"metric {describe(metric.name)}"
    return f"metric alias {describe(metric.alias)}"


def _put_metric(target: Any, metric: Metric, with_datatype: bool, depth: int) -> None:
    try:
        name, alias, value = metric.name, metric.alias, metric.value
        datatype = BY_NUMBER.get(metric.datatype)  # a plain int too, and the `is` tests below hold
        if name is not None:
            target.name = check_name(name, "a metric name")
        elif alias is None:
            raise SparkplugError("a metric needs a name or an alias")
        if alias is not None:
            target.alias = alias
        if metric.timestamp is not None:
            target.timestamp = metric.timestamp
        if datatype is None or datatype not in METRIC_TYPES:
            raise SparkplugError(f"{describe(metric.datatype)} is not a metric datatype")
        if with_datatype:
            target.datatype = datatype
        if metric.is_historical:
            target.is_historical = True
        if metric.is_transient:
            target.is_transient = True
        if value is None:
            target.is_null = True
        elif metric.is_null:
            raise SparkplugError("is_null with a value")
        elif datatype in SCALAR_TYPES:
            put_scalar(target, datatype, value)
        else:
            _put_complex(target, datatype, value, with_datatype, depth)
        properties = metric.properties
        if type(properties) is FrozenPropertySet:
            wire = properties.wire
            if wire is None:
                if properties:
                    _put_properties(target.properties, properties, 1)  # property sets count their own nesting
                properties.wire = target.properties.SerializeToString() if properties else b""
            elif wire:
                target.properties.MergeFromString(wire)
        elif properties:
            _put_properties(target.properties, properties, 1)
        if metric.metadata is not None:
            for field, item in zip(_METADATA_FIELDS, metric.metadata, strict=True):
                if item is not None:
                    setattr(target.metadata, field, item)
    except (ValueError, TypeError) as exc:  # ours, or protobuf refusing a field (a negative alias)
        raise SparkplugError(f"{_label(metric)}: {exc}") from None


def _put_complex(target: Any, datatype: DataType, value: object, with_datatype: bool, depth: int) -> None:
    if datatype in ARRAY_TYPES:
        target.bytes_value = pack_array(datatype, value)  # type: ignore[arg-type]  # pack_array checks it
    elif datatype is DataType.BYTES or datatype is DataType.FILE:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise SparkplugError(f"a {datatype.name} needs bytes, got {describe(value)}")
        target.bytes_value = bytes(value)
    elif datatype is DataType.DATASET:
        if not isinstance(value, DataSet):
            raise SparkplugError(f"a DataSet needs a DataSet, got {describe(value)}")
        _put_dataset(target.dataset_value, value)
    else:
        if not isinstance(value, Template):
            raise SparkplugError(f"a Template needs a Template, got {describe(value)}")
        if depth >= MAX_DEPTH:
            raise SparkplugError(f"templates nested deeper than {MAX_DEPTH}")
        _put_template(target.template_value, value, with_datatype, depth + 1)


def _put_dataset(target: Any, ds: DataSet) -> None:
    if not len(ds.columns) == len(ds.types):
        raise SparkplugError(f"a DataSet of {len(ds.columns)} columns has {len(ds.types)} types")
    target.num_of_columns = len(ds.columns)
    types: list[DataType] = []
    for column, number in zip(ds.columns, ds.types, strict=True):
        datatype = BY_NUMBER.get(number)
        if datatype is None or datatype not in SCALAR_TYPES:
            raise SparkplugError(f"DataSet column {describe(column)}: {describe(number)} is not a scalar datatype")
        target.columns.append(check_name(column, "a DataSet column"))
        target.types.append(datatype)
        types.append(datatype)
    for row in ds.rows:
        if len(row) != len(types):
            raise SparkplugError(f"a DataSet row of {len(row)} cells in {len(types)} columns")
        elements = target.rows.add().elements
        for cell, datatype in zip(row, types, strict=True):
            element = elements.add()
            if cell is not None:
                put_scalar(element, datatype, cell)


def _put_template(target: Any, template: Template, with_datatype: bool, depth: int) -> None:
    if template.version is not None:
        target.version = check_text(template.version, "a template version")
    if template.template_ref is not None:
        target.template_ref = check_text(template.template_ref, "a template_ref")
    if template.is_definition:
        target.is_definition = True
    for metric in template.metrics:
        _put_metric(target.metrics.add(), metric, with_datatype, depth)
    for param in template.parameters:
        datatype = BY_NUMBER.get(param.type)
        if datatype is None or datatype not in SCALAR_TYPES:
            raise SparkplugError(f"parameter {describe(param.name)}: {describe(param.type)} is not a scalar datatype")
        out = target.parameters.add()
        out.name = check_name(param.name, "a parameter name")
        out.type = datatype
        if param.value is not None:
            put_scalar(out, datatype, param.value)


def _put_properties(target: Any, properties: PropertySet, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise SparkplugError(f"property sets nested deeper than {MAX_DEPTH}")
    for key, prop in properties.items():
        target.keys.append(check_name(key, "a property key"))
        out = target.values.add()
        datatype = BY_NUMBER.get(prop.type) if isinstance(prop, PropertyValue) else None
        if datatype is None or datatype not in PROPERTY_TYPES:
            raise SparkplugError(f"property {describe(key)} must be a PropertyValue of a property datatype")
        out.type = datatype
        value = prop.value
        if value is None:
            out.is_null = True
        elif datatype is DataType.PROPERTYSET:
            if not isinstance(value, Mapping):
                raise SparkplugError(f"property {describe(key)}: a PropertySet needs a mapping")
            _put_properties(out.propertyset_value, value, depth + 1)
        elif datatype is DataType.PROPERTYSETLIST:
            if not isinstance(value, (tuple, list)) or not all(isinstance(v, Mapping) for v in value):
                raise SparkplugError(f"property {describe(key)}: a PropertySetList needs a tuple of mappings")
            for item in value:
                _put_properties(out.propertysets_value.propertyset.add(), item, depth + 1)
        else:
            try:
                put_scalar(out, datatype, value)
            except SparkplugError as exc:
                raise SparkplugError(f"property {describe(key)}: {exc}") from None


# ---------------------------------------------------------------------------------------- decode

def decode_payload(data: bytes, *, declared: Declared | None = None) -> Payload:
    """The payload in ``data``, validated completely.

    ``declared``: the datatypes of the metrics the births declared, by alias (int) and by name
    (str), used for metrics that arrive without one (DATA, CMD).
    """
    if len(data) > MAX_PAYLOAD_BYTES:
        raise SparkplugError(f"a payload of {len(data)} bytes is larger than {MAX_PAYLOAD_BYTES}")
    msg = pb.Payload()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise SparkplugError(f"not a Sparkplug B payload ({len(data)} bytes): {exc}") from None
    if len(msg.metrics) > MAX_METRICS:
        raise SparkplugError(f"a payload of {len(msg.metrics)} metrics holds more than {MAX_METRICS}")
    reader = Reader(declared)
    seq = msg.seq if msg.HasField("seq") else None
    if seq is not None and seq > 255:
        raise SparkplugError(f"seq must be 0..255, got {seq}")
    metrics = [reader.metric(m, 0) for m in msg.metrics]
    return Payload(
        timestamp=msg.timestamp if msg.HasField("timestamp") else None,
        seq=seq,
        metrics=metrics,
        uuid=check_text(msg.uuid, "uuid") if msg.HasField("uuid") else None,
        body=msg.body if msg.HasField("body") else None,
    )


# ---------------------------------------------------------------------------------------- births and deaths

def bdseq_metric(bd_seq: int) -> Metric:
    """The ``bdSeq`` metric of an NBIRTH and of the NDEATH registered as its will (same number)."""
    if type(bd_seq) is not int or not 0 <= bd_seq <= 255:
        raise SparkplugError(f"bdSeq must be 0..255, got {describe(bd_seq)}")
    return Metric(BDSEQ, DataType.INT64, bd_seq)


def ndeath_payload(bd_seq: int, *, timestamp: int | None = None) -> bytes:
    """An NDEATH: only the ``bdSeq`` metric (by name, never an alias), no ``seq``."""
    return encode_payload(Payload(timestamp=timestamp, metrics=(bdseq_metric(bd_seq),)))


def bdseq_of(payload: Payload) -> int | None:
    """The ``bdSeq`` of an NBIRTH or NDEATH, or None when it has none (or not as an integer)."""
    for metric in payload.metrics:
        if metric.name == BDSEQ and isinstance(metric.value, int) and not isinstance(metric.value, bool):
            return metric.value
    return None
