"""The canonical value types of a tag, shared by every protocol, the normalizer and the wire.

Protocols name their types differently (S7 ``DINT``, Logix ``REAL``, OPC UA ``Int32``); the plant
config accepts the IEC 61131-3 names as aliases and every driver works with the canonical names.

A ``datetime`` tag's value is a :class:`DateTime`: a point in time as whole Unix milliseconds (UTC),
1970-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z. Milliseconds because the contract's
timestamps, Sparkplug's DateTime and the historian's ``value`` (float8, exact for integers up to
2^53, i.e. milliseconds up to the year 287,396 but microseconds only up to 2255) all hold them
exactly; finer sources (OPC UA's 100 ns ticks, S7 DTL's nanoseconds) are cut to the millisecond
below. No earlier dates: Sparkplug's DateTime is an unsigned count from 1970; none later: ISO 8601
years have four digits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

#: the scalar types: numbers, bool and string; what a tag may be in every driver
TYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
         "float32", "float64", "string")
#: a point in time (value: :class:`DateTime`); only the drivers that read one accept it (OPC UA, S7)
DATETIME = "datetime"
#: every canonical tag type
ALL_TYPES = (*TYPES, DATETIME)

#: IEC 61131-3 elementary type names (used by S7 and Logix) -> canonical type
ALIASES = {"byte": "uint8", "sint": "int8", "usint": "uint8", "int": "int16", "uint": "uint16", "word": "uint16",
           "dint": "int32", "udint": "uint32", "dword": "uint32", "lint": "int64", "ulint": "uint64",
           "lword": "uint64", "real": "float32", "lreal": "float64", "float": "float32", "double": "float64",
           "date_and_time": DATETIME, "dt": DATETIME, "dtl": DATETIME}

#: inclusive range of each integer type
INT_RANGES = {"int8": (-2**7, 2**7 - 1), "uint8": (0, 2**8 - 1), "int16": (-2**15, 2**15 - 1),
              "uint16": (0, 2**16 - 1), "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
              "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1)}


def canonical_type(name: str) -> str | None:
    """The canonical type for ``name`` (case-insensitive, aliases allowed), or None if unknown."""
    low = name.lower()
    if low in ALL_TYPES:
        return low
    return ALIASES.get(low)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
#: the earliest and the latest datetime value, Unix ms: 1970-01-01T00:00:00.000Z, 9999-12-31T23:59:59.999Z
MIN_DATETIME_MS = 0
MAX_DATETIME_MS = 253_402_300_799_999


class DateTime:
    """The value of a ``datetime`` tag: whole Unix milliseconds, UTC, in
    ``MIN_DATETIME_MS .. MAX_DATETIME_MS`` (checked here, so every DateTime is a valid one).

    Not an ``int``: a datetime must not pass silently where a number is expected (a scale, a
    window's average, a numeric write). Immutable, hashable, equal by its milliseconds.
    """

    __slots__ = ("ms",)
    ms: int

    def __init__(self, ms: int) -> None:
        if type(ms) is not int or not MIN_DATETIME_MS <= ms <= MAX_DATETIME_MS:
            raise ValueError(f"a datetime is whole Unix milliseconds in {MIN_DATETIME_MS}..{MAX_DATETIME_MS} "
                             f"(1970-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z), got {_brief(ms)}")
        object.__setattr__(self, "ms", ms)

    @classmethod
    def of(cls, dt: datetime) -> DateTime:
        """``dt`` (timezone-aware) cut to the millisecond below; ValueError when naive or out of range."""
        if dt.tzinfo is None or dt.utcoffset() is None:
            raise ValueError(f"{dt.isoformat()} has no time zone")
        return cls((dt - _EPOCH) // _ONE_MS)

    @classmethod
    def parse(cls, text: str) -> DateTime:
        """ISO 8601 text with a time zone (``2026-12-02T10:00:00.123Z``, ``...+01:00``); finer than a
        millisecond is cut. ValueError for other text, text without a zone, or a date out of range."""
        if len(text) > 40:
            raise ValueError(f"{text[:40]!r}... is not an ISO 8601 date and time")
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not an ISO 8601 date and time (e.g. 2026-12-02T10:00:00.123Z)") from exc
        if dt.tzinfo is None:
            raise ValueError(f"{text!r} has no time zone; add Z for UTC or an offset like +01:00")
        ms = (dt - _EPOCH) // _ONE_MS
        if not MIN_DATETIME_MS <= ms <= MAX_DATETIME_MS:
            raise ValueError(f"{text!r} is outside 1970-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z")
        return cls(ms)

    def to_datetime(self) -> datetime:
        """The same instant as a timezone-aware (UTC) :class:`datetime`."""
        return _EPOCH + timedelta(milliseconds=self.ms)

    def iso(self) -> str:
        """ISO 8601 UTC with milliseconds and a Z: ``2026-12-02T10:00:00.123Z`` (the historian's value_text)."""
        return self.to_datetime().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("DateTime is immutable")

    def __eq__(self, other: object) -> bool:
        return other.__class__ is DateTime and self.ms == other.ms

    def __hash__(self) -> int:
        return hash((DateTime, self.ms))

    def __lt__(self, other: DateTime) -> bool:
        return self.ms < other.ms

    def __repr__(self) -> str:
        return f"DateTime({self.ms})"

    def __reduce__(self) -> tuple[type[DateTime], tuple[int]]:
        return DateTime, (self.ms,)


def _brief(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if -10**30 < value < 10**30 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float) or value is None or isinstance(value, bool):
        return repr(value)
    return type(value).__name__
