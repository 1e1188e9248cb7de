"""The settings' sections with an environment prefix of their own (the email relay, the
web push identity), the logging settings every process reads before the rest, and a
retired secret key's entry."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, AwareDatetime, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SmtpSettings(BaseSettings):
    """The email channel's relay (``CLARION_SMTP_*``). No host: email deliveries are skipped."""

    model_config = SettingsConfigDict(env_prefix="CLARION_SMTP_", extra="ignore")

    host: str | None = None
    # Default: 465 with implicit TLS, 587 with STARTTLS, 25 otherwise.
    port: int | None = Field(default=None, gt=0, lt=65536)
    starttls: bool = False
    tls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    sender: str | None = Field(
        default=None, validation_alias=AliasChoices("sender", "CLARION_SMTP_FROM")
    )
    sender_name: str = Field(
        default="Clarion", validation_alias=AliasChoices("sender_name", "CLARION_SMTP_FROM_NAME")
    )
    timeout: float = Field(default=10.0, gt=0)
    # Verify the relay's certificate (turn off only for a relay with a private CA in tests).
    validate_certs: bool = True
    # Send the username and password over a connection with neither TLS nor STARTTLS
    # (a relay on the same host or a private link): refused unless set.
    allow_plaintext_auth: bool = False
    # A second relay, used while the first keeps failing to connect.
    fallback_host: str | None = None
    fallback_port: int | None = Field(default=None, gt=0, lt=65536)
    fallback_username: str | None = None
    fallback_password: SecretStr | None = None
    # Consecutive connection failures that switch to the fallback, and for how long.
    failover_after: int = Field(default=3, ge=1)
    failover_seconds: float = Field(default=60.0, gt=0)


class VapidSettings(BaseSettings):
    """Web push identity (``CLARION_VAPID_*``); ``clarion vapid generate`` makes a pair."""

    model_config = SettingsConfigDict(env_prefix="CLARION_VAPID_", extra="ignore")

    # The private key as PEM or as the base64url raw 32-byte scalar.
    private_key: SecretStr | None = None
    # The public key, base64url uncompressed point: what browsers pass to subscribe().
    public_key: str | None = None
    # "mailto:ops@example.com" or an https URL: who the push service contacts.
    subject: str | None = None


class LogSettings(BaseSettings):
    """How a process logs and traces, read before anything else (``clarion.cli``), so even
    a process whose other settings are refused says so in the chosen format."""

    model_config = SettingsConfigDict(env_prefix="CLARION_", extra="ignore")

    # text: for a terminal; json: one object per line (docs/operations/logs-and-traces.md).
    log_format: Literal["text", "json"] = "text"
    # OpenTelemetry tracing (the `otel` extra); also on when OTEL_EXPORTER_OTLP_*ENDPOINT is set.
    otel: bool = False
    # Write the spans as JSON lines to this file instead of exporting them (debugging, tests).
    otel_file: Path | None = None


class PreviousSecretKey(BaseModel):
    """A retired CLARION_SECRET_KEY: verifies tokens and unsubscribe links until ``until``,
    never signs anything (docs/operations/secrets.md)."""

    key: SecretStr = Field(min_length=32)
    until: AwareDatetime
