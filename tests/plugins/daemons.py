"""The daemons as real subprocesses (``python -m gateway`` / ``ingestion``), killed at the end of the test
if it left them running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemons import Daemon


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(module: str, env: dict[str, str], name: str | None = None) -> Daemon:
        d = Daemon(module, env, tmp_path / f"{name or module}-{len(started)}.log")
        started.append(d)
        return d.start()

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
