"""``nexus-operator``: run the Kubernetes operator."""

from __future__ import annotations

import sys

from nexus.runtime import daemon_main
from nexus_operator.daemon import run
from nexus_operator.settings import Settings


def main() -> int:
    return daemon_main("nexus-operator", Settings, "NEXUS_OPERATOR", run)


if __name__ == "__main__":
    sys.exit(main())
