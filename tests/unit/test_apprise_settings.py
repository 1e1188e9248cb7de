"""The Apprise channels' settings: wrong ones refuse to build, naming the variable and
never its value (it holds tokens); an absent SMS URL leaves the channel off."""

from __future__ import annotations

import pytest

from clarion import channels
from clarion.settings import Settings
from tests.conftest import SECRET


def test_a_category_url_apprise_does_not_know_stops_the_channel_without_showing_it(
    monkeypatch,
):
    monkeypatch.setenv(
        "CLARION_CHAT__CATEGORY_TARGETS", '{"ops": ["json://ok.example/x", "bogus://SECRET1"]}'
    )
    with pytest.raises(channels.ChannelConfigError) as caught:
        channels.build("chat", Settings(secret_key=SECRET))
    text = str(caught.value)
    assert "CLARION_CHAT__CATEGORY_TARGETS" in text and "URL #2" in text
    assert "SECRET1" not in text


def test_an_sms_url_apprise_does_not_know_stops_the_channel_without_showing_it(monkeypatch):
    monkeypatch.setenv("CLARION_SMS__URL", "bogus://SID:SECRET2@+15550001111")
    with pytest.raises(channels.ChannelConfigError) as caught:
        channels.build("sms", Settings(secret_key=SECRET))
    assert "CLARION_SMS__URL" in str(caught.value) and "SECRET2" not in str(caught.value)


def test_without_an_sms_url_the_channel_is_not_configured(monkeypatch):
    monkeypatch.delenv("CLARION_SMS__URL", raising=False)
    with pytest.raises(channels.ChannelNotConfigured, match="CLARION_SMS__URL"):
        channels.build("sms", Settings(secret_key=SECRET))


def test_twilio_and_vonage_urls_take_the_number(monkeypatch):
    monkeypatch.setenv("CLARION_SMS__URL", "twilio://ACabc:token@+15550001111")
    assert channels.build("sms", Settings(secret_key=SECRET)).key == "sms"
    monkeypatch.setenv("CLARION_SMS__URL", "vonage://key:secret@15550001111")
    assert channels.build("sms", Settings(secret_key=SECRET)).key == "sms"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T000/B000/SECRET3SECRET3", "slack://…/****"),
        ("https://discord.com/api/webhooks/123456789012345678/SECRET3", "discord://…/****"),
        ("tgram://123456789:SECRET3SECRET3SECRET3SECRET3SECRE/-100123", "tgram://…/****"),
        ("ntfys://ntfy.example/SECRET3", "ntfys://…/****"),
    ],
)
def test_a_chat_url_is_shown_as_its_service_only(url, shown):
    from clarion.channels.chat.sender import check_address

    stored, display = check_address(url, Settings(secret_key=SECRET))
    assert stored == url and display == shown
