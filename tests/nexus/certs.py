"""Certificates made in the test with the ``openssl`` command line, as an operator would: CAs, server and
client certificates (EC P-256, fast), an expired one, one for another name, an encrypted key."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("the openssl command line is not installed")
    res = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"openssl {' '.join(args)}:\n{res.stderr}"


class Pki:
    """Certificates in ``folder``: each CA and each issued certificate by name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def ca(self, name: str) -> Issued:
        cert, key = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        openssl("req", "-x509", *CURVE, "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return Issued(cert, key)

    def issue(self, name: str, ca: Issued, *, cn: str = "localhost", sans: str = "DNS:localhost,IP:127.0.0.1",
              days: int = 2, usage: str = "serverAuth") -> Issued:
        """A certificate signed by ``ca``; ``days=-1``: one that expired a day ago."""
        cert, key, csr, ext = (self.folder / f"{name}{s}" for s in (".pem", ".key", ".csr", ".ext"))
        openssl("req", *CURVE, "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
        ext.write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
                       + (f"subjectAltName={sans}\n" if sans else ""))
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
                "-out", str(cert), "-days", str(days), "-extfile", str(ext))
        return Issued(cert, key)

    def encrypted(self, issued: Issued, passphrase: str) -> Issued:
        """The same certificate with its key encrypted (AES-256) under ``passphrase``."""
        key = issued.key.with_name(issued.key.stem + "-enc.key")
        openssl("pkey", "-in", str(issued.key), "-out", str(key), "-aes256", "-passout", f"pass:{passphrase}")
        return Issued(issued.cert, key)


@dataclass(frozen=True)
class Certs:
    """What the security tests use."""

    ca: Issued
    other_ca: Issued  #: a CA that signed nothing the broker shows
    server: Issued  #: localhost / 127.0.0.1, signed by ca
    expired: Issued  #: localhost / 127.0.0.1, signed by ca, expired yesterday
    elsewhere: Issued  #: names only broker.elsewhere.example, signed by ca
    client: Issued  #: a client certificate signed by ca
    stranger: Issued  #: a client certificate signed by other_ca
    client_encrypted: Issued  #: client, its key encrypted with PASSPHRASE


PASSPHRASE = "correct horse battery"


def make_certs(folder: Path) -> Certs:
    pki = Pki(folder)
    ca, other = pki.ca("ca"), pki.ca("other-ca")
    client = pki.issue("client", ca, cn="gw-a", sans="", usage="clientAuth")
    return Certs(
        ca=ca, other_ca=other, server=pki.issue("server", ca),
        expired=pki.issue("expired", ca, days=-1),
        elsewhere=pki.issue("elsewhere", ca, cn="broker.elsewhere.example", sans="DNS:broker.elsewhere.example"),
        client=client, stranger=pki.issue("stranger", other, cn="gw-x", sans="", usage="clientAuth"),
        client_encrypted=pki.encrypted(client, PASSPHRASE),
    )
