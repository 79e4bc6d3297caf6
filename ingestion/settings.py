"""Settings of an ingestion worker (env prefix ``NEXUS_INGESTION``; TOML via ``NEXUS_INGESTION_CONFIG``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from nexus.common import LogSettings, MqttSettings, OpsSettings
from nexus.settings import SettingsError, positive
from proto.uns import validate_level, validate_prefix


@dataclass(frozen=True, kw_only=True)
class DbSettings:
    dsn: str = "postgresql://nexus@127.0.0.1:5432/nexus"  #: libpq connection string of the historian
    connect_timeout: float = 10.0  #: seconds
    retention_days: int = 0  #: TimescaleDB retention policy; 0 = keep forever
    compress_after_days: int = 7  #: TimescaleDB compression policy; 0 = no compression
    dedup_window_hours: int = 72  #: how long message digests are kept for redelivery detection


@dataclass(frozen=True, kw_only=True)
class BatchSettings:
    max_points: int = 5000  #: a batch is written when it holds this many points ...
    max_age_ms: int = 50  #: ... or when its oldest message is this old (milliseconds); bounds the latency
    max_pending_points: int = 50_000  #: above this many undecided points, stop reading the socket

    def __post_init__(self) -> None:
        positive(self.max_points, "batch.max_points")
        positive(self.max_age_ms, "batch.max_age_ms")
        if self.max_pending_points < self.max_points:
            raise SettingsError("must be >= batch.max_points", field="batch.max_pending_points")


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: stable worker id; the MQTT client id and persistent session are derived from it, so a
    #: restarted worker gets its unacknowledged messages back (use a StatefulSet on Kubernetes)
    worker_id: str = field(default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname())
    share_group: str = "ingestion"  #: MQTT shared-subscription group ($share/<group>/...)
    topic_root: str = "nexus"  #: first level(s) of batch topics
    session_expiry: int = 86_400  #: seconds the broker keeps our session (and queues for us) while we are away
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    db: DbSettings = field(default_factory=DbSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        try:
            validate_level(self.share_group, what="share_group")
            validate_prefix(self.topic_root)
        except ValueError as exc:
            raise SettingsError(str(exc), field="share_group/topic_root") from exc
        if not self.worker_id:
            raise SettingsError("must not be empty", field="worker_id")

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"nexus-ingestion-{self.worker_id}"
