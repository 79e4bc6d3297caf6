"""One device's record of its polls, for its health report (gateway/health.py): counts, the newest
success and failure, the latencies of recent successful polls."""

from __future__ import annotations

import math
import time
from collections import deque

from proto.health import Latency, bounded_error

MAX_SAMPLES = 1024  #: latencies kept per device (the window is also bounded by time)


def ms(t: float) -> int:
    return int(t * 1000)


def _rank(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of a sorted, non-empty list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class PollStats:
    """One device's successful and failed polls: counts, the newest of each, recent latencies."""

    def __init__(self) -> None:
        self.polls = 0  #: successful reads
        self.errors = 0  #: failed connects and reads
        self.connected = False  #: the device answered the newest attempt (connect or read)
        self.last_good_ms: int | None = None  #: wall clock of the newest successful read, Unix ms
        self.last_error: str | None = None  #: the newest failure (bounded text)
        self.last_error_ms: int | None = None
        self._latencies: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)  # (monotonic s, ms)

    def ok(self, seconds: float) -> float:
        """A successful poll that took ``seconds`` (returned)."""
        self.polls += 1
        self.last_good_ms = ms(time.time())
        self._latencies.append((time.monotonic(), seconds * 1000))
        return seconds

    def failed(self, error: str) -> None:
        self.errors += 1
        self.connected = False
        self.last_error = bounded_error(error)
        self.last_error_ms = ms(time.time())

    def latency(self, window_s: float) -> Latency | None:
        """p50 and p99 of the successful polls of the last ``window_s`` seconds; None: there were none."""
        oldest = time.monotonic() - window_s
        lat = self._latencies
        while lat and lat[0][0] < oldest:
            lat.popleft()
        if not lat:
            return None
        ordered = sorted(ms for _, ms in lat)
        return Latency(p50=_rank(ordered, 0.5), p99=_rank(ordered, 0.99), samples=len(ordered), window_s=window_s)
