"""The interface every protocol's driver implements (``gateway/drivers/<protocol>/driver.py``).

A driver returns *raw* values (before the normalizer's rules); the poller normalizes. Its config
keys are parsed by the protocol's ``config`` module, see :mod:`gateway.drivers`.
"""

from __future__ import annotations

import abc
import time
from typing import TYPE_CHECKING, Any

from proto.points import Point

if TYPE_CHECKING:
    from gateway.config import DeviceConfig, TagConfig


class Driver(abc.ABC):
    """One connection to one device.

    Contract (the poller relies on it):

    - :meth:`connect` opens the connection or raises :class:`~gateway.errors.TemporaryError`.
    - :meth:`read` returns one :class:`Point` per tag (polling drivers) or every change buffered
      since the last call (subscription drivers), with *raw* values, millisecond timestamps and an
      OPC UA status; a tag the device refuses is a BAD point with a reason, not an exception. A
      device-level failure (timeout, lost connection) raises ``TemporaryError`` and leaves
      :attr:`connected` false, so the poller reports every tag BAD and reconnects.
    - :meth:`write` writes one raw, type-checked value; ``PermanentError`` when the device refuses
      it (bad address, read-only), ``TemporaryError`` when the device cannot be reached.
    - :meth:`close` never raises. Every network await is bounded by ``device.timeout_ms``.

    Any other exception is a bug the poller survives: it reports every tag BAD_INTERNAL_ERROR with
    the exception's type and message, closes the connection and retries under the breaker.
    """

    def __init__(self, device: DeviceConfig) -> None:
        self.device = device

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def read(self) -> list[Point]: ...

    async def read_tags(self, names: frozenset[str]) -> list[Point]:
        """Read only the tags ``names`` (one poll group). Drivers that can read a subset cheaper
        override this; the default reads every tag and keeps the group's."""
        return [p for p in await self.read() if p.tag in names]

    @abc.abstractmethod
    async def write(self, tag: TagConfig, value: Any) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    def lost_reason(self) -> str | None:
        """Why :attr:`connected` turned false without a request failing (the peer closed the
        connection, a keepalive failed), if the driver knows; the poller logs it once per loss."""
        return None

    def health(self) -> dict[str, Any]:
        """Protocol-specific state for logs and the ops endpoint."""
        return {"connected": self.connected}

    def bad_points(self, status: int, reason: str, ts: int | None = None) -> list[Point]:
        """Every tag of the device with ``status`` and ``reason`` (device down, circuit open)."""
        ts = ts or int(time.time() * 1000)
        return [Point(t.name, None, ts, status, t.unit, reason) for t in self.device.tags]
