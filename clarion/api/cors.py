"""Cross-origin calls to the REST API from the browser origins in ``CLARION_CORS_ORIGINS``.

Starlette's CORS middleware answers preflights and adds the headers to every answer (the
problem+json errors included). User tokens travel in ``Authorization``, never in cookies,
so credentials are not allowed. The live stream has its own Origin check
(``Settings.stream_origins``), which accepts these origins too; SSE is an ordinary GET and
is covered here.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]
# What a page may read of an answer besides the CORS-safelisted headers.
EXPOSED = ["Retry-After", "Idempotent-Replayed", "Location", "RateLimit", "RateLimit-Policy"]
PREFLIGHT_CACHE_SECONDS = 600


def install(app: FastAPI, origins: list[str]) -> None:
    """Answer cross-origin requests from ``origins`` (none: no CORS headers at all).

    Call it after the other middleware: added last, it runs first, so every answer (a
    413 from the body limit too) carries the headers a browser needs to read it."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=METHODS,
        allow_headers=HEADERS,
        allow_credentials=False,
        expose_headers=EXPOSED,
        max_age=PREFLIGHT_CACHE_SECONDS,
    )
