"""Settings of a gateway process (env prefix ``NEXUS_GATEWAY``; TOML via ``NEXUS_GATEWAY_CONFIG``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from nexus.common import LogSettings, MqttSettings, OpsSettings
from nexus.settings import SettingsError, positive
from proto.uns import validate_level, validate_prefix


@dataclass(frozen=True, kw_only=True)
class Settings:
    gateway_id: str = field(default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname())  #: unique id
    plant: str = "plant.toml"  #: path of the plant config (devices and tags), TOML or YAML
    topic_root: str = "nexus"  #: first level(s) of batch topics
    uns_prefix: str = ""  #: optional levels before enterprise on per-tag UNS topics
    tag_topics: bool = True  #: also publish one retained message per tag (on change) for UNS browsing
    queue_size: int = 1000  #: device batches waiting to be published; when full, polls are skipped and counted
    max_points_per_message: int = 1000  #: a device batch larger than this is split into several messages
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        try:
            validate_level(self.gateway_id, what="gateway_id")
            validate_prefix(self.topic_root)
            validate_prefix(self.uns_prefix)
        except ValueError as exc:
            raise SettingsError(str(exc), field="gateway_id/topic_root/uns_prefix") from exc
        positive(self.queue_size, "queue_size")
        positive(self.max_points_per_message, "max_points_per_message")

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"nexus-gateway-{self.gateway_id}"
