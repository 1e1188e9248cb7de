"""The lifecycle pack's config: where the source is, what its tables are called, thresholds.

One model for the seven rules: ``CLARION_RULES={"lifecycle": {...}}`` applies to all of
them, and ``CLARION_RULES={"<rule key>": {...}}`` overrides any key for one rule (say, a
shorter ``expiring_within_hours`` for ``campaign_expiring_soon``).

Off by default: with no ``source_url`` every rule is disabled, and setting ``source_url``
turns them on (unless ``enabled`` says otherwise). ``enabled: true`` without a
``source_url`` is a config error, so a pack switched on by mistake fails when the rules are
loaded instead of failing every five minutes on beat.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clarion.engine.rules import RuleConfig
from clarion.engine.sources import SourceUrl


class _Names(BaseModel):
    """Identifiers as configured: any text (SQLAlchemy quotes them), never empty."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("a column name must not be empty")
        return value


class LinkColumns(_Names):
    """Column names of the links table. ``url`` and ``is_active`` may be null: no such
    column (no URL in the notifications; every row counts as active)."""

    id: str = "id"
    owner: str = "owner"
    url: str | None = "url"
    expires_at: str = "expires_at"
    is_active: str | None = "is_active"
    campaign_id: str = "campaign_id"


class CampaignColumns(_Names):
    """Column names of the campaigns table (``name`` and ``is_active`` may be null)."""

    id: str = "id"
    owner: str = "owner"
    name: str | None = "name"
    starts_at: str | None = "starts_at"
    ends_at: str = "ends_at"
    is_active: str | None = "is_active"


class Columns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    links: LinkColumns = Field(default_factory=LinkColumns)
    campaigns: CampaignColumns = Field(default_factory=CampaignColumns)


class LifecycleConfig(RuleConfig):
    """Config of every lifecycle rule (see the module docstring of the pack)."""

    # Validation errors end up in logs and API answers: never echo source_url's password.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    enabled: bool = False
    # SQLAlchemy URL of the producer's database, read only. Secret: the API shows it masked.
    source_url: SourceUrl | None = None
    # Schema (PostgreSQL) holding both tables; default: the connection's search path.
    source_schema: str | None = None
    links_table: str = "links"
    campaigns_table: str = "campaigns"
    columns: Columns = Field(default_factory=Columns)
    # What naive source timestamps mean (IANA name). Aware columns carry their own offset.
    source_timezone: str = "UTC"

    # "Expiring soon": expires (ends) after now and at most this long from now.
    expiring_within_hours: float = Field(default=72.0, gt=0)
    # "Expired": expired (ended) at most this long ago. Each run looks this far back and no
    # further, which bounds its work; a condition older than this is never reported.
    lookback_days: float = Field(default=7.0, gt=0)

    # Where a notification links to: a template with "{id}" (the entity's id, URL-quoted).
    # Default: a link's own URL for link notifications, nothing for campaigns.
    link_page_url: str | None = None
    campaign_page_url: str | None = None

    # Rows fetched per round trip from the server-side cursor.
    fetch_size: int = Field(default=5000, ge=1, le=100_000)
    connect_timeout_seconds: int = Field(default=10, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _on_when_configured(cls, data: Any) -> Any:
        # Setting source_url is what turns the pack on; an explicit "enabled" still wins.
        if isinstance(data, dict) and "enabled" not in data and data.get("source_url"):
            return {**data, "enabled": True}
        return data

    @model_validator(mode="after")
    def _source_when_enabled(self) -> LifecycleConfig:
        if self.enabled and self.source_url is None:
            raise ValueError(
                "the lifecycle pack needs source_url (the database holding links and "
                "campaigns) before it can be enabled"
            )
        return self

    @field_validator("source_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("link_page_url", "campaign_page_url")
    @classmethod
    def _has_placeholder(cls, value: str | None) -> str | None:
        if value is not None and "{id}" not in value:
            raise ValueError('a page URL template must contain "{id}"')
        return value
