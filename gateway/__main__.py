"""``nexus-gateway``: run one gateway process."""

from __future__ import annotations

import sys

from gateway.daemon import run
from gateway.settings import Settings
from nexus.runtime import run_main, setup_logging
from nexus.settings import SettingsError, load


def main() -> int:
    try:
        settings = load(Settings, env_prefix="NEXUS_GATEWAY", config_file=(sys.argv[1] if len(sys.argv) > 1 else None))
    except SettingsError as exc:
        print(f"nexus-gateway: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log)
    return run_main(lambda: run(settings))


if __name__ == "__main__":
    sys.exit(main())
