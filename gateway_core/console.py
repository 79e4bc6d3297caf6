"""The web console's built files, served at ``/`` on the API's origin (``console/``, README "The console").

``make console`` builds the front end into ``console/dist`` (Vite: ``index.html`` and hashed files under
``assets/``). This module answers every GET that no API route took: a file of the build when the path names
one, else ``index.html`` (the console routes in the browser, so ``/devices/press-1`` reloads into the right
page). It never shadows the service's own paths: it is the router's *default* (reached only when no route
matched, so ``/api``, ``/healthz``, ``/readyz``, ``/metrics`` and ``/docs`` keep their answers, their 404s
and 405s), and paths under the API's reserved prefixes are handed back to the router's own 404.

Without a build (a Python install without Node.js runs every daemon) ``/`` answers a page saying how to
build the console. Nothing here is read at import time: a build made while the service runs is served
from the next request on.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

#: where ``make console`` (``npm run build`` in ``console/``) writes the build, beside the packages
DIST = Path(__file__).resolve().parent.parent / "console" / "dist"

#: paths the console never answers, even when no route matched them (their 404 stays the API's JSON)
RESERVED = ("/api", "/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json")

#: the console's pages load only what the service serves (no CDN, no inline script); WebSockets to the same
#: origin are 'self'
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
#: Vite names the files under assets/ by their content hash: they never change under the same name
_IMMUTABLE = "public, max-age=31536000, immutable"

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>NEXUS Edge console: not built</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 44rem; margin: 3rem auto; line-height: 1.5">
<h1>The console is not built</h1>
<p>gateway_core serves the web console from <code>{dist}</code>, which has no <code>index.html</code>.
Build it (Node.js 20 or newer and npm; <code>make console</code> installs them with apt when missing):</p>
<pre>make console
# or: cd console &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>then reload this page. The REST API works without it: <a href="/docs">/docs</a>.</p>
</body></html>
"""


def reserved(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in RESERVED)


class Console:
    """An ASGI app answering GET/HEAD from the build in ``dist``; everything else goes to ``fallback``."""

    def __init__(self, dist: Path, fallback: ASGIApp) -> None:
        self.dist = dist.resolve()
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or reserved(scope["path"]):
            await self.fallback(scope, receive, send)
            return
        await self.response(scope["path"])(scope, receive, send)

    def response(self, path: str) -> Response:
        index = self.dist / "index.html"
        if not index.is_file():
            return HTMLResponse(NOT_BUILT.format(dist=html.escape(str(self.dist))), status_code=503,
                                headers={"Cache-Control": "no-store", "Retry-After": "60"})
        relative = path.lstrip("/")
        if relative and "\x00" not in relative:
            target = (self.dist / relative).resolve()
            if target.is_relative_to(self.dist) and target.is_file():
                immutable = target.parent == self.dist / "assets"
                return FileResponse(target, headers={
                    "Cache-Control": _IMMUTABLE if immutable else "no-cache", "X-Content-Type-Options": "nosniff"})
            if "." in relative.rsplit("/", 1)[-1]:
                # a missing file (an asset of an older build, a typo): not the page, whose HTML a script
                # tag or stylesheet link would choke on
                return PlainTextResponse("not found\n", status_code=404)
        # the console's own routes (/plant, /devices/press-1, ...): the page, which routes in the browser
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache", **_PAGE_HEADERS})


def mount(app: FastAPI, dist: Path = DIST) -> None:
    """Serve the console from ``dist`` for every GET that no route of ``app`` answers."""
    app.router.default = Console(dist, app.router.not_found)
