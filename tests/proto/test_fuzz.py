"""Fuzz of the batch decoder and of ingestion's message boundary: whatever the bytes, decode_batch
either returns a batch or raises a ContractError with a bounded text, and decode_item never raises."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.writer import MAX_ERROR_BYTES, OVERSIZE_PREFIX_BYTES, decode_item
from proto import Batch, ContractError, decode_batch

ROOT = "fz"
TOPIC = f"{ROOT}/batch/v1/acme/berlin/stamping/line-1/press-1"
#: decode_batch's own texts quote bounded descriptions (proto.points.brief); the longest legitimate one
#: quotes a 128-byte tag in repr form (up to 4 characters per byte) plus the sentence around it
MAX_DECODE_ERROR = 1000
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=5)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=5), max_leaves=25)


def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything: gets the fuzz past the first checks."""
    return st.one_of(good, good, json_values)


point = st.fixed_dictionaries({
    "tag": field(st.sampled_from(["t1", "t2", "a/b", "", " x", "$sys", "ü", "x" * 200])),
    "value": field(st.one_of(st.floats(allow_nan=False), st.integers(), st.text(max_size=10), st.none())),
    "ts": field(st.integers(min_value=-5, max_value=9_000_000_000_005)),
}, optional={
    "q": field(st.one_of(st.integers(min_value=-1, max_value=2**32), st.sampled_from(["good", "bad", "meh"]))),
    "unit": field(st.text(max_size=5)),
    "reason": json_values,
})
points = st.lists(point, max_size=6)

batches = st.fixed_dictionaries({
    "schema": st.one_of(st.just(1), st.just(1), json_values),
    "points": st.one_of(points, points, json_values),
}, optional={
    "gw": field(st.sampled_from(["gw-1", "gw/1", ""])),
    "run": field(st.integers(min_value=-1, max_value=2**63)),
    "seq": field(st.integers(min_value=-1, max_value=2**63)),
})


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # json, not orjson: integers beyond 64 bits are part of the fuzz


def check_decode(payload: bytes) -> None:
    try:
        batch = decode_batch(payload)
    except ContractError as exc:
        assert len(str(exc)) <= MAX_DECODE_ERROR, str(exc)[:200]
        return
    assert isinstance(batch, Batch)
    assert len({(p.tag, p.ts) for p in batch.points}) == len(batch.points)  # duplicates removed
    assert batch.gateway is None or (batch.run is not None and batch.seq is not None)


def check_item(topic: str, payload: bytes) -> None:
    item = decode_item(topic, payload, root=ROOT, max_bytes=4096)
    if item.error is None:
        assert item.batch is not None and item.device is not None and item.digest
        return
    assert item.batch is None and item.points == 0
    assert len(item.error.encode()) <= MAX_ERROR_BYTES, item.error[:200]
    assert "\x00" not in item.error
    # a contract error (or an oversize message), never an unexpected exception
    assert item.error.split(":", 1)[0] in ("PayloadError", "TopicError", "MessageTooLarge"), item.error
    assert len(item.payload) <= max(4096, OVERSIZE_PREFIX_BYTES)


@FUZZ
@given(batches)
def test_batch_shaped_json(doc: dict[str, Any]) -> None:
    payload = dumps(doc)
    check_decode(payload)
    check_item(TOPIC, payload)


@FUZZ
@given(json_values)
def test_any_json_value(doc: Any) -> None:
    payload = dumps(doc)
    check_decode(payload)
    check_item(TOPIC, payload)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes(payload: bytes) -> None:
    check_decode(payload)
    check_item(TOPIC, payload)


@FUZZ
@given(st.text(max_size=60), st.binary(max_size=50))
def test_any_topic(topic: str, payload: bytes) -> None:
    check_item(topic, payload)
    check_item(f"{ROOT}/batch/v1/{topic}", dumps({"schema": 1, "points": []}))


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("depth", [1_000, 1_100, 100_000])
@pytest.mark.parametrize("where", ["q", "value", "ts", "tag", "unit", "reason", "gw", "schema", "points"])
def test_deep_nesting_anywhere(where: str, depth: int) -> None:
    point = {"tag": "t", "value": 1, "ts": 1_790_000_000_000}
    doc: dict[str, Any] = {"schema": 1, "gw": "gw-1", "run": 1, "seq": 1, "points": [point]}
    mark = "__deep__"
    if where in point or where in ("q", "unit", "reason"):
        point[where] = mark
    else:
        doc[where] = mark
    payload = orjson.dumps(doc).replace(f'"{mark}"'.encode(), nested(depth).encode())
    check_decode(payload)
    check_item(TOPIC, payload)
    item = decode_item(TOPIC, payload, root=ROOT, max_bytes=1 << 20)
    if where == "reason" and depth < 1024:  # within orjson's depth limit; a reason that is not a string is ignored
        assert item.error is None and item.batch is not None and item.batch.points[0].reason is None
    else:
        assert item.error is not None and item.error.startswith("PayloadError")


@pytest.mark.parametrize("where", ["tag", "value", "unit", "reason", "gw", "schema", "q", "ts", "run", "seq"])
def test_ten_megabyte_strings(where: str) -> None:
    big = "x" * 10_000_000
    point: dict[str, Any] = {"tag": "t", "value": 1, "ts": 1_790_000_000_000}
    doc: dict[str, Any] = {"schema": 1, "gw": "gw-1", "run": 1, "seq": 1, "points": [point]}
    if where in ("tag", "value", "unit", "reason", "q", "ts"):
        point[where] = big
    else:
        doc[where] = big
    payload = orjson.dumps(doc)
    check_decode(payload)
    item = decode_item(TOPIC, payload, root=ROOT, max_bytes=64 << 20)  # decoded, not refused for its size
    if item.error is not None:
        assert len(item.error.encode()) <= MAX_ERROR_BYTES
    else:  # strings of any length are valid values, reasons and units (the size limit bounds them)
        assert where in ("value", "reason", "unit")
    small = decode_item(TOPIC, payload, root=ROOT, max_bytes=1 << 20)
    assert small.error is not None and small.error.startswith(f"MessageTooLarge: {len(payload)} bytes")
    assert len(small.payload) == OVERSIZE_PREFIX_BYTES and small.size == len(payload)


def outcome(decode: Any, raw: list[Any]) -> Any:
    """What ``decode(raw)`` gives: its points with the types of their fields (1, 1.0 and True are equal), or
    the type and text of what it raised."""
    try:
        return [(p, [type(f) for f in p]) for p in decode(raw)]
    except ContractError as exc:
        return type(exc), str(exc)


#: a point of the usual shape, valid ...
usual_point = st.fixed_dictionaries({
    "tag": st.sampled_from(["t1", "t2"]), "value": st.sampled_from([0.5, -0.0, 3, 2**53 + 1, True, None, "on"]),
    "ts": st.sampled_from([0, 1_790_000_000_000, 9_000_000_000_000]), "q": st.sampled_from([0, 2**32 - 1, 2**31]),
}, optional={"unit": st.sampled_from(["degC", "", "u" * 64, None])})
#: ... and what may replace a field (or be added): each check's edges, then anything
EDGES: dict[str, list[Any]] = {
    "tag": ["", "a/b", "x" * 129, "t3", 5, None], "value": [[], {}, {"datetime": 5}, {"datetime": 5, "x": 1}],
    "ts": [-1, 9_000_000_000_001, 1.0, True, None, "1"], "q": [-1, 2**32, True, None, "bad", "meh", 0.0],
    "unit": ["u" * 65, 5, []], "reason": ["timeout", "r" * 401, None, 3], "x": [1, None],
}


@st.composite
def near_usual_point(draw: st.DrawFn) -> dict[str, Any]:
    d = dict(draw(usual_point))
    for key in draw(st.lists(st.sampled_from(sorted(EDGES)), max_size=2)):
        d[key] = draw(st.sampled_from(EDGES[key]) | json_values)
    if draw(st.integers(0, 4)) == 0:
        del d[draw(st.sampled_from(sorted(d)))]
    return d


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(near_usual_point(), near_usual_point(), point, json_values), max_size=6), st.booleans())
def test_usual_points_path_same_as_general(raw: list[Any], known: bool) -> None:
    """proto.points._points checks the usual point inline and hands every other one to _point: whatever the
    points, and whether their tags were seen before or not, the same Points or the same error."""
    from proto import points as module

    general = outcome(lambda r: [module._point(d, None) for d in r], raw)
    if not known:
        module._valid_tags.clear()
    assert outcome(module._points, raw) == general
    assert outcome(module._points, raw) == general  # now with every valid tag known


@pytest.mark.parametrize("known", [True, False])
def test_usual_points_path_every_edge(known: bool) -> None:
    """Each edge of each check of the usual path, one field at a time (and each field left out), on a point
    with and without a unit: the same outcome as the general path's."""
    from proto import points as module

    bases: list[dict[str, Any]] = [{"tag": "t1", "value": 0.5, "ts": 1_790_000_000_000, "q": 0},
                                   {"tag": "t2", "value": 7, "ts": 0, "q": 2**32 - 1, "unit": "u" * 64}]
    cases = [dict(base) for base in bases]
    for base in bases:
        for key, edges in EDGES.items():
            cases += [{**base, key: edge} for edge in edges]
        cases += [{k: v for k, v in base.items() if k != key} for key in base]
    for case in cases:
        general = outcome(lambda r: [module._point(d, None) for d in r], [case])
        if not known:
            module._valid_tags.clear()
        assert outcome(module._points, [case]) == general, case
        assert outcome(module._points, [case]) == general, case
