"""A device's output → numbered messages on the three streams (proto.streams), as the gateway and the
normalizer daemon publish it."""

from __future__ import annotations

from gateway.config import parse_plant
from proto.aggregates import AlarmEvent, Window, decode_events, decode_windows, parse_stream_topic
from proto.points import Point, decode_batch
from proto.streams import Numbering


def test_points_windows_and_events_share_one_numbering() -> None:
    device = parse_plant({"plant": {"enterprise": "e", "site": "s", "area": "a", "line": "l"},
                          "devices": [{"id": "d", "tags": [{"name": "t", "address": 0}]}]}).devices[0]
    windows = [Window("t", i * 1000, 1000, 1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(250)]
    events = [AlarmEvent("t", "high", 5, True, 91.0, 90.0, 700)]
    numbering = Numbering(gateway="gw", run=7, root="nexus", max_items=100)
    out = [(topic, payload, n) for _, topic, payload, n in
           numbering.messages(device.path, [Point("t", 1, 5)], windows, events)]
    kinds = [parse_stream_topic(topic, "nexus")[0] for topic, _, _ in out]
    assert kinds == ["batch", "windows", "windows", "windows", "events"]
    seqs = [decode_batch(out[0][1]).seq, *(decode_windows(p).seq for _, p, _ in out[1:4]),
            decode_events(out[4][1]).seq]
    assert seqs == [1, 2, 3, 4, 5] and numbering.seq == 5
    assert sum(len(decode_windows(p).windows) for _, p, _ in out[1:4]) == 250
    assert [n for _, _, n in out] == [1, 100, 100, 50, 1]  # entries per message
