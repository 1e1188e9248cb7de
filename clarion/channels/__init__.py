"""Delivery channels: the interface, its errors, and the registry.

``in_app`` is the inbox itself: its delivery is the notification row, committed by the
``create`` transaction and announced on the pub/sub backend afterwards, so it has no
sender here. Every other channel is a :class:`Channel` registered in :data:`REGISTRY` and
sent by the ``deliver`` task; a channel that is not registered or not configured turns its
deliveries into ``skipped`` with the reason, never into silence.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from clarion.settings import Settings

INBOX = "in_app"


class ChannelError(Exception):
    """Base of every error a channel raises from ``send``."""


class RetryableChannelError(ChannelError):
    """The provider may accept it later (timeouts, 4xx SMTP, HTTP 429/5xx): retry with backoff.

    ``retry_after`` is the provider's own hint in seconds, honoured over the backoff.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentChannelError(ChannelError):
    """Sending again cannot succeed (rejected address, malformed payload): dead letter now."""


class TargetGoneError(ChannelError):
    """The target no longer exists (web push 404/410): deactivate it, skip the delivery."""


class ChannelNotConfigured(Exception):
    """The channel's settings are missing; its deliveries are skipped, not retried."""


class Channel(ABC):
    """One external channel: pure ``render``, I/O-only ``send``."""

    key: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def render(self, message: dict[str, Any], target: dict[str, Any]) -> Any:
        """Build the provider payload; escapes user content; no I/O."""

    @abstractmethod
    def send(self, payload: Any, target: dict[str, Any]) -> str:
        """Hand the payload to the provider and return its reference."""


# key -> factory. Adding a channel: one module and one line here.
REGISTRY: dict[str, Callable[[Settings], Channel]] = {}


def build(key: str, settings: Settings) -> Channel:
    """The configured channel for ``key``; raises ChannelNotConfigured when it cannot run."""
    factory = REGISTRY.get(key)
    if factory is None:
        raise ChannelNotConfigured(f"channel {key!r} is not available in this deployment")
    return factory(settings)
