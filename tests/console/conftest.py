"""The browser of the console's tests: one Playwright per module, a fresh profile per test (so a test never
inherits another's session), and a check that the page raised no script error. Each module brings its own
``stack`` (tests/support/console.py), which ``page`` waits for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.console import Stack, browser_context, missing_browser


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    if missing_browser() is not None:
        pytest.skip(missing_browser() or "")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def page(playwright: Any, tmp_path: Path, stack: Stack) -> Iterator[Any]:
    context = browser_context(playwright, tmp_path / "profile")
    errors: list[str] = []
    p = context.new_page()
    p.set_default_timeout(15_000)
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "status of 4" not in msg.text
         else None)
    yield p
    context.close()
    # no script error and no CSP violation on any page the test saw (refused requests are the API's answers)
    assert not errors, errors
