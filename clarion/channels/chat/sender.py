"""Chat messages through Apprise: one ``notify()`` per delivery (docs/channels/chat.md).

Targets: the subscriber's own chat URL (a ``subscriber_addresses`` row, sealed at rest;
the target id is the row's id) and the category's team channels from
``CLARION_CHAT__CATEGORY_TARGETS`` (target id ``category:<category>:<index>``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.orm import Session

from clarion.channels import (
    Channel,
    Message,
    PermanentChannelError,
    TargetGoneError,
    addresses,
    via_apprise,
)
from clarion.channels.outbound import AddressNotAllowed, OutboundPolicy
from clarion.db import addresses as address_rows
from clarion.db import targets
from clarion.db.models import SubscriberAddress
from clarion.ids import utcnow
from clarion.settings import Settings

KEY = "chat"
CATEGORY_PREFIX = "category:"
MAX_URL = 2048


class ChatSettings(BaseSettings):
    """``CLARION_CHAT__CATEGORY_TARGETS`` (JSON: category → Apprise URLs),
    ``CLARION_CHAT__TIMEOUT`` (seconds, connect and read each)."""

    model_config = SettingsConfigDict(
        env_prefix="CLARION_CHAT__", env_nested_delimiter="__", extra="ignore"
    )

    category_targets: dict[str, list[str]] = {}
    timeout: float = Field(default=10.0, gt=0, le=60)

    @field_validator("category_targets")
    @classmethod
    def _known_urls(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for category, urls in value.items():
            for i, url in enumerate(urls):
                try:
                    via_apprise.instantiate(url, 1.0)
                except via_apprise.UnusableURL:
                    # The position, never the URL: it holds the channel's token.
                    raise ValueError(
                        f"category {category!r}: URL #{i + 1} is not an Apprise URL"
                    ) from None
        return value


def check_address(url: str, settings: Settings) -> tuple[str, str]:
    """A subscriber's chat URL as stored, and its masked form; ValueError if Apprise does
    not know it, AddressNotAllowed if it points inside the network."""
    url = url.strip()
    if not url or len(url) > MAX_URL:
        raise ValueError(f"must be an Apprise URL of at most {MAX_URL} characters")
    try:
        plugin = via_apprise.instantiate(url, 1.0)
    except via_apprise.UnusableURL as exc:
        raise ValueError(str(exc)) from None
    via_apprise.check_host(OutboundPolicy.from_settings(settings), plugin)
    return url, via_apprise.masked(url, plugin)


class ChatChannel(Channel):
    """Always configured: subscribers' URLs are data. Status mapping: ``notify()`` True is
    sent; False (or an exception inside Apprise) is retried, then dead-lettered after the
    last attempt; a subscriber URL Apprise no longer parses, or that no key opens, is gone
    (deactivated); an address the outbound policy refuses is permanent."""

    key = KEY
    no_target = "no chat URL for this subscriber and no team channel for this category"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.timeout = self.options.timeout
        self.send_timeout = 2 * self.timeout  # connect, then read
        self.policy = OutboundPolicy.from_settings(settings)

    # -- addressing --------------------------------------------------------------------
    def targets(
        self, *, session: Session, recipients: list[str], category: str
    ) -> dict[str, list[str]]:
        own = address_rows.active_for(session=session, channel=KEY, subscribers=recipients)
        team = [
            f"{CATEGORY_PREFIX}{category}:{i}"
            for i in range(len(self.options.category_targets.get(category, ())))
        ]
        found = {r: ([own[r]] if r in own else []) + team for r in recipients}
        return {r: t for r, t in found.items() if t}

    def load_targets(self, *, session: Session, ids: set[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for target_id in ids:
            if target_id.startswith(CATEGORY_PREFIX):
                category, _, index = target_id.removeprefix(CATEGORY_PREFIX).rpartition(":")
                urls = self.options.category_targets.get(category, [])
                if index.isdigit() and int(index) < len(urls):
                    found[target_id] = {"url": urls[int(index)], "own": False}
        rows = targets.active_by_ids(session=session, model=SubscriberAddress, ids=ids)
        for row in rows:
            try:
                found[str(row.id)] = {"url": addresses.unseal(self.settings, row.sealed)}
            except addresses.AddressUnreadable as exc:
                found[str(row.id)] = {"unreadable": str(exc)}
            found[str(row.id)]["own"] = True
        return found

    def deactivate(self, *, session: Session, target_id: str, reason: str) -> None:
        if not target_id.startswith(CATEGORY_PREFIX):  # settings are the operator's to fix
            targets.deactivate(
                session=session, model=SubscriberAddress, id=target_id, reason=reason, now=utcnow()
            )

    # -- render and send ---------------------------------------------------------------
    def render(self, message: Message, target: dict[str, Any]) -> dict[str, str]:
        """Plain text; Apprise escapes it for each service's markup."""
        content = message.rendered() or {}
        n = message.notification
        title = content.get("subject") or n.get("title") or ""
        return {"title": title, "body": content.get("text") or n.get("body") or title}

    def send(self, payload: dict[str, str], target: dict[str, Any]) -> str:
        if "unreadable" in target:
            raise TargetGoneError(f"chat URL {target['unreadable']}")
        url = target["url"]
        try:
            plugin = via_apprise.instantiate(url, self.timeout)
        except via_apprise.UnusableURL as exc:
            if target["own"]:
                raise TargetGoneError(f"{exc} (chat URL deactivated)") from None
            raise PermanentChannelError(str(exc)) from None
        if target["own"]:  # the subscriber's URL: checked again, right before the call
            try:
                via_apprise.check_host(self.policy, plugin)
            except AddressNotAllowed as exc:
                raise PermanentChannelError(f"connect: {exc}") from None
        label = via_apprise.scheme(url)
        via_apprise.notify(plugin, title=payload["title"], body=payload["body"], label=label)
        return f"apprise:{label}"
