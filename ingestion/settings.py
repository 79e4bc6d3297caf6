"""Settings of an ingestion worker (env prefix ``NEXUS_INGESTION``; TOML via ``NEXUS_INGESTION_CONFIG``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from ingestion.sparkplug.host import PathMap
from nexus.common import LogSettings, MqttSettings, OpsSettings
from nexus.settings import SettingsError, positive
from proto.errors import ContractError
from proto.points import MAX_BATCH_BYTES
from proto.sparkplug.topics import validate_id
from proto.uns import validate_level, validate_prefix


@dataclass(frozen=True, kw_only=True)
class DbSettings:
    dsn: str = "postgresql://nexus@127.0.0.1:5432/nexus"  #: libpq connection string of the historian
    connect_timeout: float = 10.0  #: seconds
    retention_days: int = 0  #: days raw points are kept (TimescaleDB policy; plain: partitions dropped); 0: forever
    compress_after_days: int = 7  #: TimescaleDB compression policy; 0 = no compression
    retention_1m_days: int = 0  #: days nexus.points_1m keeps its buckets (both backends); 0 = forever
    retention_1h_days: int = 0  #: days nexus.points_1h keeps its buckets (both backends); 0 = forever
    #: TimescaleDB: days a point may arrive late (a spool replay) and still reach the aggregates at their next
    #: refresh (the refresh policies' start_offset; cut to the raw retention). See docs/historian.md.
    late_data_days: int = 7
    dedup_window_hours: int = 72  #: how long message digests are kept for redelivery detection
    #: seconds one database operation (a batch transaction, a housekeeping DELETE) may take before it is
    #: cancelled on the server and retried on a new connection: a lock or a stuck server never wedges a worker
    query_timeout: float = 30.0
    #: seconds the start-up migrations may take (they wait for other workers' migrations: advisory lock)
    migrate_timeout: float = 300.0
    #: plain PostgreSQL: seconds between the upkeep leader's rounds (partitions, retention, rollups); late
    #: data is in the rollups at the next round. See docs/historian.md.
    upkeep_interval: float = 30.0
    upkeep_timeout: float = 300.0  #: seconds one upkeep statement may take (a rollup step of catching up)
    partition_ahead_days: int = 3  #: plain PostgreSQL: day partitions created ahead of today
    #: plain PostgreSQL: a point up to this many days ahead of today gets a partition made for it when needed;
    #: a message with a point further ahead (a clock years off) goes to the dead letters, its error naming it
    partition_future_days: int = 7

    def __post_init__(self) -> None:
        positive(self.connect_timeout, "db.connect_timeout")
        positive(self.query_timeout, "db.query_timeout")
        positive(self.migrate_timeout, "db.migrate_timeout")
        positive(self.upkeep_interval, "db.upkeep_interval")
        positive(self.upkeep_timeout, "db.upkeep_timeout")
        if self.partition_future_days < self.partition_ahead_days:
            raise SettingsError(f"must be >= db.partition_ahead_days ({self.partition_ahead_days}), got "
                                f"{self.partition_future_days}", field="db.partition_future_days")
        if self.partition_ahead_days < 1:
            raise SettingsError(f"must be >= 1 day, got {self.partition_ahead_days}", field="db.partition_ahead_days")
        for name in ("retention_days", "compress_after_days", "retention_1m_days", "retention_1h_days"):
            if getattr(self, name) < 0:
                raise SettingsError(f"must be >= 0 days (0: none), got {getattr(self, name)}", field=f"db.{name}")
        positive(self.late_data_days, "db.late_data_days")
        # the hour is refreshed from the minutes over the late-data window: they must still be there
        if 0 < self.retention_1m_days <= self.late_data_days:
            raise SettingsError(f"must be 0 or more than db.late_data_days ({self.late_data_days}), got "
                                f"{self.retention_1m_days}", field="db.retention_1m_days")


@dataclass(frozen=True, kw_only=True)
class BatchSettings:
    max_points: int = 5000  #: a batch is written when it holds this many points ...
    max_age_ms: int = 50  #: ... or when its oldest message is this old (milliseconds); bounds the latency
    max_pending_points: int = 50_000  #: above this many undecided points, stop reading the socket ...
    #: ... or above this many payload bytes held (stored messages and dead letters alike); reading resumes
    #: when both are below half. 64 MiB: 64 full-size messages (max_message_bytes), ~400 real gateway batches.
    max_pending_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        positive(self.max_points, "batch.max_points")
        positive(self.max_age_ms, "batch.max_age_ms")
        if self.max_pending_points < self.max_points:
            raise SettingsError("must be >= batch.max_points", field="batch.max_pending_points")
        positive(self.max_pending_bytes, "batch.max_pending_bytes")


_PATHS = PathMap()


@dataclass(frozen=True, kw_only=True)
class SparkplugSettings:
    """The Sparkplug B primary host (docs/sparkplug.md): one worker at a time hosts (a PostgreSQL advisory
    lock elects it); its points go to the same buffer, transactions and rows as the JSON batches."""

    enabled: bool = False  #: run the host (every worker contends; one hosts, the others wait to take over)
    host_id: str = "nexus"  #: our primary host id: STATE on spBv1.0/STATE/<host_id> (the edge nodes' primary_host_id)
    #: Sparkplug group ids to host (each subscribed as spBv1.0/<group>/#); empty: every group (spBv1.0/#)
    group_filter: tuple[str, ...] = ()
    #: UNS levels of a metric: templates of {group}, {node} and {device} (node_device: the device of a node's
    #: own metrics); a metric name's "/" folders become "." in its tag
    enterprise: str = _PATHS.enterprise
    site: str = _PATHS.site
    area: str = _PATHS.area
    line: str = _PATHS.line
    device: str = _PATHS.device
    node_device: str = _PATHS.node_device
    #: seconds between a waiting worker's tries for the host lock, and between the host's checks that its lock
    #: connection is alive (a dead host is replaced within about this, plus PostgreSQL noticing the death)
    takeover_interval: float = 2.0

    def __post_init__(self) -> None:
        for name, value in [("host_id", self.host_id), *(("group_filter", g) for g in self.group_filter)]:
            try:
                validate_id(value, what=name)
            except ContractError as exc:
                raise SettingsError(str(exc), field=f"sparkplug.{name}") from exc
        sample = {"group": "g", "node": "n", "device": "d"}
        for level in ("enterprise", "site", "area", "line", "device", "node_device"):
            template = getattr(self, level)
            try:
                validate_level(template.format(**sample), what=level)
            except (KeyError, IndexError, ValueError) as exc:  # an unknown {name}, a stray brace, a bad level
                raise SettingsError(f"{template[:100]!r}: a UNS level from {{group}}, {{node}}, {{device}} and text "
                                    f"without '/', '+', '#' ({type(exc).__name__}: {exc})",
                                    field=f"sparkplug.{level}") from exc
        positive(self.takeover_interval, "sparkplug.takeover_interval")

    @property
    def paths(self) -> PathMap:
        return PathMap(enterprise=self.enterprise, site=self.site, area=self.area, line=self.line, device=self.device,
                       node_device=self.node_device)


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: worker id: the MQTT client id is derived from it and it is recorded with dead letters; it must be
    #: unique among running workers (a Deployment's pod name is), stable only if session_expiry > 0
    worker_id: str = field(default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname())
    share_group: str = "ingestion"  #: MQTT shared-subscription group ($share/<group>/...)
    topic_root: str = "nexus"  #: first level(s) of batch topics (and of the ack topics: <root>/ack/v1/<gateway>)
    #: seconds the broker keeps our session (and queues messages for it) while we are away. 0 (default): a
    #: clean session on every connect. Delivery does not depend on it: a gateway keeps each batch until we
    #: confirm its commit on its ack topic and re-sends it otherwise (to whichever worker is running), so a
    #: worker stopped for good strands nothing. > 0 (clean_start=false, a stable worker_id): only for
    #: publishers that do not re-send (no "gw"/"run"/"seq" in their batches); their messages wait in the
    #: broker for this worker, and are lost if it never comes back.
    session_expiry: int = 0
    #: largest message decoded, bytes; a larger one is dead-lettered undecoded (its size and sha256 kept,
    #: with its first bytes only). A gateway's batches are <= ~150 KB; 1 MiB leaves room for wide devices
    #: while bounding what one message may cost (decoded points take ~10x the JSON's size in memory).
    max_message_bytes: int = 1024 * 1024
    #: seconds from SIGTERM to exit: the final batch commits (or is given up and left to redelivery),
    #: owed acks are sent, the broker session closes; also while the database is down, slow or locked
    drain_deadline: float = 10.0
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    db: DbSettings = field(default_factory=DbSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    sparkplug: SparkplugSettings = field(default_factory=SparkplugSettings)
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
        if self.session_expiry < 0:
            raise SettingsError(f"must be >= 0 seconds, got {self.session_expiry}", field="session_expiry")
        if self.max_message_bytes < MAX_BATCH_BYTES:  # smaller would dead-letter whole gateway batches
            raise SettingsError(f"must be >= {MAX_BATCH_BYTES} bytes (the gateways' batch bound), got "
                                f"{self.max_message_bytes}", field="max_message_bytes")
        if not self.drain_deadline >= 5:  # >= 1 s for the final commit after the reserves (ingestion/daemon.py)
            raise SettingsError(f"must be >= 5 seconds, got {self.drain_deadline}", field="drain_deadline")

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"nexus-ingestion-{self.worker_id}"
