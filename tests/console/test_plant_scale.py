"""The Plant page with a plant of 20,052 tags in a real headless browser: 20 devices of 1,000 tags each created
through the API (never polled: this module's stack has its gateway stopped, so they show "no value"), press-1's
2 tags and 50 tags only the live stream knows, published as a batch message and a retained per-tag state message
each by a plain MQTT client, as a gateway does. The tree is virtualised: however many tags, a few dozen rows are
in the DOM; the last tag is reached by scrolling, one deep tag by the filter, the BAD ones by "bad only", a value
published for a tag on screen shows in its row, and the tree opens and closes from the keyboard."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest

from devtools.local import Mosquitto, Postgres, free_port
from proto.points import Point, Status, encode_batch, encode_point
from proto.uns import TagPath, batch_topic
from tests.support.console import PRESS, Stack, log_in, missing_browser, row, start_stack, stop_stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or ""),
]

if missing_browser() is None:
    from playwright.sync_api import Page, expect

AREAS, LINES, TAGS = 4, 5, 1_000  #: 20 devices of 1,000 tags: acme/scale/area-A/line-L/dev-A-L/tag-1..1000
#: tags no device configures, only published (under an area of configured devices: the page watches the
#: subtrees its devices are in): acme/scale/area-1/line-1/streamer/v-1..50
LIVE_ONLY = 50
TOTAL = AREAS * LINES * TAGS + 2 + LIVE_ONLY  #: and press-1's temp and setpoint
LAST = f"acme/scale/area-{AREAS}/line-{LINES}/dev-{AREAS}-{LINES}/tag-{TAGS}"  #: the last row, all open
BRANCHES = 1 + 2 + 5 + 21 + 22  #: acme; berlin, scale; stamping, area-1..4; 21 lines; 22 devices (streamer)
ROW = 34  #: px of a row, as console/src/pages/Plant.tsx lays them out
#: BAD values published in test_bad_only (one per device of area 2, and two live-only tags)
BAD = [f"acme/scale/area-2/line-{line}/dev-2-{line}/tag-{100 * line}" for line in range(1, LINES + 1)] + [
    "acme/scale/area-1/line-1/streamer/v-7", "acme/scale/area-1/line-1/streamer/v-49"]


class Publisher:
    """A reading as a gateway sends it: a batch message on the stack's topic root (the live stream's changes) and
    the retained per-tag state message on its UNS prefix (first values), stamped now."""

    def __init__(self, port: int, prefix: str) -> None:
        self.prefix = prefix
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, path: str, value: Any, status: int = Status.GOOD, reason: str | None = None) -> None:
        tp = TagPath.parse(path)
        p = Point(tp.tag, value, time.time_ns() // 1_000_000, status, reason=reason)
        self.client.publish(batch_topic(tp.device, self.prefix), encode_batch([p]), qos=1).wait_for_publish(5)
        self.client.publish(tp.topic(self.prefix), encode_point(p), qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def scale_device(area: int, line: int) -> dict[str, Any]:
    return {"id": f"dev-{area}-{line}", "enterprise": "acme", "site": "scale", "area": f"area-{area}",
            "line": f"line-{line}", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": free_port(),
            "interval_ms": 60_000,
            "tags": [{"name": f"tag-{i}", "table": "holding", "address": i - 1, "type": "int16", "unit": "bar"}
                     for i in range(1, TAGS + 1)]}


@pytest.fixture(scope="module")
def publisher(stack: Stack, broker: Mosquitto) -> Iterator[Publisher]:
    p = Publisher(broker.port, stack.prefix)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres, broker: Mosquitto) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("plant-scale"), postgres, broker)
    try:
        # no gateway polls the 20,000 tags (an unreachable device's tags would all turn BAD, and more than the
        # live stream lets one client watch): they stay "no value", and only what this module publishes is live
        gateway = next(d for d in s.daemons if d.module == "gateway")
        assert gateway.stop() == 0, gateway.output()
        for area in range(1, AREAS + 1):
            for line in range(1, LINES + 1):
                r = s.api.post("/api/v1/devices", json=scale_device(area, line))
                assert r.status_code == 201, r.text
        pub = Publisher(broker.port, s.prefix)
        try:
            # press-1 as the gateway left it could be anything: good values, so the bad count starts at 0
            pub.publish(f"{PRESS}/temp", 21.5)
            pub.publish(f"{PRESS}/setpoint", 0)
            for i in range(1, LIVE_ONLY + 1):
                pub.publish(f"acme/scale/area-1/line-1/streamer/v-{i}", i)
        finally:
            pub.close()
        yield s
    finally:
        stop_stack(s)


def summary(shown: int, bad: int = 0) -> str:
    return f"{shown} of {TOTAL} tags shown · {bad} bad"


def open_plant(page: Page, stack: Stack) -> None:
    log_in(page, stack, path="/plant")
    expect(page.locator(".summary")).to_have_text(summary(TOTAL), timeout=30_000)


def tree_rows(page: Page) -> int:
    return int(page.locator(".plant-tree table").get_attribute("data-rows") or -1)


def test_the_tree_counts_every_tag_and_keeps_the_dom_small(page: Page, stack: Stack) -> None:
    open_plant(page, stack)
    # a big plant opens down to its devices, closed: 1 enterprise, 2 sites, 5 areas, 21 lines, 22 devices
    assert tree_rows(page) == BRANCHES
    assert 0 < page.locator("details.device").count() <= 22
    expect(page.locator("tr.tag")).to_have_count(0)
    expect(page.locator(f'details.device[data-path="{PRESS}"] .count')).to_have_text("2 tags")
    first = page.locator('details.device[data-path="acme/scale/area-1/line-1/dev-1-1"]')
    expect(first.locator(".count")).to_have_text("1000 tags")
    # everything open: 20,103 rows, of which only the viewport's (and a few either side) are in the DOM
    page.get_by_role("button", name="Expand all").click()
    expect(page.locator(".plant-tree table")).to_have_attribute("data-rows", str(BRANCHES + TOTAL))
    rendered = page.locator("tr.tag").count()
    assert 0 < rendered < 300, rendered
    # every row exactly as high as the page counts it
    heights = page.locator(".plant-tree tr:not(.spacer)").evaluate_all("rows => rows.map((r) => r.offsetHeight)")
    assert set(heights) == {ROW}, heights
    box = page.locator(".plant-tree")
    # the spacers make the scrollbar that of every row: the header and 20,103 rows of 34 px
    assert box.evaluate("e => e.scrollHeight") == ROW * (1 + BRANCHES + TOTAL)
    # scrolled to the end: the last tag is there, exactly, and the DOM is as small as at the top
    box.evaluate("e => { e.scrollTop = e.scrollHeight }")
    expect(row(page, LAST)).to_be_visible()
    expect(row(page, LAST).locator("th")).to_have_text(f"tag-{TAGS}")
    assert page.locator("tr.tag").count() < 300
    expect(row(page, f"{PRESS}/temp")).to_have_count(0)  # the top is gone from the DOM
    box.evaluate("e => { e.scrollTop = 0 }")
    expect(row(page, f"{PRESS}/temp").locator("td.value")).to_have_text("21.5")
    expect(row(page, LAST)).to_have_count(0)


def test_the_filter_finds_one_deep_tag(page: Page, stack: Stack) -> None:
    open_plant(page, stack)
    page.get_by_label("Filter").fill("dev-3-2 tag-777")
    expect(page.locator(".summary")).to_have_text(summary(1))
    # shown open down to it: enterprise, site, area, line, device, and the tag
    expect(page.locator("tr.tag")).to_have_count(1)
    target = row(page, "acme/scale/area-3/line-2/dev-3-2/tag-777")
    expect(target).to_be_visible()
    expect(target.locator("td.unit")).to_have_text("bar")
    expect(target.locator(".q")).to_have_attribute("data-quality", "none")
    assert tree_rows(page) == 6
    # a tag only the live stream knows, found the same way
    page.get_by_label("Filter").fill("streamer/v-50")
    expect(page.locator(".summary")).to_have_text(summary(1))
    expect(row(page, "acme/scale/area-1/line-1/streamer/v-50").locator("td.value")).to_have_text("50")
    page.get_by_label("Filter").fill("")
    expect(page.locator(".summary")).to_have_text(summary(TOTAL))
    expect(page.locator("tr.tag")).to_have_count(0)  # closed again as the plant opened


def test_bad_only_shows_exactly_the_bad_tags(page: Page, stack: Stack, publisher: Publisher) -> None:
    open_plant(page, stack)
    for path in BAD:
        publisher.publish(path, None, Status.BAD_TIMEOUT, reason="timeout")
    expect(page.locator(".summary")).to_have_text(summary(TOTAL, len(BAD)))
    device = page.locator('details.device[data-path="acme/scale/area-2/line-3/dev-2-3"]')
    expect(device.locator(".bad-count")).to_have_text("· 1 bad")
    page.get_by_label("Bad only").check()
    expect(page.locator(".summary")).to_have_text(summary(len(BAD), len(BAD)))
    expect(page.locator("tr.tag")).to_have_count(len(BAD))
    assert sorted(page.locator("tr.tag").evaluate_all("rows => rows.map((r) => r.dataset.path)")) == sorted(BAD)
    expect(page.locator("tr.tag-bad")).to_have_count(len(BAD))
    title = row(page, BAD[0]).locator(".q").get_attribute("title") or ""
    assert title == "bad: timeout (status 0x800A0000)", title
    # one comes back good: out of "bad only", live
    publisher.publish(BAD[0], 5)
    expect(page.locator(".summary")).to_have_text(summary(len(BAD) - 1, len(BAD) - 1))
    expect(row(page, BAD[0])).to_have_count(0)
    page.get_by_label("Bad only").uncheck()
    for path in BAD[1:]:
        publisher.publish(path, 1)
    expect(page.locator(".summary")).to_have_text(summary(TOTAL, 0))


def test_a_value_published_for_a_tag_on_screen_shows_live(page: Page, stack: Stack, publisher: Publisher) -> None:
    open_plant(page, stack)
    device = page.locator('details.device[data-path="acme/scale/area-1/line-4/dev-1-4"]')
    device.locator("summary").click()
    expect(device).to_have_attribute("open", "")
    tag = row(page, "acme/scale/area-1/line-4/dev-1-4/tag-5")
    expect(tag.locator(".q")).to_have_attribute("data-quality", "none")
    expect(tag.locator("td.value")).to_have_text("—")
    publisher.publish("acme/scale/area-1/line-4/dev-1-4/tag-5", 12.25)
    expect(tag.locator("td.value")).to_have_text("12.25")
    expect(tag.locator(".q")).to_have_attribute("data-quality", "good")
    expect(tag.locator("td.unit")).to_have_text("bar")  # the configured unit, under a value without one
    publisher.publish("acme/scale/area-1/line-4/dev-1-4/tag-5", 13)
    expect(tag.locator("td.value")).to_have_text("13")
    # the device row keeps its links
    expect(device.locator("xpath=..").get_by_role("link", name="device page")).to_have_attribute(
        "href", "/devices/dev-1-4")


def test_the_tree_from_the_keyboard(page: Page, stack: Stack) -> None:
    open_plant(page, stack)
    page.get_by_role("button", name="Collapse all").click()
    assert tree_rows(page) == 1
    acme = page.locator('details[data-path="acme"] summary')
    acme.focus()
    page.keyboard.press("ArrowRight")  # opens
    expect(page.locator('tr[aria-level="1"]')).to_have_attribute("aria-expanded", "true")
    assert tree_rows(page) == 3
    page.keyboard.press("ArrowRight")  # open already: to its first child
    expect(page.locator('details[data-path="acme/berlin"] summary')).to_be_focused()
    page.keyboard.press("ArrowDown")
    scale = page.locator('details[data-path="acme/scale"] summary')
    expect(scale).to_be_focused()
    page.keyboard.press("Enter")  # the <summary>'s own key: opens it
    expect(page.locator('details[data-path="acme/scale"]')).to_have_attribute("open", "")
    assert tree_rows(page) == 3 + 4
    page.keyboard.press("End")
    area4 = page.locator('details[data-path="acme/scale/area-4"] summary')
    expect(area4).to_be_focused()
    page.keyboard.press(" ")  # Space too
    expect(page.locator('details[data-path="acme/scale/area-4"]')).to_have_attribute("open", "")
    page.keyboard.press("End")
    page.keyboard.press("ArrowRight")  # line-5
    page.keyboard.press("ArrowDown")  # its device, dev-4-5
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")  # its first tag
    expect(row(page, "acme/scale/area-4/line-5/dev-4-5/tag-1").locator("th")).to_be_focused()
    page.keyboard.press("End")  # the last of its 1,000 tags, scrolled to
    last = row(page, LAST)
    expect(last.locator("th")).to_be_focused()
    expect(last).to_be_in_viewport()
    page.keyboard.press("ArrowLeft")  # from a tag to its device
    device = page.locator('details.device[data-path="acme/scale/area-4/line-5/dev-4-5"]')
    expect(device.locator("summary")).to_be_focused()
    expect(device.locator("xpath=ancestor::tr")).to_have_attribute("aria-level", "5")
    page.keyboard.press("ArrowLeft")  # closes it
    expect(device).not_to_have_attribute("open", "")
    expect(last).to_have_count(0)
    expect(page.locator("tr.tag")).to_have_count(0)
