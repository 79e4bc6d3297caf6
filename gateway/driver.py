"""The driver interface every protocol implements, and the registry of protocols.

A protocol lives in one module of this package (``gateway.modbus``, ``gateway.opcua``, ...) that
provides, at module level:

- ``DEVICE_KEYS`` / ``TAG_KEYS``: the protocol's own keys of a device / tag in the plant config;
- ``parse_connection(d, where, protocol) -> conn``: the device's connection settings (a frozen
  dataclass) from its config mapping; raises :class:`~gateway.errors.ConfigError` naming ``where``;
- ``parse_tag(d, where, conn) -> (address, type, length)``: a tag's protocol address (a frozen
  dataclass), its canonical data type (:data:`gateway.values.TYPES`) and string length;
- ``Driver``: a subclass of :class:`Driver`;
- optionally ``polls(conn) -> bool``: False when the driver reports changes as they come
  (subscriptions) instead of reading on a schedule, so tags cannot have poll groups.

Modules are imported only when a plant uses their protocol, so an unused protocol's library is
never loaded. A driver returns *raw* values (before scale/offset/clamp): the poller normalizes.
"""

from __future__ import annotations

import abc
import importlib
import time
import traceback
from types import ModuleType
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError
from proto.points import Point

if TYPE_CHECKING:
    from gateway.config import DeviceConfig, TagConfig

#: protocol name in the plant config -> module implementing it
PROTOCOLS: dict[str, str] = {
    "modbus_tcp": "gateway.modbus",
    "modbus_rtu": "gateway.modbus",  # serial line
    "modbus_rtu_tcp": "gateway.modbus",  # RTU frames over a TCP socket (serial servers)
    "opcua": "gateway.opcua",
    "s7": "gateway.s7",
    "enip": "gateway.enip",  # EtherNet/IP CIP, Logix symbolic tags
    "mqtt": "gateway.mqtt_source",  # foreign JSON/number/string MQTT topics
}


def protocol_module(name: str, *, where: str = "protocol") -> ModuleType:
    """The module implementing protocol ``name`` (imported on first use)."""
    if name not in PROTOCOLS:
        raise ConfigError(f"'protocol' is {name!r}; expected one of {', '.join(PROTOCOLS)}", where=where)
    return importlib.import_module(PROTOCOLS[name])


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


def make_driver(device: DeviceConfig) -> Driver:
    driver: Driver = protocol_module(device.protocol).Driver(device)
    return driver


# --- reporting what a driver raised against its contract (a driver or library bug) ---------------

ERROR_TEXT_MAX = 200  #: characters of an exception's message quoted in reasons and log lines
TRACEBACK_FRAMES = 12  #: innermost frames of an unexpected exception's traceback that are logged


def describe(exc: BaseException, limit: int = ERROR_TEXT_MAX) -> str:
    """``Type: message``, the message cut at ``limit`` characters; an exception group is described by
    its first exception (a driver's TaskGroup wraps the one that matters)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the error report
        text = "(unprintable message)"
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def bounded_traceback(exc: BaseException) -> str:
    """The innermost frames of ``exc``'s traceback and its bounded description (and its cause's):
    never the whole message of an exception, which may carry megabytes."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    text = "".join(traceback.StackSummary.from_list(frames).format()) + describe(exc)
    cause = exc.__cause__ or exc.__context__
    return f"{text}\ncaused by {describe(cause)}" if cause is not None else text


def cause_of(exc: BaseException) -> tuple[str, str, int]:
    """What makes two unexpected exceptions the same cause: their type and where they were raised."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    tb = traceback.extract_tb(exc.__traceback__)
    where = tb[-1] if tb else None
    return type(exc).__qualname__, where.filename if where else "", (where.lineno or 0) if where else 0
