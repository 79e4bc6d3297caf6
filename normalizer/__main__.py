"""``nexus-normalizer``: run one normalizer process (values from elsewhere than our gateway, normalized)."""

from __future__ import annotations

import sys

from nexus.runtime import daemon_main
from normalizer.daemon import run
from normalizer.settings import Settings


def main() -> int:
    return daemon_main("nexus-normalizer", Settings, "NEXUS_NORMALIZER", run)


if __name__ == "__main__":
    sys.exit(main())
