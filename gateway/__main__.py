"""``nexus-gateway``: run one gateway process."""

from __future__ import annotations

import sys

from gateway.daemon import run
from gateway.settings import Settings
from nexus.runtime import daemon_main


def main() -> int:
    return daemon_main("nexus-gateway", Settings, "NEXUS_GATEWAY", run)


if __name__ == "__main__":
    sys.exit(main())
