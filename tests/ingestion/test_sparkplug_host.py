"""The host application's rules (ingestion/sparkplug/host.py), fed by our own edge node's messages (an
in-process round trip through the real codec): births to points on UNS paths, exact values of every tag type,
a seq gap and an unknown alias asking for a rebirth (and the rebirth answering it), DATA before any birth a
dead letter, deaths marking the tags BAD, a stale will ignored."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.sparkplug.node import BdSeqStore, EdgeNode, Out, TagDef
from ingestion.sparkplug.host import REBIRTH_EVERY_MS, Host, HostResult, PathMap
from proto.points import Point, Status
from proto.sparkplug import REBIRTH, DataType, Metric, Payload, decode_payload, encode_payload
from proto.uns import DevicePath

G, N = "plant1", "gw-1"
T0 = 1_790_000_000_000
TYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
         "string"]
VALUES: list[float | int | bool | str] = [True, -128, 255, -32768, 65535, -2**31, 2**32 - 1, -2**63, 2**64 - 1,
                                          1.5, 2.0**60 + 0.5, "Grüße"]


def edge(tmp_path: Path) -> EdgeNode:
    n = EdgeNode(G, N, bdseq=BdSeqStore(tmp_path / "bdseq"))
    n.set_device("press-1", [TagDef(f"t_{t}", t, "bar" if t == "float64" else None) for t in TYPES])
    return n


def feed(host: Host, outs: list[Out], now: int = T0) -> list[HostResult]:
    return [host.on_message(o.topic, o.payload, now_ms=now) for o in outs]


def points(results: list[HostResult]) -> list[tuple[str, Point]]:
    return [(path.path, p) for r in results for path, pts in r.points for p in pts]


def test_births_and_data_land_on_uns_paths_with_every_value_exact(tmp_path: Path) -> None:
    node, host = edge(tmp_path), Host("nexus")
    node.new_session()
    births = feed(host, node.on_connected())
    assert all(r.error is None and not r.commands for r in births)
    path = DevicePath(G, N, "sparkplug", N, "press-1").path
    born = points(births)
    assert {p.tag for _, p in born} == {f"t_{t}" for t in TYPES}
    assert all(pa == path and p.status != Status.GOOD and p.value is None for pa, p in born)  # nothing read yet
    read = [Point(f"t_{t}", v, T0 + i, Status.GOOD) for i, (t, v) in enumerate(zip(TYPES, VALUES, strict=True))]
    got = points(feed(host, node.data("press-1", read)))
    assert [p for _, p in got] == [p._replace(unit="bar" if p.tag == "t_float64" else None) for p in read]


def test_the_mapping_is_configurable_and_folders_become_dots(tmp_path: Path) -> None:
    n = EdgeNode(G, N, bdseq=BdSeqStore(tmp_path / "b"))
    n.set_device("d1", [TagDef("Inputs/Temp", "float64")])
    n.new_session()
    host = Host("nexus", PathMap(enterprise="acme", site="berlin", area="{group}", line="{node}"))
    feed(host, n.on_connected())
    [(path, p)] = points(feed(host, n.data("d1", [Point("Inputs/Temp", 3.0, T0)])))
    assert path == "acme/berlin/plant1/gw-1/d1" and p.tag == "Inputs.Temp"


def test_a_seq_gap_asks_for_a_rebirth_once_and_the_rebirth_is_followed(tmp_path: Path) -> None:
    node, host = edge(tmp_path), Host("nexus")
    node.new_session()
    feed(host, node.on_connected())
    node.data("press-1", [Point("t_int32", 1, T0)])  # lost on the way
    [r] = feed(host, node.data("press-1", [Point("t_int32", 2, T0 + 1)]))
    assert [p.value for _, p in points([r])] == [2]  # readable: stored, the gap not guessed
    [cmd] = r.commands
    assert cmd.topic == f"spBv1.0/{G}/NCMD/{N}"
    assert [(m.name, m.value) for m in decode_payload(cmd.payload).metrics] == [(REBIRTH, True)]
    [r2] = feed(host, node.data("press-1", [Point("t_int32", 3, T0 + 2)]))  # in order again: no new ask
    assert not r2.commands
    outs, _ = node.on_message(cmd.topic, cmd.payload)  # the node answers
    assert all(not r.commands and r.error is None for r in feed(host, outs))


def test_an_unknown_alias_or_data_before_births_is_a_dead_letter_and_asks_for_a_rebirth(tmp_path: Path) -> None:
    node = edge(tmp_path)
    node.new_session()
    first = Host("nexus")
    feed(first, node.on_connected())
    data = node.data("press-1", [Point("t_int32", 1, T0)])
    restarted = Host("nexus")  # a host that never saw the births
    [r] = feed(restarted, data)
    assert r.error and "before its NBIRTH" in r.error and len(r.commands) == 1 and not r.points
    [r] = feed(restarted, node.data("press-1", [Point("t_int32", 2, T0)]), now=T0 + 1)
    assert r.error and not r.commands  # asked a moment ago: not again yet
    [r] = feed(restarted, node.data("press-1", [Point("t_int32", 3, T0)]), now=T0 + REBIRTH_EVERY_MS)
    assert len(r.commands) == 1
    # an alias no birth declared (a birth lost, metrics added since)
    node.set_device("press-1", [TagDef("t_int32", "int32"), TagDef("extra", "int32")])  # DDEATH + DBIRTH lost
    [r] = feed(first, node.data("press-1", [Point("extra", 7, T0)]))
    assert r.error and "alias" in r.error and r.commands


def test_deaths_mark_the_tags_bad_and_a_stale_will_is_ignored(tmp_path: Path) -> None:
    node, host = edge(tmp_path), Host("nexus")
    old_will = node.new_session()
    feed(host, node.on_connected())
    will = node.new_session()  # a reconnect: new bdSeq, new births
    feed(host, node.on_connected())
    assert feed(host, [old_will])[0].points == []  # the broker's will of the older session, late: ignored
    [r] = feed(host, node.device_down("press-1"))
    assert {(p.status, p.reason) for _, p in points([r])} == {(Status.BAD_NOT_CONNECTED, "device offline")}
    assert len(points([r])) == len(TYPES)
    [r] = feed(host, [will])
    assert len(points([r])) == len(TYPES)
    assert {p.reason for _, p in points([r])} == {"edge node offline"}
    [r] = feed(host, node.data("press-1", [Point("t_int32", 1, T0)]))  # (a DBIRTH: the device was down)
    assert r.commands and not r.points  # the node is dead until its NBIRTH: a rebirth is asked


def test_a_rebirth_does_not_store_the_current_values_again(tmp_path: Path) -> None:
    """A birth repeats each metric's current value; one no newer than what the host stored is left out, a newer
    one (read since, or a metric with no DATA yet) is stored. The memory outlives the NBIRTH."""
    node, host = edge(tmp_path), Host("nexus")
    node.new_session()
    feed(host, node.on_connected())  # the births' "no value read yet" carry the clock's time: read after it
    t1 = time.time_ns() // 1_000_000 + 1_000
    feed(host, node.data("press-1", [Point("t_int32", 1, t1), Point("t_int16", 5, t1)]))
    outs, _ = node.on_message(f"spBv1.0/{G}/NCMD/{N}", ncmd_rebirth())
    again = points(feed(host, outs))
    stored = {p.tag: p.value for _, p in again}
    assert "t_int32" not in stored and "t_int16" not in stored  # already stored by the DDATA
    # the others were never read: a BAD birth value at the birth's time, stored when that time is newer (it may be
    # the same millisecond as the first birth's here)
    assert all(v is None for v in stored.values())
    node.devices["press-1"].last["t_int32"] = Point("t_int32", 2, t1 + 5)  # read, not sent as DATA
    outs, _ = node.on_message(f"spBv1.0/{G}/NCMD/{N}", ncmd_rebirth())
    assert [(p.tag, p.value) for _, p in points(feed(host, outs, now=T0 + REBIRTH_EVERY_MS))
            if p.tag == "t_int32"] == [("t_int32", 2)]


def ncmd_rebirth() -> bytes:
    return encode_payload(Payload(timestamp=T0, metrics=[Metric(REBIRTH, DataType.BOOLEAN, True)]))
