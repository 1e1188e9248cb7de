"""One settings object for every Clarion process, read from ``CLARION_*`` environment variables.

The same object is injected into the API app factory and the Celery app factory, so an API
process and a worker started with the same environment agree on every name and limit.
"""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clarion.settings.sections import LogSettings, PreviousSecretKey, SmtpSettings, VapidSettings

__all__ = [
    "DEV_SECRET_KEY",
    "LEASE_MARGIN_SECONDS",
    "LOOPBACK_NETWORKS",
    "RETENTION_RECORDS",
    "LogSettings",
    "PreviousSecretKey",
    "Settings",
    "SmtpSettings",
    "VapidSettings",
    "valid_rate_limit",
]

# Retention of records other than notifications, in days (0 keeps forever): the defaults.
RETENTION_RECORDS: dict[str, int] = {
    "deleted": 30,  # soft-deleted and replaced notifications, after their deletion
    "delivery_attempts": 90,
    "inbox_events": 90,  # read/archive/delete changes a resuming client replays
    "events": 30,  # producer events (POST /v1/events)
    "rule_runs": 30,
    "failed_requests": 30,
    "scheduled": 30,  # released or cancelled scheduled sends
    "fanouts": 30,  # finished topic fan-outs
}

# The default lease's room beyond a channel's longest send: the claim, the clock tolerance
# between workers and the outcome's commit must fit in it.
LEASE_MARGIN_SECONDS = 5.0

# Only ever accepted in the embedded dev mode; any other mode refuses to start with it.
DEV_SECRET_KEY = "clarion-dev-secret-not-for-production-000000"  # noqa: S105
# What the embedded dev mode lets webhooks and web push reach besides the internet.
LOOPBACK_NETWORKS = (ip_network("127.0.0.0/8"), ip_network("::1/128"))


def valid_rate_limit(value: str) -> str:
    """A limit in the `limits` notation ("5/minute", "100 per hour"), or ValueError."""
    from limits import parse

    try:
        parse(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit such as '5/minute'") from None
    return value


class Settings(BaseSettings):
    """Configuration of a Clarion deployment. See docs/operations/configuration.md."""

    # Errors name the setting, never its value: some carry passwords (the proxy URL).
    model_config = SettingsConfigDict(
        env_prefix="CLARION_", extra="ignore", hide_input_in_errors=True
    )

    mode: Literal["server", "embedded"] = "server"
    database_url: str = "postgresql+psycopg://127.0.0.1:5432/clarion"
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Pub/sub for live events and the idempotency store: redis:// or memory:// (one process).
    redis_url: str = "redis://127.0.0.1:6379/1"

    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    # Keys that signed earlier tokens and links, accepted for verification until their time.
    previous_secret_keys: list[PreviousSecretKey] = []
    jwt_public_key: str | None = None
    jwt_audience: str = "clarion"
    jwt_issuer: str | None = None
    jwt_algorithms: list[str] = ["RS256", "ES256", "EdDSA"]
    token_ttl_seconds: int = Field(default=3600, gt=0)
    # No user token is accepted longer than this after its iat, whatever its exp says.
    user_token_max_lifetime_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    # The notification centre's page (/ui/): how long its sign-in cookie lasts, and how long
    # each user token it hands the page lasts (the page asks for a new one before expiry).
    ui_session_seconds: int = Field(default=12 * 3600, gt=0)
    ui_token_seconds: int = Field(default=900, ge=60)

    # Channels a notification goes to when the request names none, per category.
    # In-app is always added (so the default, none, is in-app alone) unless a request's
    # explicit channel list leaves it out. Channel names are checked against the channel
    # registry at start (clarion.channels.check_settings).
    category_channels: dict[str, list[str]] = {}
    default_channels: list[str] = []
    # Categories a subscriber cannot opt out of (their toggles are locked on), like
    # critical severity: e.g. ["security", "billing"].
    required_categories: list[str] = []
    # Default digest cadence per category when the subscriber chose none (else instant).
    category_digest: dict[str, Literal["instant", "hourly", "daily", "weekly"]] = {}
    # Templates: the locale used when neither the subscriber's locale nor its language has
    # a version; how long an API process caches the active versions it validates against.
    default_locale: str = "en"
    template_cache_seconds: float = Field(default=10.0, ge=0)
    # Beat: how often due scheduled notifications and ended snoozes are released, and due
    # digests are made.
    schedule_interval_seconds: float = Field(default=10.0, gt=0)
    # A recurring schedule with catch_up off skips an occurrence found later than this
    # (beat or the workers were down); with catch_up on, the latest missed one is sent.
    schedule_misfire_grace_seconds: float = Field(default=300.0, gt=0)
    digest_interval_seconds: float = Field(default=60.0, gt=0)
    # Topic fan-out: recipients per create task on the bulk lane.
    fanout_batch: int = Field(default=1000, ge=1, le=10_000)

    # Redis broker: an unacked message whose holder stopped refreshing it is redelivered
    # after this many seconds. Live workers refresh what they hold every
    # worker_heartbeat_seconds (clarion.workers.heartbeat), so this bounds how long a dead
    # worker's messages wait, not how long a task may run. Retries longer than half of it
    # go through next_attempt_at (docs/concepts/crash-recovery.md).
    broker_visibility_timeout: int = Field(default=30, gt=0)
    # How often a worker refreshes the unacked messages it holds; well below the timeout.
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0)
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
    # The most a request waits for company, and only while requests arrive closer together
    # than this (clarion.api.coalesce): a lone request is published at once.
    api_coalesce_linger_ms: float = Field(default=20.0, ge=0, le=1000)

    # Channels (docs/channels/). Each validates its own part when it is built.
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    vapid: VapidSettings = Field(default_factory=VapidSettings)
    push_ttl_seconds: int = Field(default=24 * 3600, ge=0)
    push_icon_url: str | None = None
    # Push endpoints must be https; allow http only for a local push service in tests.
    push_allow_http_endpoints: bool = False
    # Browsers and devices one subscriber may register for push; registering one more
    # removes the one registered (or refreshed) longest ago.
    push_max_subscriptions_per_user: int = Field(default=10, ge=1, le=1000)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # Webhook endpoints that may be registered (active or not); one more is a 409.
    webhook_max_endpoints: int = Field(default=100, ge=1)
    # Webhooks and web push only reach public internet addresses (clarion.channels.outbound)
    # plus these networks, e.g. ["10.20.0.0/16"]; the embedded mode adds loopback.
    outbound_allowed_networks: list[IPvAnyNetwork] = []
    # An http:// proxy for webhooks and web push; proxies in the environment are ignored.
    # Secret: its URL may carry a password.
    outbound_proxy: SecretStr | None = None
    # Where links in emails (one-click unsubscribe) point; default http://host:port.
    public_url: str | None = None

    # Delivery policy: full-jitter exponential backoff, base × 2^attempt capped at max;
    # 8 attempts with a 15 s base span about half an hour.
    delivery_max_attempts: int = Field(default=8, ge=1)
    channel_max_attempts: dict[str, int] = {}
    retry_backoff_seconds: float = Field(default=15.0, gt=0)
    retry_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    # A delivery being sent longer than this is taken as interrupted and may be re-sent.
    # Unset: each channel's longest send (its timeouts) plus a few seconds, so a killed
    # worker's claimed deliveries come back within a minute (docs/concepts/crash-recovery.md).
    delivery_lease_seconds: float | None = Field(default=None, gt=0)
    # PostgreSQL's synchronous_commit for the deliver step's claims and outcomes. "off"
    # saves the WAL flush wait at each outcome (docs/benchmarks/code.md); a PostgreSQL crash
    # (not a worker crash) can then lose the last fraction of a second of outcomes, and
    # those messages are sent again after their lease (docs/concepts/delivery.md).
    delivery_synchronous_commit: Literal["on", "off"] = "on"
    # The sweeper (on beat): how often it runs, how long a pending delivery may wait for
    # its task before it is re-enqueued, and how many rows one run moves at most.
    sweeper_interval_seconds: float = Field(default=5.0, gt=0)
    sweeper_stuck_seconds: float = Field(default=300.0, gt=0)
    sweeper_batch: int = Field(default=10_000, ge=1)
    # Redis broker: an accepted create/fanout message not stored after this long is
    # published again by the sweeper (docs/concepts/delivery.md); given up after N re-sends.
    ledger_resend_seconds: float = Field(default=300.0, gt=0)
    # An entry this old that is neither in its queue nor held by a worker (lost at a
    # worker's kill) is published again at once (docs/concepts/crash-recovery.md).
    ledger_lost_seconds: float = Field(default=30.0, gt=0)
    ledger_max_resends: int = Field(default=5, ge=1)

    # Retention (clarion.core.retention, on beat; docs/operations/retention.md). Days a
    # notification is kept after it was created, and per category; 0 keeps forever.
    retention_days: int = Field(default=180, ge=0)
    retention_category_days: dict[str, int] = {}
    # Days kept of other records, by kind (RETENTION_RECORDS): the defaults and overrides.
    retention_record_days: dict[str, int] = {}
    # How often the task runs, the rows one statement deletes, and one run's time budget.
    retention_interval_seconds: float = Field(default=60.0, gt=0)
    retention_batch: int = Field(default=1000, ge=1, le=50_000)
    retention_budget_seconds: float = Field(default=10.0, gt=0)

    # Rule engine: per pack or rule key, config and {"enabled": bool} (docs/rules.md).
    rules: dict[str, dict[str, Any]] = {}
    # Extra modules offering RULES (besides the built-in packs and clarion.rules entry points).
    rule_modules: list[str] = []

    # `clarion mcp` (stdio) acts as this API key, with its scopes.
    mcp_api_key: SecretStr | None = None

    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    api_key_cache_seconds: float = Field(default=30.0, ge=0)

    # Browser origins that may call the REST API (CORS; "*" = any). The live stream
    # accepts them too, besides stream_allowed_origins.
    cors_origins: list[str] = []
    # POST /v1/me/notifications/test, per user (the `limits` notation: "5/minute").
    test_notification_rate_limit: str = "5/minute"
    # Rate limits and quotas (docs/operations/rate-limits.md), in the `limits` notation.
    # Requests per API key (a key's own `rate` overrides it), every route the key calls.
    api_key_rate_limit: str = "3000/minute"
    # Recipients per API key per day (a fan-out counts its topic's subscribers); a key's
    # own `daily_quota` overrides it; 0 = no quota.
    api_key_daily_quota: int = Field(default=1_000_000, ge=0)
    # Requests per end user (user token) on the inbox, preferences and push routes.
    user_rate_limit: str = "600/minute"
    # Live-stream connects (WebSocket and SSE) per end user.
    stream_connect_rate_limit: str = "30/minute"
    # Failed authentications (a bad API key or token) per client address.
    auth_failure_rate_limit: str = "30/minute"
    # Per recipient throttle (routing): at most this many notifications per recipient per
    # category per window, e.g. "10/hour"; per category in category_throttle. None: off.
    throttle: str | None = None
    category_throttle: dict[str, str] = {}
    # What happens to a throttled notification: "drop" (every subscriber channel skipped,
    # inbox included) or "digest" (email and push held for the next digest of this
    # cadence; the inbox still shows it).
    throttle_excess: Literal["drop", "digest"] = "drop"
    throttle_digest: Literal["hourly", "daily"] = "hourly"

    # Live stream (WebSocket/SSE). Browser origins allowed to connect ("*" = any).
    stream_allowed_origins: list[str] = ["*"]
    stream_max_connections_per_user: int = Field(default=10, ge=1)
    # Events a slow connection may lag behind before it is closed with "resync".
    stream_buffer_events: int = Field(default=1000, ge=10)
    stream_heartbeat_seconds: float = Field(default=25.0, gt=0)
    # A client further behind than this many events is told to refetch instead of replayed.
    stream_max_replay: int = Field(default=1000, ge=1)

    # Prometheus metrics (docs/operations/metrics.md). A token every scrape must present
    # as "Authorization: Bearer <token>" (unset: scrapes are open); the API's /metrics on a
    # port of its own instead of the API's (`clarion api --metrics-port`); the workers'
    # port (`clarion worker --metrics-port`); the address those ports bind (default: host).
    metrics_token: SecretStr | None = None
    metrics_port: int | None = Field(default=None, gt=0, lt=65536)
    worker_metrics_port: int | None = Field(default=None, gt=0, lt=65536)
    metrics_host: str | None = None

    # Embedded mode keeps its SQLite database and broker files here.
    data_dir: Path = Path(".clarion")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"

    @field_validator("retention_category_days", "retention_record_days")
    @classmethod
    def _retention_days(cls, value: dict[str, int]) -> dict[str, int]:
        if any(days < 0 for days in value.values()):
            raise ValueError("retention periods are days: 0 (keep forever) or more")
        return value

    @field_validator("retention_record_days")
    @classmethod
    def _retention_kinds(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(RETENTION_RECORDS))
        if unknown:
            raise ValueError(f"unknown record kinds {unknown}; known: {sorted(RETENTION_RECORDS)}")
        return value

    def record_days(self, kind: str) -> int:
        return self.retention_record_days.get(kind, RETENTION_RECORDS[kind])

    @field_validator(
        "test_notification_rate_limit",
        "api_key_rate_limit",
        "user_rate_limit",
        "stream_connect_rate_limit",
        "auth_failure_rate_limit",
        "throttle",
    )
    @classmethod
    def _rate_limit(cls, value: str | None) -> str | None:
        return None if value is None else valid_rate_limit(value)

    @field_validator("category_throttle")
    @classmethod
    def _throttles(cls, value: dict[str, str]) -> dict[str, str]:
        return {category: valid_rate_limit(limit) for category, limit in value.items()}

    def throttle_for(self, category: str) -> str | None:
        """The per recipient throttle of a category: its own, else the default, else None."""
        return self.category_throttle.get(category, self.throttle)

    @property
    def stream_origins(self) -> list[str]:
        """Origins the live stream accepts: its own allow-list and the CORS origins."""
        return [*self.stream_allowed_origins, *self.cors_origins]

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
        if any(p.key.get_secret_value() == secret for p in self.previous_secret_keys):
            raise ValueError("CLARION_PREVIOUS_SECRET_KEYS must not list the current secret key")
        if self.token_ttl_seconds > self.user_token_max_lifetime_seconds:
            raise ValueError(
                "CLARION_TOKEN_TTL_SECONDS is above CLARION_USER_TOKEN_MAX_LIFETIME_SECONDS: "
                "such tokens would be refused"
            )
        return self

    @model_validator(mode="after")
    def _embedded_reaches_loopback(self) -> Settings:
        if self.mode == "embedded":
            missing = [n for n in LOOPBACK_NETWORKS if n not in self.outbound_allowed_networks]
            self.outbound_allowed_networks = [*self.outbound_allowed_networks, *missing]
        return self

    @field_validator("outbound_proxy")
    @classmethod
    def _http_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value.get_secret_value())
            parts.port  # noqa: B018 (raises ValueError on a malformed port)
        except ValueError:
            parts = None
        if parts is None or parts.scheme != "http" or not parts.hostname:
            raise ValueError("CLARION_OUTBOUND_PROXY must be an http://host:port URL")
        return value

    def max_attempts(self, channel: str) -> int:
        return self.channel_max_attempts.get(channel, self.delivery_max_attempts)

    def lease_seconds(self, send_timeout: float) -> float:
        """The claim lease of a channel whose one send takes at most ``send_timeout``."""
        if self.delivery_lease_seconds is not None:
            return self.delivery_lease_seconds
        return send_timeout + LEASE_MARGIN_SECONDS

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @classmethod
    def embedded(cls, data_dir: Path | str = ".clarion", **overrides: Any) -> Settings:
        """Settings of the one-process embedded platform: SQLite, SQLite broker, memory pub/sub."""
        data = Path(data_dir).resolve()
        values: dict[str, Any] = {
            "mode": "embedded",
            "data_dir": data,
            "database_url": f"sqlite:///{data / 'clarion.db'}",
            "broker_url": f"sqla+sqlite:///{data / 'broker.db'}",
            "redis_url": "memory://",
        }
        values.update(overrides)
        return cls(**values)
