"""The notification centre: its files under ``/ui/`` and the sign-in of its page.

The files (``clarion/web``: custom elements, the headless client, the service worker, the
catalogues) are served as they are, with no build step. Any origin may import them (they
are public code, ``Access-Control-Allow-Origin: *``); the page itself gets a strict CSP.

The page signs in without a user token in its URL or in storage: a sign-in link
(``/ui/#login=<token>``, from ``clarion dev`` or ``clarion ui-link``) carries a short-lived
token of its own audience in the fragment, which browsers never send to a server. The page
removes it from the address bar and posts it to ``POST /ui/session``, which answers with a
short user token and sets an HttpOnly, SameSite=Strict cookie limited to ``/ui/session``.
``POST /ui/session/token`` trades that cookie for a fresh user token, so a reload stays
signed in; ``DELETE /ui/session`` signs out.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Cookie, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from clarion.api.deps import RuntimeDep
from clarion.api.problems import Problem
from clarion.api.ratelimit import FailureGateDep, client_address
from clarion.core.auth import (
    AuthError,
    issue_user_token,
    ui_session_token,
    verify_ui_login,
    verify_ui_session,
)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
COOKIE = "clarion_ui_session"
COOKIE_PATH = "/ui/session"
# Module scripts, styles (constructable stylesheets) and the stream from this origin only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
    "connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
TYPES = {".js": "text/javascript; charset=utf-8", ".json": "application/json; charset=utf-8"}
PAGE_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": CSP,
    "referrer-policy": "no-referrer",
}

router = APIRouter(tags=["notification centre"])


# The page's own files under /ui/v/<version>/: a name that changes whenever any file does,
# so the browser may keep them (a reload fetches none of them again) and a page always gets
# one consistent set (their relative imports stay under the same version).
VERSIONED = re.compile(r"v/([0-9a-f]{1,32})/(.+)")
IMMUTABLE = "public, max-age=31536000, immutable"
# The index page's relative file references (not "#/inbox", not absolute URLs).
PAGE_REFS = re.compile(r'(src|href)="(?![a-z]+:|/|#)([^"]+)"')


def web_version() -> str:
    """A short hash of every file's name, size and modification time (cheap enough to take
    on each page load, so an edited file gets new names at once)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(WEB_DIR):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            stat = path.stat()
            digest.update(
                f"{path.relative_to(WEB_DIR)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode()
            )
    return digest.hexdigest()[:16]


def _page(version: str) -> str:
    html = (WEB_DIR / "index.html").read_text()
    return PAGE_REFS.sub(lambda m: f'{m[1]}="v/{version}/{m[2]}"', html)


class UiFiles(StaticFiles):
    """``clarion/web`` as static files: right types, revalidated on every use (ETag), CORS;
    under ``v/<version>/`` kept by the browser; the index page pointing there."""

    version = ""  # the last one the page was made with

    async def get_response(self, path: str, scope: Scope):
        if path in (".", "index.html") and scope["method"] in ("GET", "HEAD"):
            return await self._page(scope)
        versioned = VERSIONED.fullmatch(path)
        if versioned is None:
            return await super().get_response(path, scope)
        response = await super().get_response(versioned[2], scope)
        if versioned[1] == (self.version or await run_in_threadpool(web_version)):
            response.headers["cache-control"] = IMMUTABLE
        return response  # an older page's version: the current file, revalidated

    async def _page(self, scope: Scope):
        version = await run_in_threadpool(web_version)
        UiFiles.version = version
        etag = f'"page-{version}"'
        headers = {"etag": etag, "cache-control": "no-cache", **PAGE_HEADERS}
        asked = dict(scope["headers"]).get(b"if-none-match", b"").decode("latin-1")
        if etag in [tag.strip().removeprefix("W/") for tag in asked.split(",")]:
            return Response(status_code=304, headers=headers)
        return HTMLResponse(await run_in_threadpool(_page, version), headers=headers)

    def file_response(self, full_path, stat_result, scope: Scope, status_code: int = 200):
        response = super().file_response(full_path, stat_result, scope, status_code)
        suffix = Path(str(full_path)).suffix
        if suffix in TYPES:
            response.headers["content-type"] = TYPES[suffix]
        # No hashed file names without a build step: revalidate (304s) so an upgrade is
        # never half applied (the page's own references are versioned: see above).
        response.headers["cache-control"] = "no-cache"
        response.headers.update(PAGE_HEADERS)
        response.headers["access-control-allow-origin"] = "*"
        return response


def static_files() -> UiFiles:
    return UiFiles(directory=WEB_DIR, html=True)


class SessionStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    login: str = Field(min_length=1, max_length=4096, description="The token of a sign-in link")


class UiToken(BaseModel):
    token: str = Field(description="A user token for the API and the live stream")
    expires_in: int = Field(description="Seconds until it expires")
    subscriber: str


def _same_origin(request: Request) -> None:
    """A browser sends Origin on these POSTs; another site's page may not sign anyone in.
    Hosts are compared, not schemes: behind a TLS proxy the page is https and we see http."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise Problem(403, "forbidden", "Sign-in requests must come from the page itself.")


def _token(runtime, subscriber: str) -> UiToken:
    ttl = runtime.settings.ui_token_seconds
    return UiToken(
        token=issue_user_token(runtime.settings, subscriber, ttl_seconds=ttl),
        expires_in=ttl,
        subscriber=subscriber,
    )


@router.post(
    "/ui/session",
    response_model=UiToken,
    summary="Trade a sign-in link's token for a user token and a session cookie",
    responses={401: {"description": "The link is not valid or has expired"}},
)
def start_session(
    body: SessionStart,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    gate: FailureGateDep,
) -> UiToken:
    _same_origin(request)
    address = client_address(request)
    gate.check(address)
    try:
        subscriber = verify_ui_login(runtime.settings, body.login)
    except AuthError:
        gate.failed(address)  # guessing sign-in tokens is as slow as guessing API keys
        raise Problem(401, "link-expired", "This sign-in link is not valid any more.") from None
    response.set_cookie(
        COOKIE,
        ui_session_token(runtime.settings, subscriber, runtime.settings.ui_session_seconds),
        max_age=runtime.settings.ui_session_seconds,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return _token(runtime, subscriber)


@router.post(
    "/ui/session/token",
    response_model=UiToken,
    summary="A fresh user token for the signed-in page (session cookie)",
    responses={401: {"description": "Not signed in"}},
)
def session_token(
    request: Request,
    runtime: RuntimeDep,
    gate: FailureGateDep,
    session: Annotated[str | None, Cookie(alias=COOKIE)] = None,
) -> UiToken:
    _same_origin(request)
    if session is None:  # a page that is not signed in asks this on load: not a failure
        raise Problem(401, "unauthorized", "Not signed in.")
    address = client_address(request)
    gate.check(address)
    try:
        subscriber = verify_ui_session(runtime.settings, session)
    except AuthError:
        gate.failed(address)
        raise Problem(401, "unauthorized", "Not signed in.") from None
    return _token(runtime, subscriber)


@router.delete("/ui/session", status_code=204, summary="Sign the page out")
def end_session(request: Request) -> Response:
    _same_origin(request)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/ui/")
