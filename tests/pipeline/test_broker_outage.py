"""The broker goes away: the gateway keeps polling into its spool and everything reaches the historian
once the broker is back — also when the gateway itself was stopped and restarted during the outage,
and when the broker froze with a full in-flight window before it died. Exact counts (tests/support/pipeline.py)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pipeline import Pipeline, summary
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def pipe(tmp_path: Path, prefix: str, db: str, daemons: Any, bg_loop: Any) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, prefix, db, daemons, bg_loop, devices=1, tags=5)
    yield p
    p.close()


def spooled(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "spool").rglob("0*.seg"))


def test_outage_is_buffered_on_disk_and_sent_after(pipe: Pipeline, tmp_path: Path) -> None:
    pipe.ingestion()
    gw = pipe.gateway()
    pipe.wait_streaming(50)
    pipe.mq.stop()
    wait_for(lambda: spooled(tmp_path), 10, what="polls during the outage go to the spool")
    time.sleep(2)
    pipe.mq.start()
    pipe.wait_streaming(50, what="points stored after the outage")
    assert gw.stop() == 0
    pipe.wait_complete()
    assert pipe.workers[0].stop() == 0
    total = pipe.check_exact()
    s = summary(gw)
    assert s["messages_waiting"] == 0 and s["points_confirmed"] == pipe.stored(), (s, total)
    assert spooled(tmp_path) == [], "confirmed segments are deleted"


def test_gateway_stopped_during_an_outage_sends_its_spool_after_restart(pipe: Pipeline, tmp_path: Path) -> None:
    pipe.ingestion()
    gw = pipe.gateway()
    pipe.wait_streaming(50)
    pipe.mq.stop()
    time.sleep(2)
    assert gw.stop() == 0  # SIGTERM with the broker down
    s = summary(gw)
    assert s["messages_waiting"] > 0 and "kept in the spool" in gw.output()
    assert spooled(tmp_path)
    pipe.mq.start()
    gw2 = pipe.gateway()
    pipe.wait_streaming(50, what=f"points stored after the restart\n{gw2.output()}")
    assert gw2.stop() == 0
    pipe.wait_complete()
    assert pipe.workers[0].stop() == 0
    pipe.check_exact()
    assert summary(gw2)["messages_waiting"] == 0
    assert s["points_confirmed"] + summary(gw2)["points_confirmed"] == pipe.stored()  # each confirmed once
    assert spooled(tmp_path) == []


def test_a_broker_that_freezes_then_dies_with_a_full_window(pipe: Pipeline) -> None:
    """The broker stops acknowledging (frozen) until the in-flight window is full, then dies: the
    gateway must keep spooling instead of waiting for window room, and still stop within its deadline."""
    pipe.ingestion()
    gw = pipe.gateway(NEXUS_GATEWAY_MQTT_MAX_INFLIGHT="5")
    pipe.wait_streaming(50)
    assert pipe.mq.proc is not None
    os.kill(pipe.mq.proc.pid, signal.SIGSTOP)  # no more PUBACKs: the window of 5 fills in ~0.5 s
    time.sleep(1.5)
    os.kill(pipe.mq.proc.pid, signal.SIGKILL)
    pipe.mq.proc.wait()
    time.sleep(1.5)
    t0 = time.monotonic()
    assert gw.stop(timeout=25) == 0
    assert time.monotonic() - t0 < 20  # no hang on a window that will never have room
    assert "kept in the spool" in gw.output()
    pipe.mq.start()
    gw2 = pipe.gateway()
    pipe.wait_streaming(50, what="points stored after the restart")
    assert gw2.stop() == 0
    pipe.wait_complete()
    assert pipe.workers[0].stop() == 0
    pipe.check_exact()
