"""S7 configuration and data: connection settings, Siemens absolute addresses, value bytes.

A tag's address is written as Siemens does (``DB1.DBD4``, ``DB1.DBX0.3``, ``MW20``, ``I0.1``, ``QB1``,
``DB2.DBS10`` for a STRING; German ``E``/``A`` for I/Q) or with the explicit keys
``area``/``db``/``offset``/``bit``. Values are big-endian as S7 stores them; a STRING is its
max-length byte, its actual-length byte and single-byte characters.

``datetime`` tags read DATE_AND_TIME (``DB1.DBDT16``, 8 bytes of BCD: year 90..99 = 1990s, 00..89 =
2000..2089, month, day, hour, minute, second, the millisecond's first two digits, then its last digit
and the weekday 1 = Sunday in one byte) or DTL (``DB1.DBDTL16``, 12 bytes: year as UInt 1970..2262,
month, day, weekday, hour, minute, second, nanoseconds as UDInt). Neither has a time zone: the
values are taken as UTC. DTL's nanoseconds are cut to the millisecond. A tag's ``length`` is its
format's size (8 or 12), so the read plan sizes it like any other tag.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.config import get, int_in, parse_type
from gateway.errors import ConfigError
from gateway.values import shortest_float32
from proto.types import ALL_TYPES, DateTime

DEVICE_KEYS = frozenset({"host", "port", "rack", "slot", "tsap", "local_tsap", "pdu_size", "max_gap"})
TAG_KEYS = frozenset({"address", "area", "db", "offset", "bit", "type", "length"})

MAX_OFFSET = 65535  #: byte offsets of classic (non-optimized) DBs and the M/I/Q areas
#: area letter -> S7 area code on the wire (snap7.datatypes.S7Area: DB 0x84, MK 0x83, PE 0x81, PA 0x82)
AREAS = {"DB": 0x84, "M": 0x83, "I": 0x81, "Q": 0x82}
_GERMAN = {"E": "I", "A": "Q"}  # Eingang/Ausgang mnemonics
_SIZES = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "float32": 4,
          "int64": 8, "uint64": 8, "float64": 8}
_STRUCT = {"int8": ">b", "uint8": ">B", "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
           "float32": ">f", "int64": ">q", "uint64": ">Q", "float64": ">d"}
#: size letter -> (what it addresses, the type a tag gets when it names none)
_LETTERS = {"X": ("a bit", "bool"), "B": ("a byte", "uint8"), "W": ("a word, 2 bytes", "uint16"),
            "D": ("a double word, 4 bytes", "uint32"), "L": ("64 bits, 8 bytes", "uint64"),
            "S": ("a string", "string"), "DT": ("a DATE_AND_TIME, 8 bytes", "datetime"),
            "DTL": ("a DTL, 12 bytes", "datetime")}
#: datetime formats: size letter -> bytes (the tag's length); and the type names that choose one
DATETIME_SIZES = {"DT": 8, "DTL": 12}
_DATETIME_NAMES = {"date_and_time": "DT", "dt": "DT", "dtl": "DTL"}
_DB_RE = re.compile(r"DB(\d+)\.DB(DTL|DT|[A-Z])(\d+)(?:\.(\d+))?")
_AREA_RE = re.compile(r"([MIQEA])(DTL|DT|[A-Z])?(\d+)(?:\.(\d+))?")
_EXAMPLES = "DB1.DBX0.3, DB1.DBW2, DB1.DBD4, DB2.DBS10, DB1.DBDT16, DB1.DBDTL24, M10.2, MW20, I0.1, QB1"


@dataclass(frozen=True, kw_only=True)
class S7Connection:
    host: str  #: PLC address
    port: int = 102  #: ISO-on-TCP port
    rack: int = 0  #: CPU rack (ignored when tsap is given)
    slot: int = 1  #: CPU slot: 1 for S7-1200/1500, usually 2 for S7-300
    remote_tsap: int = 0x0101  #: called TSAP: 0x01 (PG connection) << 8 | rack << 5 | slot, or configured
    local_tsap: int = 0x0100  #: calling TSAP
    pdu_size: int = 480  #: PDU size requested; the PLC may negotiate it down
    max_gap: int = 8  #: unused bytes between two tags still read as one item


@dataclass(frozen=True)
class S7Address:
    area: str  #: DB, M, I or Q
    db: int  #: DB number, 0 outside DBs
    offset: int  #: byte offset
    bit: int | None  #: bit 0..7 of bool tags
    letter: str  #: access size: X, B, W, D, L (64 bits), S (string), DT (DATE_AND_TIME) or DTL

    @property
    def code(self) -> int:
        return AREAS[self.area]

    def __str__(self) -> str:
        bit = "" if self.bit is None else f".{self.bit}"
        if self.area == "DB":
            return f"DB{self.db}.DB{self.letter}{self.offset}{bit}"
        return f"{self.area}{'' if self.letter == 'X' else self.letter}{self.offset}{bit}"


# --- config ---------------------------------------------------------------------------------------

def _tsap(d: dict[str, Any], key: str, where: str, default: int) -> int:
    """A TSAP as Siemens writes it ("03.01", hex bytes) or as an integer (0x0301)."""
    raw = get(d, key, (int, str), where, default)
    if isinstance(raw, str):
        m = re.fullmatch(r"([0-9A-Fa-f]{1,2})\.([0-9A-Fa-f]{1,2})", raw)
        if m is None:
            raise ConfigError(
                f"'{key}' {raw!r} is not a TSAP; expected e.g. \"03.01\" (hex) or an integer", where=where)
        return int(m[1], 16) << 8 | int(m[2], 16)
    if not 0 <= raw <= 0xFFFF:
        raise ConfigError(f"'{key}' {raw} outside 0..65535", where=where)
    return int(raw)


def parse_connection(d: dict[str, Any], where: str, protocol: str) -> S7Connection:
    if "tsap" in d and ("rack" in d or "slot" in d):
        raise ConfigError("give either 'tsap' or 'rack'/'slot', not both", where=where)
    rack, slot = int_in(d, "rack", 0, 7, where, 0), int_in(d, "slot", 0, 31, where, 1)
    return S7Connection(
        host=get(d, "host", str, where), port=int_in(d, "port", 1, 65535, where, 102), rack=rack, slot=slot,
        remote_tsap=_tsap(d, "tsap", where, 0x0100 | rack << 5 | slot),
        local_tsap=_tsap(d, "local_tsap", where, 0x0100),
        # the asyncio client negotiates 1024-byte COTP TPDUs and does not reassemble fragments
        pdu_size=int_in(d, "pdu_size", 240, 960, where, 480), max_gap=int_in(d, "max_gap", 0, 256, where, 8))


def parse_address(text: str, where: str) -> S7Address:
    """A Siemens absolute address; the :class:`ConfigError` says what is wrong with it."""
    norm = text.strip().upper().removeprefix("%")
    bad = f"'address' {text!r}"
    if m := _DB_RE.fullmatch(norm):
        area, db, letter, offset, bit = "DB", int(m[1]), m[2], int(m[3]), m[4]
    elif m := _AREA_RE.fullmatch(norm):
        area, db, letter, offset, bit = _GERMAN.get(m[1], m[1]), 0, m[2] or "X", int(m[3]), m[4]
    else:
        raise ConfigError(f"{bad} is not an S7 address; expected e.g. {_EXAMPLES}", where=where)
    if letter not in _LETTERS:
        raise ConfigError(f"{bad}: unknown size {letter!r}; expected X (bit), B (byte), W (word), "
                          f"D (double word), L (64 bits), S (string), DT (DATE_AND_TIME) or DTL", where=where)
    if area == "DB" and not 1 <= db <= 65535:
        raise ConfigError(f"{bad}: DB number {db} outside 1..65535", where=where)
    if offset > MAX_OFFSET:
        raise ConfigError(f"{bad}: byte offset {offset} outside 0..{MAX_OFFSET}", where=where)
    if letter != "X" and bit is not None:
        raise ConfigError(f"{bad}: a bit number is only allowed on bit addresses", where=where)
    if letter == "X" and bit is None:
        example = S7Address(area, db, offset, 0, "X")
        alt = "" if area == "DB" else f", or a size letter, e.g. {S7Address(area, db, offset, None, 'W')}"
        raise ConfigError(f"{bad} needs a bit number, e.g. {example}{alt}", where=where)
    if bit is not None and int(bit) > 7:
        raise ConfigError(f"{bad}: bit {int(bit)} outside 0..7", where=where)
    return S7Address(area, db, offset, None if bit is None else int(bit), letter)


def letter_of(dtype: str) -> str:
    """The size letter an address of a ``dtype`` tag has (a datetime: DTL, or DT)."""
    if dtype in ("bool", "string", "datetime"):
        return {"bool": "X", "string": "S", "datetime": "DTL"}[dtype]
    return {1: "B", 2: "W", 4: "D", 8: "L"}[_SIZES[dtype]]


def _datetime_letter(raw_type: str, where: str) -> str:
    """DT or DTL, from the type's name (``date_and_time``/``dt`` or ``dtl``) when no address says it."""
    letter = _DATETIME_NAMES.get(raw_type.lower())
    if letter is None:
        raise ConfigError(f"type {raw_type!r} does not say the PLC's format: use 'date_and_time' (DT, 8 bytes) "
                          "or 'dtl' (12 bytes)", where=where)
    return letter


def _explicit(d: dict[str, Any], where: str) -> tuple[S7Address, str]:
    area = get(d, "area", str, where).upper()
    if area not in AREAS:
        raise ConfigError(f"'area' is {d['area']!r}; expected one of {', '.join(AREAS)}", where=where)
    if area == "DB":
        db = int_in(d, "db", 1, 65535, where)
    elif "db" in d:
        raise ConfigError("'db' applies to area DB only", where=where)
    if "type" not in d:  # parse_type(d, where) without a default does not check this
        raise ConfigError("'type' is required", where=where)
    dtype = parse_type(d, where, allowed=ALL_TYPES)
    if dtype == "bool":
        bit = int_in(d, "bit", 0, 7, where)
    elif "bit" in d:
        raise ConfigError("'bit' applies to bool tags only", where=where)
    letter = _datetime_letter(d["type"], where) if dtype == "datetime" else letter_of(dtype)
    addr = S7Address(area, db if area == "DB" else 0, int_in(d, "offset", 0, MAX_OFFSET, where),
                     bit if dtype == "bool" else None, letter)
    return addr, dtype


def parse_tag(d: dict[str, Any], where: str, conn: S7Connection) -> tuple[S7Address, str, int]:
    if "address" in d:
        both = sorted({"area", "db", "offset", "bit"} & d.keys())
        if both:
            raise ConfigError(f"'address' and {both} both given; use one form", where=where)
        addr = parse_address(get(d, "address", str, where), where)
        dtype = parse_type(d, where, _LETTERS[addr.letter][1], ALL_TYPES)
        if dtype == "datetime" and addr.letter in DATETIME_SIZES:
            raw = d.get("type")
            if isinstance(raw, str) and raw.lower() in _DATETIME_NAMES and _DATETIME_NAMES[raw.lower()] != addr.letter:
                raise ConfigError(f"type {raw!r} does not fit {str(d['address'])!r} "
                                  f"({_LETTERS[addr.letter][0]})", where=where)
        elif letter_of(dtype) != addr.letter:
            fix = S7Address(addr.area, addr.db, addr.offset, 0 if dtype == "bool" else None, letter_of(dtype))
            raise ConfigError(f"type {dtype} does not fit {str(d['address'])!r} ({_LETTERS[addr.letter][0]}); "
                              f"use {fix}", where=where)
    elif "area" in d:
        addr, dtype = _explicit(d, where)
    else:
        raise ConfigError("'address' is required (e.g. \"DB1.DBD4\"), or 'area' and 'offset'", where=where)
    if dtype == "string":
        return addr, dtype, int_in(d, "length", 1, 254, where, 254)
    if "length" in d:
        raise ConfigError("'length' applies to string tags only", where=where)
    return addr, dtype, DATETIME_SIZES[addr.letter] if dtype == "datetime" else 0

# --- values ---------------------------------------------------------------------------------------

def size_of(dtype: str, length: int = 0) -> int:
    """Bytes a value takes in the PLC (a STRING: max-length byte, actual-length byte, characters;
    a datetime: its format's size, the tag's length)."""
    if dtype == "string":
        return length + 2
    return length if dtype == "datetime" else _SIZES[dtype]


def decode_value(dtype: str, data: bytes, *, bit: int | None = None,
                 length: int = 0) -> bool | int | float | str | DateTime:
    """The raw value of ``data`` (exactly :func:`size_of` bytes, big-endian as S7 stores them);
    ValueError for datetime bytes that are no date (BCD digits above 9, month 13, ...)."""
    if dtype == "bool":
        return bool(data[0] >> (bit or 0) & 1)
    if dtype == "string":
        return data[2:2 + min(data[1], length, len(data) - 2)].decode("latin-1")
    if dtype == "datetime":
        return decode_dtl(data) if length == DATETIME_SIZES["DTL"] else decode_dt(data)
    value = struct.unpack(_STRUCT[dtype], data)[0]
    return shortest_float32(value, data) if dtype == "float32" else value


def encode_value(dtype: str, value: Any, *, length: int = 0) -> bytes:
    """The bytes of ``value`` (a bool: one byte, 0 or 1); ValueError if it does not fit."""
    if dtype == "bool":
        return bytes([1 if value else 0])
    if dtype == "string":
        raw = str(value).encode("latin-1")  # S7 STRING characters are single bytes
        if len(raw) > length:
            raise ValueError(f"string of {len(raw)} characters is longer than the tag's {length}")
        return bytes([length, len(raw)]) + raw
    if dtype == "datetime":
        if not isinstance(value, DateTime):
            raise ValueError(f"a {type(value).__name__} is no datetime")
        return encode_dtl(value) if length == DATETIME_SIZES["DTL"] else encode_dt(value)
    try:
        return struct.pack(_STRUCT[dtype], float(value) if dtype.startswith("float") else int(value))
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit {dtype}") from exc


# --- DATE_AND_TIME and DTL ------------------------------------------------------------------------

_DTL = struct.Struct(">HBBBBBBI")  # year, month, day, weekday, hour, minute, second, nanoseconds


def _bcd(byte: int, what: str) -> int:
    hi, lo = byte >> 4, byte & 0x0F
    if hi > 9 or lo > 9:
        raise ValueError(f"{what} 0x{byte:02x} is not BCD")
    return hi * 10 + lo


def _to_bcd(n: int) -> int:
    return (n // 10) << 4 | n % 10


def _weekday(dt: datetime) -> int:
    """S7's weekday: 1 Sunday .. 7 Saturday."""
    return dt.isoweekday() % 7 + 1


def _date(year: int, month: int, day: int, hour: int, minute: int, second: int, ms: int, name: str) -> DateTime:
    try:
        return DateTime.of(datetime(year, month, day, hour, minute, second, ms * 1000, tzinfo=UTC))
    except ValueError as exc:  # month 13, February 30, hour 24, ...
        raise ValueError(f"not a {name}: {year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d} "
                         f"({exc})") from exc


def decode_dt(data: bytes) -> DateTime:
    """DATE_AND_TIME: 8 bytes of BCD (the weekday nibble is not checked: the PLC's clock sets it)."""
    year = _bcd(data[0], "year")
    month, day, hour, minute, second = (_bcd(b, w) for b, w in zip(
        data[1:6], ("month", "day", "hour", "minute", "second"), strict=True))
    ms_units = data[7] >> 4
    if ms_units > 9:
        raise ValueError(f"millisecond digit 0x{ms_units:x} is not BCD")
    ms = _bcd(data[6], "milliseconds") * 10 + ms_units
    return _date(1900 + year if year >= 90 else 2000 + year, month, day, hour, minute, second, ms, "DATE_AND_TIME")


def encode_dt(value: DateTime) -> bytes:
    dt = value.to_datetime()
    if not 1990 <= dt.year <= 2089:
        raise ValueError(f"{value.iso()} is outside DATE_AND_TIME's 1990-01-01 .. 2089-12-31")
    ms = dt.microsecond // 1000
    return bytes([_to_bcd(dt.year % 100), _to_bcd(dt.month), _to_bcd(dt.day), _to_bcd(dt.hour), _to_bcd(dt.minute),
                  _to_bcd(dt.second), _to_bcd(ms // 10), (ms % 10) << 4 | _weekday(dt)])


def decode_dtl(data: bytes) -> DateTime:
    """DTL: 12 bytes; nanoseconds cut to the millisecond (the weekday byte is not checked)."""
    year, month, day, _wd, hour, minute, second, ns = _DTL.unpack(data)
    if not 1970 <= year <= 2262 or ns > 999_999_999:
        raise ValueError(f"not a DTL: year {year}, nanoseconds {ns} (1970..2262, 0..999999999)")
    return _date(year, month, day, hour, minute, second, ns // 1_000_000, "DTL")


def encode_dtl(value: DateTime) -> bytes:
    dt = value.to_datetime()
    if dt.year > 2262:
        raise ValueError(f"{value.iso()} is after DTL's last year 2262")
    return _DTL.pack(dt.year, dt.month, dt.day, _weekday(dt), dt.hour, dt.minute, dt.second,
                     dt.microsecond * 1000)
