"""The pictures in the README and the docs (docs/ui/*.png), taken from the real page."""

from __future__ import annotations

import pytest

from tests.browser.conftest import DOCS, REQUIRED, new_user, open_ui, wait_badge
from tests.e2e.procs import wait_for

pytestmark = pytest.mark.e2e

DATA = [
    ("billing", "medium", "Invoice #1042 is ready", "€120.00, due on 1 July."),
    (REQUIRED, "critical", "New sign-in from Firefox on Linux", "Berlin, Germany. Was it you?"),
    ("links", "high", "Your link go.example/abc expires tomorrow", "Renew it to keep it working."),
    ("links", "low", "go.example/launch reached 1,000 clicks", None),
]


@pytest.fixture(scope="module")
def shown(stack):
    me = new_user()
    with stack.as_user(me) as api:
        for n, (category, severity, title, body) in enumerate(DATA, 1):
            stack.send(me, title, category=category, severity=severity, body=body)
            # One at a time, so the order on screen is the same in every run.
            wait_for(
                lambda n=n: len(api.get("/v1/me/notifications").json()["items"]) == n, 30, "stored"
            )
    return me


@pytest.mark.parametrize("lang", ["en", "ru"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots(chromium, stack, shown, lang, scheme):
    context = chromium.new_context(
        viewport={"width": 1000, "height": 640}, color_scheme=scheme, locale=lang
    )
    try:
        page = open_ui(context, stack, shown, lang=lang)
        wait_badge(page, str(len(DATA)))
        page.locator("clarion-bell [part=button]").click()
        page.locator("clarion-bell [part~=item]").first.wait_for()
        page.mouse.move(0, 0)
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=DOCS / f"bell-{lang}-{scheme}.png")
        if lang == "en" or scheme == "dark":
            page.keyboard.press("Escape")
            page.locator("clarion-inbox [part~=item]").first.wait_for()
            page.screenshot(path=DOCS / f"inbox-{lang}-{scheme}.png")
            page.goto(f"{stack.base}/ui/?lang={lang}#/preferences")
            page.locator("clarion-preferences [part=devices] li").first.wait_for()
            page.screenshot(path=DOCS / f"preferences-{lang}-{scheme}.png", full_page=True)
    finally:
        context.close()
