"""The example broker of deploy/mosquitto/ (its mosquitto.conf and nexus.acl as shipped), started on a free
loopback port with the test's certificates and a password file for every role."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.local import (
    LocalServerError,
    Mosquitto,
    free_port,
    stop_process,
    wait_port,
    write_password_file,
)
from tests.nexus.certs import Certs
from tests.support import ROOT

EXAMPLE = ROOT / "deploy" / "mosquitto"
#: one password per user of the example ACL (and a test user the tests add)
PASSWORDS = {"gw-a": "pw-gw-a", "gw-b": "pw-gw-b", "ingestion": "pw-ingestion", "core": "pw-core",
             "normalizer": "pw-normalizer", "tester": "pw-tester"}


@dataclass(frozen=True)
class ExampleBroker:
    port: int
    folder: Path
    ca_file: Path

    def log(self) -> str:
        return (self.folder / "mosquitto.log").read_text(errors="replace")


def example_conf(folder: Path, certs: Certs, port: int) -> str:
    """deploy/mosquitto/mosquitto.conf with its /etc paths moved to ``folder`` and its listener to ``port``."""
    conf = (EXAMPLE / "mosquitto.conf").read_text()
    files = {"/etc/mosquitto/certs/ca.pem": certs.ca.cert, "/etc/mosquitto/certs/broker.pem": certs.server.cert,
             "/etc/mosquitto/certs/broker.key": certs.server.key,
             "/etc/mosquitto/nexus.passwd": folder / "nexus.passwd", "/etc/mosquitto/nexus.acl": folder / "nexus.acl"}
    for path, real in files.items():
        assert re.search(rf"^\w+ {re.escape(path)}$", conf, re.M), f"the example names {path} no more"
        conf = re.sub(rf"^(\w+) {re.escape(path)}$", rf"\1 {real}", conf, flags=re.M)
    conf, n = re.subn(r"^listener 8883$", f"listener {port} 127.0.0.1", conf, flags=re.M)
    assert n == 1, "the example's listener is not 'listener 8883'"
    if os.geteuid() == 0:  # as root mosquitto would become user mosquitto, who cannot read the test's keys
        conf += "user root\n"
    return conf


@contextlib.contextmanager
def example_broker(folder: Path, certs: Certs, *, extra_acl: str = "") -> Iterator[ExampleBroker]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (folder / "mosquitto.conf").write_text(example_conf(folder, certs, port))
    (folder / "nexus.acl").write_text((EXAMPLE / "nexus.acl").read_text() + extra_acl)
    write_password_file(folder / "nexus.passwd", PASSWORDS)
    with open(folder / "mosquitto.log", "ab") as out:
        proc = subprocess.Popen([Mosquitto.binary(), "-c", str(folder / "mosquitto.conf")], stdout=out, stderr=out,
                                start_new_session=True)
    try:
        try:
            wait_port(port, 10, proc, "mosquitto (deploy/mosquitto example)")
        except LocalServerError as exc:
            raise AssertionError(f"{exc}\n{(folder / 'mosquitto.log').read_text()}") from exc
        yield ExampleBroker(port, folder, certs.ca.cert)
    finally:
        stop_process(proc)
