"""The one rule for links a notification carries (``clarion.core.schemas.check_link``)."""

from __future__ import annotations

import pytest

from clarion.core.schemas import check_link


@pytest.mark.parametrize(
    "link",
    ["https://app.example/a?b=1#c", "http://127.0.0.1:8080/x", "/inbox/7", "?tab=2", "#top",
     "settings/notifications", "HTTPS://APP.EXAMPLE/"],
)  # fmt: skip
def test_http_and_relative_links_pass(link):
    assert check_link(link) == link


@pytest.mark.parametrize(
    "link",
    ["javascript:alert(1)", "JavaScript:alert(1)", "java\tscript:alert(1)", "\njavascript:x",
     " javascript:x", "data:text/html,<b>x</b>", "vbscript:x", "mailto:a@example.com",
     "file:///etc/passwd", "https:/no-host", "http://a.example/\x00"],
)  # fmt: skip
def test_every_other_scheme_and_hidden_ones_are_refused(link):
    with pytest.raises(ValueError):
        check_link(link)
