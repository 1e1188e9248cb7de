"""Templates, managed by operators (admin API keys): versions, activation, preview.

A version is never edited: saving makes version n+1 of its (key, channel, locale), active
unless ``active: false``. The active version cannot be deleted (activate or deactivate
first); deactivating leaves the slot to the locale fallback and the built-in templates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, TypeAlias

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from clarion.api.deps import Admin, RuntimeDep, SessionDep
from clarion.api.problems import Problem, Responses, template_problem
from clarion.channels import registry
from clarion.core import template_store
from clarion.core.schemas import JsonObject, Key, Locale, UTCDateTime
from clarion.core.storable import BigInt, StorableModel
from clarion.core.templates import (
    TemplateError,
    TemplateVersion,
    check_version,
    render,
    resolve,
)
from clarion.db import templates as templates_db

router = APIRouter(prefix="/v1/templates", tags=["templates"])

KeyPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
if TYPE_CHECKING:  # Literals of the registry's channels, built at import time
    ChannelKey: TypeAlias = str
    TemplateChannel: TypeAlias = str
else:
    ChannelKey = registry.literal(*registry.names())
    TemplateChannel = registry.literal("*", *registry.names())
Subject = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Body = Annotated[str, StringConstraints(max_length=100_000)]
NOT_FOUND: Responses = {404: {"description": "No such template or version (problem+json)"}}
INVALID: Responses = {
    422: {"description": "Does not compile or reaches for internals: field and line"}
}


class TemplateCreate(StorableModel):
    """A new version of (key, channel, locale)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "key": "order_shipped",
                    "channel": "*",
                    "locale": "ru",
                    "subject": "Заказ {{ order }} отправлен",
                    "text": "Посылка придёт {{ eta }}.",
                    "html": "<p>Посылка придёт <b>{{ eta }}</b>.</p>",
                }
            ]
        },
    )

    key: Key
    channel: TemplateChannel = Field(default="*", description='"*": every channel.')
    locale: Locale = Field(examples=["en", "ru", "ru-RU"])
    subject: Subject = Field(description="Email subject; push and in-app title. One line.")
    html: Body | None = Field(default=None, description="Email HTML (autoescaped).")
    text: Body | None = Field(default=None, description="Plain text: email, push, in-app body.")
    active: bool = Field(default=True, description="false: stored, not used until activated.")


class TemplatePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int | None = Field(description="null for a built-in version.")
    key: str
    channel: str
    locale: str
    version: int = Field(description="0 for a built-in version.")
    subject: str | None
    html: str | None
    text: str | None
    active: bool = Field(description="Used for its (channel, locale) now.")
    builtin: bool
    created_at: UTCDateTime | None
    created_by: str | None


class ActivePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    channel: str
    locale: str
    id: int | None
    version: int
    builtin: bool


class TemplateSummary(BaseModel):
    key: str
    builtin: bool = Field(description="Clarion ships a version of this key.")
    active: list[ActivePublic]


class TemplateHistory(BaseModel):
    key: str
    versions: list[TemplatePublic]


class Draft(StorableModel):
    model_config = ConfigDict(extra="forbid")

    subject: Subject
    html: Body | None = None
    text: Body | None = None


class PreviewRequest(StorableModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"channel": "email", "locale": "ru-RU", "data": {"order": "A-17", "eta": "завтра"}}
            ]
        },
    )

    channel: ChannelKey = registry.inbox()
    locale: Locale | None = Field(default=None, description="Default: CLARION_DEFAULT_LOCALE.")
    data: JsonObject = Field(default_factory=dict)
    version_id: BigInt | None = Field(default=None, description="Preview this stored version.")
    draft: Draft | None = Field(default=None, description="Preview unsaved sources instead.")


class PreviewPublic(BaseModel):
    key: str
    channel: str
    locale: str
    version: ActivePublic | None = Field(description="The version rendered (null: a draft).")
    subject: str | None
    html: str | None
    text: str | None


def _actor(admin) -> str:
    return f"api-key:{admin.name}#{admin.key_id}"


def _row(session, key: str, version_id: int):
    row = templates_db.get(session=session, key=key, id=version_id)
    if row is None:
        raise Problem(404, "not-found", f"Template {key!r} has no version {version_id}.")
    return row


@router.post(
    "",
    status_code=201,
    response_model=TemplatePublic,
    summary="Save a new version (active unless active=false)",
    responses={**INVALID, 409: {"description": "Concurrent saves; retry"}},
)
def create_version(body: TemplateCreate, runtime: RuntimeDep, admin: Admin) -> TemplatePublic:
    try:
        saved = template_store.save_version(
            sessions=runtime.sessions, **body.model_dump(), created_by=_actor(admin)
        )
    except TemplateError as exc:
        raise template_problem(exc) from None
    except template_store.VersionConflict as exc:
        raise Problem(409, "template-conflict", str(exc), headers={"Retry-After": "1"}) from None
    runtime.templates.invalidate()
    return TemplatePublic.model_validate(saved)


@router.get("", response_model=list[TemplateSummary], summary="Every key, its active versions")
def list_templates(session: SessionDep, admin: Admin) -> list[TemplateSummary]:
    return [
        TemplateSummary(
            key=s.key,
            builtin=s.builtin,
            active=[ActivePublic.model_validate(v) for v in s.active],
        )
        for s in template_store.summaries(session=session)
    ]


@router.get(
    "/{key}", response_model=TemplateHistory, summary="Every version of a key", responses=NOT_FOUND
)
def get_template(key: KeyPath, session: SessionDep, admin: Admin) -> TemplateHistory:
    versions = template_store.history(session=session, key=key)
    if not versions:
        raise Problem(404, "not-found", f"No template {key!r}.")
    return TemplateHistory(key=key, versions=[TemplatePublic.model_validate(v) for v in versions])


def _switch(key: str, version_id: int, on: bool, runtime, session) -> TemplatePublic:
    row = _row(session, key, version_id)
    if on:
        templates_db.activate(session=session, row=row)
    else:
        templates_db.deactivate(session=session, row=row)
    public = TemplatePublic.model_validate(TemplateVersion.of(row))
    session.commit()
    runtime.templates.invalidate()
    return public


@router.post(
    "/{key}/versions/{version_id}/activate",
    response_model=TemplatePublic,
    summary="Make this version the active one of its channel and locale",
    responses=NOT_FOUND,
)
def activate(
    key: KeyPath, version_id: BigInt, runtime: RuntimeDep, session: SessionDep, admin: Admin
) -> TemplatePublic:
    return _switch(key, version_id, True, runtime, session)


@router.post(
    "/{key}/versions/{version_id}/deactivate",
    response_model=TemplatePublic,
    summary="Stop using this version (the fallback or built-in takes over)",
    responses=NOT_FOUND,
)
def deactivate(
    key: KeyPath, version_id: BigInt, runtime: RuntimeDep, session: SessionDep, admin: Admin
) -> TemplatePublic:
    return _switch(key, version_id, False, runtime, session)


@router.delete(
    "/{key}/versions/{version_id}",
    status_code=204,
    summary="Delete an inactive stored version",
    responses={**NOT_FOUND, 409: {"description": "The version is active: deactivate it first"}},
)
def delete_version(key: KeyPath, version_id: BigInt, session: SessionDep, admin: Admin) -> Response:
    row = _row(session, key, version_id)
    if row.active:
        raise Problem(
            409,
            "template-version-active",
            "The active version cannot be deleted: activate another version or deactivate "
            "this one first.",
        )
    templates_db.delete(session=session, row=row)
    session.commit()
    return Response(status_code=204)


@router.post(
    "/{key}/preview",
    response_model=PreviewPublic,
    summary="Render a template with sample data, as a recipient in this locale would get it",
    responses={
        **NOT_FOUND,
        422: {"description": "Missing variable, sandbox violation or syntax: where (field, line)"},
    },
)
def preview(
    key: KeyPath, body: PreviewRequest, runtime: RuntimeDep, session: SessionDep, admin: Admin
) -> PreviewPublic:
    default = runtime.settings.default_locale
    locale = body.locale or default
    version = _previewed(key, body, session, locale, default)
    try:
        rendered = render(version, body.data)
    except TemplateError as exc:
        exc.channel, exc.locale = version.channel, version.locale
        raise template_problem(exc) from None
    return PreviewPublic(
        key=key,
        channel=body.channel,
        locale=locale,
        version=None if body.draft else ActivePublic.model_validate(version),
        **rendered.as_dict(),
    )


def _previewed(key: str, body: PreviewRequest, session, locale: str, default: str):
    if body.draft is not None:
        try:
            check_version(**body.draft.model_dump())
        except TemplateError as exc:
            raise template_problem(exc) from None
        return TemplateVersion(key=key, channel="*", locale=locale, **body.draft.model_dump())
    if body.version_id is not None:
        return TemplateVersion.of(_row(session, key, body.version_id))
    version = resolve(
        session=session, key=key, channel=body.channel, locale=locale, default_locale=default
    )
    if version is None:
        raise Problem(404, "not-found", f"No template {key!r} for {body.channel} in {locale}.")
    return version
