"""Webhook endpoints, managed by operators (admin API keys).

An endpoint receives a signed POST for every notification in its categories (all of them
when its list is empty). Its secret is shown twice only: when the endpoint is created and
when the secret is rotated.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    computed_field,
    field_validator,
)
from sqlalchemy.orm import Session

from clarion.api.deps import Admin, RuntimeDep, SessionDep
from clarion.api.problems import Problem, Responses, url_not_allowed
from clarion.channels.outbound import AddressNotAllowed, OutboundPolicy
from clarion.channels.webhook.sender import new_secret
from clarion.core.schemas import Slug, UTCDateTime
from clarion.core.storable import StorableModel
from clarion.db import webhooks
from clarion.db.models import WebhookEndpoint
from clarion.ids import utcnow

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Description = Annotated[str, StringConstraints(max_length=255)]
Categories = Annotated[list[Slug], Field(max_length=100)]
NOT_FOUND: Responses = {404: {"description": "No such endpoint (problem+json)"}}


def _check_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


def _check_categories(value: list[str] | None) -> list[str] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("categories must not repeat")
    return value


class WebhookCreate(StorableModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example/clarion",
                    "categories": ["links", "system"],
                    "description": "Ops tooling",
                }
            ]
        },
    )

    url: Url
    categories: Categories = Field(
        default_factory=list, description="Categories to receive; empty: every category."
    )
    description: Description | None = None

    _url = field_validator("url")(_check_url)
    _categories = field_validator("categories")(_check_categories)


class WebhookUpdate(StorableModel):
    """Only the fields given change; ``active: true`` re-enables a deactivated endpoint."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"active": True}]})

    url: Url | None = None
    categories: Categories | None = None
    description: Description | None = Field(default=None, description="null clears it.")
    active: bool | None = None

    @field_validator("url", "categories", "active")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Left out means "unchanged"; an explicit null would mean nothing for these.
        if value is None:
            raise ValueError("may be left out, but not null")
        return value

    _url = field_validator("url")(_check_url)
    _categories = field_validator("categories")(_check_categories)

    def changes(self, row: WebhookEndpoint, now: datetime) -> dict[str, Any]:
        """The column changes this patch makes to ``row``."""
        changes = self.model_dump(exclude_unset=True, exclude={"active"})
        if self.active is not None and self.active != (row.deactivated_at is None):
            changes["deactivated_at"] = None if self.active else now
            # The last error explains a deactivation; a re-activated endpoint starts clean.
            changes["last_error"] = None
        return changes


class WebhookPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    categories: list[str]
    description: str | None
    deactivated_at: UTCDateTime | None
    last_error: str | None = Field(description="Why the endpoint was deactivated, if it was.")
    created_at: UTCDateTime
    updated_at: UTCDateTime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def active(self) -> bool:
        """Whether notifications are sent to it (false once its receiver answered 410)."""
        return self.deactivated_at is None


class WebhookWithSecret(WebhookPublic):
    secret: str = Field(description="Standard Webhooks secret (whsec_…): verify signatures.")


def _public_url(runtime, url: str | None) -> None:
    """422 url-not-allowed when the URL's host is, or resolves to, a non-public address."""
    if url is None:
        return
    try:
        OutboundPolicy.from_settings(runtime.settings).check_url(url)
    except AddressNotAllowed as exc:
        raise url_not_allowed(["body", "url"], str(exc)) from None


def _not_found() -> Problem:
    return Problem(404, "not-found", "No such webhook endpoint.")


def _locked(session: Session, webhook_id: uuid.UUID) -> WebhookEndpoint:
    row = webhooks.get(session=session, id=webhook_id, for_update=True)
    if row is None:
        raise _not_found()
    return row


@router.post(
    "",
    status_code=201,
    response_model=WebhookWithSecret,
    summary="Register an endpoint (the answer carries its secret)",
    responses={409: {"description": "CLARION_WEBHOOK_MAX_ENDPOINTS are registered already"}},
)
def create_webhook(
    body: WebhookCreate, session: SessionDep, runtime: RuntimeDep, admin: Admin
) -> WebhookWithSecret:
    _public_url(runtime, body.url)
    limit = runtime.settings.webhook_max_endpoints
    with session.begin():
        if webhooks.count(session=session) >= limit:
            raise Problem(
                409,
                "webhook-limit-reached",
                f"At most {limit} webhook endpoints may be registered "
                "(CLARION_WEBHOOK_MAX_ENDPOINTS); delete one first.",
            )
        row = webhooks.create(
            session=session,
            url=body.url,
            secret=new_secret(),
            categories=body.categories,
            description=body.description,
            now=utcnow(),
        )
    return WebhookWithSecret.model_validate(row)


@router.get("", response_model=list[WebhookPublic], summary="List endpoints")
def list_webhooks(session: SessionDep, admin: Admin) -> list[WebhookPublic]:
    return [WebhookPublic.model_validate(row) for row in webhooks.list_all(session=session)]


@router.get(
    "/{webhook_id}", response_model=WebhookPublic, summary="An endpoint", responses=NOT_FOUND
)
def get_webhook(webhook_id: uuid.UUID, session: SessionDep, admin: Admin) -> WebhookPublic:
    row = webhooks.get(session=session, id=webhook_id)
    if row is None:
        raise _not_found()
    return WebhookPublic.model_validate(row)


@router.patch(
    "/{webhook_id}",
    response_model=WebhookPublic,
    summary="Change, deactivate or re-activate an endpoint",
    responses=NOT_FOUND,
)
def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookUpdate,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: Admin,
) -> WebhookPublic:
    _public_url(runtime, body.url)
    now = utcnow()
    with session.begin():
        row = _locked(session, webhook_id)
        webhooks.change(session=session, row=row, changes=body.changes(row, now), now=now)
    return WebhookPublic.model_validate(row)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookWithSecret,
    summary="Replace the secret; sends from now on are signed with the new one",
    responses=NOT_FOUND,
)
def rotate_secret(webhook_id: uuid.UUID, session: SessionDep, admin: Admin) -> WebhookWithSecret:
    with session.begin():
        row = _locked(session, webhook_id)
        webhooks.change(session=session, row=row, changes={"secret": new_secret()}, now=utcnow())
    return WebhookWithSecret.model_validate(row)


@router.delete("/{webhook_id}", status_code=204, summary="Delete an endpoint", responses=NOT_FOUND)
def delete_webhook(webhook_id: uuid.UUID, session: SessionDep, admin: Admin) -> Response:
    with session.begin():
        found = webhooks.remove(session=session, id=webhook_id)
    if not found:
        raise _not_found()
    return Response(status_code=204)
