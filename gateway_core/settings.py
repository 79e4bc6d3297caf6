"""Settings of the configuration service (env prefix ``NEXUS_CORE``; TOML via ``NEXUS_CORE_CONFIG``)."""

from __future__ import annotations

import os
import re
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus.common import LogSettings, MqttSettings, OpsSettings
from nexus.settings import SettingsError, port, positive
from nexus.tls import check_server_files
from proto.config import DEFAULT_CONTROL_ROOT, HEARTBEAT_TIMEOUT, validate_control_root
from proto.uns import validate_prefix

#: a user's login name: lower case letters, digits and ``_ . @ -``, up to 64 characters
USER_NAME = re.compile(r"[a-z0-9][a-z0-9_.@-]{0,63}")


@dataclass(frozen=True, kw_only=True)
class DbSettings:
    dsn: str = "postgresql://nexus@127.0.0.1:5432/nexus"  #: configuration store (schema ``core``)
    #: historian for /api/v1/history (tables nexus.tags / nexus.points); empty = same as ``dsn``
    history_dsn: str = ""
    connect_timeout: float = 10.0  #: seconds
    pool_size: int = 4  #: connections kept open to the store

    def __post_init__(self) -> None:
        positive(self.connect_timeout, "db.connect_timeout")
        if not 1 <= self.pool_size <= 100:
            raise SettingsError(f"must be 1..100, got {self.pool_size}", field="db.pool_size")


@dataclass(frozen=True, kw_only=True)
class HttpSettings:
    host: str = "127.0.0.1"  #: address of the REST API
    port: int = 8080  #: its TCP port (0 = any free port)
    tls_cert_file: Path | None = None  #: PEM certificate (chain); set: the API serves HTTPS only
    tls_key_file: Path | None = None  #: PEM private key of tls_cert_file
    tls_key_password: str | None = field(default=None, repr=False)  #: passphrase of an encrypted key (never logged)
    #: PEM CA of client certificates; set: every client must show a certificate it signed (mutual TLS)
    tls_ca_file: Path | None = None

    def __post_init__(self) -> None:
        port(self.port, "http.port")
        check_server_files(cert_file=self.tls_cert_file, key_file=self.tls_key_file, key_password=self.tls_key_password,
                           ca_file=self.tls_ca_file, prefix="http")

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file is not None else "http"

    def uvicorn_tls(self) -> dict[str, Any]:
        """uvicorn.Config's ssl_* arguments (TLS 1.2 or newer: Python's default minimum); none without TLS."""
        if self.tls_cert_file is None:
            return {}
        return {"ssl_certfile": str(self.tls_cert_file), "ssl_keyfile": str(self.tls_key_file),
                "ssl_keyfile_password": self.tls_key_password,
                "ssl_ca_certs": str(self.tls_ca_file) if self.tls_ca_file else None,
                "ssl_cert_reqs": ssl.CERT_REQUIRED if self.tls_ca_file else ssl.CERT_NONE}


@dataclass(frozen=True, kw_only=True)
class HistorySettings:
    max_range_days: float = 366.0  #: longest from..to span of one history query, days
    max_rows: int = 100_000  #: most raw points or buckets one query returns

    def __post_init__(self) -> None:
        positive(self.max_range_days, "history.max_range_days")
        positive(self.max_rows, "history.max_rows")


@dataclass(frozen=True, kw_only=True)
class AuthSettings:
    """Users and sessions (docs/security.md, "Users and sessions")."""

    access_ttl: float = 900.0  #: seconds an access token (JWT, HS256) is valid
    refresh_ttl: float = 7 * 86400.0  #: seconds a refresh token (HTTP-only cookie) is valid after it is issued
    #: HS256 signing key of access tokens (at least 32 characters); empty: one is generated at first start and
    #: kept in the database (core.secrets), shared by the replicas. Never logged.
    jwt_secret: str | None = field(default=None, repr=False)
    #: Secure attribute of the refresh cookie: None = when the request came over HTTPS
    cookie_secure: bool | None = None
    login_max_failures: int = 5  #: failed logins of one user name within login_window before it is locked out
    #: failed logins from one client address within login_window before it is locked out
    login_max_failures_per_client: int = 20
    login_window: float = 300.0  #: seconds over which failed logins are counted; also how long a lock lasts
    #: user names and client addresses whose failures are remembered (each); the oldest are forgotten first
    login_tracked: int = 10_000
    password_min_length: int = 12  #: characters
    argon2_time_cost: int = 3  #: argon2id iterations (new hashes; older ones are rehashed at the next login)
    argon2_memory_kib: int = 65536  #: argon2id memory per hash, KiB
    argon2_parallelism: int = 4  #: argon2id lanes

    def __post_init__(self) -> None:
        for name in ("access_ttl", "refresh_ttl", "login_window"):
            positive(getattr(self, name), f"auth.{name}")
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise SettingsError("must be at least 32 characters", field="auth.jwt_secret")
        for name, low in (("login_max_failures", 1), ("login_max_failures_per_client", 1), ("login_tracked", 10),
                          ("password_min_length", 8), ("argon2_time_cost", 1), ("argon2_memory_kib", 8),
                          ("argon2_parallelism", 1)):
            if getattr(self, name) < low:
                raise SettingsError(f"must be >= {low}, got {getattr(self, name)}", field=f"auth.{name}")
        if self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise SettingsError("must be >= 8 x argon2_parallelism (argon2's minimum)", field="auth.argon2_memory_kib")

    def __repr__(self) -> str:  # the signing key must never reach a log line
        return f"AuthSettings(access_ttl={self.access_ttl:g}, refresh_ttl={self.refresh_ttl:g}, ...)"


@dataclass(frozen=True, kw_only=True)
class LiveSettings:
    """The live stream of current values, ``GET /api/v1/live`` (WebSocket; docs/gateway_core.md, "Live")."""

    uns_prefix: str = ""  #: the gateways' uns_prefix: levels before enterprise on the per-tag state topics
    topic_root: str = "nexus"  #: the gateways' (and normalizer's) topic_root: levels before batch/v1 on batch topics
    #: where changes come from: "batches" (the batch stream, up to a thousand points a message; the retained
    #: per-tag topics are read for first values at each connect and every snapshot_interval) or "tags" (every
    #: per-tag state message: one message per change, for publishers without batches)
    changes: str = "batches"
    snapshot_interval: float = 300.0  #: seconds between reads of the retained per-tag topics (changes = batches)
    snapshot_quiet: float = 0.5  #: seconds without a retained message that end one read of them
    snapshot_timeout: float = 60.0  #: one read of them lasts at most this long
    batch_interval: float = 0.1  #: seconds: changes to one client are sent at most this often, coalesced
    max_subscriptions: int = 16  #: subtrees one client may subscribe to at once
    max_tags: int = 10_000  #: tags one client may watch (a subscription that would exceed it is refused)
    max_clients: int = 256  #: WebSocket clients at once; more are refused (close 1013)
    max_cached_tags: int = 1_000_000  #: current values kept from the broker; tags beyond it are not streamed
    max_health_devices: int = 100_000  #: devices whose newest health report is kept; more are not kept (counted)
    role: str = "viewer"  #: the lowest role that may subscribe
    auth_timeout: float = 5.0  #: seconds a new client has to send its token
    recheck_interval: float = 30.0  #: seconds between checks that a client's credentials are still valid
    send_timeout: float = 10.0  #: seconds one message to a client may take; a client that slow is dropped

    def __post_init__(self) -> None:
        for name in ("uns_prefix", "topic_root"):
            try:
                validate_prefix(getattr(self, name))
            except ValueError as exc:
                raise SettingsError(str(exc), field=f"live.{name}") from exc
        if not self.topic_root:
            raise SettingsError("must not be empty (the gateways' topic_root, e.g. nexus)", field="live.topic_root")
        if self.changes not in ("batches", "tags"):
            raise SettingsError(f"must be batches or tags, got {self.changes!r}", field="live.changes")
        for name in ("batch_interval", "auth_timeout", "recheck_interval", "send_timeout", "snapshot_interval",
                     "snapshot_quiet", "snapshot_timeout"):
            positive(getattr(self, name), f"live.{name}")
        for name in ("max_subscriptions", "max_tags", "max_clients", "max_cached_tags", "max_health_devices"):
            if getattr(self, name) < 1:
                raise SettingsError(f"must be >= 1, got {getattr(self, name)}", field=f"live.{name}")
        if self.role not in ("viewer", "operator", "engineer", "admin"):
            raise SettingsError(f"must be viewer, operator, engineer or admin, got {self.role!r}", field="live.role")


@dataclass(frozen=True, kw_only=True)
class Settings:
    service_id: str = field(
        default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname()
    )  #: MQTT id
    control_root: str = DEFAULT_CONTROL_ROOT  #: first level(s) of config/status/cmd topics
    admin_key: str | None = None  #: bootstrap admin API key (env NEXUS_CORE_ADMIN_KEY); never logged
    #: bootstrap admin user (env NEXUS_CORE_ADMIN_USER), created at start with admin_password when it does not exist
    admin_user: str = "admin"
    #: its first password (env NEXUS_CORE_ADMIN_PASSWORD); none: no bootstrap user. Never stored, never logged
    admin_password: str | None = field(default=None, repr=False)
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT  #: seconds without a status before a gateway counts as dead
    #: seconds a gateway stays offline before it is dropped from the registry and its retained status cleared
    forget_after: float = 3600.0
    handoff_timeout: float = 10.0  #: seconds to wait for a released device to leave the old gateway's status
    startup_settle: float = 1.0  #: seconds to collect retained gateway statuses before the first assignment
    write_timeout: float = 10.0  #: seconds a tag write waits for the gateway's response
    mqtt_timeout: float = 10.0  #: seconds to wait for PUBACK of a config message
    db: DbSettings = field(default_factory=DbSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    live: LiveSettings = field(default_factory=LiveSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        try:
            validate_control_root(self.control_root)
        except ValueError as exc:
            raise SettingsError(str(exc), field="control_root") from exc
        for name in ("heartbeat_timeout", "handoff_timeout", "write_timeout", "mqtt_timeout"):
            positive(getattr(self, name), name)
        if not self.forget_after > self.heartbeat_timeout:
            raise SettingsError(
                f"must be greater than heartbeat_timeout ({self.heartbeat_timeout:g}), got {self.forget_after:g}",
                field="forget_after",
            )
        if self.startup_settle < 0:
            raise SettingsError(f"must be >= 0, got {self.startup_settle}", field="startup_settle")
        if self.admin_key is not None and len(self.admin_key) < 16:
            raise SettingsError("must be at least 16 characters", field="admin_key")
        if not USER_NAME.fullmatch(self.admin_user):
            raise SettingsError(f"must match {USER_NAME.pattern} (lower case)", field="admin_user")
        if self.admin_password is not None and len(self.admin_password) < self.auth.password_min_length:
            raise SettingsError(f"must be at least auth.password_min_length ({self.auth.password_min_length})"
                                " characters", field="admin_password")

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"nexus-core-{self.service_id}"

    def __repr__(self) -> str:  # the admin key must never reach a log line
        return f"Settings(service_id={self.service_id!r}, control_root={self.control_root!r}, ...)"
