"""Apprise plugins built from a kept parse of their URL (clarion.channels.via_apprise)."""

from __future__ import annotations

import pytest

from clarion.channels import via_apprise


def test_each_send_gets_a_new_plugin_equal_to_one_from_the_url():
    url = "json://127.0.0.1:9/hook?:to=%2B33612345678"
    first = via_apprise.instantiate(url, 3.0)  # parsed from the URL, then kept
    again = via_apprise.instantiate(url, 3.0)  # from the kept parse
    assert again is not first  # nothing (Apprise's throttle clock) carries between sends
    assert again.url(privacy=False) == first.url(privacy=False)
    later = via_apprise.instantiate(url, 4.0)
    assert (later.socket_connect_timeout, later.socket_read_timeout) == (4.0, 4.0)
    # Apprise adds its tags and asset to the dict it is given, not to the kept one.
    assert "asset" not in via_apprise._parsed[url]


def test_a_url_apprise_cannot_use_is_refused_each_time_and_never_kept():
    url = "slack://only-one-token"
    for _ in range(2):
        with pytest.raises(via_apprise.UnusableURL):
            via_apprise.instantiate(url, 1.0)
    assert url not in via_apprise._parsed


def test_the_kept_parses_are_bounded(monkeypatch):
    monkeypatch.setattr(via_apprise, "PARSED_URLS", 3)
    urls = [f"json://127.0.0.1:9/hook-{i}" for i in range(5)]
    for url in urls:
        via_apprise.instantiate(url, 1.0)
    assert list(via_apprise._parsed)[-3:] == urls[2:] and len(via_apprise._parsed) <= 3
