"""Settings of a gateway process (env prefix ``NEXUS_GATEWAY``; TOML via ``NEXUS_GATEWAY_CONFIG``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from nexus.common import LogSettings, MqttSettings, OpsSettings
from nexus.settings import SettingsError, positive
from proto.config import validate_control_root
from proto.sparkplug.topics import validate_id
from proto.uns import validate_level, validate_prefix


@dataclass(frozen=True, kw_only=True)
class SparkplugSettings:
    """The gateway as a Sparkplug B edge node (``[sparkplug]``, env ``NEXUS_GATEWAY_SPARKPLUG_*``), next to
    its JSON batch topics, on a connection of its own (docs/sparkplug.md)."""

    enabled: bool = False  #: publish ``spBv1.0/<group_id>/...`` too
    group_id: str = ""  #: the Sparkplug group id (required when enabled)
    edge_node_id: str = ""  #: the edge node id; "" = the gateway id
    primary_host_id: str = ""  #: wait for this host's STATE online before the births; "" = no primary host
    #: QoS of DDATA: 0 as the specification says; 1 (at least once as far as the broker) allowed. Births and
    #: DDEATH go at 0, NDEATH (the will and a clean stop's) at 1, as specified
    data_qos: int = 0
    queue_size: int = 1000  #: device batches waiting for the edge node; beyond, points are dropped (counted)
    #: points kept per device while the node is not born (primary host offline, broker away), sent afterwards
    #: as history (``is_historical``); beyond, the oldest go (counted). The no-loss path is the JSON spool.
    held_points: int = 10_000

    def __post_init__(self) -> None:
        if self.data_qos not in (0, 1):
            raise SettingsError(f"must be 0 or 1, got {self.data_qos}", field="sparkplug.data_qos")
        positive(self.queue_size, "sparkplug.queue_size")
        positive(self.held_points, "sparkplug.held_points")
        for name in ("group_id", "edge_node_id", "primary_host_id"):
            value = getattr(self, name)
            if value or (name == "group_id" and self.enabled):
                try:
                    validate_id(value, what=name)
                except ValueError as exc:
                    raise SettingsError(str(exc), field=f"sparkplug.{name}") from exc


@dataclass(frozen=True, kw_only=True)
class HealthSettings:
    """Per-device health reports on ``<control_root>/status/devices/<device>`` (``[health]``, env
    ``NEXUS_GATEWAY_HEALTH_*``; gateway/health.py)."""

    enabled: bool = True  #: publish them
    interval_s: float = 2.0  #: least seconds between two reports of one device (a change waits at most this)
    heartbeat_s: float = 10.0  #: a report at least this often (counts, latencies); 3 missed = stale to readers
    window_s: float = 60.0  #: seconds of successful polls the latency p50/p99 are taken over (at most 1024 polls)

    def __post_init__(self) -> None:
        for name in ("interval_s", "heartbeat_s", "window_s"):
            positive(getattr(self, name), f"health.{name}")
        if self.heartbeat_s < self.interval_s:
            raise SettingsError(f"must be >= health.interval_s ({self.interval_s:g}), got {self.heartbeat_s:g}",
                                field="health.heartbeat_s")


@dataclass(frozen=True, kw_only=True)
class Settings:
    gateway_id: str = field(default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname())  #: unique id
    #: path of the plant config (devices and tags), TOML or YAML; used when config_source=file
    plant: str = "plant.toml"
    config_source: str = "file"  #: file: devices from ``plant``; core: devices assigned by gateway_core over MQTT
    capacity: int = 100  #: relative share of devices gateway_core assigns to this gateway (core mode)
    heartbeat_s: float = 2.0  #: seconds between status messages (core mode)
    topic_root: str = "nexus"  #: first level(s) of batch topics
    uns_prefix: str = ""  #: optional levels before enterprise on per-tag UNS topics
    tag_topics: bool = True  #: also publish one retained message per tag (on change) for UNS browsing
    control_root: str = "$nexus"  #: root of control topics: <root>/cmd/<device>/<tag>/set, <root>/config/...
    max_concurrent_polls: int = 256  #: bounded worker pool: polls in flight at once across all devices
    #: write-ahead log of batch messages until ingestion confirms them: <spool_dir>/<gateway_id>;
    #: "" = memory only (nothing unconfirmed survives a gateway restart)
    spool_dir: str = "spool"
    spool_max_mb: int = 1024  #: spool bound (MiB); when full, the publish loop waits and polls are skipped (counted)
    spool_fsync: bool = True  #: fsync each group of appends (survives a power cut; off: survives a crash)
    #: confirmed: a message is delivered when ingestion confirms its commit (end to end); broker: at PUBACK
    #: (for consumers that do not confirm; a broker that loses messages then loses points)
    delivery: str = "confirmed"
    ack_timeout_s: float = 10.0  #: re-send a message not confirmed within this (s; doubles per miss, up to 120 s)
    #: most batch messages sent and not yet confirmed; beyond it new ones wait in the spool (bounds what a
    #: re-send after a timeout puts on the uplink while ingestion is slow or away)
    send_window: int = 10_000
    queue_size: int = 1000  #: device batches waiting to be published; when full, polls are skipped and counted
    max_points_per_message: int = 1000  #: a device batch larger than this is split into several messages
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    sparkplug: SparkplugSettings = field(default_factory=SparkplugSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        checks = (("gateway_id", lambda v: validate_level(v, what="gateway_id")), ("topic_root", validate_prefix),
                  ("uns_prefix", validate_prefix), ("control_root", validate_control_root))
        for name, check in checks:
            try:
                check(getattr(self, name))
            except ValueError as exc:
                raise SettingsError(str(exc), field=name) from exc
        positive(self.max_concurrent_polls, "max_concurrent_polls")
        positive(self.capacity, "capacity")
        positive(self.spool_max_mb, "spool_max_mb")
        positive(self.heartbeat_s, "heartbeat_s")
        positive(self.ack_timeout_s, "ack_timeout_s")
        positive(self.send_window, "send_window")
        if self.delivery not in ("confirmed", "broker"):
            raise SettingsError(f"expected confirmed or broker, got {self.delivery!r}", field="delivery")
        if self.config_source not in ("file", "core"):
            raise SettingsError(f"expected file or core, got {self.config_source!r}", field="config_source")
        positive(self.queue_size, "queue_size")
        positive(self.max_points_per_message, "max_points_per_message")

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"nexus-gateway-{self.gateway_id}"

    @property
    def edge_node_id(self) -> str:
        return self.sparkplug.edge_node_id or self.gateway_id
