"""Private local servers for the demo and the tests: mosquitto and a PostgreSQL cluster.

Each server runs in a folder of its own on a loopback port, as a child process we own and stop.
PostgreSQL refuses to run as root; when we are root it runs as ``nobody`` (setpriv).
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg


class LocalServerError(RuntimeError):
    """A local server could not start; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_port_free(port: int, what: str) -> None:
    """Raise a clear error if ``port`` on loopback is taken (by a listener; TIME_WAIT is fine)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise LocalServerError(
                f"port {port} for {what} is already in use on 127.0.0.1 ({exc.strerror}); "
                f"stop whatever uses it or choose another port") from exc


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LocalServerError(f"{what} exited with code {proc.returncode} during start")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise LocalServerError(f"{what} did not listen on port {port} within {timeout}s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _read_tail(path: Path, n: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


@dataclass(frozen=True, kw_only=True)
class BrokerTls:
    """A TLS listener's PEM files; ``require_certificate``: clients must show one signed by ``cafile``."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False
    tls_version: str = "tlsv1.2"  #: the lowest TLS version the listener accepts


def dynsec_password(password: str, iterations: int = 101) -> dict[str, Any]:
    """A dynamic-security client's password fields, hashed as the plugin stores them (PBKDF2-SHA512)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": iterations}


def write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """A mosquitto password file (name -> password), hashed by ``mosquitto_passwd``."""
    exe = shutil.which("mosquitto_passwd")
    if not exe:
        raise LocalServerError("mosquitto_passwd is not installed (it comes with the mosquitto package)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    for name, password in users.items():
        res = subprocess.run([exe, "-b", str(path), name, password], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise LocalServerError(f"mosquitto_passwd failed: {res.stderr.strip() or res.stdout.strip()}")


class Mosquitto:
    """A private mosquitto on 127.0.0.1:``port``, configured for no-loss QoS 1.

    By default one plain listener that lets anyone in (the tests and ``make demo``). Secured, for the
    security tests: ``tls`` makes the listener TLS; ``users`` (name -> password) writes a password file
    with ``mosquitto_passwd``; ``acl`` is an ACL file's text; ``dynsec`` a dynamic-security plugin
    document (roles, clients with a plain ``password``, hashed when written): unlike an ACL file, the
    plugin refuses a subscription it denies (SUBACK 0x87). With users or dynsec, anonymous clients are
    refused. :meth:`set_users` and :meth:`reload` (SIGHUP) change the password file of a running broker.
    """

    def __init__(self, folder: Path, port: int, *, tls: BrokerTls | None = None,
                 users: Mapping[str, str] | None = None, acl: str | None = None,
                 dynsec: Mapping[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.port = port
        self.tls = tls
        self.users = dict(users) if users is not None else None
        self.acl = acl
        self.dynsec = dynsec
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def secured(self) -> bool:
        return any(x is not None for x in (self.tls, self.users, self.acl, self.dynsec))

    @property
    def log_path(self) -> Path:
        return self.folder / "mosquitto.log"

    @staticmethod
    def binary() -> str:
        exe = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)
        if not exe:
            raise LocalServerError("mosquitto is not installed; run `make deps` (apt-get install mosquitto)")
        return exe

    def set_users(self, users: Mapping[str, str]) -> None:
        """Write the password file; a running broker reads it at :meth:`reload`."""
        self.users = dict(users)
        write_password_file(self.folder / "passwords", users)

    def reload(self) -> None:
        """SIGHUP: mosquitto reads its password and ACL files again."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def _security_conf(self) -> str:
        lines = []
        if self.tls is not None:
            t = self.tls
            lines += [f"cafile {t.cafile}", f"certfile {t.certfile}", f"keyfile {t.keyfile}",
                      f"tls_version {t.tls_version}", f"require_certificate {str(t.require_certificate).lower()}"]
        if self.users is not None:
            self.set_users(self.users)
            lines.append(f"password_file {self.folder / 'passwords'}")
        if self.acl is not None:
            (self.folder / "acl").write_text(self.acl)
            lines.append(f"acl_file {self.folder / 'acl'}")
        if self.dynsec is not None:
            plugin = next(iter(sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))), None)
            if plugin is None:
                raise LocalServerError("mosquitto's dynamic security plugin (mosquitto_dynamic_security.so) is missing")
            doc = dict(self.dynsec)
            doc["clients"] = [{k: v for k, v in c.items() if k != "password"} | dynsec_password(c["password"])
                              if "password" in c else dict(c) for c in self.dynsec.get("clients", ())]
            (self.folder / "dynsec.json").write_text(json.dumps(doc))
            lines += [f"plugin {plugin}", f"plugin_opt_config_file {self.folder / 'dynsec.json'}"]
        lines.append(f"allow_anonymous {'false' if self.users is not None or self.dynsec is not None else 'true'}")
        if os.geteuid() == 0:  # as root mosquitto would become user mosquitto, who cannot read root's 0600 keys
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        ensure_port_free(self.port, "mosquitto")
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "mosquitto.conf"
        # No per-client queue limits: mosquitto's default would drop QoS 1 messages queued beyond 1000 for a
        # busy subscriber. (Delivery does not depend on it: gateways re-send what ingestion has not
        # confirmed; persistence is off, as a broker that forgets everything on a crash must not lose points.)
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + (self._security_conf() if self.secured else "allow_anonymous true\n")
            + "persistence false\n"
            "max_queued_messages 0\n"
            "max_queued_bytes 0\n"
            "max_inflight_messages 0\n"
            "max_keepalive 300\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n"
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([self.binary(), "-c", str(conf)], stdout=log, stderr=log,
                                         start_new_session=True)
        try:
            wait_port(self.port, timeout, self.proc, "mosquitto")
        except LocalServerError as exc:
            raise LocalServerError(f"{exc}\n{_read_tail(self.log_path)}") from exc

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def pg_bindir() -> Path:
    """Folder of initdb/postgres: $PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("initdb")
    if exe:
        return Path(exe).parent
    raise LocalServerError("PostgreSQL server binaries (initdb) not found; run `make deps` "
                           "(apt-get install postgresql) or set PG_BINDIR")


class Postgres:
    """A private PostgreSQL cluster in ``folder`` on 127.0.0.1:``port``, trust auth, user ``nexus``."""

    USER = "nexus"

    def __init__(self, folder: Path, port: int, *, fast: bool = False, settings: dict[str, str] | None = None) -> None:
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.port = port
        self.fast = fast  # tests: no fsync (a crash of the test machine loses nothing we care about)
        self.settings = settings or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{dbname}"

    def _as_owner(self) -> list[str]:
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] if os.geteuid() == 0 else []

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            for root, _dirs, files in os.walk(path):
                os.chown(root, 65534, 65534)
                for name in files:
                    os.chown(os.path.join(root, name), 65534, 65534)

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.folder)
        if os.geteuid() == 0:  # nobody must be able to reach the folder
            p = self.folder
            while p != p.parent:
                if os.stat(p).st_mode & 0o001 == 0:
                    os.chmod(p, os.stat(p).st_mode | 0o001)
                p = p.parent
        res = subprocess.run(
            [*self._as_owner(), str(pg_bindir() / "initdb"), "-D", str(self.data), "-U", self.USER,
             "--auth=trust", "--encoding=UTF8", *(["--no-sync"] if self.fast else [])],
            capture_output=True, text=True)
        if res.returncode != 0:
            raise LocalServerError(f"initdb failed:\n{res.stdout}\n{res.stderr}")

    def start(self, timeout: float = 30.0) -> None:
        ensure_port_free(self.port, "PostgreSQL")
        self.init()
        opts = {"listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": "",
                "max_connections": "100", "shared_buffers": "128MB", "logging_collector": "off"}
        if self.fast:
            opts.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        opts.update(self.settings)
        args = [x for k, v in opts.items() for x in ("-c", f"{k}={v}")]
        log_path = self.folder / "postgres.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([*self._as_owner(), str(pg_bindir() / "postgres"), "-D", str(self.data),
                                          *args], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LocalServerError(f"postgres exited with code {self.proc.returncode}:\n{_read_tail(log_path)}")
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise LocalServerError(f"postgres not ready after {timeout}s:\n{_read_tail(log_path)}") from None
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
