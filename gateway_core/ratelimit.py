"""Failed logins counted per user name and per client address, in bounded memory.

Each key keeps the times of its recent failures (at most ``limit`` of them) in an LRU map of at most
``tracked`` keys; once a key has ``limit`` failures within ``window`` seconds it is locked until the oldest
of them is ``window`` old. Locked means refused without looking at the password, so a correct guess made
while locked is not told apart from a wrong one. Forgetting the oldest key when the map is full bounds the
memory an attacker spraying names or addresses can use; the per-address limit still holds for each address.
Per process: replicas each count their own.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class FailureLimiter:
    def __init__(self, *, limit: int, window: float, tracked: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.tracked = tracked
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it is not locked."""
        times = self._failures.get(key)
        if times is None:
            return 0.0
        now = self._clock()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        return self.window - (now - times[0]) if len(times) >= self.limit else 0.0

    def failed(self, key: str) -> bool:
        """Count a failure; True when this one locked ``key``."""
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.limit)
            while len(self._failures) > self.tracked:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        times.append(self._clock())
        return len(times) >= self.limit and self.retry_after(key) > 0

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)
