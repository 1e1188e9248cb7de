"""One-click unsubscribe (RFC 8058) from the link in every email.

``GET`` shows a confirmation page and changes nothing, because link scanners and
previewers fetch links; ``POST`` (the mail client's one-click request, or the page's
button) switches the category's email off for the subscriber in the signed link.
"""

from __future__ import annotations

from html import escape
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from clarion.api.deps import RuntimeDep, SessionDep
from clarion.api.problems import Problem
from clarion.core.auth import AuthError, verify_unsubscribe_token
from clarion.db import preferences, subscribers
from clarion.ids import utcnow

router = APIRouter(prefix="/v1/unsubscribe", tags=["unsubscribe"])
Token = Annotated[str, Query(min_length=1, max_length=2048, description="From the email link.")]

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>
<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem">
<h1 style="font-size:1.4rem">{title}</h1>{content}</body></html>"""


def _link(runtime, token: str) -> tuple[str, str, str]:
    try:
        return verify_unsubscribe_token(runtime.settings, token)
    except AuthError:
        raise Problem(
            400, "invalid-unsubscribe-link", "This unsubscribe link is not valid."
        ) from None


@router.get("", response_class=HTMLResponse, summary="Confirm unsubscribing (changes nothing)")
def confirm(token: Token, runtime: RuntimeDep) -> HTMLResponse:
    _, category, channel = _link(runtime, token)
    form = (
        f"<p>Stop {escape(channel)} notifications about <b>{escape(category)}</b>?</p>"
        f'<form method="post" action="?token={escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(PAGE.format(title="Unsubscribe", content=form))


@router.post("", response_class=HTMLResponse, summary="Unsubscribe (RFC 8058 one-click)")
def unsubscribe(token: Token, runtime: RuntimeDep, session: SessionDep) -> HTMLResponse:
    subscriber_id, category, channel = _link(runtime, token)
    with session.begin():
        # An erased subscriber has nothing left to unsubscribe from: never recreate them.
        if subscribers.get(session=session, id=subscriber_id) is not None:
            preferences.set_switch(
                session=session,
                subscriber_id=subscriber_id,
                category=category,
                channel=channel,
                enabled=False,
                now=utcnow(),
            )
    done = (
        f"<p>You will no longer receive {escape(channel)} notifications about "
        f"<b>{escape(category)}</b>.</p>"
    )
    return HTMLResponse(PAGE.format(title="Unsubscribed", content=done))
