"""``nexus-core``: run the configuration service."""

from __future__ import annotations

import sys

from gateway_core.daemon import run
from gateway_core.settings import Settings
from nexus.runtime import daemon_main


def main() -> int:
    return daemon_main("nexus-core", Settings, "NEXUS_CORE", run)


if __name__ == "__main__":
    sys.exit(main())
