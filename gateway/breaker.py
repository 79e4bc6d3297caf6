"""Per-device circuit breaker: stop hammering a device that keeps failing, probe it now and then.

closed → (``failures`` consecutive failures) → open → (wait) → half-open: one probe →
success: closed; failure: open again with the wait doubled, up to ``max_open``.
"""

from __future__ import annotations

import time

from gateway import metrics as m

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_STATE_VALUE = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}


class CircuitBreaker:
    def __init__(self, device_id: str, *, failures: int, open_s: float, max_open_s: float = 4.0) -> None:
        self.device_id = device_id
        self.threshold = failures
        self.first_open = open_s
        self.max_open = max(open_s, max_open_s)
        self.state = CLOSED
        self.consecutive = 0
        self.opens = 0
        self._open_for = open_s
        self._retry_at = 0.0
        self._set(CLOSED)

    def _set(self, state: str) -> None:
        self.state = state
        m.BREAKER_STATE.labels(self.device_id).set(_STATE_VALUE[state])

    def allow(self) -> bool:
        """Whether an attempt may go to the device now (moves open → half-open when the wait is over)."""
        if self.state == OPEN and time.monotonic() >= self._retry_at:
            self._set(HALF_OPEN)
        return self.state != OPEN

    def retry_in(self) -> float:
        """Seconds until the half-open probe (0 unless open)."""
        return max(0.0, self._retry_at - time.monotonic()) if self.state == OPEN else 0.0

    def success(self) -> None:
        self.consecutive = 0
        self._open_for = self.first_open
        if self.state != CLOSED:
            self._set(CLOSED)

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == HALF_OPEN:
            self._open_for = min(self._open_for * 2, self.max_open)
            self._open()
        elif self.state == CLOSED and self.consecutive >= self.threshold:
            self._open()

    def _open(self) -> None:
        self.opens += 1
        m.BREAKER_OPENS.labels(self.device_id).inc()
        self._retry_at = time.monotonic() + self._open_for
        self._set(OPEN)
