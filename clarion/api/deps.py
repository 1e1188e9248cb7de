"""FastAPI dependencies as ``Annotated`` aliases: the runtime, a session, the caller."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from clarion.api.coalesce import Coalescer
from clarion.api.problems import Problem
from clarion.core.auth import (
    AuthError,
    Principal,
    verify_push_action_token,
    verify_user_token,
)
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


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_coalescer(request: Request) -> Coalescer:
    return request.app.state.coalescer


CoalescerDep = Annotated[Coalescer, Depends(get_coalescer)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers=_CHALLENGE)


def _principal(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_api_key)],
) -> Principal:
    if credentials is None:
        raise _unauthorized("An API key is required: Authorization: Bearer <key>.")
    try:
        return runtime.api_keys.verify(credentials.credentials)
    except AuthError:
        raise _unauthorized("The API key is not valid.") from None


def require_scope(scope: str):
    def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if not principal.allows(scope):
            raise Problem(403, "forbidden", f"This API key lacks the {scope!r} scope.")
        return principal

    return check


Producer = Annotated[Principal, Depends(require_scope("notify"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]


def current_subscriber(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_user_token)],
) -> str:
    if credentials is None:
        raise _unauthorized("A user token is required: Authorization: Bearer <token>.")
    try:
        return verify_user_token(runtime.settings, credentials.credentials)
    except AuthError:
        raise _unauthorized("The user token is not valid.") from None


CurrentSubscriber = Annotated[str, Depends(current_subscriber)]


@dataclass(frozen=True)
class Caller:
    """Who acts on one notification: its recipient with their user token, or through the
    token of a push of that notification (``push``: may mark it read or click an action,
    nothing else)."""

    subscriber: str
    push: bool = False


def notification_caller(
    notification_id: uuid.UUID,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_user_token)],
) -> Caller:
    """The user token's subscriber, else the subscriber of a push action token issued for
    this very notification (the service worker's)."""
    if credentials is None:
        raise _unauthorized("A user token is required: Authorization: Bearer <token>.")
    token = credentials.credentials
    try:
        return Caller(verify_user_token(runtime.settings, token))
    except AuthError:
        pass
    try:
        subscriber, nid = verify_push_action_token(runtime.settings, token)
    except AuthError:
        raise _unauthorized("The user token is not valid.") from None
    if nid != str(notification_id):
        raise _unauthorized("This token is for another notification.")
    return Caller(subscriber, push=True)


NotificationCaller = Annotated[Caller, Depends(notification_caller)]
