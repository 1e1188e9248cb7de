"""SMS through an Apprise SMS service: one ``notify()`` per delivery (docs/channels/sms.md).

``CLARION_SMS__URL`` is the operator's service URL; the subscriber's number goes where it
has ``{phone}``, else is appended to its path, as Apprise's Twilio, Vonage, SNS, ...
URLs take the target number (``twilio://SID:Token@+15550001111`` becomes
``twilio://SID:Token@+15550001111/+33612345678``). The text is the template's ``text``
(else the title and body), cut to ``CLARION_SMS__MAX_SEGMENTS``; the encoding and segment
count are stored in the delivery's provider reference: ``apprise:<scheme>;GSM-7;segments=2``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import phonenumbers
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.orm import Session

from clarion.channels import (
    Channel,
    ChannelNotConfigured,
    Message,
    PermanentChannelError,
    TargetGoneError,
    addresses,
    via_apprise,
)
from clarion.channels.sms import segments
from clarion.db import addresses as address_rows
from clarion.db import targets
from clarion.db.models import SubscriberAddress
from clarion.ids import utcnow
from clarion.settings import Settings

KEY = "sms"
PLACEHOLDER = "{phone}"
SAMPLE = "+15555550100"  # a valid number, to check the URL at start


def with_phone(url: str, phone: str) -> str:
    """The service URL addressed to ``phone`` (E.164)."""
    base, sep, query = url.partition("?")
    query = query.replace(PLACEHOLDER, quote(phone, safe=""))  # "+" means space in a query
    if PLACEHOLDER in url:
        return base.replace(PLACEHOLDER, phone) + sep + query
    return base.rstrip("/") + "/" + phone + sep + query


class SmsSettings(BaseSettings):
    """``CLARION_SMS__URL`` (an Apprise SMS URL; a secret), ``CLARION_SMS__TIMEOUT``,
    ``CLARION_SMS__MAX_SEGMENTS``."""

    model_config = SettingsConfigDict(
        env_prefix="CLARION_SMS__", env_nested_delimiter="__", extra="ignore"
    )

    url: SecretStr | None = None
    timeout: float = Field(default=10.0, gt=0, le=60)
    max_segments: int = Field(default=6, ge=1, le=20)

    @field_validator("url")
    @classmethod
    def _known(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                via_apprise.instantiate(with_phone(value.get_secret_value(), SAMPLE), 1.0)
            except via_apprise.UnusableURL:
                raise ValueError("not an Apprise URL (the value is not shown)") from None
        return value


def check_address(value: str, settings: Settings) -> tuple[str, str]:
    """A phone number in E.164, and its masked form; ValueError if it is not a valid one."""
    try:
        number = phonenumbers.parse(value.strip(), None)
    except phonenumbers.NumberParseException:
        raise ValueError(
            "must be a phone number in international form (+<country><number>)"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("is not a valid phone number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, "+" + addresses.mask(e164[1:], keep=3)


class SmsChannel(Channel):
    """Not configured without ``CLARION_SMS__URL``. Status mapping: ``notify()`` True is
    sent; False is retried, then dead-lettered after the last attempt; a number no key
    opens is gone (deactivated). The operator's URL is trusted (no outbound check)."""

    key = KEY
    no_target = "no phone number for this subscriber"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        if self.options.url is None:
            raise ChannelNotConfigured("CLARION_SMS__URL is not set")
        self.url = self.options.url.get_secret_value()
        self.timeout = self.options.timeout
        self.send_timeout = 2 * self.timeout

    def targets(
        self, *, session: Session, recipients: list[str], category: str
    ) -> dict[str, list[str]]:
        own = address_rows.active_for(session=session, channel=KEY, subscribers=recipients)
        return {r: [target] for r, target in own.items()}

    def load_targets(self, *, session: Session, ids: set[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for row in targets.active_by_ids(session=session, model=SubscriberAddress, ids=ids):
            try:
                found[str(row.id)] = {"phone": addresses.unseal(self.settings, row.sealed)}
            except addresses.AddressUnreadable as exc:
                found[str(row.id)] = {"unreadable": str(exc)}
        return found

    def deactivate(self, *, session: Session, target_id: str, reason: str) -> None:
        targets.deactivate(
            session=session, model=SubscriberAddress, id=target_id, reason=reason, now=utcnow()
        )

    def render(self, message: Message, target: dict[str, Any]) -> str:
        content = message.rendered() or {}
        if text := content.get("text"):
            return segments.fit(text, self.options.max_segments)
        n = message.notification
        text = " ".join(part for part in (n.get("title"), n.get("body")) if part)
        return segments.fit(text, self.options.max_segments)

    def send(self, payload: str, target: dict[str, Any]) -> str:
        if "unreadable" in target:
            raise TargetGoneError(f"phone number {target['unreadable']}")
        try:
            plugin = via_apprise.instantiate(with_phone(self.url, target["phone"]), self.timeout)
        except via_apprise.UnusableURL as exc:
            raise PermanentChannelError(f"CLARION_SMS__URL with this number: {exc}") from None
        label = via_apprise.scheme(self.url)
        via_apprise.notify(plugin, title="", body=payload, label=label)
        counted = segments.count(payload)
        return f"apprise:{label};{counted.encoding};segments={counted.segments}"
