"""Screenshots of the console's main pages for docs/console/, taken from a running console (``make demo``) in
Debian's chromium:

    .venv/bin/python -m devtools.screenshots --url http://127.0.0.1:18080 \\
        --password "$(cat .nexus/console-admin-password)" [--pages plant,alarms] [--out docs/console]

Each page is loaded, given a few seconds for live values, and saved as <name>.png (plant-tablet.png at a
tablet's width). The browser is the one the browser tests start (tests/support/console.py), so the pictures
are what those tests see.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.support.console import browser_context

PAGES = {
    "plant": "/plant", "devices": "/devices", "gateways": "/gateways", "revisions": "/history",
    "alarms": "/alarms", "users": "/users", "trends": "/trends", "login": "/",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:18080")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", required=True)
    ap.add_argument("--pages", default=",".join([*PAGES, "plant-tablet"]), help="comma-separated")
    ap.add_argument("--out", type=Path, default=Path("docs/console"))
    ap.add_argument("--settle", type=float, default=3.0, help="seconds a page gets before its screenshot")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    wanted = [p for p in args.pages.split(",") if p]
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        context = browser_context(pw, Path(tmp) / "profile")
        page = context.new_page()
        if "login" in wanted:
            page.goto(args.url + "/")
            page.get_by_label("User name").wait_for()
            page.screenshot(path=str(args.out / "login.png"))
        page.goto(args.url + "/")
        page.get_by_label("User name").fill(args.user)
        page.get_by_label("Password").fill(args.password)
        page.get_by_role("button", name="Log in").click()
        page.locator(".top .who").wait_for()
        for name in wanted:
            if name == "login":
                continue
            if name == "plant-tablet":
                page.set_viewport_size({"width": 820, "height": 1180})
                path = "/plant"
            else:
                page.set_viewport_size({"width": 1280, "height": 860})
                path = PAGES[name]
            page.goto(args.url + path)
            page.wait_for_timeout(args.settle * 1000)
            page.screenshot(path=str(args.out / f"{name}.png"))
            print(f"{args.out / name}.png  ({path})", flush=True)
        context.close()


if __name__ == "__main__":
    main()
