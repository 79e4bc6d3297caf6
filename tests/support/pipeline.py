"""A whole pipeline for fault tests: simulated PLCs whose tags count their reads, the real gateway, the
real ingestion workers, a broker of the test's own and the test's own database.

The counting source makes loss exact: tag values are 1, 2, 3, ... (one per read), so everything the
gateway read is stored iff, per tag, the stored values are exactly {1 .. reads} with one row each.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from devtools.local import Mosquitto, free_port
from gateway.config import load_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from tests.support.daemons import gateway_env, ingestion_env
from tests.support.db import query, stored_points
from tests.support.wait import wait_for


def pause(d: Any) -> None:
    os.kill(d.proc.pid, signal.SIGSTOP)


def resume(d: Any) -> None:
    os.kill(d.proc.pid, signal.SIGCONT)


class Pipeline:
    def __init__(self, tmp: Path, prefix: str, db: str, daemons: Any, bg_loop: Any, *, devices: int = 2,
                 tags: int = 20, interval_ms: int = 100) -> None:
        self.tmp, self.prefix, self.db, self.daemons, self.bg_loop = tmp, prefix, db, daemons, bg_loop
        self.plant = tmp / "plant.toml"
        text = '[plant]\nenterprise = "e"\nsite = "s"\narea = "a"\nline = "l"\n'
        for d in range(devices):
            # a generous timeout: a late answer from the simulator (busy test machine) would be a BAD
            # point and a gap in the counter that is not the pipeline's doing (check_exact names it)
            text += f'[[devices]]\nid = "plc-{d}"\nport = {free_port()}\ninterval_ms = {interval_ms}\n' \
                    'timeout_ms = 5000\n'
            for t in range(tags):
                text += f'  [[devices.tags]]\n  name = "c{t}"\n  address = {2 * t}\n  type = "uint32"\n'
        self.plant.write_text(text)
        self.plcs = [SimulatedPlc(dev, counters=frozenset(t.name for t in dev.tags))
                     for dev in load_plant(self.plant).devices]
        for plc in self.plcs:
            bg_loop.run(plc.start())
        self.mq = Mosquitto(tmp / "mq", free_port())
        self.mq.start()
        self.gateways: list[Any] = []
        self.workers: list[Any] = []

    # --- processes -----------------------------------------------------------------------------

    def gateway(self, **env: str) -> Any:
        base = gateway_env(self.mq, self.plant, self.prefix, NEXUS_GATEWAY_TAG_TOPICS="false",
                           NEXUS_GATEWAY_MQTT_RECONNECT_MIN="0.5", NEXUS_GATEWAY_MQTT_RECONNECT_MAX="0.5",
                           NEXUS_GATEWAY_ACK_TIMEOUT_S="3")
        gw = self.daemons("gateway", {**base, **env})
        self.gateways.append(gw)
        return gw

    def ingestion(self, worker: str = "w1", **env: str) -> Any:
        base = ingestion_env(self.mq, self.db, self.prefix, worker, NEXUS_INGESTION_MQTT_RECONNECT_MIN="0.5",
                             NEXUS_INGESTION_MQTT_RECONNECT_MAX="0.5")
        ing = self.daemons("ingestion", {**base, **env}, name=f"ingestion-{worker}")
        wait_for(lambda: "mqtt connected" in ing.output(), 30, what=f"ingestion {worker} connected\n{ing.output()}")
        self.workers.append(ing)
        return ing

    def restart_broker(self, down_s: float = 0.0, *, during: Any = None) -> None:
        """SIGKILL mosquitto (persistence off: it forgets every session and queued message), keep it
        down ``down_s`` seconds (calling ``during()`` meanwhile), start it again on the same port."""
        self.mq.kill()
        if during is not None:
            during()
        if down_s:
            time.sleep(down_s)
        self.mq.start()

    # --- counting ------------------------------------------------------------------------------

    def stored(self) -> int:
        return stored_points(self.db)

    def reads(self) -> dict[str, int]:
        """Per tag path: how many times the PLC answered a read of it (= its last value)."""
        out = {}
        for plc in self.plcs:
            for tag, n in plc.counters.items():
                out[f"e/s/a/l/{plc.device.id}/{tag}"] = n
        return out

    def wait_streaming(self, more: int = 500, timeout: float = 30, what: str = "points stored") -> None:
        start = self.stored()
        wait_for(lambda: self.stored() >= start + more, timeout, what=f"{what}\n{self.logs()}")

    def per_tag(self) -> dict[str, tuple[int, int, int, int, int]]:
        """path -> (rows, distinct times, distinct values, min value, max value) of GOOD points."""
        rows = query(self.db, """SELECT t.path, count(*), count(DISTINCT p.time), count(DISTINCT p.value),
                                        min(p.value), max(p.value)
                                 FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id
                                 WHERE p.status = 0 GROUP BY t.path""")
        return {r[0]: (r[1], r[2], r[3], int(r[4]), int(r[5])) for r in rows}

    def wait_complete(self, timeout: float = 60) -> None:
        """Wait until every read the PLCs answered is stored (call after the gateway stopped)."""
        def complete() -> bool:
            got, want = self.per_tag(), self.reads()
            return all(got.get(k, (0, 0, 0, 0, 0))[4] >= n for k, n in want.items())
        wait_for(complete, timeout, what=f"every read stored\n{self.logs()}")

    def check_exact(self, gaps: dict[str, set[int]] | None = None) -> int:
        """Per tag: expected = reads answered == distinct (tag, time) == rows == distinct values of GOOD
        points; values are exactly 1..reads (minus ``gaps``: values known not to have been made durable).
        BAD points (a read that failed, e.g. the device connection dropped while the gateway was paused)
        carry no value and take no count; they are stored once each too. Returns the GOOD points checked."""
        bad = query(self.db, "SELECT count(*) FROM nexus.points WHERE status <> 0")[0][0]
        got, want = self.per_tag(), self.reads()
        assert set(got) == set(want)
        total = 0
        for path, reads in want.items():
            missing = (gaps or {}).get(path, set())
            expected = reads - len(missing)
            rows, times, values, lo, hi = got[path]
            # a gap with BAD points beside it: a read the simulator counted but answered too late
            assert (expected, expected, expected) == (rows, times, values), (path, reads, got[path], len(missing),
                                                                             f"{bad} BAD points")
            assert (lo, hi) == (1, reads), (path, lo, hi, reads)
            total += rows
        dup = query(self.db, "SELECT count(*) - count(DISTINCT (tag_id, time)) FROM nexus.points")[0][0]
        assert dup == 0
        assert self.stored() == total + bad
        return total

    def missing_values(self) -> dict[str, set[int]]:
        """Per tag: the values in 1..max(stored) that are not stored."""
        rows = query(self.db, """SELECT t.path, array_agg(p.value::bigint) FROM nexus.points p
                                 JOIN nexus.tags t ON t.id = p.tag_id WHERE p.status = 0 GROUP BY t.path""")
        out = {}
        for path, values in rows:
            have = set(values)
            out[path] = set(range(1, max(have) + 1)) - have
        return out

    def logs(self) -> str:
        return "\n".join(f"--- {d.log.name}\n{d.output()[-2500:]}" for d in [*self.gateways, *self.workers])

    def close(self) -> None:
        for d in [*self.gateways, *self.workers]:
            if d.proc is not None and d.proc.poll() is None:
                resume(d)
        self.mq.kill()
        for plc in self.plcs:
            self.bg_loop.run(plc.stop())


def summary(gw: Any) -> dict[str, int]:
    """The figures of the gateway's last summary line."""
    out = gw.output()
    m = re.findall(r"(\d+) points in (\d+) messages confirmed by ingestion, (\d+) points in (\d+) messages "
                   r"waiting in the spool, (\d+) messages re-sent, (\d+) answered 'no subscribers'", out)
    assert m, f"no summary in the gateway's log\n{out}"
    keys = ("points_confirmed", "messages_confirmed", "points_waiting", "messages_waiting", "resent", "no_subscribers")
    return dict(zip(keys, map(int, m[-1]), strict=True))
