"""The notification centre in a real Chromium (Debian's ``chromium``, driven by Playwright)
against real ``clarion api`` and ``clarion worker`` processes on PostgreSQL and Redis.

One API + worker pair serves each module and one browser all of them; every test has its own
users and its own browser context (cookies, storage, service workers), so tests do not
see each other's state.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from clarion.core.auth import issue_user_token, ui_login_token
from tests.conftest import process_env, server_settings
from tests.e2e.procs import Proc, free_port, run, wait_ready

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REQUIRED = "security"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "ui"


class Stack:
    """An API and a worker on the test database, and helpers to act as a producer."""

    def __init__(self, pg_url: str, tmp: Path) -> None:
        self.settings = server_settings(pg_url)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Another origin that embeds the bell: a real server on loopback (a page fulfilled by
        # a route has no address, and Chromium refuses a public page loading from loopback).
        self.site_port = free_port()
        self.site = f"http://127.0.0.1:{self.site_port}"
        self.env = process_env(
            pg_url,
            CLARION_LOG_LEVEL="WARNING",
            CLARION_REQUIRED_CATEGORIES=f'["{REQUIRED}"]',
            CLARION_STREAM_HEARTBEAT_SECONDS="5",
            CLARION_CATEGORY_CHANNELS='{"links": ["in_app", "email"]}',
            CLARION_CORS_ORIGINS=f'["{self.site}"]',
        )
        self.key = run(["keys", "create", "ui", "--scope", "notify"], self.env).split()[-1]
        self.worker = Proc(["worker", "--concurrency", "2"], self.env, tmp / "worker.log")
        self.api = Proc(["api", "--port", str(self.port)], self.env, tmp / "api.log")
        wait_ready(self.base, self.api)

    def send(self, user: str, title: str = "hello", **fields) -> str:
        body = {"recipients": [user], "category": "links", "title": title, **fields}
        answer = httpx.post(
            f"{self.base}/v1/notifications",
            json=body,
            headers={"Authorization": f"Bearer {self.key}"},
        )
        assert answer.status_code == 202, answer.text
        return answer.json()["notifications"][0]["id"]

    def as_user(self, user: str) -> httpx.Client:
        token = issue_user_token(self.settings, user)
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {token}"})

    def link(self, user: str, lang: str | None = None) -> str:
        query = f"?lang={lang}" if lang else ""
        return f"{self.base}/ui/{query}#login={ui_login_token(self.settings, user)}"

    def stop(self) -> None:
        self.api.stop()
        self.worker.stop()


# Per module: its worker consumes the test broker's queues, so it must be gone before any
# other test module runs (they enqueue and consume on the same Redis databases).
@pytest.fixture(scope="module")
def stack(pg_url, redis_client, tmp_path_factory):
    s = Stack(pg_url, tmp_path_factory.mktemp("ui"))
    yield s
    s.stop()


# Per module too: Playwright's sync API runs an event loop in this thread while it is open,
# and tests elsewhere call asyncio.run().
@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is required for the browser tests: `make chromium` installs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def context(chromium, stack):
    ctx = chromium.new_context(viewport={"width": 1100, "height": 760}, locale="en-GB")
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    ctx.errors = errors
    yield ctx
    ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def new_user() -> str:
    return f"ui-{uuid.uuid4().hex[:10]}"


def open_ui(context, stack: Stack, user: str, lang: str | None = None) -> Page:
    """The /ui/ page signed in as ``user`` through a sign-in link, with the bell live."""
    page = context.new_page()
    page.goto(stack.link(user, lang))
    page.wait_for_selector("clarion-bell[data-count]")
    page.wait_for_function(
        "() => document.querySelector('clarion-bell')?.client?.status === 'live'"
    )
    return page


def badge(page: Page) -> str:
    return page.locator("clarion-bell [part=badge]").text_content() or ""


def wait_badge(page: Page, text: str, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "(t) => (document.querySelector('clarion-bell')?.shadowRoot"
        "?.querySelector('[part=badge]')?.textContent || '') === t",
        arg=text,
        timeout=timeout,
    )
