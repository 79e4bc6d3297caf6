"""The bounded buffer of a subscription driver: changes kept between two ``read()`` calls.

Changes arrive when the device sends them (OPC UA monitored items, MQTT messages) and the poller
takes them at its own pace. When the poller falls behind, the buffer keeps the newest point per tag
(in arrival order) and counts what it dropped: the latest state survives, the history in between
is lost and visible in the ``overflows`` count.
"""

from __future__ import annotations

from proto.points import Point


class ChangeBuffer:
    """Points in arrival order, at most ``capacity`` of them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity  #: points held before compaction
        self.overflows = 0  #: points dropped since start
        self._points: list[Point] = []

    def __len__(self) -> int:
        return len(self._points)

    def push(self, point: Point) -> int:
        """Keep ``point``; when full, first keep only the newest point per tag (and, with more tags
        than room, drop the oldest). Returns how many points this push dropped."""
        dropped = 0
        if len(self._points) >= self.capacity:
            latest: dict[str, Point] = {}
            for p in self._points:
                latest.pop(p.tag, None)  # re-inserted: the newest point keeps its arrival position
                latest[p.tag] = p
            dropped = len(self._points) - len(latest)
            self._points = list(latest.values())
            if len(self._points) >= self.capacity:
                self._points.pop(0)
                dropped += 1
            self.overflows += dropped
        self._points.append(point)
        return dropped

    def drain(self) -> list[Point]:
        """Every point held, oldest first; the buffer is empty afterwards."""
        points, self._points = self._points, []
        return points

    def clear(self) -> None:
        self._points = []
