"""The Sparkplug B payload as Python values: datatypes, metrics, properties, data sets, templates.

Plain NamedTuples (cheap to build by the thousand, like :class:`proto.points.Point`), encoded and
decoded by :mod:`proto.sparkplug.codec`. Values are Python values, never wire forms: a signed
integer is negative here and two's complement only on the wire, a DateTime is Unix milliseconds
(an int), an array is a tuple.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple, TypeAlias

#: Largest payload :func:`proto.sparkplug.codec.decode_payload` reads (bytes). A birth of a node with
#: tens of thousands of metrics and their properties fits; anything larger is refused unread.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
#: Most values one payload may decode into: metrics (also inside templates), properties, array
#: items, data set cells and template parameters together. Bounds the memory of a decode whatever the
#: bytes say (a 1-bit-per-item BooleanArray of 8 MiB would be 64 million items).
MAX_VALUES = 1_000_000
#: Most metrics one payload may hold at its top level (a birth of a very large edge node fits).
MAX_METRICS = 100_000
#: Longest metric name, property key, data set column or template parameter name (characters).
MAX_NAME_CHARS = 1024
#: Longest String, Text or UUID value (characters); a longer one is a broken or hostile sender.
MAX_TEXT_CHARS = 1024 * 1024
#: Deepest nesting of templates in templates and property sets in property sets.
MAX_DEPTH = 8


class DataType(enum.IntEnum):
    """Sparkplug B datatypes, with the numbers of the specification's ``DataType`` enum."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13  #: Unix milliseconds
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20  #: property values only
    PROPERTYSETLIST = 21  #: property values only
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34


#: DataType by number: a plain int finds its member too (and ``is`` comparisons hold after it)
BY_NUMBER = {int(t): t for t in DataType}
#: bits of each integer datatype (DateTime is an unsigned 64-bit count of milliseconds)
SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
UNSIGNED_BITS = {DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64,
                 DataType.DATETIME: 64}
#: integer datatypes carried in the 64-bit ``long_value``; the others in the 32-bit ``int_value``
LONG_TYPES = frozenset({DataType.INT64, DataType.UINT64, DataType.DATETIME})
INTEGER_TYPES = frozenset(SIGNED_BITS) | frozenset(UNSIGNED_BITS)
STRING_TYPES = frozenset({DataType.STRING, DataType.TEXT, DataType.UUID})
#: the datatypes a property value, a data set column and a template parameter can hold besides sets
SCALAR_TYPES = INTEGER_TYPES | STRING_TYPES | {DataType.FLOAT, DataType.DOUBLE, DataType.BOOLEAN}
ARRAY_TYPES = frozenset(DataType(n) for n in range(DataType.INT8_ARRAY, DataType.DATETIME_ARRAY + 1))
#: what a metric may be
METRIC_TYPES = SCALAR_TYPES | ARRAY_TYPES | {DataType.BYTES, DataType.FILE, DataType.DATASET, DataType.TEMPLATE}
PROPERTY_TYPES = SCALAR_TYPES | {DataType.PROPERTYSET, DataType.PROPERTYSETLIST}

#: a value a property, data set cell or template parameter holds (None: null)
Scalar: TypeAlias = int | float | bool | str
#: an array metric's value: decoded as a tuple; a list is encoded as well
ArrayValue: TypeAlias = (tuple[int, ...] | tuple[float, ...] | tuple[bool, ...] | tuple[str, ...]
                         | list[int] | list[float] | list[bool] | list[str])


class MetaData(NamedTuple):
    """A metric's optional metadata (mostly for File and multi-part Bytes metrics)."""

    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


class PropertyValue(NamedTuple):
    """One property: a scalar of ``type``, a property set (``PROPERTYSET``), a tuple of property sets
    (``PROPERTYSETLIST``), or None (null)."""

    type: DataType
    value: Scalar | PropertySet | tuple[PropertySet, ...] | None = None


#: keys to values; the order is kept on the wire
PropertySet: TypeAlias = Mapping[str, PropertyValue]


class FrozenPropertySet(Mapping[str, PropertyValue]):
    """A property set that never changes (it keeps its own copy; a set nested in it must not change
    either): the codec writes its bytes once and reuses them for every metric that carries it, e.g.
    the ``Quality`` of every good point. Decoding returns the small sets it saw before as these."""

    __slots__ = ("_items", "wire")

    def __init__(self, items: Mapping[str, PropertyValue] | None = None) -> None:
        self._items: dict[str, PropertyValue] = dict(items or {})
        #: its encoded PropertySet message, set by the codec the first time it writes it
        self.wire: bytes | None = None

    def __getitem__(self, key: str) -> PropertyValue:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"FrozenPropertySet({self._items!r})"


#: the properties of a metric without any (shared)
NO_PROPERTIES: PropertySet = FrozenPropertySet()


class DataSet(NamedTuple):
    """A table: ``columns`` names, ``types`` (one scalar datatype per column), ``rows`` of cells
    (None: an empty cell)."""

    columns: tuple[str, ...]
    types: tuple[DataType, ...]
    rows: tuple[tuple[Scalar | None, ...], ...] = ()


class Parameter(NamedTuple):
    """A template parameter."""

    name: str
    type: DataType
    value: Scalar | None = None


class Template(NamedTuple):
    """A template definition (``is_definition``, in NBIRTH) or an instance (``template_ref`` names
    its definition)."""

    metrics: tuple[Metric, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    version: str | None = None
    template_ref: str | None = None
    is_definition: bool = False


MetricValue: TypeAlias = Scalar | bytes | ArrayValue | DataSet | Template | None


class Metric(NamedTuple):
    """One metric.

    ``name`` or ``alias`` (or both) identify it: births declare both, DATA and CMD messages may
    send the alias alone. ``value`` None is a null metric (``is_null`` is then True once decoded;
    encoding writes ``is_null`` for it). ``timestamp``: Unix ms of the value, None to let the
    payload's timestamp stand.
    """

    name: str | None
    datatype: DataType
    value: MetricValue = None
    alias: int | None = None
    timestamp: int | None = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    properties: PropertySet = NO_PROPERTIES
    metadata: MetaData | None = None


class Payload(NamedTuple):
    """A whole Sparkplug B message body. ``seq`` is 0..255 (None in NDEATH and STATE-less uses)."""

    timestamp: int | None = None
    seq: int | None = None
    metrics: Sequence[Metric] = ()
    uuid: str | None = None
    body: bytes | None = None


#: the datatypes the births declared, by alias (int) and by name (str): how DATA is decoded
Declared: TypeAlias = Mapping[int, DataType] | Mapping[str, DataType] | Mapping[int | str, DataType]
