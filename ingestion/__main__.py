"""``nexus-ingestion``: run one ingestion process."""

from __future__ import annotations

import gc
import sys

from ingestion.daemon import run
from ingestion.settings import Settings
from nexus.runtime import daemon_main


def tune_gc(settings: Settings) -> None:
    """Set the cyclic garbage collector for a process that holds up to ``batch.max_pending_points`` decoded
    points: they are what it allocates, and nearly all of its garbage is freed by reference counting.

    Every decoded point is a tracked object (a tuple subclass, which the collector never untracks) kept until
    its commit. With the default young threshold (700 net allocations) each one was traversed by young
    collections and every pending one again by the full collections that followed: 20 % of the worker's CPU
    in bench/ingest.py (0.73 s of 3.67 s for 1,000,000 points; 12 full collections of ~37 ms). With the
    threshold above what is in flight, a young collection runs when allocations outgrow deallocations by that
    much, i.e. when garbage (or the buffer) really grows, not at every batch; cycles are still collected.
    The objects of the start (modules, settings) are frozen: no full collection walks them again.
    """
    gc.freeze()
    young, middle, old = gc.get_threshold()
    # points (rows: windows and events count alike) plus one largest message's decoded points and the
    # per-message objects (dicts of a decode, items, batches): twice the bound is ample
    gc.set_threshold(max(young, 2 * settings.batch.max_pending_points + 10_000), middle, old)


async def _run(settings: Settings) -> int:
    tune_gc(settings)
    return await run(settings)


def main() -> int:
    return daemon_main("nexus-ingestion", Settings, "NEXUS_INGESTION", _run)


if __name__ == "__main__":
    sys.exit(main())
