"""An asyncio loop in a background thread for the in-process servers (simulators) of a test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.loop import BackgroundLoop


@pytest.fixture
def bg_loop() -> Iterator[BackgroundLoop]:
    bl = BackgroundLoop()
    yield bl
    bl.close()
