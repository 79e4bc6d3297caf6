"""Unit tests of the wire contract: UNS topics, point payloads, historian COPY rows."""

from __future__ import annotations

import math
import struct

import orjson
import pytest

from ingestion.rows import HEADER, TRAILER, encode_points, encode_row, encode_rows, with_reason
from proto.errors import ContractError, PayloadError, TopicError
from proto.points import (
    EXACT_FLOAT_INT,
    MAX_TS_MS,
    SCHEMA_VERSION,
    Batch,
    Point,
    Quality,
    Status,
    decode_batch,
    decode_point,
    encode_batch,
    encode_point,
)
from proto.uns import (
    MAX_LEVEL_BYTES,
    MAX_TOPIC_BYTES,
    DevicePath,
    TagPath,
    batch_filter,
    batch_topic,
    parse_batch_topic,
    validate_level,
    validate_prefix,
)
from tests.support.copyrows import copy_fields

TS = 1_732_370_000_123
DEV = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")


# ---------------------------------------------------------------- UNS levels


@pytest.mark.parametrize(
    ("level", "fragment"),
    [
        ("", "is empty"),
        ("a+b", "'+' (MQTT wildcard)"),
        ("+", "'+' (MQTT wildcard)"),
        ("a#", "'#' (MQTT wildcard)"),
        ("a/b", "'/' (level separator)"),
        ("$SYS", "starts with '$'"),
        ("a\x00b", "not valid UTF-8 (NUL or lone surrogate)"),
        ("a\ud800b", "not valid UTF-8 (NUL or lone surrogate)"),
        ("a\udfffb", "not valid UTF-8 (NUL or lone surrogate)"),
        ("a\tb", "control character"),
        ("a\x01b", "control character"),
        ("a\x7fb", "control character"),
        ("a\x9fb", "control character"),
        (" a", "leading or trailing whitespace"),
        ("a ", "leading or trailing whitespace"),
        ("x" * (MAX_LEVEL_BYTES + 1), f"longer than {MAX_LEVEL_BYTES} bytes"),
        ("é" * 65, f"longer than {MAX_LEVEL_BYTES} bytes"),  # 65 chars but 130 bytes
    ],
)
def test_validate_level_rejects(level: str, fragment: str) -> None:
    with pytest.raises(TopicError) as ei:
        validate_level(level, what="tag")
    assert fragment in str(ei.value)
    assert str(ei.value).startswith("tag")  # the message names what was checked
    assert ei.value.topic == level
    assert isinstance(ei.value, ContractError) and isinstance(ei.value, ValueError)


def test_validate_level_rejects_non_string() -> None:
    with pytest.raises(TopicError, match="site must be a string, got int"):
        validate_level(5, what="site")  # type: ignore[arg-type]


@pytest.mark.parametrize("level", ["a", "x" * MAX_LEVEL_BYTES, "Ölstand", "temp.1", "a$b", "a b", "温度", "line-1"])
def test_validate_level_accepts(level: str) -> None:
    assert validate_level(level) == level


def test_validate_prefix() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("a/b") == "a/b"
    with pytest.raises(TopicError, match="prefix level is empty"):
        validate_prefix("a//b")
    with pytest.raises(TopicError, match="prefix level is empty"):
        validate_prefix("/a")
    with pytest.raises(TopicError, match="wildcard"):
        validate_prefix("a/#")


# ---------------------------------------------------------------- paths


def test_device_path_round_trip() -> None:
    assert DEV.path == "acme/berlin/stamping/line-1/press-1"
    assert DevicePath.parse(DEV.path) == DEV
    assert DevicePath.parse("a/b/c/d/e").line == "d"


def test_tag_path_round_trip_and_topic() -> None:
    tp = DEV.tag("oil_temp")
    assert tp == TagPath(device=DEV, tag="oil_temp")
    assert tp.path == "acme/berlin/stamping/line-1/press-1/oil_temp"
    assert TagPath.parse(tp.path) == tp
    assert tp.topic() == tp.path
    assert tp.topic("uns/v1") == "uns/v1/" + tp.path


@pytest.mark.parametrize("path", ["a/b/c/d", "a/b/c/d/e/f", "a/b/c/d/e/"])
def test_device_path_parse_level_count(path: str) -> None:
    with pytest.raises(TopicError):
        DevicePath.parse(path)


def test_device_path_parse_messages() -> None:
    with pytest.raises(TopicError, match=r"has 4 levels, expected 5"):
        DevicePath.parse("a/b/c/d")
    with pytest.raises(TopicError, match=r"has 5 levels, expected 6"):
        TagPath.parse("a/b/c/d/e")
    with pytest.raises(TopicError, match="a UNS path must be a string"):
        DevicePath.parse(None)  # type: ignore[arg-type]
    with pytest.raises(TopicError, match="line is empty"):
        DevicePath.parse("a/b/c//e")
    with pytest.raises(TopicError, match=r"tag 'x\+' contains '\+'"):
        TagPath.parse("a/b/c/d/e/x+")


def test_device_path_validates_each_level_by_name() -> None:
    with pytest.raises(TopicError, match=r"^area 'a#' contains '#'"):
        DevicePath("e", "s", "a#", "l", "d")
    with pytest.raises(TopicError, match=r"^device is empty"):
        DevicePath("e", "s", "a", "l", "")


def test_topic_too_long() -> None:
    long_path = "/".join(["x"] * 600)  # 1199 bytes
    with pytest.raises(TopicError, match=f"longer than {MAX_TOPIC_BYTES} bytes"):
        DevicePath.parse(long_path)
    tp = DEV.tag("t")
    prefix = "/".join(["p" * 100] * 10)  # 1009 bytes
    validate_prefix(prefix)
    with pytest.raises(TopicError, match=f"longer than {MAX_TOPIC_BYTES} bytes"):
        tp.topic(prefix)
    # exactly at the limit is fine
    fill = MAX_TOPIC_BYTES - len(tp.path) - 1
    assert len(tp.topic("q" * fill).encode()) == MAX_TOPIC_BYTES
    with pytest.raises(TopicError):
        tp.topic("q" * (fill + 1))


def test_batch_topic_round_trip() -> None:
    topic = batch_topic(DEV)
    assert topic == "nexus/batch/v1/acme/berlin/stamping/line-1/press-1"
    assert parse_batch_topic(topic) == DEV
    t2 = batch_topic(DEV, root="site7/edge")
    assert t2 == "site7/edge/batch/v1/" + DEV.path
    assert parse_batch_topic(t2, root="site7/edge") == DEV
    assert batch_filter("r") == "r/batch/v1/#"
    assert batch_filter() == "nexus/batch/v1/#"


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("other/batch/v1/a/b/c/d/e", "is not under 'nexus/batch/v1/'"),
        ("nexus/batch/v2/a/b/c/d/e", "is not under"),
        ("nexus/batch/v1a/b/c/d/e", "is not under"),
        ("nexus/a/b/c/d/e/f/g", "is not under"),
        ("nexus/batch/v1/a/b/c/d", "has 4 levels, expected 5"),
        ("nexus/batch/v1/a/b/c/d/e/f", "has 6 levels, expected 5"),
        ("nexus/batch/v1/a/b/c/d/e/", "has 6 levels, expected 5"),
        ("nexus/batch/v1/a/b/+/d/e", "contains '+'"),
    ],
)
def test_parse_batch_topic_rejects(topic: str, fragment: str) -> None:
    with pytest.raises(TopicError) as ei:
        parse_batch_topic(topic)
    assert fragment in str(ei.value)


def test_parse_batch_topic_wrong_root() -> None:
    with pytest.raises(TopicError, match="is not under 'r2/batch/v1/'"):
        parse_batch_topic(batch_topic(DEV, root="r1"), root="r2")


# ---------------------------------------------------------------- quality


@pytest.mark.parametrize(
    ("status", "quality"),
    [
        (0, Quality.GOOD),
        (0x00A80000, Quality.GOOD),
        (0x40000000, Quality.UNCERTAIN),
        (Status.UNCERTAIN_LAST_USABLE_VALUE, Quality.UNCERTAIN),
        (0x80050000, Quality.BAD),
        (Status.BAD, Quality.BAD),
        (0xC0000000, Quality.BAD),  # reserved top bits 11 count as bad
        (0xFFFFFFFF, Quality.BAD),
    ],
)
def test_quality_of(status: int, quality: Quality) -> None:
    assert Quality.of(status) is quality
    assert Point("t", 1, TS, status).quality is quality


# ---------------------------------------------------------------- point payloads


def test_encode_point_exact_json() -> None:
    raw = encode_point(Point("temp", 21.5, TS, 0, "degC"))
    assert orjson.loads(raw) == {"schema": SCHEMA_VERSION, "value": 21.5, "ts": TS, "q": 0, "unit": "degC"}
    assert "tag" not in orjson.loads(raw)  # the tag comes from the topic


@pytest.mark.parametrize(
    "point",
    [
        Point("t", 21.5, TS),
        Point("t", -7, TS),
        Point("t", 2**63 - 1, TS),
        Point("t", True, TS),
        Point("t", False, TS),
        Point("t", "RUNNING", TS),
        Point("t", "", TS),
        Point("t", None, TS, Status.BAD_TIMEOUT, "degC", "timeout"),
        Point("t", 1.0, 0, Status.UNCERTAIN, "bar"),
        Point("t", 1.0, MAX_TS_MS, 0xFFFFFFFF),
    ],
)
def test_point_round_trip(point: Point) -> None:
    back = decode_point(encode_point(point), "t")
    assert back == point
    assert type(back.value) is type(point.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_float_becomes_null(value: float) -> None:
    raw = encode_point(Point("t", value, TS))
    assert orjson.loads(raw)["value"] is None
    assert decode_point(raw, "t").value is None
    batch = decode_batch(encode_batch([Point("t", value, TS)]))
    assert batch.points[0].value is None


def test_batch_round_trip_with_seq_unit_reason() -> None:
    points = [
        Point("temp", 21.5, TS, 0, "degC"),
        Point("state", None, TS + 1, Status.BAD_COMMUNICATION_ERROR, None, "connection refused"),
        Point("running", True, TS, 0),
        Point("recipe", "A-12", TS, Status.UNCERTAIN_LAST_USABLE_VALUE),
        Point("count", 12345678901234, TS, 0),
    ]
    raw = encode_batch(points, seq=42)
    doc = orjson.loads(raw)
    assert doc["schema"] == 1 and doc["seq"] == 42
    assert doc["points"][1] == {"tag": "state", "value": None, "ts": TS + 1, "q": 0x80050000,
                                "reason": "connection refused"}
    assert "unit" not in doc["points"][1] and "reason" not in doc["points"][0]
    batch = decode_batch(raw)
    assert batch == Batch(points, 42)
    assert batch.points[1].quality is Quality.BAD
    assert decode_batch(encode_batch([])) == Batch([], None)
    assert "seq" not in orjson.loads(encode_batch(points[:1]))
    assert decode_batch(encode_batch(points[:1])).seq is None


@pytest.mark.parametrize(
    ("q", "status"),
    [("good", Status.GOOD), ("GOOD", Status.GOOD), ("bad", Status.BAD), ("Uncertain", Status.UNCERTAIN),
     (None, Status.GOOD), (0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (0x80050000, 0x80050000)],
)
def test_quality_codes_decode(q: object, status: int) -> None:
    body: dict[str, object] = {"schema": 1, "value": 1, "ts": TS}
    if q is not None:
        body["q"] = q
    p = decode_point(orjson.dumps(body), "t")
    assert p.status == status


def test_missing_q_and_value_default() -> None:
    p = decode_point(b'{"schema":1,"ts":5}', "t")
    assert p == Point("t", None, 5, Status.GOOD, None, None)


def test_non_string_reason_dropped_and_non_int_seq_ignored() -> None:
    p = decode_point(b'{"schema":1,"ts":5,"reason":17}', "t")
    assert p.reason is None
    b = decode_batch(b'{"schema":1,"seq":"7","points":[]}')
    assert b.seq is None
    assert decode_batch(b'{"schema":1,"seq":true,"points":[]}').seq is None


def _pt(**kw: object) -> bytes:
    d: dict[str, object] = {"tag": "t", "value": 1, "ts": TS, "q": 0}
    d.update(kw)
    return orjson.dumps({"schema": 1, "points": [{k: v for k, v in d.items() if v is not _DROP}]})


_DROP = object()


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"[1,2]", "payload must be a JSON object, got list"),
        (b'"x"', "payload must be a JSON object, got str"),
        (b"null", "payload must be a JSON object, got NoneType"),
        (b'{"points": []}', "unsupported schema None"),
        (b'{"schema": 2, "points": []}', "unsupported schema 2"),
        (b'{"schema": "1", "points": []}', "unsupported schema '1'"),
        (b'{"schema": 1}', "'points' must be a list"),
        (b'{"schema": 1, "points": {}}', "'points' must be a list"),
        (b'{"schema": 1, "points": [1]}', "a point must be a JSON object, got int"),
        (_pt(tag=_DROP), "point 'tag' must be a string, got None"),
        (_pt(tag=5), "point 'tag' must be a string, got 5"),
        (_pt(tag="a/b"), "contains '/'"),
        (_pt(tag=""), "tag is empty"),
        (_pt(tag="#"), "contains '#'"),
        (_pt(value=[1]), "'value' must be a number, bool, string, null or {\"datetime\": <Unix ms>}, got list"),
        (_pt(value={"a": 1}), "'value' must be a number, bool, string, null or {\"datetime\": <Unix ms>}, got dict"),
        (_pt(ts="2024-01-01"), "'ts' must be Unix milliseconds (integer), got '2024-01-01'"),
        (_pt(ts=-1), "'ts' must be Unix milliseconds (integer), got -1"),
        (_pt(ts=1.5), "'ts' must be Unix milliseconds (integer), got 1.5"),
        (_pt(ts=float(TS)), "'ts' must be Unix milliseconds"),
        (_pt(ts=MAX_TS_MS + 1), "'ts' must be Unix milliseconds"),
        (_pt(ts=True), "'ts' must be Unix milliseconds"),
        (_pt(ts=_DROP), "'ts' must be Unix milliseconds (integer), got None"),
        (_pt(q=-1), "'q' must be a uint32 OPC UA status code"),
        (_pt(q=2**32), "'q' must be a uint32"),
        (_pt(q="excellent"), "'q' must be a uint32"),
        (_pt(q=1.0), "'q' must be a uint32"),
        (_pt(q=True), "'q' must be a uint32"),
        (_pt(unit=5), "'unit' must be a string of at most 64 characters, got 5"),
        (_pt(unit="u" * 65), "'unit' must be a string of at most 64 characters"),
    ],
)
def test_decode_batch_errors(payload: bytes, fragment: str) -> None:
    # An invalid tag name surfaces as TopicError, everything else as PayloadError; both are
    # ContractError, which is what the ingestion writer catches.
    with pytest.raises(ContractError) as ei:
        decode_batch(payload)
    assert fragment in str(ei.value)
    expected = TopicError if fragment in ("contains '/'", "tag is empty", "contains '#'") else PayloadError
    assert type(ei.value) is expected


def test_decode_point_errors_name_the_tag() -> None:
    with pytest.raises(PayloadError, match=r"^tag 'oil': 'value' must be .* got list"):
        decode_point(b'{"schema":1,"value":[],"ts":1}', "oil")
    with pytest.raises(PayloadError, match="unsupported schema"):
        decode_point(b'{"value":1,"ts":1}', "oil")
    with pytest.raises(PayloadError, match="payload must be a JSON object"):
        decode_point(b"42", "oil")


def test_bad_point_anywhere_fails_whole_batch() -> None:
    good = {"tag": "a", "value": 1, "ts": TS}
    with pytest.raises(PayloadError, match="tag 'b'"):
        decode_batch(orjson.dumps({"schema": 1, "points": [good, {"tag": "b", "value": 1, "ts": -5}]}))


# ---------------------------------------------------------------- historian COPY rows

_PG_EPOCH_MS = 946_684_800_000


def _parse(row: bytes) -> tuple[int, int, float | None, str | None, int]:
    t, tag_id, value, text, status, reason = copy_fields(row)
    assert reason is None, "encode_row writes no reason"
    assert t is not None and tag_id is not None and status is not None
    return (
        struct.unpack(">q", t)[0],
        struct.unpack(">i", tag_id)[0],
        None if value is None else struct.unpack(">d", value)[0],
        None if text is None else text.decode(),
        struct.unpack(">q", status)[0],
    )


def test_copy_header_and_trailer() -> None:
    assert HEADER == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
    assert TRAILER == b"\xff\xff"


def test_row_float() -> None:
    t, tag_id, value, text, status = _parse(encode_row(TS, 7, 21.5, 0))
    assert t == (TS - _PG_EPOCH_MS) * 1000
    assert tag_id == 7 and value == 21.5 and text is None and status == 0


def test_row_timestamp_epochs() -> None:
    assert _parse(encode_row(_PG_EPOCH_MS, 1, 1.0, 0))[0] == 0
    assert _parse(encode_row(0, 1, 1.0, 0))[0] == -_PG_EPOCH_MS * 1000  # 1970 is before 2000
    assert _parse(encode_row(_PG_EPOCH_MS + 1, 1, 1.0, 0))[0] == 1000


@pytest.mark.parametrize(("value", "expected"), [(True, 1.0), (False, 0.0), (5, 5.0), (-3, -3.0),
                                                 (EXACT_FLOAT_INT, float(2**53)), (-EXACT_FLOAT_INT, -float(2**53))])
def test_row_int_and_bool_are_float(value: object, expected: float) -> None:
    _, _, v, text, status = _parse(encode_row(TS, 1, value, 0x80050000))
    assert v == expected and text is None and status == 0x80050000


@pytest.mark.parametrize("value", [2**53 + 1, 2**64 - 1, -(2**63)])
def test_row_big_int_keeps_text(value: int) -> None:
    _, _, v, text, _ = _parse(encode_row(TS, 1, value, 0))
    assert v == float(value)
    assert text == str(value)
    assert int(text) == value


def test_row_string_and_null() -> None:
    _, tag_id, v, text, status = _parse(encode_row(TS, 99, "Grüße", 0x40000000))
    assert (tag_id, v, text, status) == (99, None, "Grüße", 0x40000000)
    _, _, v, text, status = _parse(encode_row(TS, 3, None, Status.BAD_TIMEOUT))
    assert (v, text, status) == (None, None, 0x800A0000)
    _, _, v, text, _ = _parse(encode_row(TS, 3, "", 0))
    assert (v, text) == (None, "")


@pytest.mark.parametrize("value", [21.5, 2**60, "text", None])
def test_row_with_a_reason_refers_to_its_id(value: object) -> None:
    row = encode_row(TS, 5, value, Status.BAD_TIMEOUT)
    fields = copy_fields(with_reason(row, 123456))
    assert fields[:5] == copy_fields(row)[:5]
    assert fields[5] == struct.pack(">i", 123456)


def test_encode_points_pairs_with_tag_ids() -> None:
    pts = [Point("a", 1.0, TS), Point("b", "x", TS + 1, 0x80000000)]
    rows = encode_points(pts, [10, 11])
    assert [_parse(r)[1] for r in rows] == [10, 11]
    assert _parse(rows[1])[3:] == ("x", 0x80000000)
    with pytest.raises(ValueError):
        encode_points(pts, [10])


def test_encode_rows_is_encode_row_with_tag_and_reason_ids() -> None:
    """The writer's loop: every kind of value, reasons known (with_reason), unknown (held back with their reason)
    and empty (none): the bytes of encode_row point by point."""
    from proto.types import DateTime

    values: list[object] = [21.5, -0.0, float("nan"), 5, EXACT_FLOAT_INT, EXACT_FLOAT_INT + 1, -(2**63), True, False,
                            "Grüße", "", None, DateTime(1_796_205_600_123)]
    pts = [Point(f"t{i % 3}", v, TS + i, status, None, reason)
           for i, v in enumerate(values)
           for status, reason in ((0, None), (Status.BAD_TIMEOUT, "timeout"), (Status.BAD, "new"), (0, ""))]
    ids = {"t0": (10, None), "t1": (11, "degC"), "t2": (12, None)}
    held: list[tuple[bytes, str]] = []
    out = encode_rows(pts, ids, {"timeout": 7}, held)
    expect, expect_held = [], []
    for p in pts:
        row = encode_row(p.ts, ids[p.tag][0], p.value, p.status)
        if p.reason == "new":
            expect_held.append((row, "new"))
        else:
            expect.append(with_reason(row, 7) if p.reason else row)
    assert out == b"".join(expect)
    assert held == expect_held
    with pytest.raises(KeyError):
        encode_rows([Point("unknown", 1.0, TS)], ids, {}, [])


def test_the_delivery_id_is_read_from_the_head_of_a_message_too_large_to_decode() -> None:
    from proto.points import peek_delivery_id

    big = encode_batch([Point("s", "x" * 2_000_000, TS)], seq=7, gateway="gw-1", run=123)
    assert peek_delivery_id(big) == ("gw-1", 123, 7)
    assert peek_delivery_id(encode_batch([Point("s", 1, TS)], seq=7)) is None  # no gateway: nothing to confirm
    assert peek_delivery_id(b'{"schema":1,"gw":"a/b","run":1,"seq":2,"points":[]}') is None  # not a gateway id
    assert peek_delivery_id(b"\xff" * 600) is None
