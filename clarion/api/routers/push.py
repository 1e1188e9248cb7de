"""Web push: the VAPID public key browsers subscribe with, and each user's subscriptions.

A site's service worker calls ``pushManager.subscribe({applicationServerKey})`` with the
key from ``GET /v1/push/vapid-public-key`` and posts the resulting subscription JSON to
``POST /v1/me/push-subscriptions``. Every browser or device is one subscription.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from clarion.api.deps import CurrentSubscriber, RuntimeDep, SessionDep
from clarion.api.problems import Problem, url_not_allowed
from clarion.channels import ChannelConfigError
from clarion.channels import push as push_channel
from clarion.channels.outbound import AddressNotAllowed, OutboundPolicy
from clarion.channels.push import sender as wp
from clarion.core.schemas import UTCDateTime
from clarion.core.storable import StorableModel
from clarion.db import push, subscribers
from clarion.ids import utcnow

router = APIRouter(tags=["push"])

Endpoint = Annotated[
    str,
    StringConstraints(min_length=1, max_length=wp.MAX_ENDPOINT),
    # The shape here; whether plain http is allowed is the deployment's call (below).
    AfterValidator(lambda url: wp.check_endpoint(url, allow_http=True)),
]


class PushKeys(StorableModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: Annotated[str, StringConstraints(max_length=128), AfterValidator(wp.check_p256dh)]
    auth: Annotated[str, StringConstraints(max_length=64), AfterValidator(wp.check_auth)]


class PushSubscriptionCreate(StorableModel):
    """What ``PushSubscription.toJSON()`` gives in the browser, plus an optional label."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "endpoint": "https://fcm.googleapis.com/fcm/send/dpH5lCsTSSM:APA91bH…",
                    "keys": {
                        "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A"
                        "8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                        "auth": "tBHItJI5svbpez7KI4CCXg",
                    },
                    "user_agent": "Firefox on Android",
                }
            ]
        },
    )

    endpoint: Endpoint
    keys: PushKeys
    # The browser also sends expirationTime; Clarion relies on 404/410 instead.
    expiration_time: float | None = Field(default=None, alias="expirationTime")
    user_agent: Annotated[str, StringConstraints(max_length=512)] | None = None


class PushSubscriptionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    endpoint: str
    user_agent: str | None
    created_at: UTCDateTime


class VapidPublicKey(BaseModel):
    public_key: str


def _public(row) -> PushSubscriptionPublic:
    return PushSubscriptionPublic(
        id=str(row.id), endpoint=row.endpoint, user_agent=row.user_agent, created_at=row.created_at
    )


@router.get(
    "/v1/push/vapid-public-key",
    response_model=VapidPublicKey,
    summary="The VAPID public key to subscribe browsers with (applicationServerKey)",
    responses={404: {"description": "Web push is not configured"}},
    # Public: "{}" is OpenAPI for "no authentication".
    openapi_extra={"security": [{}]},
)
def vapid_public_key(runtime: RuntimeDep) -> VapidPublicKey:
    try:
        channel = runtime.channels.get(push_channel.CHANNEL.key)
    except ChannelConfigError:
        raise Problem(
            503, "push-misconfigured", "Web push is misconfigured on the server."
        ) from None
    if isinstance(channel, str):
        raise Problem(404, "push-not-configured", "Web push is not configured on this server.")
    return VapidPublicKey(public_key=channel.public_key)


@router.post(
    "/v1/me/push-subscriptions",
    status_code=201,
    response_model=PushSubscriptionPublic,
    summary="Register this browser for web push (201 new, 200 already registered)",
    description="A subscriber keeps at most `CLARION_PUSH_MAX_SUBSCRIPTIONS_PER_USER` "
    "(default 10) browsers: registering one more removes the one registered or refreshed "
    "longest ago.",
    responses={
        200: {"description": "The subscription was already registered; updated"},
        409: {"description": "Another user registered this endpoint (problem+json)"},
    },
)
def subscribe(
    body: PushSubscriptionCreate,
    response: Response,
    session: SessionDep,
    runtime: RuntimeDep,
    me: CurrentSubscriber,
) -> PushSubscriptionPublic:
    try:
        wp.check_endpoint(body.endpoint, allow_http=runtime.settings.push_allow_http_endpoints)
    except ValueError as exc:
        raise Problem(
            422,
            "validation-error",
            "The request does not match the schema.",
            errors=[{"loc": ["body", "endpoint"], "msg": str(exc), "type": "value_error"}],
        ) from None
    try:  # any end user registers these: never let one point the worker inside
        OutboundPolicy.from_settings(runtime.settings).check_url(body.endpoint)
    except AddressNotAllowed as exc:
        raise url_not_allowed(["body", "endpoint"], str(exc)) from None
    row, created = _register(session, me, body, runtime.settings.push_max_subscriptions_per_user)
    if not created:
        response.status_code = 200
    return _public(row)


def _register(session, me: str, body: PushSubscriptionCreate, keep: int):
    now = utcnow()
    try:
        with session.begin():
            subscribers.ensure(session=session, ids=[me], now=now)
            registered = push.register(
                session=session,
                subscriber_id=me,
                endpoint=body.endpoint,
                p256dh=body.keys.p256dh,
                auth=body.keys.auth,
                user_agent=body.user_agent,
                now=now,
            )
            # One more browser than allowed replaces the one registered longest ago.
            push.cap(session=session, subscriber_id=me, keep=keep)
            return registered
    except push.EndpointTaken:
        raise Problem(
            409,
            "push-endpoint-taken",
            "Another user registered this push endpoint. Unsubscribe this browser "
            "(pushSubscription.unsubscribe()) and subscribe again for a new endpoint.",
        ) from None


@router.get(
    "/v1/me/push-subscriptions",
    response_model=list[PushSubscriptionPublic],
    summary="My active push subscriptions (browsers and devices)",
)
def list_subscriptions(session: SessionDep, me: CurrentSubscriber) -> list[PushSubscriptionPublic]:
    return [_public(r) for r in push.list_active(session=session, subscriber_id=me)]


@router.delete(
    "/v1/me/push-subscriptions",
    status_code=204,
    summary="Unregister a browser (after pushSubscription.unsubscribe())",
)
def unsubscribe(
    endpoint: Annotated[str, Query(min_length=1, max_length=wp.MAX_ENDPOINT)],
    session: SessionDep,
    me: CurrentSubscriber,
) -> Response:
    with session.begin():
        found = push.remove(session=session, subscriber_id=me, endpoint=endpoint)
    if not found:
        raise Problem(404, "not-found", "No such push subscription of yours.")
    return Response(status_code=204)
