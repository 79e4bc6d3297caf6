"""The datetime tag type across the contract: proto.types.DateTime, its JSON form in point and batch
payloads (``{"datetime": <Unix ms>}``), its historian COPY row (ms in value, ISO text in value_text)
and the write path's parsing (ISO 8601 text or Unix ms)."""

from __future__ import annotations

import pickle
import struct
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from gateway.errors import WriteRefused
from gateway.values import check_write
from ingestion.rows import encode_row, with_reason
from proto.errors import PayloadError
from proto.points import Point, Status, decode_batch, decode_point, encode_batch, encode_point
from proto.types import ALL_TYPES, MAX_DATETIME_MS, MIN_DATETIME_MS, TYPES, DateTime, canonical_type
from tests.support.copyrows import copy_fields

TS = 1_732_370_000_123
#: 2026-12-02T10:00:00.123Z
DEC2 = 1_796_205_600_123
_PG_EPOCH_MS = 946_684_800_000

EDGES = [  # (ms, ISO text)
    (0, "1970-01-01T00:00:00.000Z"),
    (1, "1970-01-01T00:00:00.001Z"),
    (951_782_400_000, "2000-02-29T00:00:00.000Z"),  # a leap day
    (DEC2, "2026-12-02T10:00:00.123Z"),
    (2**31 * 1000, "2038-01-19T03:14:08.000Z"),  # past the 32-bit time_t
    (3_786_912_000_000, "2090-01-01T00:00:00.000Z"),  # past S7 DATE_AND_TIME's range
    (9_223_372_036_854, "2262-04-11T23:47:16.854Z"),  # the end of S7 DTL (int64 ns)
    (MAX_DATETIME_MS, "9999-12-31T23:59:59.999Z"),
]


def test_the_type_and_its_aliases() -> None:
    assert (*TYPES, "datetime") == ALL_TYPES and "datetime" not in TYPES  # drivers opt in to datetime
    assert [canonical_type(n) for n in ("datetime", "DateTime", "DATE_AND_TIME", "DT", "DTL")] == ["datetime"] * 5
    assert (MIN_DATETIME_MS, MAX_DATETIME_MS) == (0, 253_402_300_799_999)
    assert MAX_DATETIME_MS < 2**53  # every value is exact as the historian's float8
    assert float(MAX_DATETIME_MS) == MAX_DATETIME_MS and int(float(MAX_DATETIME_MS)) == MAX_DATETIME_MS
    # 2^53 ms is the first that float8 cannot tell from its neighbour: the year 287,396
    assert float(2**53) == float(2**53 + 1)
    assert 1970 + (2**53) // (86_400_000 * 365.2425) == 287_396


@pytest.mark.parametrize(("ms", "iso"), EDGES)
def test_iso_text_both_ways(ms: int, iso: str) -> None:
    d = DateTime(ms)
    assert d.iso() == iso
    assert DateTime.parse(iso) == d and DateTime.parse(iso).ms == ms
    assert d.to_datetime() == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert DateTime.of(d.to_datetime()) == d
    assert pickle.loads(pickle.dumps(d)) == d and hash(d) == hash(DateTime(ms)) and repr(d) == f"DateTime({ms})"


def test_finer_than_a_millisecond_is_cut_to_the_millisecond_below() -> None:
    assert DateTime.parse("2026-12-02T10:00:00.123999Z").ms == DEC2
    assert DateTime.of(datetime(2026, 12, 2, 10, 0, 0, 123999, tzinfo=UTC)).ms == DEC2
    assert DateTime.parse("2026-12-02T11:00:00.123+01:00").ms == DEC2  # offsets become UTC
    assert DateTime.of(datetime(2026, 12, 2, 5, 0, 0, 123000, tzinfo=timezone(timedelta(hours=-5)))).ms == DEC2


@pytest.mark.parametrize(("text", "message"), [
    ("2026-12-02T10:00:00", "'2026-12-02T10:00:00' has no time zone; add Z for UTC or an offset like +01:00"),
    ("2026-12-02", "'2026-12-02' has no time zone"),
    ("yesterday", "'yesterday' is not an ISO 8601 date and time (e.g. 2026-12-02T10:00:00.123Z)"),
    ("1969-12-31T23:59:59.999Z", "'1969-12-31T23:59:59.999Z' is outside 1970-01-01T00:00:00.000Z .. "
                                 "9999-12-31T23:59:59.999Z"),
    ("9999-12-31T23:59:59.999-00:01", "is outside 1970-01-01"),
    ("x" * 41, "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... is not an ISO 8601 date and time"),
])
def test_bad_text_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        DateTime.parse(text)
    assert message in str(err.value)


@pytest.mark.parametrize("bad", [-1, MAX_DATETIME_MS + 1, 1.0, True, "0", None, 2**64])
def test_the_constructor_takes_only_ms_in_range(bad: object) -> None:
    with pytest.raises(ValueError, match=r"a datetime is whole Unix milliseconds in 0\.\.253402300799999"):
        DateTime(bad)  # type: ignore[arg-type]


def test_a_datetime_is_no_number_and_immutable() -> None:
    d = DateTime(DEC2)
    assert d != DEC2 and not isinstance(d, int | float) and DateTime(1) < DateTime(2)
    with pytest.raises(AttributeError, match="immutable"):
        d.ms = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="has no time zone"):
        DateTime.of(datetime(2026, 1, 1))  # naive on purpose


# ---------------------------------------------------------------- JSON payloads

def test_the_json_form_is_an_object_with_the_ms() -> None:
    raw = encode_point(Point("last_service", DateTime(DEC2), TS, 0))
    assert raw == b'{"schema":1,"value":{"datetime":1796205600123},"ts":1732370000123,"q":0}'
    batch = encode_batch([Point("a", 1.5, TS), Point("b", DateTime(0), TS)], seq=3)
    assert orjson.loads(batch)["points"][1] == {"tag": "b", "value": {"datetime": 0}, "ts": TS, "q": 0}


@pytest.mark.parametrize(("ms", "iso"), EDGES)
def test_round_trips(ms: int, iso: str) -> None:
    points = [Point("when", DateTime(ms), TS, Status.UNCERTAIN, "UTC", "clock not synced"),
              Point("temp", 21.5, TS), Point("none", None, TS + 1, Status.BAD_TIMEOUT)]
    back = decode_batch(encode_batch(points, seq=1, gateway="gw-a", run=7))
    assert back.points == points and type(back.points[0].value) is DateTime
    assert decode_point(encode_point(points[0]), "when") == points[0]


def _point(value: object) -> bytes:
    return orjson.dumps({"schema": 1, "points": [{"tag": "when", "value": value, "ts": TS, "q": 0}]})


@pytest.mark.parametrize(("value", "message"), [
    ({"datetime": -1}, "got -1"),
    ({"datetime": MAX_DATETIME_MS + 1}, "got 253402300800000"),
    ({"datetime": 1.0}, "got 1.0"),
    ({"datetime": float(DEC2)}, "got 1796205600123.0"),
    ({"datetime": True}, "got True"),
    ({"datetime": "2026-12-02T10:00:00.123Z"}, "got '2026-12-02T10:00:00.123Z'"),
    ({"datetime": None}, "got None"),
    ({"datetime": 2**64 - 1}, "got 18446744073709551615"),
])
def test_a_wrong_datetime_is_a_contract_error(value: object, message: str) -> None:
    with pytest.raises(PayloadError) as err:
        decode_batch(_point(value))
    assert str(err.value) == ("tag 'when': a datetime value is whole Unix milliseconds in 0..253402300799999 "
                              f"(1970-01-01 .. 9999-12-31, UTC), {message}")


@pytest.mark.parametrize("value", [{}, {"datetime": 1, "tz": "UTC"}, {"date": 1}, {"DateTime": 1}, [1]])
def test_other_objects_are_refused(value: object) -> None:
    with pytest.raises(PayloadError, match=r"^tag 'when': 'value' must be a number, bool, string, null or "
                                           r'\{"datetime": <Unix ms>\}, got '):
        decode_batch(_point(value))


def test_only_a_datetime_is_encoded_as_an_object() -> None:
    with pytest.raises(TypeError, match=r"Type is not JSON serializable: datetime\.datetime"):
        encode_point(Point("t", datetime.now(UTC), TS))  # type: ignore[arg-type]


# ---------------------------------------------------------------- historian rows

@pytest.mark.parametrize(("ms", "iso"), EDGES)
def test_row_has_the_ms_in_value_and_the_iso_text(ms: int, iso: str) -> None:
    t, tag_id, value, text, status, reason = copy_fields(encode_row(TS, 9, DateTime(ms), Status.UNCERTAIN))
    assert struct.unpack(">q", t or b"")[0] == (TS - _PG_EPOCH_MS) * 1000
    assert struct.unpack(">i", tag_id or b"")[0] == 9
    assert struct.unpack(">d", value or b"")[0] == ms and int(struct.unpack(">d", value or b"")[0]) == ms
    assert text == iso.encode() and reason is None
    assert struct.unpack(">q", status or b"")[0] == Status.UNCERTAIN
    assert copy_fields(with_reason(encode_row(TS, 9, DateTime(ms), 0), 77))[5] == struct.pack(">i", 77)


# ---------------------------------------------------------------- writes

@pytest.mark.parametrize(("value", "ms"), [
    ("2026-12-02T10:00:00.123Z", DEC2), ("2026-12-02T11:00:00.123+01:00", DEC2), (DEC2, DEC2),
    (float(DEC2), DEC2), (0, 0), (DateTime(5), 5), ("9999-12-31T23:59:59.999Z", MAX_DATETIME_MS),
])
def test_a_write_takes_iso_text_or_ms(value: object, ms: int) -> None:
    assert check_write("datetime", value) == DateTime(ms)


@pytest.mark.parametrize(("value", "message"), [
    ("2026-12-02T10:00:00", "'2026-12-02T10:00:00' has no time zone; add Z for UTC or an offset like +01:00"),
    ("soon", "'soon' is not an ISO 8601 date and time (e.g. 2026-12-02T10:00:00.123Z)"),
    (-1, "a datetime is whole Unix milliseconds in 0..253402300799999 (1970-01-01T00:00:00.000Z .. "
         "9999-12-31T23:59:59.999Z), got -1"),
    (1.5, "expected ISO 8601 text (e.g. 2026-12-02T10:00:00.123Z) or Unix milliseconds for a datetime tag, got '1.5'"),
    (True, "expected ISO 8601 text (e.g. 2026-12-02T10:00:00.123Z) or Unix milliseconds for a datetime tag, "
           "got 'True'"),
    (None, "expected ISO 8601 text"),
])
def test_a_wrong_write_is_refused(value: object, message: str) -> None:
    with pytest.raises(WriteRefused) as err:
        check_write("datetime", value)
    assert message in str(err.value)
