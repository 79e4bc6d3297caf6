"""The edge node's rules, one by one (docs/sparkplug.md lists them with the specification's sections): the
messages :class:`gateway.sparkplug.node.EdgeNode` gives for each event, decoded with our codec and read
field by field off the protobuf where the rule is about what is on the wire."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gateway.sparkplug.node import MAX_HELD_POINTS, BdSeqStore, EdgeNode, Out, TagDef, WriteRequest
from proto.points import Point
from proto.sparkplug import BDSEQ, REBIRTH, DataType, Metric, Payload, decode_payload, encode_payload
from proto.sparkplug import sparkplug_b_pb2 as pb
from proto.sparkplug.topics import encode_state

G, N = "plant1", "gw-1"
TAGS = [TagDef("temp", "float64", "degC", writable=True), TagDef("count", "uint64"), TagDef("run", "bool")]
T0 = 1_790_000_000_000


def node(tmp_path: Path, host: str | None = None) -> EdgeNode:
    return EdgeNode(G, N, primary_host_id=host, bdseq=BdSeqStore(tmp_path / "bdseq"))


def raw(out: Out) -> pb.Payload:
    return pb.Payload.FromString(out.payload)


def kinds(outs: list[Out]) -> list[str]:
    return ["/".join(o.topic.split("/")[2:]) for o in outs]


def born(tmp_path: Path, devices: int = 2, host: str | None = None) -> tuple[EdgeNode, list[Out]]:
    n = node(tmp_path, host)
    for i in range(devices):
        n.set_device(f"dev{i}", TAGS)
    n.new_session()
    return n, n.on_connected()


def test_bdseq_is_kept_on_disk_increments_per_session_and_wraps(tmp_path: Path) -> None:
    a = node(tmp_path)
    assert [decode_payload(a.new_session().payload).metrics[0].value for _ in range(3)] == [0, 1, 2]
    b = node(tmp_path)  # a restart: on from the file
    assert decode_payload(b.new_session().payload).metrics[0].value == 3
    (tmp_path / "bdseq").write_text("255\n")
    assert decode_payload(node(tmp_path).new_session().payload).metrics[0].value == 0


def test_the_will_is_an_ndeath_with_only_bdseq_by_name_qos1_not_retained(tmp_path: Path) -> None:
    will = node(tmp_path).new_session()
    assert will.topic == f"spBv1.0/{G}/NDEATH/{N}" and will.qos == 1 and not will.retain
    p = raw(will)
    assert not p.HasField("seq")
    assert [(m.name, m.HasField("alias"), m.datatype, m.long_value) for m in p.metrics] == [
        (BDSEQ, False, DataType.INT64, 0)]


def test_nbirth_first_with_seq_0_the_wills_bdseq_and_rebirth_then_a_dbirth_per_device(tmp_path: Path) -> None:
    n = node(tmp_path)
    for i in range(2):
        n.set_device(f"dev{i}", TAGS)
    will = decode_payload(n.new_session().payload)
    outs = n.on_connected()
    assert kinds(outs) == [f"NBIRTH/{N}", f"DBIRTH/{N}/dev0", f"DBIRTH/{N}/dev1"]
    assert all(o.qos == 0 and not o.retain for o in outs)
    nbirth = decode_payload(outs[0].payload)
    assert nbirth.seq == 0
    metrics = {m.name: m for m in nbirth.metrics}
    assert metrics[BDSEQ].value == will.metrics[0].value
    assert metrics[REBIRTH].datatype == DataType.BOOLEAN and metrics[REBIRTH].value is False
    assert [decode_payload(o.payload).seq for o in outs] == [0, 1, 2]


def test_births_declare_name_alias_and_datatype_and_aliases_are_unique_across_the_node(tmp_path: Path) -> None:
    _, outs = born(tmp_path, devices=3)
    aliases = []
    for o in outs[1:]:
        for m in raw(o).metrics:
            assert m.name and m.HasField("alias") and m.datatype
            aliases.append(m.alias)
    assert len(aliases) == 9 and len(set(aliases)) == 9
    dbirth = decode_payload(outs[1].payload)
    temp = next(m for m in dbirth.metrics if m.name == "temp")
    assert temp.datatype == DataType.DOUBLE and temp.is_null  # nothing read yet: null, BAD
    assert temp.properties["engUnit"].value == "degC"


def test_ddata_carries_aliases_alone_without_datatypes_and_exact_64_bit_values(tmp_path: Path) -> None:
    n, outs = born(tmp_path, devices=1)
    [out] = n.data("dev0", [Point("temp", 21.5, T0), Point("count", 2**64 - 1, T0), Point("nope", 1, T0)])
    assert out.topic == f"spBv1.0/{G}/DDATA/{N}/dev0" and out.qos == 0
    p = raw(out)
    assert p.seq == 2
    assert all(not m.name and m.HasField("alias") and not m.datatype for m in p.metrics)
    declared: dict[int | str, DataType] = {m.alias: DataType(m.datatype) for m in raw(outs[1]).metrics}
    values = {m.alias: m.value for m in decode_payload(out.payload, declared=declared).metrics}
    by_name = {m.name: m.alias for m in raw(outs[1]).metrics}
    assert values == {by_name["temp"]: 21.5, by_name["count"]: 2**64 - 1}


def test_seq_wraps_past_255(tmp_path: Path) -> None:
    n, outs = born(tmp_path, devices=1)
    seqs = [decode_payload(o.payload).seq for o in outs]
    for i in range(300):
        seqs += [raw(o).seq for o in n.data("dev0", [Point("temp", float(i), T0 + i)])]
    assert seqs[:2] == [0, 1] and seqs[255:259] == [255, 0, 1, 2]
    assert all(b == (a + 1) % 256 for a, b in itertools.pairwise(seqs))  # type: ignore[operator]


def test_a_rebirth_sends_nbirth_and_every_dbirth_again_with_the_same_bdseq(tmp_path: Path) -> None:
    n, first = born(tmp_path, devices=2)
    n.data("dev0", [Point("temp", 30.0, T0)])
    ncmd = encode_payload(Payload(timestamp=T0, metrics=[Metric(REBIRTH, DataType.BOOLEAN, True)]))
    outs, writes = n.on_message(f"spBv1.0/{G}/NCMD/{N}", ncmd)
    assert writes == [] and kinds(outs) == kinds(first)
    assert decode_payload(outs[0].payload).seq == 0
    assert decode_payload(outs[0].payload).metrics[0].value == decode_payload(first[0].payload).metrics[0].value
    temp = next(m for m in decode_payload(outs[1].payload).metrics if m.name == "temp")
    assert temp.value == 30.0  # the birth has the current value
    # the aliases stay what they were
    assert [m.alias for m in raw(outs[1]).metrics] == [m.alias for m in raw(first[1]).metrics]


def test_dcmd_by_alias_or_name_becomes_writes_and_unknown_metrics_are_ignored(tmp_path: Path) -> None:
    n, outs = born(tmp_path, devices=1)
    alias = {m.name: m.alias for m in raw(outs[1]).metrics}
    dcmd = encode_payload(Payload(timestamp=T0, metrics=[
        Metric(None, DataType.DOUBLE, 42.5, alias=alias["temp"]), Metric("run", DataType.BOOLEAN, True)]),
        with_datatypes=False)
    outs2, writes = n.on_message(f"spBv1.0/{G}/DCMD/{N}/dev0", dcmd)
    assert outs2 == [] and writes == [WriteRequest("dev0", "temp", 42.5), WriteRequest("dev0", "run", True)]
    unknown = encode_payload(Payload(timestamp=T0, metrics=[Metric(None, DataType.DOUBLE, 1.0, alias=999)]),
                             with_datatypes=False)
    assert n.on_message(f"spBv1.0/{G}/DCMD/{N}/dev0", unknown) == ([], [])  # an alias never declared: logged
    assert n.on_message(f"spBv1.0/{G}/DCMD/{N}/other", dcmd) == ([], [])  # unknown device: logged
    assert n.on_message(f"spBv1.0/{G}/DCMD/{N}/dev0", b"\xff\xff") == ([], [])  # undecodable: logged


def test_device_changes_removal_and_outage_give_ddeath_and_dbirth(tmp_path: Path) -> None:
    n, _ = born(tmp_path, devices=1)
    assert kinds(n.set_device("dev0", TAGS)) == []  # unchanged: nothing
    assert kinds(n.set_device("dev0", [*TAGS, TagDef("new", "int32")])) == [f"DDEATH/{N}/dev0", f"DBIRTH/{N}/dev0"]
    assert kinds(n.set_device("dev9", TAGS)) == [f"DBIRTH/{N}/dev9"]
    assert kinds(n.device_down("dev0")) == [f"DDEATH/{N}/dev0"]
    assert n.device_down("dev0") == []
    assert kinds(n.data("dev0", [Point("temp", 1.0, T0)])) == [f"DBIRTH/{N}/dev0"]  # answering again
    assert kinds(n.remove_device("dev9")) == [f"DDEATH/{N}/dev9"]
    assert n.remove_device("dev9") == []
    with pytest.raises(ValueError):
        n.set_device("dev1", [TagDef("x", "complex128")])


def test_with_a_primary_host_nothing_is_born_before_it_is_online_and_older_states_are_ignored(
        tmp_path: Path) -> None:
    host = "scada"
    n = node(tmp_path, host)
    n.set_device("dev0", TAGS)
    assert f"spBv1.0/STATE/{host}" in n.command_filters()
    n.new_session()
    assert n.on_connected() == []
    n.data("dev0", [Point("temp", 1.0, T0), Point("temp", 2.0, T0 + 1000)])  # kept
    state = f"spBv1.0/STATE/{host}"
    outs, _ = n.on_message(state, encode_state(True, 100))
    assert kinds(outs) == [f"NBIRTH/{N}", f"DBIRTH/{N}/dev0", f"DDATA/{N}/dev0"]
    hist = decode_payload(outs[2].payload, declared={m.alias: DataType(m.datatype) for m in raw(outs[1]).metrics})
    # the newest reading is the birth's value, not sent twice: the history is what came before it
    assert [(m.value, m.timestamp) for m in decode_payload(outs[1].payload).metrics if m.name == "temp"] == [
        (2.0, T0 + 1000)]
    assert [(m.value, m.is_historical, m.timestamp) for m in hist.metrics] == [(1.0, True, T0)]
    assert n.on_message(state, encode_state(False, 50)) == ([], [])  # older than the online one: ignored
    outs, _ = n.on_message(state, encode_state(False, 200))
    assert len(outs) == 1 and outs[0].disconnect and outs[0].topic.endswith(f"NDEATH/{N}") and outs[0].qos == 1
    assert n.data("dev0", [Point("temp", 3.0, T0 + 2000)]) == []  # kept for the next session
    n.on_disconnected()
    will = decode_payload(n.new_session().payload)
    assert will.metrics[0].value == 1  # a new session, a new bdSeq
    assert n.on_connected() == []  # still offline
    outs, _ = n.on_message(state, b"ONLINE")  # a 2.x host: no timestamp, taken as newer
    assert kinds(outs) == [f"NBIRTH/{N}", f"DBIRTH/{N}/dev0"]  # the one reading kept is the birth's value


def test_points_kept_while_unborn_are_bounded_and_counted(tmp_path: Path) -> None:
    n = node(tmp_path, "scada")
    n.set_device("dev0", TAGS)
    n.new_session()
    n.on_connected()
    n.data("dev0", [Point("temp", float(i), T0 + i) for i in range(MAX_HELD_POINTS + 10)])
    assert n.dropped_held == 10
    assert len(n.devices["dev0"].held) == MAX_HELD_POINTS


def test_a_clean_stop_sends_the_ndeath_itself(tmp_path: Path) -> None:
    n, _ = born(tmp_path, devices=1)
    [out] = n.shutdown()
    assert out.topic.endswith(f"NDEATH/{N}") and out.qos == 1
