"""Decoding one Sparkplug B payload: :func:`proto.sparkplug.codec.decode_payload`'s reader.

Every field is checked against its datatype and our bounds as it is read; what one payload may cost
is counted down from :data:`~proto.sparkplug.model.MAX_VALUES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proto.sparkplug.errors import SparkplugError, UnknownMetricError
from proto.sparkplug.model import (
    ARRAY_TYPES,
    BY_NUMBER,
    MAX_DEPTH,
    MAX_VALUES,
    METRIC_TYPES,
    NO_PROPERTIES,
    PROPERTY_TYPES,
    SCALAR_TYPES,
    DataSet,
    DataType,
    Declared,
    FrozenPropertySet,
    MetaData,
    Metric,
    MetricValue,
    Parameter,
    PropertySet,
    PropertyValue,
    Scalar,
    Template,
)
from proto.sparkplug.values import check_name, check_text, describe, get_scalar, unpack_array

#: small property sets decoded before, by their bytes (shared and frozen), bounded
_SEEN: dict[bytes, FrozenPropertySet] = {}
_SEEN_MAX = 4096
_SEEN_MAX_BYTES = 256
_SETS = frozenset({DataType.PROPERTYSET, DataType.PROPERTYSETLIST})
_new = tuple.__new__


class Reader:
    """One payload's decode: the declared datatypes and what is left of its value budget."""

    def __init__(self, declared: Declared | None) -> None:
        self.declared: Mapping[Any, DataType] | None = declared
        self.left = MAX_VALUES

    def take(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise SparkplugError(f"the payload holds more than {MAX_VALUES} values")

    def metric(self, msg: Any, depth: int) -> Metric:
        self.take(1)
        name = msg.name if msg.HasField("name") else None
        alias = msg.alias if msg.HasField("alias") else None
        try:
            if name is not None:
                # an empty name beside an alias: "no name", as some encoders send it
                name = None if name == "" and alias is not None else check_name(name, "a metric name")
            elif alias is None:
                raise SparkplugError("a metric has neither a name nor an alias")
            datatype = self.datatype(msg, alias, name)
            kind = msg.WhichOneof("value")
            value: MetricValue = None
            if not msg.is_null and kind is not None:
                value = self.value(msg, kind, datatype, depth)
            properties = self.known_properties(msg.properties, 1) if msg.HasField("properties") \
                else NO_PROPERTIES
            metadata = _metadata(msg.metadata) if msg.HasField("metadata") else None
        except UnknownMetricError:
            raise
        except SparkplugError as exc:
            if isinstance(name, str):
                label = f"metric {describe(name)}"
            else:
                label = f"metric alias {alias}" if alias is not None else "a metric"
            raise SparkplugError(f"{label}: {exc}") from None
        # tuple.__new__: a Metric without NamedTuple's keyword-handling wrapper (a third of the decode)
        return _new(Metric, (name, datatype, value, alias, msg.timestamp if msg.HasField("timestamp") else None,
                             msg.is_historical, msg.is_transient, value is None, properties, metadata))

    def datatype(self, msg: Any, alias: int | None, name: str | None) -> DataType:
        if msg.HasField("datatype"):
            datatype = BY_NUMBER.get(msg.datatype)
            if datatype is None or datatype not in METRIC_TYPES:
                raise SparkplugError(f"datatype {msg.datatype} is not a metric datatype")
            return datatype
        found = None
        if self.declared is not None:
            if alias is not None:
                found = self.declared.get(alias)
            if found is None and name is not None:
                found = self.declared.get(name)
        if found is None:
            label = f"alias {alias}" if alias is not None else f"name {describe(name)}"
            raise UnknownMetricError(f"metric {label} has no datatype and no birth declared it", alias=alias,
                                     name=name)
        return found

    def value(self, msg: Any, kind: str, datatype: DataType, depth: int) -> MetricValue:
        if datatype in SCALAR_TYPES:
            return get_scalar(msg, kind, datatype)
        if kind == "bytes_value":
            if datatype in ARRAY_TYPES:
                items = unpack_array(datatype, msg.bytes_value, self.left)
                self.take(len(items))
                return items
            if datatype is DataType.BYTES or datatype is DataType.FILE:
                return bytes(msg.bytes_value)
        if kind == "dataset_value" and datatype is DataType.DATASET:
            return self.dataset(msg.dataset_value)
        if kind == "template_value" and datatype is DataType.TEMPLATE:
            if depth >= MAX_DEPTH:
                raise SparkplugError(f"templates nested deeper than {MAX_DEPTH}")
            return self.template(msg.template_value, depth + 1)
        raise SparkplugError(f"a {datatype.name} cannot be carried in {kind}")

    def dataset(self, msg: Any) -> DataSet:
        columns = tuple(check_name(c, "a DataSet column") for c in msg.columns)
        types = tuple(BY_NUMBER.get(t, DataType.UNKNOWN) for t in msg.types)
        if len(types) != len(columns) or (msg.HasField("num_of_columns") and msg.num_of_columns != len(columns)):
            raise SparkplugError(f"a DataSet of {len(columns)} columns has {len(types)} types "
                                 f"and num_of_columns {msg.num_of_columns}")
        for column, datatype in zip(columns, types, strict=True):
            if datatype not in SCALAR_TYPES:
                raise SparkplugError(f"DataSet column {describe(column)} has no scalar datatype")
        self.take(len(columns) + len(msg.rows) * len(columns))
        rows = []
        for row in msg.rows:
            if len(row.elements) != len(types):
                raise SparkplugError(f"a DataSet row of {len(row.elements)} cells in {len(types)} columns")
            rows.append(tuple(_cell(e, t) for e, t in zip(row.elements, types, strict=True)))
        return DataSet(columns, types, tuple(rows))

    def template(self, msg: Any, depth: int) -> Template:
        self.take(len(msg.parameters))
        parameters = []
        for p in msg.parameters:
            datatype = BY_NUMBER.get(p.type)
            if datatype is None or datatype not in SCALAR_TYPES:
                raise SparkplugError(f"template parameter type {p.type} is not a scalar datatype")
            parameters.append(Parameter(check_name(p.name, "a parameter name"), datatype, _cell(p, datatype)))
        # members of a template always carry their datatype: the births' aliases do not apply inside
        inner = Reader(None)
        inner.left = self.left
        metrics = tuple(inner.metric(m, depth) for m in msg.metrics)
        self.left = inner.left
        return Template(metrics, tuple(parameters),
                        check_text(msg.version, "a template version") if msg.HasField("version") else None,
                        check_text(msg.template_ref, "a template_ref") if msg.HasField("template_ref") else None,
                        msg.is_definition)

    def known_properties(self, msg: Any, depth: int) -> PropertySet:
        """A metric's property set, decoded once per distinct small set: most metrics of a node
        carry one of a few (``Quality`` 192, ...), so their decode is one dictionary look-up."""
        wire = msg.SerializeToString()
        found = _SEEN.get(wire)
        if found is not None:
            self.take(len(found))
            return found
        decoded = self.properties(msg, depth)
        if len(wire) > _SEEN_MAX_BYTES or any(v.type in _SETS for v in decoded.values()):
            return decoded  # large, or holding sets of its own (mutable dicts: never shared)
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        frozen = _SEEN[wire] = FrozenPropertySet(decoded)
        frozen.wire = wire
        return frozen

    def properties(self, msg: Any, depth: int) -> PropertySet:
        if depth > MAX_DEPTH:
            raise SparkplugError(f"property sets nested deeper than {MAX_DEPTH}")
        if len(msg.keys) != len(msg.values):
            raise SparkplugError(f"a property set of {len(msg.keys)} keys has {len(msg.values)} values")
        self.take(len(msg.keys))
        out: dict[str, PropertyValue] = {}
        for key, prop in zip(msg.keys, msg.values, strict=True):
            key = check_name(key, "a property key")
            if key in out:
                raise SparkplugError(f"property {describe(key)} twice in one set")
            datatype = BY_NUMBER.get(prop.type)
            if datatype is None or datatype not in PROPERTY_TYPES:
                raise SparkplugError(f"property {describe(key)}: type {prop.type} is not a property datatype")
            kind = prop.WhichOneof("value")
            value: Scalar | PropertySet | tuple[PropertySet, ...] | None = None
            try:
                if prop.is_null or kind is None:
                    value = None
                elif datatype is DataType.PROPERTYSET and kind == "propertyset_value":
                    value = self.properties(prop.propertyset_value, depth + 1)
                elif datatype is DataType.PROPERTYSETLIST and kind == "propertysets_value":
                    sets = prop.propertysets_value.propertyset
                    self.take(len(sets))
                    value = tuple(self.properties(s, depth + 1) for s in sets)
                elif datatype in SCALAR_TYPES:
                    value = get_scalar(prop, kind, datatype)
                else:
                    raise SparkplugError(f"a {datatype.name} cannot be carried in {kind}")
            except SparkplugError as exc:
                raise SparkplugError(f"property {describe(key)}: {exc}") from None
            out[key] = PropertyValue(datatype, value)
        return out


def _cell(msg: Any, datatype: DataType) -> Scalar | None:
    """A data set cell or template parameter value (None: none set)."""
    kind = msg.WhichOneof("value")
    return None if kind is None else get_scalar(msg, kind, datatype)


def _metadata(msg: Any) -> MetaData:
    fields: list[Any] = []
    for field in MetaData._fields:
        if not msg.HasField(field):
            fields.append(None)
            continue
        item = getattr(msg, field)
        fields.append(check_text(item, f"metadata {field}") if isinstance(item, (str, bytes)) else item)
    return MetaData(*fields)
