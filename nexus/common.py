"""Settings sections shared by the daemons: broker connection, database, ops endpoint, logging."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from nexus.settings import SettingsError, port, positive
from nexus.tls import client_context


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    host: str = "127.0.0.1"  #: broker host name or address (under TLS, a name its certificate lists)
    port: int = 1883  #: broker TCP port (8883 is the usual TLS port)
    client_id: str = ""  #: MQTT client id; empty = derived from the daemon id
    username: str | None = None  #: optional user name
    password: str | None = field(default=None, repr=False)  #: optional password (never logged, not in repr)
    #: TLS to the broker (1.2 or newer); on by itself when ca_file or cert_file is set
    tls: bool = False
    ca_file: Path | None = None  #: PEM CA certificate(s) the broker's chain must lead to; None: the system's CAs
    cert_file: Path | None = None  #: PEM client certificate (chain), for brokers that require one; with key_file
    key_file: Path | None = None  #: PEM private key of cert_file
    key_password: str | None = field(default=None, repr=False)  #: passphrase of an encrypted key_file (never logged)
    #: accept a broker certificate that does not name ``host`` (its chain is still verified); for a broker
    #: reached by an address its certificate does not list. Logged as a warning whenever a client starts.
    tls_insecure_no_hostname_check: bool = False
    keepalive: int = 30  #: MQTT keepalive, seconds
    connect_timeout: float = 10.0  #: seconds to wait for CONNACK
    max_inflight: int = 1000  #: QoS 1 messages in flight (outgoing window; Receive Maximum for incoming)
    reconnect_min: float = 0.5  #: first reconnect delay, seconds (doubles up to reconnect_max, with jitter)
    reconnect_max: float = 30.0  #: cap of the reconnect delay, seconds

    def __post_init__(self) -> None:
        port(self.port, "mqtt.port")
        positive(self.keepalive, "mqtt.keepalive")
        positive(self.connect_timeout, "mqtt.connect_timeout")
        positive(self.reconnect_min, "mqtt.reconnect_min")
        positive(self.reconnect_max, "mqtt.reconnect_max")
        if self.reconnect_min > self.reconnect_max:
            raise SettingsError("must be <= mqtt.reconnect_max", field="mqtt.reconnect_min")
        if not 1 <= self.max_inflight <= 65535:
            raise SettingsError(f"must be 1..65535, got {self.max_inflight}", field="mqtt.max_inflight")
        if self.tls_enabled:
            self.tls_context()  # every file checked now: a bad one stops the start, naming the field
        else:
            for name in ("key_file", "key_password", "tls_insecure_no_hostname_check"):
                if getattr(self, name):
                    raise SettingsError("only with TLS (mqtt.tls, mqtt.ca_file or mqtt.cert_file)",
                                        field=f"mqtt.{name}")

    @property
    def tls_enabled(self) -> bool:
        return self.tls or self.ca_file is not None or self.cert_file is not None

    def tls_context(self) -> ssl.SSLContext:
        """A fresh client context from these settings (raises SettingsError naming a bad file)."""
        return client_context(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file,
                              key_password=self.key_password, check_hostname=not self.tls_insecure_no_hostname_check)


@dataclass(frozen=True, kw_only=True)
class OpsSettings:
    host: str = "127.0.0.1"  #: address of the ops HTTP server (/healthz, /readyz, /metrics)
    port: int = 0  #: its TCP port; 0 = disabled

    def __post_init__(self) -> None:
        port(self.port, "ops.port")


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    level: str = "INFO"  #: DEBUG, INFO, WARNING, ERROR
    json: bool = True  #: JSON lines (production) or plain text (terminals)

    def __post_init__(self) -> None:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(f"unknown level {self.level!r}", field="log.level")
