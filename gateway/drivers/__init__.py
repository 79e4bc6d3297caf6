"""The protocols a gateway speaks: one folder per protocol, and the registry that names them.

``gateway/drivers/<folder>/`` holds everything of one protocol:

- ``config.py``: its keys of a device and a tag in the plant config. It imports no protocol library
  (gateway_core validates configs with it) and provides ``DEVICE_KEYS`` / ``TAG_KEYS``,
  ``parse_connection(d, where, protocol) -> conn`` (a frozen dataclass),
  ``parse_tag(d, where, conn) -> (address, type, length)`` and optionally ``polls(conn) -> bool``
  (False when the driver reports changes as they come, so tags cannot have poll groups); errors are
  :class:`~gateway.errors.ConfigError` naming ``where``;
- ``driver.py``: ``Driver``, a :class:`~gateway.drivers.base.Driver` over the protocol library;
- its helpers, a ``simulator.py`` for tests and the demo (``python -m gateway.drivers.<folder>.simulator``,
  never imported by the daemons), a ``README.md`` and a ``sample.toml``.

Modules are imported only when a plant uses their protocol, so an unused protocol's library is never
loaded. Adding a protocol is adding a folder and one line of :data:`PROTOCOLS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import DeviceConfig
    from gateway.drivers.base import Driver

#: protocol name in the plant config -> its folder in gateway/drivers/
PROTOCOLS: dict[str, str] = {
    "modbus_tcp": "modbus",
    "modbus_rtu": "modbus",  # serial line
    "modbus_rtu_tcp": "modbus",  # RTU frames over a TCP socket (serial servers)
    "opcua": "opcua",
    "s7": "s7",
    "enip": "enip",  # EtherNet/IP CIP, Logix symbolic tags
    "mqtt": "mqtt",  # foreign JSON/number/string MQTT topics
}


def _module(protocol: str, part: str, where: str) -> ModuleType:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"'protocol' is {protocol!r}; expected one of {', '.join(PROTOCOLS)}", where=where)
    return importlib.import_module(f"{__name__}.{PROTOCOLS[protocol]}.{part}")


def config_module(protocol: str, *, where: str = "protocol") -> ModuleType:
    """The module parsing ``protocol``'s config keys (imports no protocol library)."""
    return _module(protocol, "config", where)


def make_driver(device: DeviceConfig) -> Driver:
    """A driver for ``device`` (its protocol's library is imported here, on first use)."""
    driver: Driver = _module(device.protocol, "driver", "protocol").Driver(device)
    return driver
