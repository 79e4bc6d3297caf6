"""gateway_core serves the console's build at / (gateway_core/console.py): files, the SPA fallback, the API's
own paths untouched, and a page saying how to build it when there is no build. In process, over ASGI, on a
real database; the files are a small stand-in build in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_core.console import mount
from tests.support.core import Api


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    d = tmp_path / "dist"
    (d / "assets").mkdir(parents=True)
    (d / "index.html").write_text('<!doctype html><div id="app"></div><script src="/assets/main-abc123.js"></script>')
    (d / "assets" / "main-abc123.js").write_text("console.log('hi')")
    (d / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (tmp_path / "secret.txt").write_text("outside the build")
    return d


async def test_files_and_the_page_for_every_console_route(api: Api, dist: Path) -> None:
    mount(api.client._transport.app, dist)  # type: ignore[attr-defined]
    for path in ("/", "/plant", "/devices/press-1", "/trends?tag=a/b/c/d/e/f"):
        r = await api.client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert '<div id="app">' in r.text
        assert r.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in r.headers["content-security-policy"]
    r = await api.client.get("/assets/main-abc123.js")
    assert r.status_code == 200 and r.text == "console.log('hi')"
    assert "immutable" in r.headers["cache-control"]
    assert r.headers["content-type"].startswith("text/javascript")
    r = await api.client.get("/favicon.svg")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    # a missing file is a 404, not the page (a script tag would choke on HTML)
    r = await api.client.get("/assets/main-old999.js")
    assert r.status_code == 404 and "html" not in r.headers["content-type"]
    # nothing outside the build, however the path is spelled
    for path in ("/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt"):
        r = await api.client.get(path)
        assert "outside the build" not in r.text, path
    head = await api.client.head("/plant")
    assert head.status_code == 200


async def test_the_api_and_ops_paths_are_not_shadowed(api: Api, dist: Path) -> None:
    mount(api.client._transport.app, dist)  # type: ignore[attr-defined]
    r = await api.client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found", "field": None}
    r = await api.client.get("/api")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    r = await api.client.get("/api/v1/devices")
    assert r.status_code == 200 and r.json()["items"] == []
    assert (await api.client.get("/healthz")).text == "ok\n"
    assert (await api.client.get("/metrics")).headers["content-type"].startswith("text/plain")
    assert (await api.client.get("/openapi.json")).json()["info"]["title"]
    assert (await api.client.get("/healthz/x")).status_code == 404
    # methods other than GET/HEAD are never the console's
    r = await api.client.post("/plant", json={})
    assert r.status_code == 404 and r.json()["detail"] == "Not Found"
    r = await api.client.post("/api/v1/nothing-here", json={})
    assert r.status_code == 404
    r = await api.client.delete("/api/v1/export")
    assert r.status_code == 405
    # the console adds nothing to the API's description
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    assert all(p.startswith("/api/v1/") or p == "/readyz" for p in paths)


async def test_without_a_build_the_page_says_how_to_build_it(api: Api, tmp_path: Path) -> None:
    mount(api.client._transport.app, tmp_path / "no-build")  # type: ignore[attr-defined]
    for path in ("/", "/plant"):
        r = await api.client.get(path)
        assert r.status_code == 503
        assert "make console" in r.text and "npm ci &amp;&amp; npm run build" in r.text
        assert str(tmp_path / "no-build") in r.text
    assert (await api.client.get("/api/v1/devices")).status_code == 200
    assert (await api.client.get("/readyz")).status_code in (200, 503)
