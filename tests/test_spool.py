"""The gateway's disk buffer: order, acknowledgement, bounds, and recovery after a restart or a torn write."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.spool import Spool, SpoolFull


def test_records_come_back_in_order_and_segments_go_when_acknowledged(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=200, fsync=False)
    for i in range(20):
        s.append(f"t/{i}", b"x" * 30 + bytes([i]))
    assert s.pending == 20 and s.unacked == 20 and len(list(tmp_path.glob("*.seg"))) > 3
    got = [s.next() for _ in range(20)]
    assert s.next() is None
    assert [r.topic for r in got] == [f"t/{i}" for i in range(20)]  # type: ignore[union-attr]
    assert [r.payload[-1] for r in got] == list(range(20))  # type: ignore[union-attr]
    for r in got:
        s.ack(r)  # type: ignore[arg-type]
    assert s.unacked == 0 and s.size == 0 and list(tmp_path.glob("*.seg")) == []
    s.append("after", b"1")  # a drained spool takes new records
    assert s.next().topic == "after"  # type: ignore[union-attr]


def test_unacknowledged_records_survive_a_restart(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=100)
    for i in range(10):
        s.append("t", str(i).encode() * 20)
    first = [s.next() for _ in range(4)]
    for r in first:
        s.ack(r)  # type: ignore[arg-type]
    s.next()  # handed out, never acknowledged: must come again
    s.close()
    again = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=100)
    payloads = []
    while (r := again.next()) is not None:
        payloads.append(r.payload[:1])
    # whole segments are kept until every record in them is acknowledged: at least 4..9, in order
    assert payloads[-6:] == [str(i).encode() for i in range(4, 10)]
    assert payloads == sorted(payloads)


def test_a_torn_last_record_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10_000_000)
    s.append("a", b"one")
    s.append("b", b"two")
    s.close()
    (seg,) = tmp_path.glob("*.seg")
    data = seg.read_bytes()
    seg.write_bytes(data[:-2])  # power cut in the middle of the second record
    again = Spool(tmp_path, max_bytes=10_000_000)
    assert [(r.topic, r.payload) for r in [again.next()]] == [("a", b"one")]  # type: ignore[union-attr]
    assert again.next() is None
    again.append("c", b"three")  # appends after the good part, not after the torn bytes
    again.close()
    third = Spool(tmp_path, max_bytes=10_000_000)
    assert [third.next().topic, third.next().topic] == ["a", "c"]  # type: ignore[union-attr]


def test_a_full_spool_refuses_instead_of_dropping(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=200, fsync=False)
    s.append("t", b"x" * 100)
    with pytest.raises(SpoolFull, match="limit 200"):
        s.append("t", b"x" * 100)
    r = s.next()
    s.ack(r)  # type: ignore[arg-type]
    s.append("t", b"x" * 100)  # room again


def test_requeue_puts_a_record_back_in_front(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10_000, fsync=False)
    s.append("a", b"1")
    s.append("b", b"2")
    r = s.next()
    s.requeue(r)  # type: ignore[arg-type]
    assert [s.next().topic, s.next().topic] == ["a", "b"]  # type: ignore[union-attr]


def test_a_record_the_broker_refuses_goes_to_rejected_and_its_segment_can_go(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10_000, fsync=False)
    s.append("a", b"refused")
    r = s.next()
    path = s.reject(r)  # type: ignore[arg-type]
    assert path.name == "rejected.seg" and s.unacked == 0
    assert list(tmp_path.glob("0*.seg")) == []  # the data segment is gone, the record kept aside
    again = Spool(tmp_path, max_bytes=10_000)
    assert again.next() is None  # rejected records are not replayed
