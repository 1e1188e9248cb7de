"""API keys for operators (admin scope): list them with their limits, change a key's own
rate limit and daily quota (as ``clarion keys limits``). Keys are created and revoked
with the CLI only, so that a secret is never returned over HTTP."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from clarion.api.deps import Admin, RuntimeDep, SessionDep
from clarion.api.problems import Problem
from clarion.core.auth import set_api_key_limits
from clarion.core.storable import BigInt
from clarion.db.models import ApiKey
from clarion.db.session import transaction
from clarion.settings import valid_rate_limit

router = APIRouter(prefix="/v1/keys", tags=["api keys"])


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str = Field(description="The secret's first characters, to recognise it.")
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    rate_limit: str | None = Field(description="Its own; null: CLARION_API_KEY_RATE_LIMIT.")
    daily_quota: int | None = Field(
        description="Recipients per day, 0 = none; null: CLARION_API_KEY_DAILY_QUOTA."
    )


class ApiKeyLimits(BaseModel):
    """A key's own limits; a field left out is unchanged, null goes back to the setting."""

    model_config = ConfigDict(extra="forbid")

    rate_limit: str | None = Field(default=None, max_length=64, examples=["600/minute"])
    daily_quota: int | None = Field(default=None, ge=0, le=2**62)

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        return None if value is None else valid_rate_limit(value)


@router.get("", response_model=list[ApiKeyPublic], summary="API keys and their limits")
def list_keys(session: SessionDep, admin: Admin) -> list[ApiKeyPublic]:
    rows = session.scalars(select(ApiKey).order_by(ApiKey.id))
    return [ApiKeyPublic.model_validate(row) for row in rows]


@router.patch(
    "/{key_id}",
    response_model=ApiKeyPublic,
    summary="Change a key's rate limit or daily quota",
    responses={404: {"description": "No such active key"}},
)
def set_limits(
    key_id: BigInt, body: ApiKeyLimits, runtime: RuntimeDep, admin: Admin
) -> ApiKeyPublic:
    """API processes apply it within ``CLARION_API_KEY_CACHE_SECONDS``."""
    with transaction(runtime.sessions) as session:
        row = set_api_key_limits(session=session, id=key_id, **body.model_dump(exclude_unset=True))
        if row is None:
            raise Problem(404, "not-found", "No such active API key.")
        return ApiKeyPublic.model_validate(row)
