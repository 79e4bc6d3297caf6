"""The Sparkplug B primary host in real ingestion workers (processes), against a real mosquitto and PostgreSQL:
our EdgeNode's messages (and hand-made ones through a plain paho client) → the host → the same historian rows
as JSON points. Every data type exact (64-bit integers beyond 2^53 included), births, deaths as BAD rows with
the reason (the will delivered when the node's connection drops), a stale will ignored, a seq gap and an
unknown alias asking for a rebirth (NCMD seen by a recording subscriber), dead letters counted exactly, the
host's STATE (online retained, the will when the host is SIGKILLed, offline on a clean stop) and a second
worker taking the host over. Counts are exact: expected == distinct (tag, time) == rows."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest

from gateway.sparkplug.node import BdSeqStore, EdgeNode, Out, TagDef
from proto.points import Point, Status
from proto.sparkplug import REBIRTH, DataType, Metric, Payload, bdseq_metric, decode_payload, encode_payload
from proto.sparkplug.topics import build_topic, state_topic
from tests.support.core import Recorder
from tests.support.daemons import ingestion_env
from tests.support.db import query, stored_points
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

T0 = 1_790_000_000_000
TYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
         "string"]
VALUES: list[Any] = [True, -128, 255, -32768, 65535, -2**31, 2**32 - 1, -2**63, 2**64 - 1, 1.5, 2.0**60 + 0.5,
                     "Grüße"]
ROWS = ("SELECT t.enterprise, t.site, t.area, t.line, t.device, t.tag, t.unit, p.value, p.value_text, p.status,"
        " r.text, (extract(epoch FROM p.time) * 1000)::bigint FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id"
        " LEFT JOIN nexus.reasons r ON r.id = p.reason_id ORDER BY p.time, t.tag")


def env(broker: Any, db: str, prefix: str, worker: str = "w1", **extra: str) -> dict[str, str]:
    """A worker hosting group ``prefix`` (each test its own group and host id)."""
    return ingestion_env(broker, db, prefix, worker, NEXUS_INGESTION_SPARKPLUG_ENABLED="true",
                         NEXUS_INGESTION_SPARKPLUG_HOST_ID=f"{prefix}-host",
                         NEXUS_INGESTION_SPARKPLUG_GROUP_FILTER=prefix,
                         NEXUS_INGESTION_SPARKPLUG_TAKEOVER_INTERVAL="0.3", **extra)


class Node:
    """Our EdgeNode over a plain paho client: its NDEATH as the will, every message at QoS 1."""

    def __init__(self, port: int, group: str, node_id: str, tmp_path: Path, devices: dict[str, list[TagDef]]) -> None:
        self.edge = EdgeNode(group, node_id, bdseq=BdSeqStore(tmp_path / f"{node_id}.bdseq"))
        for device, tags in devices.items():
            self.edge.set_device(device, tags)
        self.port = port
        self.will = self.edge.new_session()
        self.client = self._connect(self.will)

    def reconnect(self) -> None:
        """A clean DISCONNECT (no will), then a new session: the next bdSeq."""
        self.close()
        self.will = self.edge.new_session()
        self.client = self._connect(self.will)

    def _connect(self, will: Out) -> paho.Client:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{self.edge.group_id}-{self.edge.edge_node_id}",
                        protocol=paho.MQTTv5)
        c.will_set(will.topic, will.payload, qos=1, retain=False)
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        return c

    def send(self, outs: list[Out]) -> None:
        for o in outs:
            self.client.publish(o.topic, o.payload, qos=1).wait_for_publish(5)

    def crash(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes the will."""
        sock = self.client.socket()
        self.client.loop_stop()
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publisher(port: int) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def states(rec: Recorder, host: str) -> list[tuple[bool, int, bool]]:
    """(online, timestamp, retained) of every STATE of ``host`` seen, in order."""
    out = []
    for _, topic, payload, retained in rec.snapshot():
        if topic == state_topic(host):
            doc = orjson.loads(payload)
            out.append((doc["online"], doc["timestamp"], retained))
    return out


def counts(db: str) -> tuple[int, int]:
    total, distinct = query(db, "SELECT count(*), count(DISTINCT (tag_id, time)) FROM nexus.points")[0]
    return total, distinct


def wait_online(rec: Recorder, host: str, after: int = -1) -> int:
    """The timestamp of the first online STATE newer than ``after``."""
    return wait_for(lambda: next((ts for on, ts, _ in states(rec, host) if on and ts > after), None), 30,
                    what=f"STATE online of {host} (seen: {states(rec, host)})")


def test_every_type_round_trips_into_the_historian_rows(broker, db, prefix, daemons, tmp_path) -> None:
    host = f"{prefix}-host"
    rec = Recorder(broker.port, [state_topic(host)])
    ing = daemons("ingestion", env(broker, db, prefix))
    wait_online(rec, host)
    tags = [TagDef(f"t_{t}", t, "bar" if t == "float64" else None) for t in TYPES]
    node = Node(broker.port, prefix, "gw-1", tmp_path, {"press-1": tags})
    node.send(node.edge.on_connected())  # NBIRTH (bdSeq and Node Control: not stored), DBIRTH: 12 BAD nulls
    read = [Point(f"t_{t}", v, T0 + i, Status.GOOD) for i, (t, v) in enumerate(zip(TYPES, VALUES, strict=True))]
    node.send(node.edge.data("press-1", read))
    node.send(node.edge.data("press-1", [Point("t_int64", 2**53 + 1, T0 + 100), Point("t_uint64", 2**60 + 3, T0 + 100),
                                         Point("t_int32", 5, T0 + 101, Status.UNCERTAIN_LAST_USABLE_VALUE)]))
    # another edge node, made by hand with encode_payload: a DateTime node metric (Unix ms, an int for now)
    pub = publisher(broker.port)
    birth = Payload(timestamp=T0 + 200, seq=0, metrics=[
        bdseq_metric(0), Metric(REBIRTH, DataType.BOOLEAN, False),
        Metric("Clock/Now", DataType.DATETIME, T0 - 5, alias=7)])
    data = Payload(timestamp=T0 + 300, seq=1, metrics=[Metric(None, DataType.DATETIME, T0 + 299, alias=7)])
    for kind, payload in (("NBIRTH", encode_payload(birth)), ("NDATA", encode_payload(data, with_datatypes=False))):
        pub.publish(build_topic(prefix, kind, "gw-2"), payload, qos=1).wait_for_publish(5)
    expected = 12 + 12 + 3 + 2
    wait_for(lambda: stored_points(db) >= expected, 30, what=lambda: f"{expected} points\n{ing.output()}")
    assert ing.stop() == 0
    node.close()
    pub.loop_stop()
    assert counts(db) == (expected, expected)
    rows = query(db, ROWS)
    data_rows = {r[5]: r for r in rows if r[11] in range(T0, T0 + 12)}
    assert {r[:5] for r in rows if r[4] == "press-1"} == {(prefix, "gw-1", "sparkplug", "gw-1", "press-1")}
    for i, (t, v) in enumerate(zip(TYPES, VALUES, strict=True)):
        *_, unit, value, text, status, reason, ts = data_rows[f"t_{t}"]
        assert (ts, status, reason) == (T0 + i, 0, None), t
        assert unit == ("bar" if t == "float64" else None)
        if t == "string":
            assert (value, text) == (None, v)
        elif t == "bool":
            assert (value, text) == (1.0, None)
        elif type(v) is int and abs(v) > 2**53:  # exact as text, the float beside it
            assert (value, text) == (float(v), str(v)), t
        else:
            assert (value, text) == (v, None), t
    later = {(r[5], r[11]): (r[7], r[8], r[9]) for r in rows if r[11] >= T0 + 100}
    assert later[("t_int64", T0 + 100)][1] == str(2**53 + 1)
    assert later[("t_uint64", T0 + 100)][1] == str(2**60 + 3)
    assert later[("t_int32", T0 + 101)] == (5.0, None, Status.UNCERTAIN_LAST_USABLE_VALUE)
    assert later[("Clock.Now", T0 + 200)][0] == T0 - 5  # the birth's value, the folder as "."
    assert later[("Clock.Now", T0 + 300)][0] == T0 + 299  # at the payload's timestamp
    births = [r for r in rows if r[4] == "press-1" and r[11] not in range(T0, T0 + 102)]
    assert len(births) == 12 and all(r[7] is None and r[9] >= 0x80000000 for r in births)
    assert [r[4] for r in rows if r[5] == "Clock.Now"] == ["node", "node"]  # the node's own metrics
    assert query(db, "SELECT count(*) FROM nexus.dead_letters")[0][0] == 0


def test_deaths_are_bad_rows_with_the_reason_and_a_stale_will_is_ignored(broker, db, prefix, daemons,
                                                                         tmp_path) -> None:
    host = f"{prefix}-host"
    rec = Recorder(broker.port, [state_topic(host)])
    ing = daemons("ingestion", env(broker, db, prefix))
    wait_online(rec, host)
    tags = [TagDef("a", "int32"), TagDef("b", "float64", "degC"), TagDef("c", "string")]
    node = Node(broker.port, prefix, "gw-1", tmp_path, {"press-1": tags})
    old_will = node.will
    node.send(node.edge.on_connected())
    wait_for(lambda: stored_points(db) == 3, 20, what="the first births")
    node.reconnect()  # the next bdSeq, births again
    node.send(node.edge.on_connected())
    wait_for(lambda: stored_points(db) == 6, 20, what="the second births")
    node.send([old_will])  # the first session's will, late: a stale NDEATH (older bdSeq), ignored
    node.send(node.edge.device_down("press-1"))  # DDEATH: 3 BAD rows "device offline"
    wait_for(lambda: stored_points(db) == 9, 20, what="the DDEATH's rows")
    node.crash()  # the broker delivers the will: the NDEATH of this session, 3 BAD rows "edge node offline"
    wait_for(lambda: stored_points(db) >= 12, 20, what=lambda: f"the will's rows\n{ing.output()}")
    assert ing.stop() == 0
    assert counts(db) == (12, 12)
    dead = query(db, "SELECT t.tag, p.value, p.status, r.text FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id"
                     " JOIN nexus.reasons r ON r.id = p.reason_id WHERE r.text LIKE '%offline' ORDER BY r.text, t.tag")
    assert dead == [(tag, None, Status.BAD_NOT_CONNECTED, reason) for reason in ("device offline", "edge node offline")
                    for tag in "abc"]
    assert "a stale will, ignored" in ing.output()
    assert query(db, "SELECT count(*) FROM nexus.dead_letters")[0][0] == 0


def test_gaps_and_unknown_aliases_ask_for_a_rebirth_and_bad_messages_are_dead_letters(broker, db, prefix, daemons,
                                                                                      tmp_path) -> None:
    host = f"{prefix}-host"
    rec = Recorder(broker.port, [state_topic(host), f"spBv1.0/{prefix}/NCMD/#"])
    ing = daemons("ingestion", env(broker, db, prefix))
    wait_online(rec, host)
    a = Node(broker.port, prefix, "node-a", tmp_path, {"d1": [TagDef("x", "int32")]})
    b = Node(broker.port, prefix, "node-b", tmp_path, {"d1": [TagDef("x", "int32")]})
    a.send(a.edge.on_connected())
    b.send(b.edge.on_connected())
    a.edge.data("d1", [Point("x", 1, T0)])  # lost on the way: a seq gap
    a.send(a.edge.data("d1", [Point("x", 2, T0 + 1)]))  # stored all the same, and a rebirth asked
    b.edge.set_device("d1", [TagDef("x", "int32"), TagDef("y", "int32")])  # its DDEATH and DBIRTH lost
    unknown = b.edge.data("d1", [Point("y", 7, T0 + 2)])  # an alias the host never saw declared
    b.send(unknown)
    garbage = (build_topic(prefix, "DDATA", "node-b", "d1"), b"\xff\xfe not protobuf")
    stray = (f"spBv1.0/{prefix}/FOO/node-b", b"\x00")  # not a Sparkplug message type
    pub = publisher(broker.port)
    for topic, payload in (garbage, stray):
        pub.publish(topic, payload, qos=1).wait_for_publish(5)

    def ncmds() -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for _, topic, payload, _ in rec.snapshot():
            if "/NCMD/" in topic:
                out.setdefault(topic.rsplit("/", 1)[1], []).append(
                    [(m.name, m.value) for m in decode_payload(payload).metrics])
        return out

    wait_for(lambda: len(ncmds()) == 2, 20, what=lambda: f"two rebirth requests, seen {ncmds()}\n{ing.output()}")
    wait_for(lambda: query(db, "SELECT count(*) FROM nexus.dead_letters")[0][0] >= 3, 20, what="the dead letters")
    wait_for(lambda: stored_points(db) >= 3, 20, what="the points")
    assert ing.stop() == 0
    pub.loop_stop()
    assert ncmds() == {"node-a": [[(REBIRTH, True)]], "node-b": [[(REBIRTH, True)]]}  # once each (5 s apart at most)
    assert counts(db) == (3, 3)  # a's and b's DBIRTH, a's DDATA after the gap
    assert query(db, "SELECT value FROM nexus.points WHERE (extract(epoch FROM time) * 1000)::bigint = %s",
                 (T0 + 1,)) == [(2.0,)]
    rows = query(db, "SELECT topic, payload, error FROM nexus.dead_letters ORDER BY id")
    assert [(r[0], bytes(r[1])) for r in rows] == [(unknown[0].topic, unknown[0].payload), garbage, stray]
    assert "alias" in rows[0][2] and "UnknownMetricError" in rows[0][2]
    assert rows[1][2].startswith("SparkplugError")
    assert "FOO" in rows[2][2]
    assert "3 dead letters" in ing.output()


def test_state_will_on_sigkill_and_a_second_worker_takes_the_host_over(broker, db, prefix, daemons,
                                                                       tmp_path) -> None:
    host = f"{prefix}-host"
    rec = Recorder(broker.port, [state_topic(host)])
    w1 = daemons("ingestion", env(broker, db, prefix, "w1"), name="w1")
    t1 = wait_online(rec, host)
    w2 = daemons("ingestion", env(broker, db, prefix, "w2"), name="w2")
    wait_for(lambda: "waits to take over" in w2.output(), 30, what=lambda: f"w2 waiting\n{w2.output()}")
    late = Recorder(broker.port, [state_topic(host)])  # a subscriber after the start: the retained STATE
    wait_for(lambda: states(late, host), 10, what="the retained STATE")
    assert states(late, host)[0] == (True, t1, True)
    late.close()
    w1.kill()  # SIGKILL: the broker sends w1's will, offline with the online STATE's timestamp
    wait_for(lambda: (False, t1, False) in states(rec, host), 20, what=lambda: f"the will, seen {states(rec, host)}")
    t2 = wait_online(rec, host, after=t1)  # w2 hosts now
    assert "is the primary host" in w2.output()
    node = Node(broker.port, prefix, "gw-1", tmp_path, {"d1": [TagDef("x", "float64")]})
    node.send(node.edge.on_connected())
    node.send(node.edge.data("d1", [Point("x", 1.25, T0)]))
    wait_for(lambda: stored_points(db) >= 2, 20, what=lambda: f"points through the new host\n{w2.output()}")
    assert w2.stop() == 0  # a clean stop: offline STATE (its timestamp t2), then DISCONNECT
    wait_for(lambda: states(rec, host)[-1][:2] == (False, t2), 10, what=lambda: f"offline, seen {states(rec, host)}")
    node.close()
    assert counts(db) == (2, 2)
    last = Recorder(broker.port, [state_topic(host)])
    wait_for(lambda: states(last, host), 10, what="the retained STATE")
    assert states(last, host) == [(False, t2, True)]
    last.close()
    rec.close()
