"""Settings sections shared by the daemons: broker connection, database, ops endpoint, logging."""

from __future__ import annotations

from dataclasses import dataclass

from nexus.settings import SettingsError, port, positive


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    host: str = "127.0.0.1"  #: broker host name or address
    port: int = 1883  #: broker TCP port
    client_id: str = ""  #: MQTT client id; empty = derived from the daemon id
    username: str | None = None  #: optional user name
    password: str | None = None  #: optional password (never logged)
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
