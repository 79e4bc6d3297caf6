"""The console in a real headless browser (Debian's chromium, driven by Playwright) against the real stack:
gateway_core as a process serving the built console on a fresh PostgreSQL database, mosquitto, a gateway in
core mode polling a simulated Modbus PLC (press-1). Log in and out, a value changing live in the plant tree, a
device the gateway cannot reach shown BAD with its reason and kept by "bad only", a 422 shown on the field it
names, a stale If-Match, a write answered by the gateway, a viewer kept out of the editor."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from devtools.local import Mosquitto, Postgres, free_port
from tests.support.console import (
    ACCESS_TTL,
    ADMIN_PASSWORD,
    PLACE,
    PRESS,
    Stack,
    log_in,
    missing_browser,
    row,
    start_stack,
    stop_stack,
)
from tests.support.wait import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or ""),
]

if missing_browser() is None:
    from playwright.sync_api import Page, expect

OPERATOR_PASSWORD = "operator-password-1"
VIEWER_PASSWORD = "viewer-password-12"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres, broker: Mosquitto) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("console"), postgres, broker)
    try:
        s.user("olga", "operator", OPERATOR_PASSWORD)
        s.user("vic", "viewer", VIEWER_PASSWORD)
        yield s
    finally:
        stop_stack(s)


def test_login_refresh_and_logout(page: Page, stack: Stack) -> None:
    page.goto(stack.url + "/plant")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("not-the-password")
    page.keyboard.press("Enter")  # the form works from the keyboard
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Plant")).to_be_visible()
    expect(page.locator(".top .who")).to_contain_text("admin · admin")
    # the access token is in memory only: a reload logs in again from the HTTP-only refresh cookie
    assert all(c["httpOnly"] for c in page.context.cookies() if c["name"] == "nexus_refresh")
    assert page.evaluate("document.cookie") == ""
    page.reload()
    expect(page.get_by_role("heading", name="Plant")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    # the API's own paths stay the API's
    assert page.goto(stack.url + "/api/v1/nothing").status == 404
    assert page.goto(stack.url + "/healthz").text() == "ok\n"  # type: ignore[union-attr]


def test_the_plant_shows_a_value_changing_live(page: Page, stack: Stack) -> None:
    log_in(page, stack)
    temp = row(page, f"{PRESS}/temp")
    expect(temp.locator("td.value")).to_have_text("21.5", timeout=30_000)
    expect(temp.locator("td.unit")).to_have_text("degC")
    expect(temp.locator(".q")).to_have_attribute("data-quality", "good")
    stack.plc.constants["temp"] = 232
    expect(temp.locator("td.value")).to_have_text("23.2", timeout=15_000)
    expect(temp.locator("td.age")).to_have_text(re.compile(r"^\d+ s$"))
    # the filter narrows the tree to what matches
    page.get_by_label("Filter").fill("setpoint")
    expect(temp).to_have_count(0)
    expect(row(page, f"{PRESS}/setpoint")).to_have_count(1)


def test_a_device_the_gateway_cannot_reach_is_bad_with_its_reason(page: Page, stack: Stack) -> None:
    oven = {"id": "oven-1", **PLACE, "protocol": "modbus_tcp", "host": "127.0.0.1", "port": free_port(),
            "interval_ms": 200, "timeout_ms": 300,
            "tags": [{"name": "zone_temp", "table": "holding", "address": 0, "type": "int16", "unit": "degC"}]}
    assert stack.api.post("/api/v1/devices", json=oven).status_code == 201
    try:
        log_in(page, stack)
        bad = row(page, "acme/berlin/stamping/line-1/oven-1/zone_temp")
        badge = bad.locator(".q")
        expect(badge).to_have_attribute("data-quality", "bad", timeout=30_000)
        title = badge.get_attribute("title") or ""
        assert title.startswith("bad: ") and "status 0x8" in title, title  # the gateway's reason on hover
        expect(row(page, f"{PRESS}/temp").locator(".q")).to_have_attribute("data-quality", "good", timeout=30_000)
        page.get_by_label("Bad only").check()
        expect(row(page, f"{PRESS}/temp")).to_have_count(0)
        expect(bad).to_have_count(1)
        expect(page.locator(".summary")).to_contain_text("1 of ")
        page.get_by_label("Bad only").uncheck()
        expect(row(page, f"{PRESS}/temp")).to_have_count(1)
        # the devices' health, live from the gateway's reports
        page.get_by_role("link", name="Devices", exact=True).click()
        oven_row = page.locator('tr[data-device="oven-1"]')
        expect(oven_row.locator("td[data-health]")).to_have_attribute("data-health", "bad", timeout=30_000)
        expect(oven_row.locator("td.error-text")).not_to_have_text("—")
        press_row = page.locator('tr[data-device="press-1"]')
        expect(press_row.locator("td[data-health]")).to_have_attribute("data-health", "good", timeout=30_000)
        expect(press_row).to_contain_text(" ms")  # its poll latency p50 / p99
    finally:
        stack.api.delete("/api/v1/devices/oven-1")


def test_a_422_is_shown_on_the_field_it_names(page: Page, stack: Stack) -> None:
    log_in(page, stack, path="/devices/press-1/edit")
    interval = page.locator('[data-field="device.interval_ms"]')
    interval.fill("5")
    page.get_by_role("button", name="Save").click()
    error = page.locator(".field.invalid .field-error")
    expect(error).to_have_count(1)
    expect(error).to_contain_text("interval_ms")
    expect(error).to_contain_text("10..86400000")
    expect(interval).to_have_attribute("aria-invalid", "true")
    expect(interval).to_be_focused()
    # a tag's field: shown on that tag's row
    interval.fill("200")
    address = page.locator('[data-field="device.tags[1].address"]')
    address.fill("70000")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".field.invalid [data-field]")).to_have_attribute("data-field", "device.tags[1].address")
    expect(page.locator(".field.invalid .field-error")).to_contain_text("70000")
    # nothing was changed by the refused saves
    assert stack.api.get("/api/v1/devices/press-1").json()["device"]["interval_ms"] == 200


def test_a_stale_if_match_says_someone_else_changed_it(page: Page, stack: Stack) -> None:
    log_in(page, stack, path="/devices/press-1/edit")
    timeout = page.locator('[data-field="device.timeout_ms"]')
    expect(timeout).to_have_value("500")
    # meanwhile, someone else changes the device
    current = stack.api.get("/api/v1/devices/press-1")
    changed = {**current.json()["device"], "timeout_ms": 600}
    r = stack.api.put("/api/v1/devices/press-1", json=changed, headers={"If-Match": current.headers["ETag"]})
    assert r.status_code == 200, r.text
    timeout.fill("700")
    page.get_by_role("button", name="Save").click()
    banner = page.locator("[data-banner]")
    expect(banner).to_contain_text("changed by someone else")
    assert stack.api.get("/api/v1/devices/press-1").json()["device"]["timeout_ms"] == 600
    banner.get_by_role("button", name="Reload").click()
    expect(timeout).to_have_value("600")
    timeout.fill("500")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("[data-banner]")).to_contain_text("saved: revision")
    assert stack.api.get("/api/v1/devices/press-1").json()["device"]["timeout_ms"] == 500


def test_an_operator_writes_and_sees_the_gateways_answer(page: Page, stack: Stack) -> None:
    log_in(page, stack, "olga", OPERATOR_PASSWORD, path="/devices/press-1")
    setpoint = row(page, f"{PRESS}/setpoint")
    expect(setpoint.locator(".q")).to_have_attribute("data-quality", "good", timeout=30_000)
    form = setpoint.locator("form[data-write]")
    form.get_by_label("new value of setpoint").fill("42")
    form.get_by_role("button", name="Write").click()
    expect(form.locator("output")).to_have_text("written: 42 (the gateway confirmed)", timeout=15_000)
    expect(setpoint.locator("td.value")).to_have_text("42", timeout=15_000)  # read back from the PLC
    form.get_by_label("new value of setpoint").fill("70000")
    form.get_by_role("button", name="Write").click()
    expect(form.locator("output")).to_contain_text("422: value:")
    # an operator does not edit devices
    expect(page.get_by_role("link", name="Edit")).to_have_count(0)


def test_a_viewer_is_kept_out_of_the_editor(page: Page, stack: Stack) -> None:
    log_in(page, stack, "vic", VIEWER_PASSWORD, path="/devices/press-1/edit")
    expect(page.locator(".page")).to_contain_text("may not change devices")
    page.goto(stack.url + "/devices/press-1")
    expect(row(page, f"{PRESS}/temp")).to_have_count(1)
    expect(page.locator("form[data-write]")).to_have_count(0)


def test_a_device_created_through_the_form_shows_its_first_value(page: Page, stack: Stack) -> None:
    log_in(page, stack, path="/devices")
    page.get_by_role("link", name="New device").click()
    for field, value in (("id", "press-2"), *PLACE.items(), ("interval_ms", "200"), ("port", str(stack.plc.port))):
        page.locator(f'[data-field="device.{field}"]').fill(value)
    page.get_by_role("button", name="Add tag").click()
    page.locator('[data-field="device.tags[0].name"]').fill("temp")
    page.locator('[data-field="device.tags[0].type"]').select_option("int16")
    page.locator('[data-field="device.tags[0].table"]').fill("holding")
    page.locator('[data-field="device.tags[0].address"]').fill("0")
    page.locator('[data-field="device.tags[0].unit"]').fill("degC")
    try:
        page.get_by_role("button", name="Create").click()
        expect(page.get_by_role("heading", name="Device press-2")).to_be_visible()
        value = row(page, "acme/berlin/stamping/line-1/press-2/temp")
        expect(value.locator(".q")).to_have_attribute("data-quality", "good", timeout=30_000)
        raw = stack.plc.constants["temp"]
        expect(value.locator("td.value")).to_have_text(str(raw), timeout=15_000)  # no scale on this tag
        doc = stack.api.get("/api/v1/devices/press-2").json()["device"]
        assert doc["port"] == stack.plc.port and doc["interval_ms"] == 200
        assert doc["tags"] == [{"name": "temp", "type": "int16", "table": "holding", "address": 0, "unit": "degC"}]
    finally:
        stack.api.delete("/api/v1/devices/press-2")


def test_a_trend_is_drawn_from_stored_rows(page: Page, stack: Stack) -> None:
    tag = f"{PRESS}/temp"
    wait_for(lambda: stack.api.get("/api/v1/history", params={"tag": tag}).status_code == 200
             and stack.api.get("/api/v1/history", params={"tag": tag}).json()["points"], 60,
             what=lambda: f"stored points of {tag}:\n{stack.logs()}")
    log_in(page, stack, path=f"/trends?tag={tag}")
    summary = page.locator(".summary[data-points]")
    expect(summary).to_contain_text("1 series")
    assert int(summary.get_attribute("data-points") or 0) > 0
    expect(page.locator(".chart canvas")).to_have_count(1)
    expect(page.locator(".chart .u-legend")).to_contain_text("press-1/temp (degC)")
    # zoom out, from the keyboard: the range doubles, the URL keeps it
    before = page.url
    page.get_by_role("button", name="zoom out").focus()
    page.keyboard.press("Enter")
    expect(page).not_to_have_url(before)
    assert "from=" in page.url and "to=" in page.url
    expect(page.locator(".chart canvas")).to_have_count(1)


def test_a_rollback_from_the_revisions_page(page: Page, stack: Stack) -> None:
    current = stack.api.get("/api/v1/devices/press-1")
    before = current.json()["device"]
    r = stack.api.put("/api/v1/devices/press-1", json={**before, "interval_ms": 300},
                      headers={"If-Match": current.headers["ETag"]})
    assert r.status_code == 200, r.text
    changed_at = r.json()["revision"]
    log_in(page, stack, path="/revisions")
    target = page.locator(f'tr[data-revision="{changed_at - 1}"]')
    target.get_by_role("button", name="Roll back to this").click()
    target.get_by_role("button", name=f"Really roll back to {changed_at - 1}").click()
    expect(page.get_by_role("alert")).to_contain_text(f"rolled back to {changed_at - 1} as revision {changed_at + 1}")
    assert stack.api.get("/api/v1/devices/press-1").json()["device"]["interval_ms"] == before["interval_ms"]


def test_the_session_is_renewed_before_the_token_expires(page: Page, stack: Stack) -> None:
    log_in(page, stack)
    temp = row(page, f"{PRESS}/temp").locator("td.value")
    expect(temp).not_to_have_text("—", timeout=30_000)
    # past the first token's lifetime: renewed in time, the live stream given the new token, still live
    with page.expect_response(lambda r: r.url.endswith("/api/v1/auth/refresh"),
                              timeout=(ACCESS_TTL + 10) * 1000) as renewal:
        pass
    assert renewal.value.status == 200
    page.wait_for_timeout(ACCESS_TTL * 1000)  # beyond the old token's expiry
    expect(page.locator(".live")).to_have_text("● live")
    stack.plc.constants["temp"] = 250
    expect(temp).to_have_text("25", timeout=15_000)
    page.get_by_role("link", name="Devices", exact=True).click()  # the API answers the renewed token
    expect(page.locator('tr[data-device="press-1"]')).to_have_count(1)
    expect(page.locator(".error")).to_have_count(0)


def test_a_stopped_plc_turns_bad_with_its_reason_and_good_again(page: Page, stack: Stack) -> None:
    log_in(page, stack)
    temp = row(page, f"{PRESS}/temp")
    expect(temp.locator(".q")).to_have_attribute("data-quality", "good", timeout=30_000)
    stack.loop.run(stack.plc.stop())
    try:
        expect(temp.locator(".q")).to_have_attribute("data-quality", "bad", timeout=30_000)
        assert (temp.locator(".q").get_attribute("title") or "").startswith("bad: ")
        expect(page.locator(".summary")).not_to_contain_text(" 0 bad")
    finally:
        stack.loop.run(stack.plc.start())
    expect(temp.locator(".q")).to_have_attribute("data-quality", "good", timeout=30_000)


def test_an_admin_creates_a_user_and_a_short_password_is_refused_on_its_field(page: Page, stack: Stack) -> None:
    log_in(page, stack, path="/users")
    page.get_by_label("name", exact=True).fill("nora")
    page.get_by_label("role", exact=True).select_option("engineer")
    page.get_by_label("password", exact=True).fill("elevenchars")  # the model takes 8, the policy 12
    page.get_by_role("button", name="Create user").click()
    expect(page.locator(".field.invalid .field-error")).to_contain_text("at least 12 characters")
    expect(page.locator(".field.invalid [data-field]")).to_have_attribute("data-field", "password")
    page.get_by_label("password", exact=True).fill("a-long-enough-password")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator('tr[data-user="nora"]')).to_contain_text("active")
    assert stack.api.get("/api/v1/users/nora").json()["role"] == "engineer"


def test_export_into_the_editor_and_import_a_device(page: Page, stack: Stack) -> None:
    log_in(page, stack, path="/transfer")
    page.get_by_role("button", name="Load into the editor").click()
    doc = page.get_by_label(re.compile("The plant document"))
    expect(doc).to_have_value(re.compile(r"- id: press-1"))
    port = free_port()
    doc.fill("plant: {enterprise: acme, site: berlin, area: stamping, line: line-9}\n"
             f"devices:\n- {{id: mixer-1, host: 127.0.0.1, port: {port}, tags: [{{name: speed, table: holding, "
             "address: 0, type: int16}]}\n")
    page.get_by_label("Mode").select_option("merge")
    try:
        page.get_by_role("button", name="Import").click()
        expect(page.get_by_role("alert")).to_contain_text("1 created, 0 updated, 0 deleted")
        assert stack.api.get("/api/v1/devices/mixer-1").json()["device"]["line"] == "line-9"
        assert stack.api.get("/api/v1/devices/press-1").status_code == 200  # merge keeps the others
    finally:
        stack.api.delete("/api/v1/devices/mixer-1")


def test_a_tag_removed_and_a_device_deleted_through_the_editor(page: Page, stack: Stack) -> None:
    doc = {"id": "spare-1", **PLACE, "protocol": "modbus_tcp", "host": "127.0.0.1", "port": free_port(),
           "tags": [{"name": "a", "table": "holding", "address": 0, "type": "int16"},
                    {"name": "b", "table": "holding", "address": 1, "type": "int16"}]}
    assert stack.api.post("/api/v1/devices", json=doc).status_code == 201
    try:
        log_in(page, stack, path="/devices/spare-1/edit")
        page.get_by_role("button", name="remove tag a").click()
        page.get_by_role("button", name="Save").click()
        expect(page.locator("[data-banner]")).to_contain_text("saved: revision")
        assert [t["name"] for t in stack.api.get("/api/v1/devices/spare-1").json()["device"]["tags"]] == ["b"]
        page.get_by_role("button", name="Delete device").click()
        page.get_by_role("button", name="Really delete spare-1").click()
        expect(page.get_by_role("heading", name="Devices")).to_be_visible()
        expect(page.locator('tr[data-device="spare-1"]')).to_have_count(0)
        assert stack.api.get("/api/v1/devices/spare-1").status_code == 404
    finally:
        stack.api.delete("/api/v1/devices/spare-1")


def test_keyboard_only_and_a_tablet_width(page: Page, stack: Stack) -> None:
    page.set_viewport_size({"width": 820, "height": 1180})  # a tablet, portrait
    log_in(page, stack)
    expect(row(page, f"{PRESS}/temp").locator(".q")).to_have_attribute("data-quality", "good", timeout=30_000)
    # the first Tab reaches the skip link, which moves the focus to the page
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    # a device's branch folds and unfolds from the keyboard
    device = page.locator(f'details.device[data-path="{PRESS}"]')
    device.locator("summary").focus()
    page.keyboard.press("Enter")
    expect(device).not_to_have_attribute("open", "")
    expect(row(page, f"{PRESS}/temp")).not_to_be_visible()
    page.keyboard.press("Enter")
    expect(row(page, f"{PRESS}/temp")).to_be_visible()
    # the quality badge takes the focus, and names its quality to assistive technology
    badge = row(page, f"{PRESS}/temp").locator(".q")
    badge.focus()
    expect(badge).to_be_focused()
    assert (badge.get_attribute("aria-label") or "").startswith("good")
    # the navigation by Tab and Enter
    page.get_by_role("link", name="Devices", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    for path in ("/plant", "/devices", "/devices/press-1", "/devices/press-1/edit", "/gateways", "/revisions"):
        page.goto(stack.url + path)
        expect(page.locator("#page-title")).to_be_visible()
        page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        widest = page.evaluate("""() => [...document.querySelectorAll('main *')]
            .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth
                           && !e.parentElement?.closest('table, .tag-editor'))
            .slice(0, 4).map((e) => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)
            .join(', ')""")
        assert overflow <= 0, f"{path} is {overflow}px wider than a tablet: {widest}"


def test_an_alarm_raised_by_the_gateway_is_listed_and_acknowledged(page: Page, stack: Stack) -> None:
    stack.plc.constants["temp"] = 300  # 30.0 degC
    current = stack.api.get("/api/v1/devices/press-1")
    before = current.json()["device"]
    tags = [{**t, "alarms": {"high": 25.0, "hysteresis": 1.0}} if t["name"] == "temp" else t for t in before["tags"]]
    r = stack.api.put("/api/v1/devices/press-1", json={**before, "tags": tags},
                      headers={"If-Match": current.headers["ETag"]})
    assert r.status_code == 200, r.text
    try:
        wait_for(lambda: stack.api.get("/api/v1/history/alarms", params={"tag": PRESS, "active": "true"})
                 .json().get("alarms"), 60, what=lambda: f"an active alarm of press-1:\n{stack.logs()}")
        log_in(page, stack, path="/alarms")
        alarm = page.locator(f'tr[data-alarm="{PRESS}/temp|high"]')
        expect(alarm).to_contain_text("active")
        expect(alarm).to_contain_text("/ 25")
        page.get_by_label("Active only").check()
        expect(alarm).to_have_count(1)
        expect(page.locator(".summary")).to_contain_text("1 active, 1 unacknowledged")
        # a viewer sees it and may not acknowledge it
        page.get_by_role("button", name="Log out").click()
        log_in(page, stack, "vic", VIEWER_PASSWORD, path="/alarms")
        expect(alarm).to_contain_text("active, unacknowledged")
        expect(page.get_by_role("button", name=re.compile("^Acknowledge"))).to_have_count(0)
        # an operator acknowledges it with a comment; it stays active, now acknowledged, and leaves the
        # "unacknowledged only" list
        page.get_by_role("button", name="Log out").click()
        log_in(page, stack, "olga", OPERATOR_PASSWORD, path="/alarms")
        page.get_by_label("Comment").fill("cooling checked")
        page.get_by_role("button", name=f"Acknowledge high alarm of {PRESS}/temp").click()
        expect(page.get_by_role("status")).to_have_text(f"high of {PRESS}/temp: 1 acknowledged")
        expect(alarm).to_have_attribute("data-state", "active-acked")
        expect(alarm).to_contain_text("by olga")
        expect(alarm).to_contain_text("cooling checked")
        expect(page.locator(".summary")).to_contain_text("0 unacknowledged")
        page.get_by_label("Unacknowledged only").check()
        expect(alarm).to_have_count(0)
        stored = stack.api.get("/api/v1/history/alarms", params={"tag": f"{PRESS}/temp", "active": "true"}).json()
        assert [(a["acked_by"], a["ack_comment"]) for a in stored["alarms"]] == [("user:olga", "cooling checked")]
        audit = stack.api.get("/api/v1/audit", params={"limit": 100}).json()["items"]
        assert [e["actor"] for e in audit if e["action"] == "alarm.ack"] == ["user:olga"]
    finally:
        now = stack.api.get("/api/v1/devices/press-1")
        stack.api.put("/api/v1/devices/press-1", json=before, headers={"If-Match": now.headers["ETag"]})


def test_a_user_changes_their_own_password(page: Page, stack: Stack) -> None:
    stack.user("pat", "viewer", "pat-first-password")
    log_in(page, stack, "pat", "pat-first-password")
    page.get_by_role("link", name="Password").click()
    page.get_by_label("current password").fill("pat-first-password")
    page.get_by_label("new password", exact=True).fill("short-one")
    page.get_by_label("new password again").fill("short-one")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator(".field.invalid [data-field]")).to_have_attribute("data-field", "new_password")
    page.get_by_label("new password", exact=True).fill("pat-second-password")
    page.get_by_label("new password again").fill("pat-second-password")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("alert")).to_contain_text("password changed")
    page.get_by_role("button", name="Log out").click()
    log_in(page, stack, "pat", "pat-second-password")


def test_an_admin_makes_and_revokes_an_api_key(page: Page, stack: Stack) -> None:
    log_in(page, stack, path="/keys")
    page.get_by_label("New key's name").fill("scada")
    page.get_by_label("Role").select_option("operator")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("[data-secret]").inner_text()
    me = stack.api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["name"] == "scada" and me.json()["role"] == "operator"
    key = page.locator('tr[data-key="scada"]')
    key.get_by_role("button", name="Revoke").click()
    key.get_by_role("button", name="Really revoke scada").click()
    expect(key).to_have_count(0)
    assert stack.api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
