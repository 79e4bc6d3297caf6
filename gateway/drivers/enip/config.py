"""EtherNet/IP configuration keys: the controller's address and CIP route, and a tag's symbolic path.
Imports no CIP library: gateway_core validates configs with it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from gateway.config import get, int_in, parse_type
from gateway.errors import ConfigError
from gateway.values import TYPES

DEVICE_KEYS = frozenset({"host", "port", "slot", "route", "upload_tags", "upload_timeout_ms"})
TAG_KEYS = frozenset({"tag", "type", "length"})

#: canonical type -> CIP elementary type name (pycomm3 DataTypes)
CIP_TYPES = {"bool": "BOOL", "int8": "SINT", "uint8": "USINT", "int16": "INT", "uint16": "UINT", "int32": "DINT",
             "uint32": "UDINT", "int64": "LINT", "uint64": "ULINT", "float32": "REAL", "float64": "LREAL",
             "string": "STRING"}
LOGIX_STRING_LEN = 82  #: characters in a Logix STRING (its DATA member is SINT[82])

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SEGMENT = rf"{_NAME}(?:\[\d+(?:,\d+){{0,2}}\])?"
_PATH = re.compile(rf"(?:Program:{_NAME}\.)?{_SEGMENT}(?:\.{_SEGMENT})*")
BIT_SUFFIX = re.compile(r"\.(\d+)$")
#: port names a CIP route may use (pycomm3's PortSegment names)
PORT_NAMES = ("backplane", "bp", "enet", "dhrio-a", "dhrio-b", "dnet", "cnet", "dh485-a", "dh485-b")


@dataclass(frozen=True, kw_only=True)
class EnipConnection:
    host: str  #: controller or EtherNet/IP module, IPv4 address or host name
    port: int = 44818  #: EtherNet/IP TCP port
    route: str = "0"  #: CIP route after the host: a backplane slot ("0") or port/link pairs ("bp/1/enet/10.0.0.9/bp/0")
    upload_tags: bool = True  #: upload the tag list at connect (type checks, Logix STRING, BOOL arrays, bits)
    upload_timeout_ms: int = 30_000  #: bound on a connect that uploads the tag list (many requests)

    @property
    def path(self) -> str:
        """The connection path in pycomm3's syntax."""
        return f"{self.host}:{self.port}/{self.route}"


@dataclass(frozen=True, slots=True)
class EnipAddress:
    path: str  #: symbolic path of one element as the controller names it, e.g. "Motor.Speed", "Counts[3]"


def route_problem(route: str) -> str | None:
    """Why ``route`` is not a CIP route of port/link pairs, or None. A port is a number (1..14) or a
    name (backplane/bp, enet, ...); a link is a slot or node number (0..255) or an IP address."""
    segments = route.replace("\\", "/").split("/")
    if len(segments) % 2:
        return f"it must be port/link pairs, got {len(segments)} segments"
    for port, link in zip(segments[::2], segments[1::2], strict=True):
        if not (port.isdigit() and 1 <= int(port) <= 14) and port.lower() not in PORT_NAMES:
            return f"port {port!r} is neither 1..14 nor one of {', '.join(PORT_NAMES)}"
        if link.isdigit():
            if int(link) > 255:
                return f"link {link!r} outside 0..255"
            continue
        try:
            ipaddress.ip_address(link)
        except ValueError:
            return f"link {link!r} is neither a slot number nor an IP address"
    return None


def parse_connection(d: dict[str, Any], where: str, protocol: str) -> EnipConnection:
    host = get(d, "host", str, where)
    if not host or ":" in host or "/" in host:
        raise ConfigError(f"'host' {host!r} must be an IPv4 address or host name (no port, no path)", where=where)
    if "slot" in d and "route" in d:
        raise ConfigError("give either 'slot' or 'route', not both", where=where)
    route = str(int_in(d, "slot", 0, 255, where, 0))
    if "route" in d:
        route = get(d, "route", str, where).strip("/")
        problem = route_problem(route)
        if problem:
            raise ConfigError(f"'route' {route!r} is not a CIP route: {problem}", where=where)
    return EnipConnection(host=host, port=int_in(d, "port", 1, 65534, where, 44818), route=route,
                          upload_tags=get(d, "upload_tags", bool, where, True),
                          upload_timeout_ms=int_in(d, "upload_timeout_ms", 100, 600_000, where, 30_000))


def parse_tag(d: dict[str, Any], where: str, conn: EnipConnection) -> tuple[EnipAddress, str, int]:
    path = get(d, "tag", str, where)
    get(d, "type", str, where)  # required: parse_type(default=None) would not say so
    dtype = parse_type(d, where, allowed=TYPES)
    bit = BIT_SUFFIX.search(path)
    if not _PATH.fullmatch(path[:bit.start()] if bit else path):
        raise ConfigError(f"'tag' {path!r} is not a Logix tag path of one element "
                          "(e.g. Speed, Counts[3], Motor.Speed, Program:Main.Step)", where=where)
    if bit and not conn.upload_tags:
        raise ConfigError(f"'tag' {path!r} addresses a bit of an integer, which needs upload_tags = true", where=where)
    if bit and dtype != "bool":
        raise ConfigError(f"'tag' {path!r} addresses a bit; its type must be bool, not {dtype}", where=where)
    length = 0
    if dtype == "string":
        length = int_in(d, "length", 1, 65_535, where, LOGIX_STRING_LEN)
    elif "length" in d:
        raise ConfigError(f"'length' only applies to string tags, not {dtype}", where=where)
    return EnipAddress(path), dtype, length
