"""Subscribers' addresses on the channels that need one (a chat URL, a phone number).

Which channels take an address, and how each is validated, comes from the registry
(``ChannelSpec.address``). Producers set them under ``/v1/subscribers/{id}/addresses``,
a signed-in subscriber under ``/v1/me/addresses``. Addresses are sealed at rest
(clarion.channels.addresses) and only ever shown back masked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from clarion.api.deps import CurrentSubscriber, Producer, RuntimeDep, SessionDep
from clarion.api.problems import Problem, url_not_allowed
from clarion.channels import addresses as sealing
from clarion.channels import registry
from clarion.channels.outbound import AddressNotAllowed
from clarion.core.schemas import UTCDateTime
from clarion.db import addresses, subscribers
from clarion.ids import utcnow
from clarion.settings import Settings

router = APIRouter(tags=["subscribers"])
SubscriberPath = Annotated[str, Path(min_length=1, max_length=255)]
if TYPE_CHECKING:  # a Literal of the registry's address channels, built at import time
    AddressChannel: TypeAlias = str
else:
    AddressChannel = registry.literal(*registry.address_channels())
ChannelPath = Annotated[
    AddressChannel, Path(description="A channel that sends to a subscriber address.")
]


class AddressSet(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"address": "slack://T000/B000/XXXXXXXXXXXXXXXX"},
                {"address": "+33 6 12 34 56 78"},
            ]
        },
    )

    address: str = Field(
        min_length=1, max_length=2048, description="The channel's address (write-only)."
    )


class AddressPublic(BaseModel):
    channel: str
    # Masked: the address itself is never shown back.
    address: str
    active: bool
    last_error: str | None
    created_at: UTCDateTime
    updated_at: UTCDateTime


def _public(row) -> AddressPublic:
    return AddressPublic(
        channel=row.channel,
        address=row.display,
        active=row.deactivated_at is None,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _put(session: Session, settings: Settings, who: str, channel: str, body: AddressSet):
    spec = registry.spec(channel)
    check = spec.address_check() if spec else None
    if check is None:
        raise Problem(404, "not-found", "This channel takes no subscriber address.")
    try:
        value, display = check(body.address, settings)
    except AddressNotAllowed as exc:
        raise url_not_allowed(["body", "address"], str(exc)) from None
    except ValueError as exc:
        raise Problem(
            422,
            "validation-error",
            f"address: {exc}",
            errors=[{"loc": ["body", "address"], "msg": str(exc), "type": "value_error"}],
        ) from None
    now = utcnow()
    with session.begin():
        subscribers.ensure(session=session, ids=[who], now=now)
        row = addresses.put(
            session=session,
            subscriber_id=who,
            channel=channel,
            sealed=sealing.seal(settings, value),
            display=display,
            now=now,
        )
        return _public(row)


def _get(session: Session, who: str, channel: str) -> AddressPublic:
    row = addresses.get(session=session, subscriber_id=who, channel=channel)
    if row is None:
        raise Problem(404, "not-found", "No address on this channel.")
    return _public(row)


def _delete(session: Session, who: str, channel: str) -> Response:
    with session.begin():
        found = addresses.remove(session=session, subscriber_id=who, channel=channel)
    if not found:
        raise Problem(404, "not-found", "No address on this channel.")
    return Response(status_code=204)


PUT_DOC: dict[str, Any] = {
    "response_model": AddressPublic,
    "responses": {422: {"description": "Not a valid address, or one Clarion does not call"}},
}


@router.put(
    "/v1/subscribers/{subscriber_id}/addresses/{channel}",
    summary="Set a subscriber's address on a channel (chat URL, phone number)",
    **PUT_DOC,
)
def put_address(
    subscriber_id: SubscriberPath,
    channel: ChannelPath,
    body: AddressSet,
    session: SessionDep,
    runtime: RuntimeDep,
    producer: Producer,
) -> AddressPublic:
    return _put(session, runtime.settings, subscriber_id, channel, body)


@router.get(
    "/v1/subscribers/{subscriber_id}/addresses/{channel}",
    response_model=AddressPublic,
    summary="A subscriber's address on a channel, masked",
)
def get_address(
    subscriber_id: SubscriberPath, channel: ChannelPath, session: SessionDep, producer: Producer
) -> AddressPublic:
    return _get(session, subscriber_id, channel)


@router.delete(
    "/v1/subscribers/{subscriber_id}/addresses/{channel}",
    status_code=204,
    summary="Remove a subscriber's address on a channel",
)
def delete_address(
    subscriber_id: SubscriberPath, channel: ChannelPath, session: SessionDep, producer: Producer
) -> Response:
    return _delete(session, subscriber_id, channel)


@router.put(
    "/v1/me/addresses/{channel}", summary="Set my address on a channel (masked back)", **PUT_DOC
)
def put_my_address(
    channel: ChannelPath,
    body: AddressSet,
    session: SessionDep,
    runtime: RuntimeDep,
    me: CurrentSubscriber,
) -> AddressPublic:
    return _put(session, runtime.settings, me, channel, body)


@router.get(
    "/v1/me/addresses/{channel}", response_model=AddressPublic, summary="My address, masked"
)
def get_my_address(channel: ChannelPath, session: SessionDep, me: CurrentSubscriber):
    return _get(session, me, channel)


@router.delete("/v1/me/addresses/{channel}", status_code=204, summary="Remove my address")
def delete_my_address(channel: ChannelPath, session: SessionDep, me: CurrentSubscriber):
    return _delete(session, me, channel)
