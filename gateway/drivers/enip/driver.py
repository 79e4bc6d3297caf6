"""EtherNet/IP (CIP) driver for Logix controllers: symbolic tag reads and writes through pycomm3.

One tag is one element: ``Speed``, ``Counts[3]``, ``Motor.Speed``, ``Program:Main.Step`` (and, with
``upload_tags``, a bit of an integer: ``Status.3``). Every poll reads all tags with one
``LogixDriver.read(*paths)`` call, which packs them into Multiple Service Packet requests.

pycomm3 is blocking. Its calls run in a worker thread (``asyncio.to_thread``), one at a time per
driver under a ``threading.Lock`` (an asyncio lock would be released when ``asyncio.timeout`` gives
up on a call whose thread is still talking to the socket), and every await is bounded by
``asyncio.timeout`` so the event loop never waits on the network.

pycomm3 decodes a reply with the type it believes the tag has; it learns types by uploading the
controller's tag list at connect. Connection key ``upload_tags``:

- ``true`` (default, real controllers): the tag list is uploaded, and each tag's configured type is
  checked against the controller's; a tag that is missing or of another type is BAD (configuration
  error) instead of being decoded wrongly. Logix STRING, BOOL arrays and bit addresses need this.
- ``false`` (controllers or simulators that cannot upload, e.g. cpppo): the driver tells pycomm3
  each tag's type from the config. The configured type is trusted (the reply's type code is not
  checked), and ``string`` means the CIP STRING (0xD0: UINT length + bytes).
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pycomm3 import LogixDriver
from pycomm3.cip import DataTypes
from pycomm3.exceptions import CommError, PycommError, RequestError
from pycomm3.packets.logix import WriteTagRequestPacket
from pycomm3.tag import Tag

from gateway.config import DeviceConfig, TagConfig
from gateway.drivers import base
from gateway.drivers.enip.config import BIT_SUFFIX, CIP_TYPES, EnipConnection
from gateway.errors import PermanentError, TemporaryError
from gateway.values import canonical_type, check_write, round_float32
from proto.points import Point, Status

log = logging.getLogger("gateway.drivers.enip")
T = TypeVar("T")

# --- type knowledge for pycomm3 --------------------------------------------------------------------

def _split(path: str) -> list[str]:
    """Member names along ``path`` without indices; ``Program:X.Y`` is one name, as pycomm3 sees it."""
    parts = path.split(".")
    if parts[0].startswith("Program:"):
        parts[0:2] = [f"{parts[0]}.{parts[1]}"]
    return [re.sub(r"\[.*\]$", "", p) for p in parts]


def _elementary(name: str, cip: str) -> dict[str, Any]:
    """pycomm3's definition of an elementary (atomic) tag or member."""
    return {"tag_name": name, "tag_type": "atomic", "data_type": cip, "data_type_name": cip,
            "type_class": DataTypes.get(cip),  # type: ignore[no-untyped-call]  # pycomm3 leaves it unannotated
            "dim": 0, "dimensions": [0, 0, 0], "alias": False, "instance_id": None}


def _container(name: str) -> dict[str, Any]:
    """A structure known only by the members the config reads (no layout: members are read one by one)."""
    return {"tag_name": name, "tag_type": "struct", "data_type_name": "(declared)", "dim": 0,
            "data_type": {"name": "(declared)", "internal_tags": {}}}


def declare(tags: tuple[TagConfig, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """pycomm3 tag definitions built from the configured types (``upload_tags = false``), and the
    tags that contradict another tag (e.g. ``A`` a DINT and ``A.B`` a member): name -> why."""
    defs: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for t in tags:
        *parents, leaf = _split(t.address.path)
        level, ok = defs, True
        for name in parents:
            node = level.setdefault(name, _container(name))
            if node["tag_type"] != "struct":
                ok = False
                break
            level = node["data_type"]["internal_tags"]
        cip = CIP_TYPES[t.type]
        known = level.get(leaf) if ok else None
        if not ok or (known is not None and known["data_type_name"] != cip):
            problems[t.name] = f"{t.address.path!r} as {cip} contradicts another tag of this device"
        elif known is None:
            level[leaf] = _elementary(leaf, cip)
    return defs, problems


def uploaded_problem(plc: LogixDriver, tag: TagConfig) -> str | None:
    """Why ``tag`` cannot be read as configured, per the uploaded tag list; None when it can."""
    path = BIT_SUFFIX.sub("", tag.address.path)
    try:
        info = plc.get_tag_info(path)
    except RequestError:
        info = None
    if info is None:
        return f"{path!r} is not in the controller's tag list"
    if info["tag_type"] == "struct":
        if info["data_type"].get("string"):
            actual = "string"
        else:
            return f"{path!r} is a {info['data_type_name']} structure; configure its members instead"
    elif info["data_type_name"] == "DWORD":  # pycomm3 maps BOOL arrays onto DWORDs
        actual = "bool"
    else:
        actual = canonical_type(info["data_type_name"]) or info["data_type_name"]
    if BIT_SUFFIX.search(tag.address.path):
        return None if actual.startswith(("int", "uint")) else f"{path!r} is {actual}; bits are of integers"
    if actual != tag.type:
        return f"{path!r} is {info['data_type_name']} ({actual}) in the controller, configured as {tag.type}"
    return None


class _Logix(LogixDriver):
    """LogixDriver with one fix: pycomm3 1.2.16 composes a single-tag write's message twice (it
    builds it to measure, resets ``_msg_setup`` and builds again, appending), so the device gets the
    Write Tag service twice in one request; cpppo refuses that. A fresh message list fixes it."""

    def _write_build_single_request(self, parsed_tag: dict[str, Any]) -> Any:
        request = super()._write_build_single_request(parsed_tag)  # type: ignore[no-untyped-call]  # unannotated
        if type(request) is WriteTagRequestPacket:
            request._msg = []  # noqa: SLF001 - pycomm3 has no public way to reset the message list
        return request


class Driver(base.Driver):
    """One CIP connection (session + Forward Open) to one Logix controller."""

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.conn: EnipConnection = device.conn
        self._lock = threading.Lock()  # one pycomm3 call at a time, even one abandoned by a timeout
        self._plc: _Logix | None = None  # owned by the worker thread under _lock
        self._ok = False  # the connection is usable (false after any failure until connect succeeds)
        self._problems: dict[str, str] = {}  # tag name -> why it is not read (BAD, configuration error)
        self.requests = 0

    @property
    def connected(self) -> bool:
        return self._ok

    def health(self) -> dict[str, Any]:
        return {"connected": self._ok, "path": self.conn.path, "upload_tags": self.conn.upload_tags,
                "unreadable_tags": len(self._problems)}

    async def _call(self, fn: Callable[[], T], timeout_ms: int) -> T:
        """``fn()`` in a worker thread under the driver's lock, bounded by ``timeout_ms``."""
        def locked() -> T:
            with self._lock:
                return fn()

        async with asyncio.timeout(timeout_ms / 1000):
            return await asyncio.to_thread(locked)

    # --- connect / close --------------------------------------------------------------------------

    async def connect(self) -> None:
        self._ok = False
        c = self.conn
        timeout_ms = c.upload_timeout_ms if c.upload_tags else self.device.timeout_ms
        try:
            await self._call(self._open, timeout_ms)
        except TimeoutError as exc:
            raise TemporaryError(f"connect to {c.path} timed out after {timeout_ms} ms",
                                 device_id=self.device.id) from exc
        except (PycommError, OSError) as exc:
            raise TemporaryError(f"connect to {c.path} failed: {_why(exc)}", device_id=self.device.id) from exc
        self._ok = True

    def _open(self) -> None:
        """Worker thread: a new session (the previous one is closed first), then the tag types."""
        self._close_plc()
        c = self.conn
        program = any(t.address.path.startswith("Program:") for t in self.device.tags)
        plc = _Logix(c.path, init_tags=c.upload_tags, init_program_tags=program)
        plc.socket_timeout = self.device.timeout_ms / 1000
        self._plc = plc  # before open(): a failed or abandoned open is closed by the next call
        if not plc.open():  # type: ignore[no-untyped-call]  # pycomm3 leaves it unannotated
            raise CommError("the device did not register an EtherNet/IP session")
        if c.upload_tags:
            problems = {t.name: p for t in self.device.tags if (p := uploaded_problem(plc, t))}
        else:
            # pycomm3 has no public way to declare tags instead of uploading them: set its tag table.
            plc._tags, problems = declare(self.device.tags)  # noqa: SLF001
            plc._cfg["use_instance_ids"] = False  # noqa: SLF001 - no Symbol Object instance ids without the upload
        for name, why in problems.items():
            log.warning("tag %s not read: %s", name, why, extra={"device": self.device.id, "tag": name})
        self._problems = problems

    def _close_plc(self) -> None:
        plc, self._plc = self._plc, None
        if plc is not None:
            try:
                plc.close()  # type: ignore[no-untyped-call]  # pycomm3 leaves it unannotated
            except PycommError as exc:  # the peer is often gone already
                log.debug("closing the CIP session: %s", exc, extra={"device": self.device.id})

    async def close(self) -> None:
        self._ok = False
        try:
            await self._call(self._close_plc, self.device.timeout_ms)
        except (TimeoutError, PycommError, OSError, RuntimeError) as exc:  # close never raises; a stuck
            # call still ends with its socket timeout, and the next connect closes what it leaves
            log.debug("close: %r", exc, extra={"device": self.device.id})

    # --- read / write ---------------------------------------------------------------------------

    async def read(self) -> list[Point]:
        """Every tag once; refused tags are BAD points, a lost connection raises TemporaryError."""
        if not self._ok:
            raise TemporaryError("not connected", device_id=self.device.id)
        readable = [t for t in self.device.tags if t.name not in self._problems]
        results = await self._io("read", lambda: self._read_tags(readable))
        ts = int(time.time() * 1000)
        by_name = dict(zip((t.name for t in readable), results, strict=True))
        return [self._point(t, by_name.get(t.name), ts) for t in self.device.tags]

    def _read_tags(self, tags: list[TagConfig]) -> list[Tag]:
        if self._plc is None:
            raise CommError("not connected")
        if not tags:
            return []
        result = self._plc.read(*(t.address.path for t in tags))
        self.requests += 1
        return result if isinstance(result, list) else [result]

    def _point(self, tag: TagConfig, result: Tag | None, ts: int) -> Point:
        if result is None:
            return Point(tag.name, None, ts, Status.BAD_CONFIGURATION_ERROR, tag.unit, self._problems[tag.name])
        if result.error:
            return Point(tag.name, None, ts, Status.BAD_CONFIGURATION_ERROR, tag.unit, result.error)
        value = result.value
        if tag.type == "bool":
            value = bool(value)
        elif tag.type == "float32" and isinstance(value, float):
            value = round_float32(value)  # 0.1, not 0.10000000149011612, as the other drivers give
        return Point(tag.name, value, ts, Status.GOOD, tag.unit)

    async def write(self, tag: TagConfig, value: Any) -> None:
        value = check_write(tag.type, value, length=tag.length)
        if tag.name in self._problems:
            raise PermanentError(f"tag {tag.name!r}: {self._problems[tag.name]}", device_id=self.device.id)
        if not self._ok:
            raise TemporaryError("not connected", device_id=self.device.id)
        path = tag.address.path
        result = await self._io("write", lambda: self._write_one(path, value))
        if result.error:
            raise PermanentError(f"write of {path!r} refused: {result.error}", device_id=self.device.id)

    def _write_one(self, path: str, value: Any) -> Tag:
        if self._plc is None:
            raise CommError("not connected")
        # pycomm3's untyped decorator hides write()'s annotated result type
        result: Tag | list[Tag] = self._plc.write((path, value))
        self.requests += 1
        return result[0] if isinstance(result, list) else result

    async def _io(self, what: str, fn: Callable[[], T]) -> T:
        """A request on the open connection; a timeout or a connection error drops the connection."""
        ms = self.device.timeout_ms
        try:
            return await self._call(fn, ms)
        except TimeoutError as exc:
            self._ok = False
            raise TemporaryError(f"{what} timed out after {ms} ms", device_id=self.device.id) from exc
        except (PycommError, OSError) as exc:
            self._ok = False
            raise TemporaryError(f"{what} failed: {_why(exc)}", device_id=self.device.id) from exc


def _why(exc: BaseException) -> str:
    """pycomm3 wraps socket errors ("failed to receive reply" from struct.error on EOF): name both."""
    cause = exc.__cause__
    if isinstance(cause, struct.error):  # recv() gave b"": the peer closed the connection
        return f"{exc}: connection closed by the device"
    if cause is not None and str(cause) and str(cause) not in str(exc):
        return f"{exc}: {cause}"
    return str(exc) or type(exc).__name__
