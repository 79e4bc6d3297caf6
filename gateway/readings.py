"""The queue between the pollers and the publisher: its item type, its end marker, its bound.

Pollers put one :class:`DeviceBatch` per poll (never waiting: a full queue makes them skip the poll,
counted); the publisher takes them in order and spools them. The daemon puts :data:`END` once, after
the pollers stopped, to end the publisher's loop when everything before it is spooled.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

from proto.aggregates import AlarmEvent, Window
from proto.points import Point

if TYPE_CHECKING:
    from gateway.config import DeviceConfig


@dataclass(frozen=True, slots=True)
class DeviceBatch:
    """What one poll of one device yields after the normalizer: the points to report, and the windows
    that closed and the alarm events raised meanwhile."""

    device: DeviceConfig
    points: list[Point]
    windows: list[Window] = field(default_factory=list)
    events: list[AlarmEvent] = field(default_factory=list)


class _End(enum.Enum):
    END = "end"


#: put on the queue to end the publisher's loop after everything before it is spooled
END = _End.END

Item: TypeAlias = DeviceBatch | Literal[_End.END]
Readings: TypeAlias = "asyncio.Queue[Item]"


def new_queue(size: int) -> Readings:
    """The bounded queue (``size`` device batches) a gateway's pollers and publisher share."""
    return asyncio.Queue(maxsize=size)
