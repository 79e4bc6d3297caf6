"""Nothing lost, nothing stored twice, counted exactly: the real gateway and ingestion while the broker,
the workers and the gateway are really killed, paused and restarted.

Every case streams from PLCs whose tags count their reads (tests/support/pipeline.py) and ends with
``expected == distinct (tag, time) == count(*)`` per tag, where expected is the number of reads the
PLC answered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.segments import read_segment
from tests.support.db import query
from tests.support.pipeline import Pipeline, pause, resume, summary

pytestmark = pytest.mark.slow


@pytest.fixture
def pipe(tmp_path: Path, prefix: str, db: str, daemons: Any, bg_loop: Any) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, prefix, db, daemons, bg_loop)
    yield p
    p.close()


def finish(pipe: Pipeline, gw: Any, frozen: tuple[dict[str, int], dict[str, int]] | None = None) -> int:
    """Stop the gateway (its reads end), wait for every read to be stored, stop the workers, count.

    ``frozen``: the PLCs' read counters when the gateway was SIGSTOPped and SIGCONTed. A read the PLC
    answered meanwhile may reach a gateway whose read timeout fired while it was frozen: the PLC counted
    it, the gateway reports that poll BAD and never had the value. At most one such value per tag (one
    read in flight), only inside that window and only beside BAD points; nothing else may be missing."""
    assert gw.stop() == 0
    pipe.wait_complete()
    for w in pipe.workers:
        assert w.stop() == 0
    gaps: dict[str, set[int]] = {}
    if frozen is not None:
        before, after = frozen
        for path, missing in pipe.missing_values().items():
            assert len(missing) <= 1 and missing <= set(range(before[path], after[path] + 1)), \
                (path, sorted(missing), before[path], after[path])
            if missing:
                gaps[path] = missing
        bad = query(pipe.db, "SELECT count(*) FROM nexus.points WHERE status <> 0")[0][0]
        assert not gaps or bad > 0, "a value missing without a BAD poll beside it"
    total = pipe.check_exact(gaps)
    s = summary(gw)
    # each point stored was confirmed once (BAD points included)
    assert s["messages_waiting"] == 0 and s["points_confirmed"] == pipe.stored(), (s, total)
    return total


@pytest.mark.parametrize("down_s", [1, 3, 5, 8, 20])
@pytest.mark.parametrize("first", ["gateway", "ingestion"])
def test_broker_killed_and_restarted_mid_stream(pipe: Pipeline, down_s: int, first: str) -> None:
    """mosquitto without persistence forgets every session, subscription and queued message. Whoever
    reconnects first, nothing the gateway read is lost: messages the broker had acknowledged before it
    died, and those answered 'no matching subscribers' because ingestion was not back yet, are sent
    again until ingestion confirms them."""
    ing = pipe.ingestion()
    gw = pipe.gateway()
    pipe.wait_streaming()
    late = ing if first == "gateway" else gw  # the other side reconnects 3 s after the broker is back
    reads: list[dict[str, int]] = []

    def freeze() -> None:
        reads.append(pipe.reads())
        pause(late)

    pipe.restart_broker(down_s, during=freeze)
    time.sleep(3)
    resume(late)
    reads.append(pipe.reads())
    pipe.wait_streaming(what="points stored after the outage")
    finish(pipe, gw, frozen=(reads[0], reads[1]) if late is gw else None)
    if first == "gateway":
        assert summary(gw)["no_subscribers"] > 0, "the case did not happen: ingestion was back first"


@pytest.mark.parametrize("how", ["terminated", "paused with a persistent session"])
def test_broker_restarted_while_the_worker_is_stopped(pipe: Pipeline, how: str) -> None:
    """The only worker stops while points stream (terminated; or frozen with a persistent session, so
    the broker queues for it), then the broker restarts and forgets everything it held, then the worker
    is back: everything read meanwhile was kept in the gateway's spool, not only in the broker."""
    persistent = how.startswith("paused")
    env = {"NEXUS_INGESTION_SESSION_EXPIRY": "3600"} if persistent else {}
    ing = pipe.ingestion(**env)
    gw = pipe.gateway()
    pipe.wait_streaming()
    if persistent:
        pause(ing)
    else:
        assert ing.stop() == 0
    time.sleep(3)
    pipe.restart_broker(1)
    time.sleep(2)
    if persistent:
        resume(ing)
    else:
        pipe.ingestion("w2")
    pipe.wait_streaming(what="points stored after the worker is back")
    finish(pipe, gw)


def test_one_of_two_workers_stopped_for_good(pipe: Pipeline) -> None:
    """A scale-down: two workers share the load, one is killed and never comes back. What it had
    taken and not committed is sent again by the gateway and stored by the other."""
    pipe.ingestion("w1")
    w2 = pipe.ingestion("w2")
    gw = pipe.gateway()
    pipe.wait_streaming(2000)
    w2.kill()
    pipe.workers.remove(w2)
    pipe.wait_streaming(2000, what="points stored by the remaining worker")
    finish(pipe, gw)


def test_rolling_restart_of_both_workers(pipe: Pipeline) -> None:
    w1 = pipe.ingestion("w1")
    w2 = pipe.ingestion("w2")
    gw = pipe.gateway()
    pipe.wait_streaming(1000)
    for old, name in ((w1, "w1b"), (w2, "w2b")):
        pipe.ingestion(name)  # surge first, as a Deployment's rolling update does
        assert old.stop() == 0
        pipe.workers.remove(old)
        pipe.wait_streaming(1000, what=f"points stored after {old.log.name} stopped")
    finish(pipe, gw)


def spooled_values(folder: Path) -> dict[str, set[int]]:
    """Per tag path: the values in the gateway's spool files."""
    out: dict[str, set[int]] = {}
    for seg in sorted(folder.rglob("*.seg")):
        if seg.name == "rejected.seg":
            continue
        records, _ = read_segment(seg)
        data = seg.read_bytes()
        for topic, _run, _seq, _points, offset, length in records or []:
            device = topic.rsplit("/", 1)[1]
            for p in orjson.loads(data[offset:offset + length])["points"]:
                out.setdefault(f"e/s/a/l/{device}/{p['tag']}", set()).add(p["value"])
    return out


@pytest.mark.parametrize("broker", ["up", "down"])
def test_gateway_killed_mid_stream_and_restarted(pipe: Pipeline, tmp_path: Path, broker: str) -> None:
    """SIGKILL: what the gateway had read but not yet written to its spool is gone with its memory
    (a few polls at most); everything in the spool is stored after the restart, exactly once."""
    pipe.ingestion()
    gw = pipe.gateway()
    pipe.wait_streaming()
    if broker == "down":
        pipe.mq.kill()
        time.sleep(3)
    gw.kill()
    reads_at_kill = pipe.reads()
    durable = spooled_values(tmp_path / "spool")
    if broker == "down":
        assert durable, "the outage's reads are in the spool"
        pipe.mq.start()
    time.sleep(1)
    gw2 = pipe.gateway()
    pipe.wait_streaming(what="points stored after the restart")
    assert gw2.stop() == 0
    pipe.wait_complete()
    for w in pipe.workers:
        assert w.stop() == 0
    gaps = pipe.missing_values()
    for path, missing in gaps.items():
        # the values lost are exactly the reads not yet durable at the kill: none of them was in the
        # spool, all of them were read before the kill, and they are at most the last few polls
        assert not missing & durable.get(path, set()), (path, sorted(missing & durable.get(path, set())))
        assert all(v <= reads_at_kill[path] for v in missing), (path, sorted(missing))
        assert len(missing) <= 5, (path, sorted(missing))
        if missing:  # one block: the tail of the first run
            assert missing == set(range(min(missing), max(missing) + 1)), sorted(missing)
            assert min(missing) > max(durable.get(path, {0})), (sorted(missing), max(durable.get(path, {0})))
    pipe.check_exact(gaps)
