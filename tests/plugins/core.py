"""gateway_core in process: ``api``, the REST app over ASGI on a fresh migrated database, and
``service``, the whole service (HTTP on a free port, MQTT, assignment loop) in the test's event loop.
A module that needs them set up otherwise defines its own fixture of that name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.core import Api, Running, open_api, run_service


@pytest.fixture
async def api(db: str) -> AsyncIterator[Api]:
    async with open_api(db) as a:
        yield a


@pytest.fixture
async def service(db: str, broker: Any, prefix: str) -> AsyncIterator[Running]:
    async with run_service(db, broker, prefix) as running:
        yield running
