"""RFC 9457 problem+json for every error the API returns. Stable ``type`` URNs; no traces."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from psycopg import OperationalError as PsycopgOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException as StarletteHTTPException

from clarion.core import storable
from clarion.core.sandbox import TemplateError
from clarion.core.template_store import TemplatesUnavailable

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An error with a stable type, e.g. ``Problem(409, "idempotency-key-reused", ...)``."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail
        self.headers, self.extra = headers or {}, extra


# What a broker or Redis outage raises while the API publishes: a 503, never a 500.
BROKER_ERRORS = (BrokerError, RedisError, OSError)


# An endpoint's documented error responses (FastAPI's ``responses=``).
Responses = dict[int | str, dict[str, Any]]

# What an outage of a service raises on a request path, wherever it happens (a key's
# lookup, a session, a publish): 503 with Retry-After, which clients retry, never a 500.
# Handled once for the whole app (install), so no route has to remember it.
OUTAGES: dict[str, tuple[type[Exception], ...]] = {
    "database": (
        sa.OperationalError,
        sa.InterfaceError,
        sa.TimeoutError,  # no pooled connection came free in time
        PsycopgOperationalError,
    ),
    "broker": (BrokerError, RedisConnectionError, RedisTimeoutError, ConnectionError),
}


def unavailable(what: str) -> Problem:
    """The 503 for an unreachable broker or idempotency store: nothing was accepted."""
    return Problem(
        503,
        "broker-unavailable",
        f"The {what} is unreachable; nothing was accepted. Retry later.",
        headers={"Retry-After": "5"},
    )


def url_not_allowed(loc: list[str], reason: str) -> Problem:
    """The 422 for a webhook or push URL whose host is, or resolves to, an address Clarion
    does not call (loopback, private, link-local, ...): SSRF protection, see
    docs/channels/outbound.md."""
    field = loc[-1]
    return Problem(
        422,
        "url-not-allowed",
        f"{field}: Clarion only calls public internet addresses ({reason}).",
        errors=[{"loc": loc, "msg": reason, "type": "url_not_allowed"}],
    )


def template_problem(exc: TemplateError, status: int = 422) -> Problem:
    """The problem for a template that does not compile or render: its ``type`` says what
    (unknown-template, template-syntax, template-unsafe, template-undefined,
    template-render) and its members where (channel, locale, field, line, variable)."""
    slug = "unknown-template" if exc.kind == "unknown" else f"template-{exc.kind}"
    return Problem(status, slug, str(exc), **exc.details())


def check_template(runtime, key: str, data: dict | None) -> None:
    """422 unless the template exists and renders with ``data`` in the default locale on
    each of its channels; read from the process's cache of active versions, not the
    database."""
    try:
        runtime.templates.validate(key, data)
    except TemplateError as exc:
        raise template_problem(exc) from None
    except TemplatesUnavailable:
        raise unavailable("template store") from None


def problem_response(
    status: int,
    slug: str | None,
    detail: str | None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:clarion:problem:{slug}" if slug else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


# Bounds on what a validation error says, each (a message, a part of a location, the
# list): a message can quote the input, and a location can be a key of the input.
MAX_ERROR_TEXT, MAX_ERRORS = 200, 50


def _bounded(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if len(value) > MAX_ERROR_TEXT:
        value = value[: MAX_ERROR_TEXT - 3] + "..."
    return storable.escape(value)  # a lone surrogate would not even encode as UTF-8


def _clean_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The offending input can be large or secret: name where and what, not the value.
    return [
        {
            "loc": [_bounded(part) for part in e.get("loc", ())],
            "msg": _bounded(e.get("msg")),
            "type": e.get("type"),
        }
        for e in errors[:MAX_ERRORS]
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.slug,
            exc.detail,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_errors(list(exc.errors()))
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(
                400,
                "malformed-json",
                "The request body is not valid JSON.",
                instance=request.url.path,
            )
        return problem_response(
            422,
            "validation-error",
            "The request does not match the schema.",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            exc.status_code,
            None,
            str(exc.detail) if exc.detail else None,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    async def _outage(request: Request, exc: Exception) -> JSONResponse:
        what = next(name for name, kinds in OUTAGES.items() if isinstance(exc, kinds))
        # The class only: a driver's message may name hosts and users.
        log.warning(
            "%s unreachable on %s %s (%s)",
            what,
            request.method,
            request.url.path,
            type(exc).__name__,
        )
        slug = "database-unavailable" if what == "database" else "broker-unavailable"
        return problem_response(
            503,
            slug,
            f"The {what} is unreachable. Retry later.",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )

    for kinds in OUTAGES.values():
        for kind in kinds:
            app.add_exception_handler(kind, _outage)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal-error", "Something went wrong on our side.")
