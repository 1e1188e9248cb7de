"""SMS segment counting (GSM-7 vs UCS-2), cutting to a segment budget, and the number's
place in the operator's Apprise URL."""

from __future__ import annotations

import pytest

from clarion.channels.sms import segments
from clarion.channels.sms.sender import with_phone
from clarion.channels.via_apprise import redact


@pytest.mark.parametrize(
    ("text", "encoding", "units", "count"),
    [
        ("x" * 160, "GSM-7", 160, 1),
        ("x" * 161, "GSM-7", 161, 2),
        ("x" * 306, "GSM-7", 306, 2),  # 2 × 153
        ("x" * 307, "GSM-7", 307, 3),
        ("{" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("é à ü Ñ", "GSM-7", 7, 1),  # in the GSM alphabet
        ("ç" * 70, "UCS-2", 70, 1),  # lower-case ç is not
        ("Привет" * 12, "UCS-2", 72, 2),
        ("😀" * 35, "UCS-2", 70, 1),  # a surrogate pair is two UTF-16 units
        ("😀" * 34 + "a" * 67, "UCS-2", 135, 3),
    ],
)
def test_segments_are_counted_per_encoding(text, encoding, units, count):
    assert segments.count(text) == segments.Count(encoding, units, count)


def test_a_text_is_cut_to_the_segment_budget_with_an_ellipsis():
    cut = segments.fit("word " * 100, 2)
    assert segments.count(cut).segments == 2 and cut.endswith("...")
    assert len(cut) > 290
    assert segments.fit("short", 1) == "short"
    uni = segments.fit("Привет " * 40, 1)
    assert uni.endswith("…") and segments.count(uni).units <= 70


def test_the_number_goes_where_the_url_says():
    assert with_phone("twilio://SID:tok@+15550001111", "+33612345678") == (
        "twilio://SID:tok@+15550001111/+33612345678"
    )
    assert with_phone("sns://K/S/eu-west-1/?x=1", "+33612345678") == (
        "sns://K/S/eu-west-1/+33612345678?x=1"
    )
    assert with_phone("json://gw/sms?:to={phone}", "+336") == "json://gw/sms?:to=%2B336"
    assert with_phone("x://a/{phone}/b", "+336") == "x://a/+336/b"


def test_urls_are_redacted_from_apprise_log_lines():
    line = "Slack POST URL: https://hooks.slack.com/services/T1/B2/C3 (cert_verify=True)"
    assert redact(line) == "Slack POST URL: [redacted] (cert_verify=True)"
    assert redact("posting to json://u:pw@gw/x failed") == "posting to json://[redacted] failed"
    assert "T1" not in redact("Max retries exceeded with url: /services/T1/B2/C3 (Caused")
