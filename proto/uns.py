"""The Unified Namespace (UNS) topic model: ISA-95 levels enterprise/site/area/line/device/tag.

Two topic families exist:

* per-tag UNS topics ``[<prefix>/]<enterprise>/<site>/<area>/<line>/<device>/<tag>``, one retained
  message per tag, so any MQTT client can browse the plant;
* batch topics ``<root>/batch/v1/<enterprise>/<site>/<area>/<line>/<device>``, carrying many points
  of one device in one message; this is what the historian ingests.
"""

from __future__ import annotations

from dataclasses import dataclass

from proto.errors import TopicError

#: Maximum bytes of a whole topic. MQTT allows 65,535; brokers (EMQX: 4,096 levels, mosquitto) and
#: tools choke well before, and a UNS path longer than this is a configuration mistake.
MAX_TOPIC_BYTES = 1024
#: Maximum bytes of one level (enterprise, site, ... tag).
MAX_LEVEL_BYTES = 128
#: Default first level of batch topics.
BATCH_ROOT = "nexus"
_BATCH_MARK = ("batch", "v1")
ISA95_LEVELS = ("enterprise", "site", "area", "line", "device")


def validate_level(level: str, *, what: str = "level") -> str:
    """Return ``level`` if it can be one UNS level, else raise :class:`TopicError` saying why."""
    if not isinstance(level, str):
        raise TopicError(f"{what} must be a string, got {type(level).__name__}", topic=repr(level))
    if level == "":
        raise TopicError(f"{what} is empty", topic=level)
    if level.strip() != level:
        raise TopicError(f"{what} {level!r} has leading or trailing whitespace", topic=level)
    for bad, name in (("+", "'+' (MQTT wildcard)"), ("#", "'#' (MQTT wildcard)"), ("/", "'/' (level separator)")):
        if bad in level:
            raise TopicError(f"{what} {level!r} contains {name}", topic=level)
    if level.startswith("$"):
        raise TopicError(f"{what} {level!r} starts with '$' (reserved for broker topics)", topic=level)
    if "\x00" in level or any(0xD800 <= ord(ch) <= 0xDFFF for ch in level):
        raise TopicError(f"{what} {level!r} is not valid UTF-8 (NUL or lone surrogate)", topic=level)
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in level):
        raise TopicError(f"{what} {level!r} contains a control character", topic=level)
    if len(level.encode("utf-8")) > MAX_LEVEL_BYTES:
        raise TopicError(f"{what} {level[:32]!r}... is longer than {MAX_LEVEL_BYTES} bytes", topic=level)
    return level


def _check_topic_length(topic: str) -> str:
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise TopicError(f"topic {topic[:48]!r}... is longer than {MAX_TOPIC_BYTES} bytes", topic=topic)
    return topic


def validate_prefix(prefix: str) -> str:
    """A topic prefix is zero or more valid levels joined by '/' (no leading/trailing '/')."""
    if prefix:
        for level in prefix.split("/"):
            validate_level(level, what="prefix level")
    return prefix


@dataclass(frozen=True, slots=True)
class DevicePath:
    """Where a device sits in the plant: the first five ISA-95 levels."""

    enterprise: str
    site: str
    area: str
    line: str
    device: str

    def __post_init__(self) -> None:
        for name in ISA95_LEVELS:
            validate_level(getattr(self, name), what=name)
        _check_topic_length(self.path)

    @property
    def path(self) -> str:
        """``enterprise/site/area/line/device``."""
        return f"{self.enterprise}/{self.site}/{self.area}/{self.line}/{self.device}"

    def tag(self, tag: str) -> TagPath:
        return TagPath(device=self, tag=tag)

    @classmethod
    def parse(cls, path: str) -> DevicePath:
        levels = _split(path, 5)
        return cls(*levels)


@dataclass(frozen=True, slots=True)
class TagPath:
    """A tag's full UNS identity: device path plus the tag level."""

    device: DevicePath
    tag: str

    def __post_init__(self) -> None:
        validate_level(self.tag, what="tag")
        _check_topic_length(self.path)

    @property
    def path(self) -> str:
        """``enterprise/site/area/line/device/tag``: the tag's identity in the historian."""
        return f"{self.device.path}/{self.tag}"

    def topic(self, prefix: str = "") -> str:
        """The per-tag UNS topic, under an optional prefix."""
        return _check_topic_length(f"{prefix}/{self.path}" if prefix else self.path)

    @classmethod
    def parse(cls, path: str) -> TagPath:
        levels = _split(path, 6)
        return cls(device=DevicePath(*levels[:5]), tag=levels[5])


def _split(path: str, n: int) -> list[str]:
    if not isinstance(path, str):
        raise TopicError("a UNS path must be a string", topic=repr(path))
    _check_topic_length(path)
    levels = path.split("/")
    if len(levels) != n:
        raise TopicError(f"UNS path {path!r} has {len(levels)} levels, expected {n}", topic=path)
    return levels


def batch_topic(device: DevicePath, root: str = BATCH_ROOT) -> str:
    """The topic a device's batched points are published on."""
    return _check_topic_length(f"{root}/{_BATCH_MARK[0]}/{_BATCH_MARK[1]}/{device.path}")


def batch_filter(root: str = BATCH_ROOT) -> str:
    """Subscription filter matching every batch topic under ``root``."""
    return f"{root}/{_BATCH_MARK[0]}/{_BATCH_MARK[1]}/#"


def parse_batch_topic(topic: str, root: str = BATCH_ROOT) -> DevicePath:
    """Device path of a batch topic; :class:`TopicError` if the topic is not one."""
    head = f"{root}/{_BATCH_MARK[0]}/{_BATCH_MARK[1]}/"
    if not topic.startswith(head):
        raise TopicError(f"topic {topic!r} is not under {head!r}", topic=topic)
    return DevicePath.parse(topic[len(head):])
