"""FastAPI dependencies as ``Annotated`` aliases: the runtime, a session, the caller."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from clarion.api.coalesce import Coalescer
from clarion.api.problems import Problem
from clarion.api.ratelimit import (
    API_KEY,
    USER,
    FailureGateDep,
    RateLimiter,
    client_address,
)
from clarion.core import storable
from clarion.core.auth import (
    AuthError,
    Principal,
    verify_push_action_token,
    verify_user_token,
)
from clarion.core.ratelimits import Check
from clarion.runtime import Runtime

_api_key = HTTPBearer(
    scheme_name="ApiKey",
    description="A producer API key (`clarion keys create`).",
    auto_error=False,
)
_user_token = HTTPBearer(
    scheme_name="UserToken",
    description="A user JWT whose `sub` is the subscriber id.",
    auto_error=False,
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def storable_params(request: Request) -> None:
    """Refuse (422) a path or query parameter the database could not store (a NUL): every
    route gets this check from the app, so no parameter has to remember it. Bodies are
    checked by their models (``clarion.core.storable.StorableModel``).

    This one and the getters below are ``async`` because they never block: FastAPI runs a
    plain ``def`` dependency on the thread pool, a hop per dependency per request."""
    params = [("path", k, v) for k, v in request.path_params.items()]
    params += [("query", k, v) for k, v in request.query_params.multi_items()]
    errors = [
        {"loc": (where, name), "msg": problem, "type": "unstorable"}
        for where, name, value in params
        if isinstance(value, str) and (problem := storable.find(value)) is not None
    ]
    if errors:
        raise RequestValidationError(errors)


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_coalescer(request: Request) -> Coalescer:
    return request.app.state.coalescer


CoalescerDep = Annotated[Coalescer, Depends(get_coalescer)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers=_CHALLENGE)


def _principal(
    request: Request,
    runtime: RuntimeDep,
    gate: FailureGateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_api_key)],
) -> Principal:
    if credentials is None:
        raise _unauthorized("An API key is required: Authorization: Bearer <key>.")
    address = client_address(request)
    gate.check(address)
    try:
        return runtime.api_keys.verify(credentials.credentials)
    except AuthError:
        gate.failed(address)
        raise _unauthorized("The API key is not valid.") from None


def key_rate(runtime: Runtime, principal: Principal) -> Check:
    """The key's request rate: its own limit, else ``api_key_rate_limit``."""
    limit = principal.rate_limit or runtime.settings.api_key_rate_limit
    return Check(limit, API_KEY, (str(principal.key_id),))


def authorize(
    principal: Principal,
    scope: str,
    runtime: Runtime | None = None,
    request: Request | None = None,
) -> Principal:
    """403 unless the key has the scope, 429 over its rate limit (counted when ``runtime``
    is given). Every producer call goes through here, the REST routes and the MCP tools
    alike: the one place for per-key checks and limits (but the send route, which counts
    the rate with the quota in one round trip: ``notifications.accept``)."""
    if not principal.allows(scope):
        raise Problem(403, "forbidden", f"This API key lacks the {scope!r} scope.")
    if runtime is not None:
        RateLimiter(runtime.limits).check_all(key_rate(runtime, principal), request=request)
    return principal


def require_scope(scope: str, counted: bool = True):
    """The key with ``scope``; its rate counted here unless the route counts it itself."""

    def checked(request, runtime, gate, credentials) -> Principal:
        principal = _principal(request, runtime, gate, credentials)
        if not counted:
            return authorize(principal, scope)
        return authorize(principal, scope, runtime, request)

    # One dependency, not the key's lookup and the checks as two, and on the event loop
    # when it has nothing to wait for (a key verified lately, nothing to count here):
    # FastAPI runs a plain ``def`` dependency on the thread pool, a hop per request.
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_api_key)],
    ) -> Principal:
        # The app's state read here, not as dependencies: each costs FastAPI's solving.
        runtime, gate = request.app.state.runtime, request.app.state.failure_gate
        known = (
            None
            if counted or credentials is None
            else runtime.api_keys.known(credentials.credentials)
        )
        if known is None:
            return await run_in_threadpool(checked, request, runtime, gate, credentials)
        gate.check(client_address(request))
        return authorize(known, scope)

    return check


Producer = Annotated[Principal, Depends(require_scope("notify"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]
# The send route: the rate is counted with the daily quota, in one round trip.
Sender = Annotated[Principal, Depends(require_scope("notify", counted=False))]


def _user_limit(runtime: Runtime, subscriber: str, request: Request) -> str:
    """429 when the end user is over ``user_rate_limit`` (every route of a user token)."""
    limiter = RateLimiter(runtime.limits)
    limiter.check(runtime.settings.user_rate_limit, USER, subscriber, request=request)
    return subscriber


def current_subscriber(
    request: Request,
    runtime: RuntimeDep,
    gate: FailureGateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_user_token)],
) -> str:
    if credentials is None:
        raise _unauthorized("A user token is required: Authorization: Bearer <token>.")
    address = client_address(request)
    gate.check(address)
    try:
        subscriber = verify_user_token(runtime.settings, credentials.credentials)
    except AuthError:
        gate.failed(address)
        raise _unauthorized("The user token is not valid.") from None
    return _user_limit(runtime, subscriber, request)


CurrentSubscriber = Annotated[str, Depends(current_subscriber)]


def requires_bearer(dependant) -> bool:
    """Whether a route (its FastAPI ``dependant``) takes an API key or a user token."""
    return any(
        dep.call is _api_key or dep.call is _user_token or requires_bearer(dep)
        for dep in dependant.dependencies
    )


@dataclass(frozen=True)
class Caller:
    """Who acts on one notification: its recipient with their user token, or through the
    token of a push of that notification (``push``: may mark it read or click an action,
    nothing else)."""

    subscriber: str
    push: bool = False


def notification_caller(
    notification_id: uuid.UUID,
    request: Request,
    runtime: RuntimeDep,
    gate: FailureGateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_user_token)],
) -> Caller:
    """The user token's subscriber, else the subscriber of a push action token issued for
    this very notification (the service worker's)."""
    if credentials is None:
        raise _unauthorized("A user token is required: Authorization: Bearer <token>.")
    address = client_address(request)
    gate.check(address)
    token = credentials.credentials
    try:
        return Caller(_user_limit(runtime, verify_user_token(runtime.settings, token), request))
    except AuthError:
        pass
    try:
        subscriber, nid = verify_push_action_token(runtime.settings, token)
    except AuthError:
        gate.failed(address)
        raise _unauthorized("The user token is not valid.") from None
    if nid != str(notification_id):
        raise _unauthorized("This token is for another notification.")
    return Caller(_user_limit(runtime, subscriber, request), push=True)


NotificationCaller = Annotated[Caller, Depends(notification_caller)]
