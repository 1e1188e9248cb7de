"""Delivery channels: the interface, its errors, and building them from the registry.

Each channel is one package declaring a :class:`~clarion.channels.registry.ChannelSpec`
(its key, traits and sender); :mod:`clarion.channels.registry` lists them, built-in and
from the ``clarion.channels`` entry point group. The inbox is delivered by the
notification row itself, so it has no sender here; every other channel is a
:class:`Channel`.

A channel has three parts, each used by one step of the pipeline:

* **addressing** (``targets``, ``load_targets``, ``deactivate``; database reads and writes
  through repositories): at create time, which targets a recipient has on this channel
  (their email address, each of their push subscriptions, each webhook endpoint of the
  category), one delivery row per target; at send time, the target's details.
* **render** (pure, no I/O, escapes user content): the provider payload.
* **send** (I/O only): hand the payload over and return the provider's reference, or raise
  one of the three errors below.

Adding a channel: docs/channels/adding-a-channel.md.
"""

from __future__ import annotations

import importlib
import math
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from pydantic import ValidationError
from sqlalchemy.orm import Session

from clarion.channels import registry
from clarion.settings import Settings

INBOX = registry.inbox()


class ChannelError(Exception):
    """Base of every error a channel raises from ``send``."""


class RetryableChannelError(ChannelError):
    """The provider may accept it later (timeouts, 4xx SMTP, HTTP 429/5xx): retry with backoff.

    ``retry_after`` is the provider's own hint in seconds, honoured over the backoff.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from an HTTP Retry-After header (delta-seconds or HTTP-date); None if absent
    or unreadable. Shared by the HTTP channels (web push, webhooks)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


class PermanentChannelError(ChannelError):
    """Sending again cannot succeed (rejected address, malformed payload): dead letter now."""


class TargetGoneError(ChannelError):
    """The target no longer exists (web push 404/410): deactivate it, skip the delivery."""


class ChannelNotConfigured(Exception):
    """The channel's settings are absent; its deliveries are skipped with this reason."""


class ChannelConfigError(ValueError):
    """The channel's settings are present but wrong: the worker refuses to start with them."""


@dataclass(frozen=True)
class Message:
    """What a channel renders: one notification for one recipient, on one delivery."""

    delivery_id: uuid.UUID
    attempt: int
    # The public notification (NotificationPublic as JSON) plus recipient and collapse_key.
    notification: dict[str, Any]
    # The subscriber: id, email, name, locale, timezone.
    recipient: dict[str, Any]
    # Sent by template: {subject, html, text} rendered for this channel in the recipient's
    # locale (resolved by the deliver step, where the session is); None: use the
    # notification's title and body.
    content: dict[str, str | None] | None = None
    # Why the template did not render for this channel; the delivery is dead-lettered.
    content_error: str | None = None
    # What the delivery carries: "" the notification; "action:<id>" a click on one of its
    # actions (webhooks only).
    event: str = ""

    def rendered(self) -> dict[str, str | None] | None:
        """The template's rendering, if any; PermanentChannelError if it failed (sending
        again renders the same template with the same data)."""
        if self.content_error is not None:
            raise PermanentChannelError(self.content_error)
        return self.content


class Channel(ABC):
    """One external channel. Subclasses validate their settings in ``__init__``; a channel
    whose spec names a settings model finds it, read and validated, in ``self.options``."""

    key: ClassVar[str]
    # Why a recipient without any target of this channel gets a skipped delivery.
    no_target: ClassVar[str] = "no target"
    # The longest one ``send`` can take (its timeouts). The deliver step claims as many
    # deliveries at once as fit in a lease, so a worker never outlives its claim.
    send_timeout: float = 30.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.options = load_options(self.key)

    # -- addressing --------------------------------------------------------------------
    def targets(
        self, *, session: Session, recipients: list[str], category: str
    ) -> dict[str, list[str]]:
        """Each recipient's targets on this channel; a recipient left out has none.

        The default: one target, ``""``, the recipient itself.
        """
        return {r: [""] for r in recipients}

    def load_targets(self, *, session: Session, ids: set[str]) -> dict[str, dict[str, Any]]:
        """Details of still-active targets by id; a missing id means the target is gone."""
        return {i: {} for i in ids}

    def deactivate(self, *, session: Session, target_id: str, reason: str) -> None:  # noqa: B027
        """The provider said the target is gone: stop addressing it (default: nothing)."""

    # -- render and send ---------------------------------------------------------------
    @abstractmethod
    def render(self, message: Message, target: dict[str, Any]) -> Any:
        """Build the provider payload; escapes user content; no I/O."""

    @abstractmethod
    def send(self, payload: Any, target: dict[str, Any]) -> str:
        """Hand the payload to the provider and return its reference."""

    def close(self) -> None:  # noqa: B027
        """Release connections (worker shutdown)."""


def load_options(key: str) -> Any:
    """The channel's own settings (``CLARION_<KEY>__<FIELD>``), validated; None if it has
    no settings model. Raises ChannelConfigError naming the field, never its value."""
    spec = registry.spec(key)
    model = spec.settings_model() if spec else None
    if model is None:
        return None
    try:
        return model()
    except ValidationError as exc:
        fields = ", ".join(
            f"CLARION_{key.upper()}__{'__'.join(str(p).upper() for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise ChannelConfigError(f"channel {key!r}: {fields}") from None


def check_settings(settings: Settings) -> None:
    """Channel names in the settings must be channels of this installation (at start)."""
    named = {
        "CLARION_DEFAULT_CHANNELS": settings.default_channels,
        "CLARION_CATEGORY_CHANNELS": [c for cs in settings.category_channels.values() for c in cs],
        "CLARION_CHANNEL_MAX_ATTEMPTS": list(settings.channel_max_attempts),
    }
    for name, channels in named.items():
        if wrong := registry.unknown(channels):
            raise ChannelConfigError(
                f"{name} names unknown channels {wrong}; known: {list(registry.names())}"
            )
    for key, spec in registry.specs().items():
        if spec.external:
            load_options(key)


def build(key: str, settings: Settings) -> Channel:
    """The configured channel for ``key``.

    Raises ChannelNotConfigured when it has no settings, ChannelConfigError when they are
    wrong.
    """
    spec = registry.spec(key)
    if spec is None or spec.sender is None:
        raise ChannelNotConfigured(f"channel {key!r} is not available in this deployment")
    module, _, name = spec.sender.partition(":")
    channel = getattr(importlib.import_module(module), name)(settings)
    lease = settings.lease_seconds(channel.send_timeout)
    if channel.send_timeout > lease:
        # One send could outlast its claim: another worker would take it and send it again.
        raise ChannelConfigError(
            f"channel {key!r}: one send may take {channel.send_timeout:g} s, longer than "
            f"CLARION_DELIVERY_LEASE_SECONDS={lease:g}; lower the "
            "channel's timeout or raise the lease"
        )
    return channel


class Channels:
    """The channels of one process, each built once on first use (after a worker forks)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: dict[str, Channel | str] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Channel | str:
        """The channel, or the reason it is not configured (its deliveries are skipped)."""
        with self._lock:
            if key not in self._built:
                try:
                    self._built[key] = build(key, self.settings)
                except ChannelNotConfigured as exc:
                    self._built[key] = str(exc)
            return self._built[key]

    def check(self) -> dict[str, str]:
        """Build every channel now: a worker fails at start, not at its first send."""
        return {
            key: ("ok" if isinstance(self.get(key), Channel) else "off")
            for key in registry.external()
        }

    def close(self) -> None:
        with self._lock:
            for channel in self._built.values():
                if isinstance(channel, Channel):
                    channel.close()
            self._built.clear()
