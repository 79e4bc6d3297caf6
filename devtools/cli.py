"""``nexus``: local operations. ``nexus demo`` runs the whole pipeline on this machine."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nexus", description="NEXUS Edge local operations")
    sub = ap.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser(
        "demo",
        help="simulated PLCs -> gateway (configured by gateway_core) -> mosquitto -> ingestion -> PostgreSQL, live")
    env = os.environ.get
    demo.add_argument("--duration", type=float, default=float(env("DURATION", "0") or 0),
                      help="seconds to run, then stop and print the summary (0 = until Ctrl-C)")
    demo.add_argument("--home", default=env("NEXUS_HOME", ".nexus"),
                      help="project folder for the database cluster, broker and logs (default .nexus)")
    demo.add_argument("--mqtt-port", type=int, default=int(env("NEXUS_DEMO_MQTT_PORT", "18830")))
    demo.add_argument("--pg-port", type=int, default=int(env("NEXUS_DEMO_PG_PORT", "54329")))
    demo.add_argument("--modbus-port", type=int, default=int(env("NEXUS_DEMO_MODBUS_PORT", "15020")),
                      help="first simulated PLC port; the second PLC uses the next one")
    demo.add_argument("--opcua-port", type=int, default=int(env("NEXUS_DEMO_OPCUA_PORT", "14840")),
                      help="simulated OPC UA server (device filler-1)")
    demo.add_argument("--s7-port", type=int, default=int(env("NEXUS_DEMO_S7_PORT", "10102")),
                      help="simulated S7 PLC (device packer-1)")
    demo.add_argument("--api-port", type=int, default=int(env("NEXUS_DEMO_API_PORT", "18080")),
                      help="gateway_core REST API")
    demo.add_argument("--ops-port", type=int, default=int(env("NEXUS_DEMO_OPS_PORT", "9101")),
                      help="gateway ops port; ingestion uses the next one, gateway_core the one after")
    args = ap.parse_args(argv)
    if args.cmd == "demo":
        from devtools.demo import Demo, DemoError
        try:
            return Demo(args).run()
        except DemoError as exc:
            print(f"nexus demo: {exc}", file=sys.stderr)
            return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
