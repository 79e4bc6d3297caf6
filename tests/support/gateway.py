"""A gateway daemon in the test's own event loop (so a test can wait on its state), stopped at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.config import PlantConfig
from gateway.daemon import Gateway, open_spool
from gateway.settings import Settings


@asynccontextmanager
async def serving(settings: Settings, plant: PlantConfig) -> AsyncIterator[Gateway]:
    """:class:`Gateway` on its spool, serving ``plant`` until the block ends; its shutdown is awaited (30 s)."""
    gw = Gateway(settings, open_spool(settings))
    stop = asyncio.Event()
    task = asyncio.create_task(gw.serve(stop, plant), name="test.gateway")
    try:
        yield gw
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
