"""``GET /api/v1/live``: the WebSocket of current values (:mod:`gateway_core.live`).

The client's first message is its token, ``{"type": "auth", "token": "<access token or API key>"}``, within
``live.auth_timeout`` (not in the URL: uvicorn logs the query string of every WebSocket it accepts). Then::

    → {"type": "subscribe", "paths": ["acme/berlin", "acme/berlin/stamping/line-1/press-1/temp"]}
    ← {"type": "subscribed", "paths": [...every path now subscribed...]}
    ← {"type": "values", "values": [{"path", "value", "ts", "q", "quality", "unit"?, "reason"?}, ...]}
    → {"type": "subscribe", "devices": ["press-1"]}     (device health; "*" = every device; with or without paths)
    ← {"type": "subscribed", "paths": [...], "devices": [...]}
    ← {"type": "health", "devices": [{<GET /devices/{id}/health's view>}, {"device_id", "removed": true}]}
    → {"type": "unsubscribe", "paths": [...]}          → {"type": "auth", "token": ...} (renew, any time)
    ← {"type": "error", "detail": "...", "field": "..."}  (the request is ignored; the socket stays)

The current values of a new subscription come first; then every change, coalesced per tag and sent at most
every ``live.batch_interval`` (``"dropped": n`` when a client watching ``max_tags`` tags had no room). A removed
tag is ``{"path", "removed": true}``. Credentials are checked again every ``live.recheck_interval`` and at
the access token's expiry (send a new one before it). Close codes: 4401 not authenticated (bad, expired or
revoked credentials), 4403 role below ``live.role``, 4408 no token in time, 1009 message too big, 1013 too
many clients, 1008 a client too slow to take its messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import orjson
from fastapi import WebSocket, WebSocketDisconnect

from gateway_core.auth import Auth, Principal
from gateway_core.errors import ApiError
from gateway_core.health import HealthStore, parse_device_id
from gateway_core.live import LiveHub, Watcher, parse_path
from gateway_core.settings import LiveSettings
from nexus.runtime import sleep_or_stop, wait_first

log = logging.getLogger("gateway_core.live")

MAX_MESSAGE = 65536  #: bytes of one client message
_ids = itertools.count(1)


class _Closed(Exception):
    """The client went away, or we closed the socket."""


class LiveSession:
    def __init__(self, ws: WebSocket, hub: LiveHub, auth: Auth, settings: LiveSettings,
                 health: HealthStore | None = None) -> None:
        self.ws = ws
        self.hub = hub
        self.health = health
        self.devices = Watcher(settings.max_tags)  #: the device health this client watches (ids, or "*")
        self.auth = auth
        self.settings = settings
        self.id = next(_ids)
        self.watcher = Watcher(settings.max_tags)
        self.stop = asyncio.Event()
        self.who: Principal | None = None
        self._token = ""
        self._check_at = 0.0
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        await self.ws.accept()
        if not self.hub.join(self.watcher):
            await self._close(1013, "too many live clients; try again later")
            return
        try:
            if await self._first_auth():
                async with asyncio.TaskGroup() as tg:
                    reader = tg.create_task(self._read_loop(), name=f"core.live[{self.id}].read_loop")
                    tg.create_task(self._send_loop(), name=f"core.live[{self.id}].send_loop")
                    await self.stop.wait()
                    reader.cancel()  # it may wait for a message that never comes; the sender sees stop
        finally:
            self.hub.leave(self.watcher)
            if self.health is not None:
                self.health.unsubscribe(self.devices, list(self.devices.paths))
            log.debug("live client %s left", self.id)

    # -- credentials -------------------------------------------------------------------------------
    async def _first_auth(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.auth_timeout):
                msg = await self._receive()
        except TimeoutError:
            await self._close(4408, "send {\"type\": \"auth\", \"token\": ...} first")
            return False
        except _Closed:
            return False
        if msg is None or msg.get("type") != "auth":
            await self._close(4401, "the first message must be {\"type\": \"auth\", \"token\": ...}")
            return False
        return await self._authenticate(msg.get("token"), announce=True)

    async def _authenticate(self, token: object, *, announce: bool) -> bool:
        if not isinstance(token, str) or not token:
            await self._close(4401, "token: a non-empty string")
            return False
        try:
            who = await self.auth.principal(token)
        except ApiError as exc:
            await self._close(4401, exc.message)
            return False
        if not who.can(self.settings.role):
            await self._close(4403, f"role {who.role!r} of {who.describe()} may not watch live values "
                                    f"(needs {self.settings.role} or above)")
            return False
        self.who, self._token = who, token
        self._check_at = time.time() + self.settings.recheck_interval
        if who.expires is not None:
            self._check_at = min(self._check_at, who.expires)
        if announce:
            await self._send({"type": "ready", "name": who.name, "role": who.role,
                              "kind": "user" if who.user else "key", "expires": who.expires})
            log.info("live client %s: %s", self.id, who.describe())
        return True

    # -- the client's messages ---------------------------------------------------------------------
    async def _receive(self) -> dict[str, Any] | None:
        """The next message as a JSON object; None (after an error reply) for one that is not."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise _Closed
        raw = message.get("text") if message.get("text") is not None else message.get("bytes")
        if raw is None or len(raw) > MAX_MESSAGE:
            await self._close(1009, f"messages are at most {MAX_MESSAGE} bytes")
            raise _Closed
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            await self._error("a message is a JSON object with a 'type'", "type")
            return None
        return msg

    async def _read_loop(self) -> None:
        try:
            while not self.stop.is_set():
                msg = await self._receive()
                if msg is not None:
                    await self._handle(msg)
        except _Closed:
            pass
        finally:
            self.stop.set()

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "auth":
            if not await self._authenticate(msg.get("token"), announce=True):
                raise _Closed
            return
        if kind not in ("subscribe", "unsubscribe"):
            await self._error(f"type: one of auth, subscribe, unsubscribe, not {str(kind)[:32]!r}", "type")
            return
        if "devices" in msg:
            if not await self._devices(kind, msg["devices"]):
                return
            if "paths" not in msg:
                await self._subscribed()
                return
        raw = msg.get("paths")
        if not isinstance(raw, list) or not raw or len(raw) > self.settings.max_subscriptions:
            await self._error(f"paths: a list of 1..{self.settings.max_subscriptions} UNS paths", "paths")
            return
        try:
            paths = [parse_path(p) for p in raw]
        except ValueError as exc:
            await self._error(f"paths: {exc}", "paths")
            return
        w = self.watcher
        if kind == "unsubscribe":
            self.hub.unsubscribe(w, paths)
        else:
            wanted = w.paths | set(paths)
            if len(wanted) > self.settings.max_subscriptions:
                await self._error(f"paths: at most {self.settings.max_subscriptions} subscriptions at once "
                                  f"({len(w.paths)} now)", "paths")
                return
            tags = self.hub.count_under(wanted)
            if tags > self.settings.max_tags:
                await self._error(f"paths: {tags} tags under them, at most {self.settings.max_tags}; "
                                  "subscribe to smaller subtrees", "paths")
                return
            self.hub.subscribe(w, paths)
        await self._subscribed()

    async def _devices(self, kind: str, raw: object) -> bool:
        """A (un)subscription to device health; False (after an error reply) when it is refused."""
        limit = self.settings.max_subscriptions
        if self.health is None:
            await self._error("devices: device health is not available here", "devices")
            return False
        if not isinstance(raw, list) or not raw or len(raw) > limit:
            await self._error(f"devices: a list of 1..{limit} device ids, or ['*'] for every device", "devices")
            return False
        try:
            devices = [parse_device_id(d) for d in raw]
        except ValueError as exc:
            await self._error(f"devices: {exc}", "devices")
            return False
        if kind == "unsubscribe":
            self.health.unsubscribe(self.devices, devices)
        elif len(self.devices.paths | set(devices)) > limit:
            await self._error(f"devices: at most {limit} at once ({len(self.devices.paths)} now)", "devices")
            return False
        else:
            self.health.subscribe(self.devices, devices)
        return True

    async def _subscribed(self) -> None:
        message: dict[str, Any] = {"type": "subscribed", "paths": sorted(self.watcher.paths)}
        if self.devices.paths:
            message["devices"] = sorted(self.devices.paths)
        await self._send(message)

    # -- to the client -----------------------------------------------------------------------------
    async def _send_loop(self) -> None:
        try:
            await self._sends()
        except _Closed:
            pass
        finally:
            self.stop.set()

    async def _sends(self) -> None:
        w, d = self.watcher, self.devices
        while not self.stop.is_set():
            now = time.time()
            if now >= self._check_at:
                if not await self._authenticate(self._token, announce=False):
                    return
                continue
            await wait_first(w.wake.wait(), d.wake.wait(), self.stop.wait(), timeout=self._check_at - now)
            if self.stop.is_set() or not (w.pending or d.pending):
                continue
            if w.pending:
                message: dict[str, Any] = {"type": "values", "values": w.take()}
                if w.dropped:
                    message["dropped"], w.dropped = w.dropped, 0
                await self._send(message)
            if d.pending:
                health: dict[str, Any] = {"type": "health", "devices": d.take()}
                if d.dropped:
                    health["dropped"], d.dropped = d.dropped, 0
                await self._send(health)
            if await sleep_or_stop(self.settings.batch_interval, self.stop):
                return

    async def _error(self, detail: str, field: str) -> None:
        await self._send({"type": "error", "detail": detail, "field": field})

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            async with self._send_lock, asyncio.timeout(self.settings.send_timeout):
                await self.ws.send_text(orjson.dumps(message).decode())
        except TimeoutError:
            log.warning("live client %s too slow: dropped", self.id)
            await self._close(1008, "too slow to take the live values")
            raise _Closed from None
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            self.stop.set()
            raise _Closed from exc

    async def _close(self, code: int, reason: str) -> None:
        self.stop.set()
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.ws.close(code, reason[:120])


async def endpoint(ws: WebSocket) -> None:
    core = ws.app.state.core
    await LiveSession(ws, core.live, core.auth, core.settings.live, core.control.health).run()
