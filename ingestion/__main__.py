"""``nexus-ingestion``: run one ingestion process."""

from __future__ import annotations

import sys

from ingestion.daemon import run
from ingestion.settings import Settings
from nexus.runtime import daemon_main


def main() -> int:
    return daemon_main("nexus-ingestion", Settings, "NEXUS_INGESTION", run)


if __name__ == "__main__":
    sys.exit(main())
