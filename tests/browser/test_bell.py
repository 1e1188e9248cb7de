"""The bell, its feed and the live updates, as a user sees them in Chromium."""

from __future__ import annotations

import time

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import create_engine, text

from tests.browser.conftest import badge, new_user, open_ui, wait_badge

pytestmark = pytest.mark.e2e

ROW = "clarion-bell [part~=item]"


def open_popover(page):
    page.locator("clarion-bell [part=button]").click()
    page.wait_for_selector(f"{ROW}, clarion-bell [part=empty]")


def test_the_badge_rises_when_a_producer_sends_and_a_toast_shows_it(context, stack):
    me = new_user()
    page = open_ui(context, stack, me)
    assert badge(page) == ""
    stack.send(me, "First", metadata={"toast": "success"})
    wait_badge(page, "1")
    toast = page.locator("clarion-toasts [part~=toast]")
    toast.wait_for()
    assert toast.get_attribute("data-kind") == "success"
    assert toast.locator("[part=toast-title]").text_content() == "First"
    stack.send(me, "Second", severity="critical")
    wait_badge(page, "2")
    error = page.locator("clarion-toasts [role=alert] [part~=toast]")
    error.wait_for()
    assert error.get_attribute("data-kind") == "error"
    label = page.locator("clarion-bell [part=button]").get_attribute("aria-label")
    assert label == "Notifications: 2 unread"


def test_a_click_marks_read_then_opens_the_url(context, stack):
    me = new_user()
    context.route("https://app.example/**", lambda r: r.fulfill(body="<p>landed</p>"))
    nid = stack.send(me, "Your link expires", url="https://app.example/links/abc")
    page = open_ui(context, stack, me)
    wait_badge(page, "1")
    open_popover(page)
    row = page.locator(f'{ROW}[data-id="{nid}"]')
    assert row.locator("[part=item-title]").text_content() == "Your link expires"
    with page.expect_navigation(url="https://app.example/links/abc"):
        row.click()
    with stack.as_user(me) as api:
        item = api.get("/v1/me/notifications").json()["items"][0]
    assert item["id"] == nid and item["read_at"] is not None


def test_mark_all_as_read_and_per_category(context, stack):
    me = new_user()
    for i in range(3):
        stack.send(me, f"link {i}")
    stack.send(me, "deploy done", category="ops")
    page = open_ui(context, stack, me)
    wait_badge(page, "4")
    open_popover(page)
    groups = page.locator("clarion-bell [part=group]")
    assert groups.count() == 2  # grouped by category, as the data says
    page.locator('clarion-bell [part=read-all-category][data-category="ops"]').click()
    wait_badge(page, "3")
    page.locator("clarion-bell [part=read-all]").click()
    wait_badge(page, "")
    with stack.as_user(me) as api:
        assert api.get("/v1/me/notifications/unread-count").json()["total"] == 0
    assert page.locator(f"{ROW}.unread").count() == 0


def test_a_second_tab_follows_on_the_same_single_connection(context, stack):
    me = new_user()
    sockets: list[str] = []
    first = open_ui(context, stack, me)
    first.on("websocket", lambda ws: sockets.append("first"))
    second = open_ui(context, stack, me)
    second.on("websocket", lambda ws: sockets.append("second"))
    nid = stack.send(me, "to both tabs")
    wait_badge(first, "1")
    wait_badge(second, "1")
    open_popover(first)
    first.locator(f'{ROW}[data-id="{nid}"] [part=menu-button]').click()
    first.locator('clarion-bell [role=menuitem][data-action="read"]').click()
    wait_badge(second, "")
    leaders = first.evaluate(
        "() => [document.querySelector('clarion-bell').client.leader]"
    ) + second.evaluate("() => [document.querySelector('clarion-bell').client.leader]")
    assert sorted(leaders) == [False, True], "exactly one tab holds the connection"
    assert sockets == [], "no tab opened a second connection"


def test_offline_then_online_replays_exactly_what_was_missed(context, stack):
    me = new_user()
    stack.send(me, "before")
    page = open_ui(context, stack, me)
    wait_badge(page, "1")
    open_popover(page)
    context.set_offline(True)
    page.wait_for_function(
        "() => document.querySelector('clarion-bell').client.status === 'offline'"
    )
    assert page.locator("clarion-bell [part=status]").is_visible()
    missed = [stack.send(me, f"while offline {i}") for i in range(3)]
    time.sleep(1.0)  # the worker stores them; the page cannot hear of it
    assert badge(page) == "1"
    context.set_offline(False)
    wait_badge(page, "4")
    expect(page.locator(ROW)).to_have_count(4)
    ids = page.locator(ROW).evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert sorted(ids[:3]) == sorted(missed) and len(set(ids)) == 4


def test_keyboard_escape_closes_and_focus_returns_to_the_bell(context, stack):
    me = new_user()
    stack.send(me, "one")
    stack.send(me, "two")
    page = open_ui(context, stack, me)
    wait_badge(page, "2")
    page.locator("clarion-bell [part=button]").focus()
    page.keyboard.press("ArrowDown")
    page.wait_for_selector(ROW)
    page.wait_for_function(
        "() => document.querySelector('clarion-bell').shadowRoot.querySelector('clarion-feed')"
        ".shadowRoot.activeElement?.dataset.id"
    )
    page.keyboard.press("ArrowDown")
    focused = page.evaluate(
        "() => document.querySelector('clarion-bell').shadowRoot.querySelector('clarion-feed')"
        ".shadowRoot.activeElement.getAttribute('aria-label')"
    )
    assert focused.startswith("one")  # newest first: "two", then "one"
    page.keyboard.press("Escape")
    assert page.locator("clarion-bell [part=popover]").is_hidden()
    assert (
        page.evaluate(
            "() => document.querySelector('clarion-bell').shadowRoot.activeElement?.part.value"
        )
        == "button"
    )


def wait_stored(stack, nid: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    with _producer(stack) as api:
        while time.monotonic() < deadline:
            if api.get(f"/v1/notifications/{nid}").status_code == 200:
                return
            time.sleep(0.1)
    raise AssertionError(f"notification {nid} not stored")


def _producer(stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base, headers={"Authorization": f"Bearer {stack.key}"})


def test_xss_in_title_body_and_url_renders_as_text_and_is_never_followed(context, stack):
    me = new_user()
    title = '<img src=x onerror="window.__xss=1">'
    body = "<script>window.__xss=2</script><b>bold</b>"
    # The API refuses such a link (422); a row stored before it did, or written around it,
    # must still never be followed by the page.
    with pytest.raises(AssertionError, match="422"):
        stack.send(me, "x", url="javascript:window.__xss=3")
    nid = stack.send(me, title, body=body, url="https://example.com/safe")
    wait_stored(stack, nid)
    engine = create_engine(stack.settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE notifications SET url = :u WHERE id = :id"),
            {"u": "javascript:window.__xss=3", "id": nid},
        )
    engine.dispose()
    page = open_ui(context, stack, me)
    wait_badge(page, "1")
    open_popover(page)
    row = page.locator(f'{ROW}[data-id="{nid}"]')
    assert row.locator("[part=item-title]").text_content() == title
    assert row.locator("[part=item-body]").text_content() == body
    assert row.locator("img, script, b").count() == 0
    url = page.url
    row.click()
    wait_badge(page, "")  # marked read, and nothing else
    assert page.url == url
    assert page.evaluate("() => window.__xss") is None


def test_unseen_count_clears_when_the_popover_shows_them(context, stack):
    me = new_user()
    stack.send(me, "one")
    stack.send(me, "two")
    page = open_ui(context, stack, me)
    page.evaluate("() => document.querySelector('clarion-bell').setAttribute('count', 'unseen')")
    wait_badge(page, "2")
    open_popover(page)
    wait_badge(page, "")  # seen now, still unread
    with stack.as_user(me) as api:
        counts = api.get("/v1/me/notifications/unread-count").json()
    assert counts["total"] == 2 and counts["unseen"] == 0
    stack.send(me, "three")
    wait_badge(page, "1")


def test_snooze_from_the_row_menu_moves_it_to_the_snoozed_tab(context, stack):
    me = new_user()
    nid = stack.send(me, "later please")
    page = open_ui(context, stack, me)
    wait_badge(page, "1")
    open_popover(page)
    page.locator(f'{ROW}[data-id="{nid}"] [part=menu-button]').click()
    page.locator('clarion-bell [role=menuitem][data-action="snooze-hour"]').click()
    expect(page.locator(f'{ROW}[data-id="{nid}"]')).to_have_count(0)
    wait_badge(page, "")
    page.locator('clarion-bell [part=tab][data-tab="snoozed"]').click()
    expect(page.locator(f'{ROW}[data-id="{nid}"]')).to_have_count(1)
    with stack.as_user(me) as api:
        assert api.get(f"/v1/me/notifications/{nid}").json()["snoozed_until"] is not None


def test_an_action_button_records_the_click_and_opens_its_url(context, stack):
    me = new_user()
    context.route("https://app.example/**", lambda r: r.fulfill(body="<p>approved</p>"))
    actions = [{"id": "approve", "label": "Approve", "url": "https://app.example/approve/7"}]
    nid = stack.send(me, "Expense report", actions=actions)
    page = open_ui(context, stack, me)
    wait_badge(page, "1")
    open_popover(page)
    with page.expect_navigation(url="https://app.example/approve/7"):
        page.locator(f'{ROW}[data-id="{nid}"] [part=action][data-action="approve"]').click()
    with stack.as_user(me) as api:
        assert api.get(f"/v1/me/notifications/{nid}").json()["read_at"] is not None


def test_the_popover_pages_by_cursor_as_it_scrolls(context, stack):
    me = new_user()
    for i in range(45):
        stack.send(me, f"n{i}")
    page = open_ui(context, stack, me)
    wait_badge(page, "45")
    open_popover(page)
    expect(page.locator(ROW)).to_have_count(20)
    scroller = page.locator("clarion-bell [part=scroller]")
    for shown in (40, 45):
        scroller.evaluate("s => { s.scrollTop = s.scrollHeight; }")
        expect(page.locator(ROW)).to_have_count(shown)
    ids = page.locator(ROW).evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert len(set(ids)) == 45


def test_a_toast_waits_while_hovered_then_goes(context, stack):
    me = new_user()
    page = open_ui(context, stack, me)
    stack.send(me, "Saved", metadata={"toast": "success"})  # 5 s on screen
    toast = page.locator("clarion-toasts [part~=toast]")
    toast.hover()
    page.wait_for_timeout(6000)
    expect(toast).to_have_count(1)
    expect(toast).to_have_attribute("paused", "")
    page.mouse.move(0, 0)
    expect(toast).to_have_count(0, timeout=7000)


def test_the_popover_keeps_paging_to_the_end_when_pages_add_to_every_group(context, stack):
    # Five categories: each page adds rows to every group, above the end of the list, so
    # the browser keeps the end in view (scroll anchoring) and the sentinel can stay in
    # view from one page to the next; every page must still come.
    me = new_user()
    total = 300
    for i in range(total):
        stack.send(
            me, f"notification {i} with a line of body-like text", category=f"c{i * i % 7 % 5}"
        )
    page = open_ui(context, stack, me)
    wait_badge(page, "99+")
    open_popover(page)
    loaded = "() => document.querySelector('clarion-bell').feedEl.items.length"
    page.wait_for_function(f"{loaded} > 0")
    while (before := page.evaluate(loaded)) < total:
        page.locator("clarion-bell [part=scroller]").evaluate(
            "s => { s.scrollTop = s.scrollHeight; }"
        )
        page.wait_for_function(f"{loaded} > {before}", timeout=10_000)
    ids = page.locator(ROW).evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert len(set(ids)) == total
