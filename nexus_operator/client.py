"""gateway_core's REST API as the operator uses it: one device, its gateway; errors sorted by what to do.

4xx answers are :class:`~nexus_operator.errors.CoreRefused` carrying gateway_core's own ``detail`` and
``field``; 5xx answers, timeouts and connection errors are :class:`~nexus_operator.errors.TemporaryError`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from nexus_operator.errors import CoreRefused, TemporaryError

API = "/api/v1"


@dataclass(frozen=True, slots=True)
class Remote:
    """A device as gateway_core has it."""

    id: str
    revision: int  #: revision of its last change (its ETag)
    owner: str | None  #: the owner mark (X-Nexus-Owner), None for devices made through the API
    gateway: str | None  #: the gateway assigned to poll it, None: none
    device: dict[str, Any]  #: the stored document


class CoreClient:
    """One aiohttp session to gateway_core (opened on first use, in the running loop)."""

    def __init__(self, url: str, api_key: str | None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self.reachable = False  #: the last request got an answer below 500 (the ops /readyz check)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, str | None]:
        """(status, decoded JSON body or None, ETag); raises for 5xx and transport errors."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        data = orjson.dumps(body) if body is not None else None
        hdrs = {**(headers or {}), **({"Content-Type": "application/json"} if data is not None else {})}
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.request(method, f"{self.url}{API}{path}", data=data, headers=hdrs) as r:
                    raw = await r.read()
                    status, etag = r.status, r.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.reachable = False
            raise TemporaryError(f"gateway_core unreachable: {type(exc).__name__}: {str(exc)[:200]}") from exc
        try:
            decoded = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            decoded = {"detail": raw[:200].decode("utf-8", "replace")}
        self.reachable = status < 500
        if status >= 500:
            raise TemporaryError(f"gateway_core answered {status}: {_detail(decoded)}", status=status)
        return status, decoded, etag

    def _refused(self, status: int, body: Any) -> CoreRefused:
        field = body.get("field") if isinstance(body, dict) else None
        return CoreRefused(status, _detail(body), field=field if isinstance(field, str) else None)

    async def check(self) -> None:
        """One read with the key (at start): a wrong key or URL shows before the first resource does."""
        status, body, _ = await self._request("GET", "/devices?limit=1")
        if status != 200:
            raise self._refused(status, body)

    async def get_device(self, device_id: str) -> Remote | None:
        status, body, _ = await self._request("GET", f"/devices/{_seg(device_id)}")
        if status == 404:
            return None
        if status != 200:
            raise self._refused(status, body)
        return _remote(body)

    async def create_device(self, doc: dict[str, Any], *, owner: str) -> Remote:
        status, body, _ = await self._request("POST", "/devices", body=doc, headers={"X-Nexus-Owner": owner})
        if status != 201:
            raise self._refused(status, body)
        return _remote(body)

    async def put_device(
        self, device_id: str, doc: dict[str, Any], *, if_match: int, owner: str | None = None
    ) -> Remote:
        headers = {"If-Match": f'"{if_match}"', **({"X-Nexus-Owner": owner} if owner is not None else {})}
        status, body, _ = await self._request("PUT", f"/devices/{_seg(device_id)}", body=doc, headers=headers)
        if status != 200:
            raise self._refused(status, body)
        return _remote(body)

    async def delete_device(self, device_id: str, *, if_match: int) -> bool:
        """True when deleted, False when it was gone already; 412 (changed meanwhile) raises CoreRefused."""
        status, body, _ = await self._request(
            "DELETE", f"/devices/{_seg(device_id)}", headers={"If-Match": f'"{if_match}"'}
        )
        if status == 204:
            return True
        if status == 404 and isinstance(body, dict) and body.get("field") == "device_id":
            return False
        raise self._refused(status, body)

    async def gateway(self, gateway_id: str) -> dict[str, Any] | None:
        status, body, _ = await self._request("GET", f"/gateways/{_seg(gateway_id)}")
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise self._refused(status, body)
        return body


def _seg(level: str) -> str:
    """One path segment: a UNS level may hold '?', '%' or spaces, which a URL must not take as they are."""
    return quote(level, safe="")


def _detail(body: Any) -> str:
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail)[:500] if detail is not None else "(no detail)"


def _remote(body: Any) -> Remote:
    return Remote(id=body["id"], revision=int(body["revision"]), owner=body.get("owner"),
                  gateway=body.get("gateway"), device=body["device"])
