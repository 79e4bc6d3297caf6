"""Settings of the normalizer daemon (env prefix ``NEXUS_NORMALIZER``; TOML via ``NEXUS_NORMALIZER_CONFIG``).

The devices and their tags' rules are not settings: they are in the devices file (``devices_file``,
:mod:`normalizer.devices`), in the plant file's keys.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from nexus.common import LogSettings, MqttSettings, OpsSettings
from nexus.settings import SettingsError, positive
from proto.points import MAX_BATCH_BYTES
from proto.uns import validate_level, validate_prefix

#: the per-tag input: six levels (enterprise/site/area/line/device/tag) under ``in_prefix``
TAG_LEVELS = "+/+/+/+/+/+"
#: the device levels of an output topic
DEVICE_LEVELS = "+/+/+/+/+"


def overlap(a: str, b: str) -> bool:
    """Whether some topic matches both MQTT filters ``a`` and ``b``."""
    x, y = a.split("/"), b.split("/")
    for i in range(max(len(x), len(y))):
        p = x[i] if i < len(x) else None
        q = y[i] if i < len(y) else None
        if p == "#" or q == "#":  # '#' also matches the parent level: "a/#" matches "a"
            return True
        if p is None or q is None:
            return False
        if p != q and "+" not in (p, q):
            return False
    return True


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: normalizer id: the ``gw`` of the batches it publishes, a level of its dead-letter topic, and the base
    #: of its MQTT client id. Must be unique among running normalizers, and stable across restarts (a
    #: StatefulSet's pod name is) so a restart resumes the broker session holding the unacknowledged input
    normalizer_id: str = field(default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname())
    #: TOML file listing the devices (by UNS path) and their tags' rules; None: no rules, every tag passes
    devices_file: Path | None = None
    share_group: str = "normalizer"  #: MQTT shared-subscription group ($share/<group>/...)
    in_root: str = "raw"  #: batch input: <in_root>/batch/v1/<enterprise>/<site>/<area>/<line>/<device>
    in_prefix: str = "raw/uns"  #: per-tag input: <in_prefix>/<enterprise>/<site>/<area>/<line>/<device>/<tag>
    in_batches: bool = True  #: subscribe to the batch input
    in_tags: bool = True  #: subscribe to the per-tag input
    out_root: str = "nexus"  #: output: <out_root>/batch/v1/..., /windows/v1/..., /events/v1/..., /deadletter/v1/...
    #: seconds the broker keeps our session (and queues input for it) while we are away. Third parties do
    #: not re-send, so this is what carries the input of a crashed or restarted normalizer over to its next
    #: run (with the same normalizer_id). 0: a clean session on every connect (input unacknowledged at a
    #: crash, and input published while no normalizer runs, is lost).
    session_expiry: int = 86_400
    #: input messages received and not yet acknowledged (their output not yet PUBACKed); at this many
    #: reading stops, and resumes below half
    max_pending: int = 1000
    #: largest input message decoded, bytes; a larger one is dead-lettered undecoded
    max_message_bytes: int = 1024 * 1024
    #: milliseconds a device's normalized points wait for more before they are published as one batch
    linger_ms: int = 20
    max_batch_points: int = 5000  #: points per output batch message (it is also split below MAX_BATCH_BYTES)
    dead_letter_payload_bytes: int = 65_536  #: first bytes of a refused input kept in its dead letter
    #: seconds from SIGTERM to exit: what is buffered is published and its input acknowledged; what is not
    #: PUBACKed by then stays unacknowledged, for redelivery
    drain_deadline: float = 10.0
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        for name in ("normalizer_id", "share_group"):
            try:
                validate_level(getattr(self, name), what=name)
            except ValueError as exc:
                raise SettingsError(str(exc), field=name) from exc
        for name in ("in_root", "in_prefix", "out_root"):
            value = getattr(self, name)
            if not value and name != "in_prefix":
                raise SettingsError("must not be empty", field=name)
            try:
                validate_prefix(value)
            except ValueError as exc:
                raise SettingsError(str(exc), field=name) from exc
        if not self.in_batches and not self.in_tags:
            raise SettingsError("at least one of in_batches, in_tags must be true", field="in_batches")
        if self.session_expiry < 0:
            raise SettingsError(f"must be >= 0 seconds, got {self.session_expiry}", field="session_expiry")
        positive(self.max_pending, "max_pending")
        positive(self.linger_ms, "linger_ms")
        positive(self.max_batch_points, "max_batch_points")
        if self.max_message_bytes < MAX_BATCH_BYTES:
            raise SettingsError(f"must be >= {MAX_BATCH_BYTES} bytes (a gateway's batch bound), got "
                                f"{self.max_message_bytes}", field="max_message_bytes")
        if not 0 <= self.dead_letter_payload_bytes <= self.max_message_bytes:
            raise SettingsError("must be in 0..max_message_bytes", field="dead_letter_payload_bytes")
        if not self.drain_deadline >= 3:  # >= 1 s for the last publishes after the MQTT reserve (normalizer/daemon.py)
            raise SettingsError(f"must be >= 3 seconds, got {self.drain_deadline}", field="drain_deadline")
        for out in self.output_filters():
            for sub in self.input_filters():
                if overlap(out, sub):
                    raise SettingsError(f"output topics {out} would be read back as input ({sub}): give out_root, "
                                        "in_root and in_prefix trees that do not overlap", field="out_root")

    def input_filters(self) -> list[str]:
        """The subscription filters (without the share prefix)."""
        out = []
        if self.in_batches:
            out.append(f"{self.in_root}/batch/v1/#")
        if self.in_tags:
            out.append(f"{self.in_prefix}/{TAG_LEVELS}" if self.in_prefix else TAG_LEVELS)
        return out

    def output_filters(self) -> list[str]:
        """Every topic this daemon publishes on, as filters (device levels as '+')."""
        root = self.out_root
        return [f"{root}/batch/v1/{DEVICE_LEVELS}", f"{root}/windows/v1/{DEVICE_LEVELS}",
                f"{root}/events/v1/{DEVICE_LEVELS}", self.dead_letter_topic,
                f"{self.in_root}/ack/v1/+"]  # delivery confirmations to the input's gateways

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.out_root}/deadletter/v1/normalizer/{self.normalizer_id}"

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"nexus-normalizer-{self.normalizer_id}"
