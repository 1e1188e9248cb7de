"""`make run` for a newcomer: the banner's link opens the page signed in, and it is live."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import wait_badge
from tests.e2e.procs import Proc, free_port, wait_for

pytestmark = pytest.mark.e2e


def test_the_dev_banner_link_opens_a_live_inbox(chromium, tmp_path):
    port = free_port()
    args = ["dev", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    proc = Proc(args, {"CLARION_SECRET_KEY": None}, tmp_path / "dev.log")
    try:
        wait_for(lambda: "your inbox:" in proc.output(), 30, "the dev banner", proc)
        link = re.search(r"your inbox:\s+(\S+)", proc.output()).group(1)
        key = re.search(r"API key:\s+(\S+)", proc.output()).group(1)
        assert link.startswith(f"http://127.0.0.1:{port}/ui/#login=")
        context = chromium.new_context()
        page = context.new_page()
        page.goto(link)
        page.wait_for_selector("clarion-bell[data-count]")
        assert "login=" not in page.url
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/notifications",
            headers={"Authorization": f"Bearer {key}"},
            json={"recipients": ["dev-user"], "category": "system", "title": "Hello from Clarion"},
        )
        assert answer.status_code == 202
        wait_badge(page, "1")
        expect(page.locator("clarion-toasts [part=toast-title]")).to_have_text("Hello from Clarion")
        expect(page.locator("clarion-inbox [part=item-title]")).to_have_text("Hello from Clarion")
        context.close()
    finally:
        proc.stop()
