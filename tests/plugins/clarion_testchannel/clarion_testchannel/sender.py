"""The test channel's sender: one JSON POST per delivery to ``CLARION_TESTCHANNEL__URL``."""

from __future__ import annotations

from typing import Any

import requests
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clarion.channels import (
    Channel,
    ChannelNotConfigured,
    Message,
    PermanentChannelError,
    RetryableChannelError,
    retry_after,
)


class TestChannelSettings(BaseSettings):
    """``CLARION_TESTCHANNEL__URL``, ``CLARION_TESTCHANNEL__TIMEOUT``."""

    model_config = SettingsConfigDict(
        env_prefix="CLARION_TESTCHANNEL__", env_nested_delimiter="__", extra="ignore"
    )

    url: str | None = None
    timeout: float = Field(default=5.0, gt=0)


class TestChannel(Channel):
    key = "testchannel"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        if not self.options.url:
            raise ChannelNotConfigured("CLARION_TESTCHANNEL__URL is not set")
        self.send_timeout = self.options.timeout
        self.http = requests.Session()

    def render(self, message: Message, target: dict[str, Any]) -> dict[str, Any]:
        content = message.rendered() or {}
        n = message.notification
        return {
            "delivery": str(message.delivery_id),
            "recipient": message.recipient["id"],
            "title": content.get("subject") or n["title"],
            "body": content.get("text") or n.get("body"),
        }

    def send(self, payload: dict[str, Any], target: dict[str, Any]) -> str:
        try:
            answer = self.http.post(
                self.options.url, json=payload, timeout=self.options.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise RetryableChannelError(f"{type(exc).__name__}") from None
        if answer.status_code == 429 or answer.status_code >= 500:
            raise RetryableChannelError(
                f"HTTP {answer.status_code}", retry_after(answer.headers.get("retry-after"))
            )
        if answer.status_code >= 400:
            raise PermanentChannelError(f"HTTP {answer.status_code}")
        return answer.headers.get("x-message-id") or payload["delivery"]

    def close(self) -> None:
        self.http.close()
