"""One settings object for every Clarion process, read from ``CLARION_*`` environment variables.

The same object is injected into the API app factory and the Celery app factory, so an API
process and a worker started with the same environment agree on every name and limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ChannelKey = Literal["in_app", "email", "push", "webhook"]
CHANNEL_KEYS: tuple[str, ...] = ("in_app", "email", "push", "webhook")

# Only ever accepted in the embedded dev mode; any other mode refuses to start with it.
DEV_SECRET_KEY = "clarion-dev-secret-not-for-production-000000"  # noqa: S105


class Settings(BaseSettings):
    """Configuration of a Clarion deployment. See the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="CLARION_", extra="ignore")

    mode: Literal["server", "embedded"] = "server"
    database_url: str = "postgresql+psycopg://127.0.0.1:5432/clarion"
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Pub/sub for live events and the idempotency store: redis:// or memory:// (one process).
    redis_url: str = "redis://127.0.0.1:6379/1"

    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    jwt_public_key: str | None = None
    jwt_audience: str = "clarion"
    jwt_issuer: str | None = None
    jwt_algorithms: list[str] = ["RS256", "ES256", "EdDSA"]
    token_ttl_seconds: int = Field(default=3600, gt=0)

    # Channels a notification goes to when the request names none, per category.
    # In-app is added unless a request's explicit channel list leaves it out.
    category_channels: dict[str, list[ChannelKey]] = {}
    default_channels: list[ChannelKey] = ["in_app"]

    # Redis broker: an unacked message is redelivered after this many seconds. It must be
    # above the longest task; retries longer than half of it go through next_attempt_at.
    broker_visibility_timeout: int = Field(default=3600, gt=0)
    # Extra kombu transport options, e.g. {"unacked_restore_interval": 10} (Redis).
    broker_transport_options: dict[str, Any] = {}
    # How long the API waits for the broker before answering 503.
    broker_publish_timeout: float = Field(default=3.0, gt=0)
    worker_prefetch_multiplier: int = Field(default=4, gt=0)
    # Celery task events cost about a quarter of a small task's throughput. Flower turns
    # them on by itself (enable_events) while it runs, so they are off by default.
    worker_task_events: bool = False
    # Concurrent send requests are published as one create task of at most this many
    # notifications (1 = one task per request).
    api_coalesce_max_notifications: int = Field(default=500, ge=1)
    api_coalesce_linger_ms: float = Field(default=2.0, ge=0, le=1000)

    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    api_key_cache_seconds: float = Field(default=30.0, ge=0)

    # Live stream (WebSocket/SSE). Browser origins allowed to connect ("*" = any).
    stream_allowed_origins: list[str] = ["*"]
    stream_max_connections_per_user: int = Field(default=10, ge=1)
    # Events a slow connection may lag behind before it is closed with "resync".
    stream_buffer_events: int = Field(default=1000, ge=10)
    stream_heartbeat_seconds: float = Field(default=25.0, gt=0)
    # A client further behind than this many events is told to refetch instead of replayed.
    stream_max_replay: int = Field(default=1000, ge=1)

    # Embedded mode keeps its SQLite database and broker files here.
    data_dir: Path = Path(".clarion")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        secret = self.secret_key.get_secret_value()
        if self.mode != "embedded" and secret == DEV_SECRET_KEY:
            raise ValueError(
                "CLARION_SECRET_KEY is not set: the built-in development secret is only "
                "accepted by `clarion dev`. Set CLARION_SECRET_KEY to a long random value."
            )
        if len(secret) < 32:
            raise ValueError("CLARION_SECRET_KEY must be at least 32 characters long")
        return self

    def channels_for(self, category: str) -> list[str]:
        """Default channels for a category: its configured list, else the global default."""
        return list(self.category_channels.get(category, self.default_channels))

    @classmethod
    def embedded(cls, data_dir: Path | str = ".clarion", **overrides: object) -> Settings:
        """Settings of the one-process embedded platform: SQLite, SQLite broker, memory pub/sub."""
        data = Path(data_dir).resolve()
        values: dict[str, object] = {
            "mode": "embedded",
            "data_dir": data,
            "database_url": f"sqlite:///{data / 'clarion.db'}",
            "broker_url": f"sqla+sqlite:///{data / 'broker.db'}",
            "redis_url": "memory://",
        }
        values.update(overrides)
        return cls(**values)
