"""The gateway's write-ahead log: order, confirmation, re-sends, bounds, and recovery after a restart
or a torn write — on disk and in memory."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from pathlib import Path

import pytest

from gateway.errors import SpoolFull, SpoolLocked
from gateway.publisher import Publisher
from gateway.segments import MAGIC
from gateway.settings import Settings
from gateway.spool import LEGACY_RUN, RECORD_OVERHEAD, Spool
from nexus.mqtt import MqttClient
from proto import Point, decode_batch, encode_batch

RUN = 1_790_000_000_000


def fill(s: Spool, n: int, *, run: int = RUN, size: int = 30) -> None:
    for i in range(1, n + 1):
        s.append(f"t/{i}", b"x" * size + bytes([i % 256]), run=run, seq=i, points=i)


def drain(s: Spool) -> list[int]:
    out = []
    while (r := s.next()) is not None:
        out.append(r.seq)
    return out


@pytest.fixture(params=["disk", "memory"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return tmp_path if request.param == "disk" else None


def test_records_come_in_order_and_go_only_when_confirmed(folder: Path | None, tmp_path: Path) -> None:
    s = Spool(folder, max_bytes=10_000_000, segment_bytes=200, fsync=False)
    fill(s, 20)
    s.sync()
    assert s.pending == 20 and s.unconfirmed == 20 and s.points_waiting == sum(range(1, 21))
    if folder is not None:
        assert len(list(tmp_path.glob("*.seg"))) > 3
    got = [s.next() for _ in range(20)]
    assert s.next() is None and s.sent == 20
    assert [r.seq for r in got] == list(range(1, 21))  # type: ignore[union-attr]
    assert [s.payload(r)[-1] for r in got] == list(range(1, 21))  # type: ignore[arg-type]
    assert s.unconfirmed == 20, "sent is not delivered"
    done = s.confirm(RUN, [(1, 5), (7, 20)])
    assert len(done) == 19 and s.unconfirmed == 1 and s.points_waiting == 6
    assert s.confirm(RUN, [(1, 20)])[0].seq == 6  # confirming again is harmless
    assert s.unconfirmed == 0 and s.size <= len(MAGIC)  # the current segment is emptied in place
    if folder is not None:
        assert [p.stat().st_size for p in tmp_path.glob("*.seg")] == [len(MAGIC)]
    s.append("after", b"1", run=RUN, seq=21, points=1)  # a drained spool takes new records
    r = s.next()
    assert r is not None and r.topic == "after" and s.payload(r) == b"1"
    s.close()
    if folder is not None:  # closed with a record unconfirmed: it stays
        assert [r.seq for r in [Spool(folder, max_bytes=10_000).next()] if r] == [21]


def test_a_confirmation_for_another_run_or_unknown_seqs_changes_nothing(folder: Path | None) -> None:
    s = Spool(folder, max_bytes=10_000, fsync=False)
    fill(s, 3)
    assert s.confirm(RUN + 1, [(1, 3)]) == [] and s.confirm(RUN, [(50, 2**62)]) == []
    assert s.unconfirmed == 3
    assert len(s.confirm(RUN, [(0, 2**62)])) == 3  # a wide range looks at what is held, not every number


def test_unconfirmed_records_are_sent_again_after_their_timeout_doubling(folder: Path | None) -> None:
    s = Spool(folder, max_bytes=10_000, fsync=False)
    fill(s, 3)
    a, b, _ = s.next(), s.next(), s.next()
    assert a is not None and b is not None
    t = a.sent_at
    assert s.due(10.0, now=t + 9.9) == 0
    s.confirm(RUN, [(3, 3)])
    assert s.due(10.0, now=t + 10.1) == 2  # 1 and 2; 3 was confirmed
    assert drain(s) == [1, 2]  # oldest first, again
    assert s.due(10.0, now=a.sent_at + 19.9) == 0 and s.due(10.0, now=a.sent_at + 20.1) == 2  # doubled
    s.next()
    assert s.due(10.0, now=a.sent_at + 1, skip={a.key}) == 0  # PUBACK outstanding: the client re-sends it


def test_after_a_reconnect_every_sent_unconfirmed_record_goes_first_in_order(folder: Path | None) -> None:
    s = Spool(folder, max_bytes=10_000, fsync=False)
    fill(s, 6)
    for _ in range(4):
        s.next()
    assert s.resend_all(skip={(RUN, 2)}) == 3
    assert drain(s) == [1, 3, 4, 5, 6]


def test_retry_and_due_at_once_keep_the_order(folder: Path | None) -> None:
    s = Spool(folder, max_bytes=10_000, fsync=False)
    fill(s, 4)
    r1, r2 = s.next(), s.next()
    assert r1 is not None and r2 is not None
    s.retry(r2)
    s.due_now(r1)  # nobody subscribed when it went out
    assert s.due(10.0) == 1
    assert drain(s) == [1, 2, 3, 4]


def test_unconfirmed_records_survive_a_restart_under_their_own_run(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=100)
    fill(s, 10, size=20)
    s.sync()
    for _ in range(5):
        s.next()
    s.confirm(RUN, [(1, 4)])  # 5 sent, not confirmed: must come again
    s.close()
    again = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=100, cache_bytes=0)
    recs = []
    while (r := again.next()) is not None:
        recs.append(r)
    assert [(r.run, r.seq) for r in recs] == [(RUN, i) for i in range(5, 11)]
    assert [again.payload(r)[-1] for r in recs] == list(range(5, 11))  # read back from disk
    assert again.points_waiting == sum(range(5, 11))
    again.confirm(RUN, [(5, 10)])
    assert list(tmp_path.glob("*.seg")) == []


def test_a_torn_last_record_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10_000_000)
    s.append("a", b"one", run=RUN, seq=1, points=1)
    s.append("b", b"two", run=RUN, seq=2, points=1)
    s.close()
    (seg,) = tmp_path.glob("*.seg")
    data = seg.read_bytes()
    assert data.startswith(MAGIC)
    seg.write_bytes(data[:-2])  # power cut in the middle of the second record
    again = Spool(tmp_path, max_bytes=10_000_000)
    r = again.next()
    assert r is not None and (r.topic, again.payload(r)) == ("a", b"one")
    assert again.next() is None
    again.append("c", b"three", run=RUN + 1, seq=1, points=1)  # after the good part, not the torn bytes
    again.close()
    third = Spool(tmp_path, max_bytes=10_000_000)
    assert [third.next().topic, third.next().topic] == ["a", "c"]  # type: ignore[union-attr]


def _legacy_record(topic: str, payload: bytes) -> bytes:
    """A record as the disk buffer before the write-ahead log wrote it (no file header, no run/seq;
    its crc covers topic + payload, not the topic length)."""
    t = topic.encode()
    return struct.pack(">IIH", len(t) + len(payload) + 2, zlib.crc32(t + payload), len(t)) + t + payload


async def test_a_spool_of_the_earlier_format_is_adopted_by_the_publisher(tmp_path: Path) -> None:
    """Messages of the disk buffer before the write-ahead log are sent as they were (same bytes, so
    ingestion stores those it had already once), done at the broker's PUBACK as they were then."""
    old = encode_batch([Point("a", 1.5, 1_790_000_000_000), Point("b", 2, 1_790_000_000_000)], seq=9)
    (tmp_path / "000000000001.seg").write_bytes(
        _legacy_record("nexus/batch/v1/e/s/a/l/d", old) + _legacy_record("nexus/batch/v1/e/s/a/l/d", b"garbage"))
    spool = Spool(tmp_path, max_bytes=10_000_000)
    assert spool.legacy == [tmp_path / "000000000001.seg.legacy"] and spool.next() is None
    settings = Settings(gateway_id="gw1")
    pub = Publisher(settings, MqttClient(settings.mqtt, client_id="t"), asyncio.Queue(), spool, run=5)
    assert pub.adopt_legacy() == 2
    recs = [spool.next(), spool.next()]
    assert [(r.run, r.seq, r.points) for r in recs if r] == [(LEGACY_RUN, 1, 2), (LEGACY_RUN, 2, 0)]
    assert [spool.payload(r) for r in recs if r] == [old, b"garbage"]  # ingestion dead-letters the garbage
    assert spool.legacy == [] and not list(tmp_path.glob("*.legacy"))
    spool.close()
    again = Spool(tmp_path, max_bytes=10_000_000)  # adopted records are durable in the new format
    assert [(r.run, r.seq) for r in [again.next(), again.next()] if r] == [(LEGACY_RUN, 1), (LEGACY_RUN, 2)]


def test_one_process_per_spool_folder(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10_000)
    with pytest.raises(SpoolLocked, match="in use by another process"):
        Spool(tmp_path, max_bytes=10_000)
    s.close()
    Spool(tmp_path, max_bytes=10_000).close()


def test_a_failing_disk_never_breaks_the_bookkeeping(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=100, fsync=False)
    s.append("t", b"x" * 50, run=RUN, seq=1, points=1)
    s.folder = tmp_path / "gone"  # the next rotation cannot create its file
    with pytest.raises(OSError):
        s.append("t", b"y" * 80, run=RUN, seq=2, points=1)
    s.folder = tmp_path
    s.append("t", b"y" * 80, run=RUN, seq=2, points=1)  # retried: works once the disk does
    assert [r.seq for r in [s.next(), s.next()] if r] == [1, 2] and s.unconfirmed == 2


def test_due_costs_the_records_due_not_all_that_are_sent(folder: Path | None) -> None:
    s = Spool(folder, max_bytes=10**9, fsync=False)
    fill(s, 50_000, size=1)
    for _ in range(50_000):
        s.next()
    t0 = time.perf_counter()
    for _ in range(100):
        assert s.due(10.0) == 0
    assert time.perf_counter() - t0 < 0.05  # 100 checks of 50,000 sent records (a full scan: ~2 s)


def test_a_full_spool_refuses_instead_of_dropping(folder: Path | None) -> None:
    s = Spool(folder, max_bytes=250 + RECORD_OVERHEAD, fsync=False)  # one record of 100 bytes and its index
    s.append("t", b"x" * 100, run=RUN, seq=1, points=1)
    with pytest.raises(SpoolFull, match=f"limit {250 + RECORD_OVERHEAD}"):
        s.append("t", b"x" * 100, run=RUN, seq=2, points=1)
    s.next()
    with pytest.raises(SpoolFull):  # sent is not confirmed: still held
        s.append("t", b"x" * 100, run=RUN, seq=2, points=1)
    s.confirm(RUN, [(1, 1)])
    s.append("t", b"x" * 100, run=RUN, seq=2, points=1)  # room again


def test_a_record_the_broker_refuses_goes_to_rejected_and_its_segment_can_go(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10_000, fsync=False)
    s.append("a", b"refused", run=RUN, seq=1, points=3)
    r = s.next()
    assert r is not None
    path = s.reject(r)
    assert path is not None and path.name == "rejected.seg" and s.unconfirmed == 0 and s.points_waiting == 0
    s.close()
    assert list(tmp_path.glob("0*.seg")) == []  # the data segment is gone, the record kept aside
    again = Spool(tmp_path, max_bytes=10_000)
    assert again.next() is None  # rejected records are not sent again


def test_a_device_batch_of_long_strings_is_split_below_the_message_bound(tmp_path: Path) -> None:
    from gateway.config import load_plant
    from gateway.readings import DeviceBatch
    from proto.streams import MAX_MESSAGE_BYTES

    plant = tmp_path / "plant.toml"
    plant.write_text('[plant]\nenterprise = "e"\nsite = "s"\narea = "a"\nline = "l"\n'
                     '[[devices]]\nid = "d"\nport = 1502\n  [[devices.tags]]\n  name = "t"\n  address = 0\n')
    device = load_plant(plant).devices[0]
    points = [Point(f"s{i}", "x" * 100_000, 1_790_000_000_000) for i in range(20)]  # 2 MB in one poll
    settings = Settings(gateway_id="gw1")

    async def messages() -> list[tuple[str, bytes, int]]:
        pub = Publisher(settings, MqttClient(settings.mqtt, client_id="t"), asyncio.Queue(),
                        Spool(None, max_bytes=10**8), run=5)
        return list(pub._messages(DeviceBatch(device, points)))

    out = asyncio.run(messages())
    assert all(len(p) <= MAX_MESSAGE_BYTES for _, p, _ in out) and len(out) >= 4
    decoded = [decode_batch(p) for _, p, _ in out]
    assert [b.seq for b in decoded] == list(range(1, len(out) + 1))  # numbered in order, no gaps
    assert [p for b in decoded for p in b.points] == points and sum(n for *_, n in out) == 20
