"""Tumbling aggregation windows of one tag: min/max/avg/count/first/last and the time-weighted
average, over wall-clock aligned intervals ``[k * width, (k + 1) * width)``.

A window closes when a reading at or after its end arrives (or :meth:`Windows.flush` at a stop), so
its content is exactly the readings whose timestamps fall inside it. Readings older than the open
window (a device's clock stepping back) are not aggregated; they are counted in :attr:`late`. BAD
readings carry no value and are not aggregated; a window's status is the worst quality of the
readings in it. The time-weighted average holds each value until the next reading, the last one
until the window's end; before a window's first reading it holds the previous window's last value
when that one was continuous with it.
"""

from __future__ import annotations

from proto.aggregates import Window

_BAD = 0x80000000
_QUALITY_MASK = 0xC0000000


class _Open:
    __slots__ = ("complete", "count", "covered", "first", "held", "held_since", "last", "max", "min", "start",
                 "status", "sum", "weighted")

    def __init__(self, start: int, complete: bool, held: float | None) -> None:
        self.start = start
        self.complete = complete
        self.count = 0
        self.sum = 0.0
        self.min = self.max = self.first = self.last = 0.0
        self.status = 0
        self.weighted = 0.0  # value x ms over the time a value was known
        self.covered = 0  # ms with a known value
        self.held = held  # the value held since held_since (sample and hold); None: unknown (BAD, or none yet)
        self.held_since = start

    def hold(self, value: float | None, ts: int) -> None:
        if self.held is not None:
            self.weighted += self.held * (ts - self.held_since)
            self.covered += ts - self.held_since
        self.held, self.held_since = value, ts


class Windows:
    """The open windows of one tag, one per configured width."""

    __slots__ = ("_open", "late", "tag", "widths")

    def __init__(self, tag: str, widths: tuple[int, ...]) -> None:
        self.tag = tag
        self.widths = widths
        self._open: list[_Open | None] = [None] * len(widths)
        self.late = 0  #: readings older than the open window, not aggregated

    def add(self, value: float | None, ts: int, status: int, out: list[Window]) -> None:
        """One reading (``value`` None for a BAD one); windows it closes are appended to ``out``."""
        for i, width in enumerate(self.widths):
            w = self._open[i]
            start = ts - ts % width
            if w is None:  # the first reading since the chain was built: we did not see this window begin
                w = self._open[i] = _Open(start, False, None)
            elif start > w.start:
                held = self._close(w, width, out)
                w = self._open[i] = _Open(start, True, held)
            elif start < w.start:
                self.late += 1
                continue
            if (status & _QUALITY_MASK) > (w.status & _QUALITY_MASK):
                w.status = status
            if value is None or status & _BAD:
                w.hold(None, ts)  # unknown until the next good reading: no weight
                continue
            w.hold(value, ts)
            if w.count == 0:
                w.min = w.max = w.first = value
            elif value < w.min:
                w.min = value
            elif value > w.max:
                w.max = value
            w.count += 1
            w.sum += value
            w.last = value

    def _close(self, w: _Open, width: int, out: list[Window]) -> float | None:
        """Emit ``w`` if it had readings; returns the value held at its end (carried into the next)."""
        w.hold(w.held, w.start + width)
        if w.count:
            avg = w.sum / w.count
            twa = w.weighted / w.covered if w.covered else avg
            out.append(Window(self.tag, w.start, width, w.count, w.min, w.max, avg, twa, w.first, w.last,
                              w.status, w.complete))
        return w.held

    def flush(self, out: list[Window]) -> None:
        """Emit every open window (at a stop or a reload of the tag) as not complete."""
        for i, width in enumerate(self.widths):
            w = self._open[i]
            if w is not None and w.count:
                w.complete = False
                self._close(w, width, out)
            self._open[i] = None
