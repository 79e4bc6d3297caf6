"""An asyncio loop in a thread (the ``bg_loop`` fixture)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class BackgroundLoop:
    """An asyncio loop in a thread, for in-process servers (simulators) used by subprocess daemons."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
