"""Property-based API tests: schemathesis against gateway_core's own OpenAPI document (ASGI, real
PostgreSQL, admin key), every operation, responses checked against the schema; no server errors."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.python import asgi

from devtools.local import Postgres
from gateway_core.api import Core, create_app
from gateway_core.store import Pool
from tests.support.core import ADMIN, core_settings, migrated, plant_doc

# The schema is loaded at import (schemathesis.pytest.from_fixture does not work with pytest 9), so
# the app exists before the database does: the module fixture points its pool at a fresh database.
POOL = Pool("", size=2)
APP = create_app(Core.build(core_settings("", write_timeout=0.2), POOL))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def database(postgres: Postgres) -> Iterator[str]:
    dsn = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    plant = plant_doc()

    async def seed() -> None:
        await migrated(dsn)
        pool = Pool(dsn, size=1)
        app = create_app(Core.build(core_settings(dsn), pool))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://core", headers=ADMIN
        ) as client:
            r = await client.post("/api/v1/import", json=plant)
            assert r.status_code == 200, r.text
        await pool.close()

    asyncio.run(seed())
    POOL.dsn = dsn
    yield dsn
    asgi.shutdown_lifespans()  # closes the app's connections in schemathesis' event loop


@schema.parametrize()
@hypothesis.settings(
    max_examples=15, deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_api(case: schemathesis.Case) -> None:
    # positive_data_acceptance is left out on purpose: a device mapping's protocol keys (addresses,
    # connection settings) are checked by the protocol modules, beyond what JSON Schema can say, and a
    # schema-valid If-Match can still be stale (412) or a tag body name differ from its URL (422).
    case.call_and_validate(headers=ADMIN, excluded_checks=[schemathesis.checks.positive_data_acceptance])
