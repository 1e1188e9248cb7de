"""The email channel writes its MIME bytes itself (clarion/channels/email/mime.py): every
message it renders must read, through the stdlib parser, as the same email the stdlib's
own EmailMessage would have built, and stay within RFC 5322's line limits."""

from __future__ import annotations

import email
import email.policy
import uuid
from email.message import EmailMessage

import pytest

from clarion.channels import Message, PermanentChannelError
from clarion.channels.email import mime
from clarion.channels.email.sender import EmailChannel
from clarion.settings import Settings

SENDER = "noreply@clarion.test"


@pytest.fixture(scope="module")
def channel():
    settings = Settings(
        mode="embedded",
        secret_key="s" * 40,
        smtp={"host": "127.0.0.1", "sender": SENDER, "sender_name": "Clarion Уведомления"},
    )
    return EmailChannel(settings)


def message(*, locale="en", name="Ada", address="ada@example.com", content=None, **fields):
    notification = {
        "id": str(uuid.uuid4()),
        "category": "links",
        "title": "Your link expires",
        "body": "5 < 6 & done",
        "url": "https://app.example/l/1",
        **fields,
    }
    recipient = {"id": "ada", "email": address, "name": name, "locale": locale}
    return Message(uuid.uuid4(), 1, notification, recipient, content=content)


def parse(payload) -> EmailMessage:
    return email.message_from_bytes(payload.data, policy=email.policy.default)


def reference(channel, msg, parsed) -> EmailMessage:
    """What the stdlib's EmailMessage builds from the same headers and rendered parts,
    flattened and parsed back as a receiver reads it."""
    ref = EmailMessage()
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe"):
        ref[name] = parsed[name]
    ref["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    ref["X-Clarion-Notification"] = msg.notification["id"]
    ref.set_content(parsed.get_body(("plain",)).get_content())
    ref.add_alternative(parsed.get_body(("html",)).get_content(), subtype="html")
    return email.message_from_bytes(ref.as_bytes(), policy=email.policy.default)


def lines(payload) -> list[bytes]:
    assert b"\n" not in payload.data.replace(b"\r\n", b"")  # CRLF only
    return payload.data.split(b"\r\n")


@pytest.mark.parametrize("locale", ["en", "ru"])
def test_a_message_reads_like_the_stdlibs_own_with_the_headers_receivers_need(channel, locale):
    msg = message(locale=locale, title="Заказ <A-17> отправлен", name="Иван Петров")
    payload = channel.render(msg, {})
    got = parse(payload)
    ref = reference(channel, msg, got)

    assert payload.message_id == got["Message-ID"] == f"<{msg.delivery_id}@clarion.test>"
    assert payload.recipient == "ada@example.com" and payload.utf8 is False
    assert got["From"] == "Clarion Уведомления <noreply@clarion.test>"
    assert got["To"] == "Иван Петров <ada@example.com>"
    assert got["To"].addresses[0].addr_spec == "ada@example.com"
    assert got["Subject"] == "Заказ <A-17> отправлен"
    assert got["Date"].datetime is not None
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    for name in ("From", "To", "Subject", "Message-ID", "List-Unsubscribe", "Date"):
        assert got[name] == ref[name], name
    assert got.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in got.iter_parts()] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in got.iter_parts()] == ["utf-8", "utf-8"]
    # Base64 carries text in its canonical form, CRLF line ends (RFC 2045 6.8).
    assert [p.get_content().replace("\r\n", "\n") for p in got.iter_parts()] == [
        p.get_content() for p in ref.iter_parts()
    ]
    assert got.defects == [] and all(p.defects == [] for p in got.iter_parts())
    html = got.get_body(("html",)).get_content()
    assert "Заказ &lt;A-17&gt; отправлен" in html and "5 &lt; 6 &amp; done" in html
    words = "Отписаться от писем категории «links»" if locale == "ru" else "Unsubscribe from"
    assert words in html and words in got.get_body(("plain",)).get_content()


def test_the_bytes_are_7_bit_with_crlf_and_lines_within_rfc_5322(channel):
    payload = channel.render(message(locale="ru", body="Длинная строка " * 200), {})
    raw = lines(payload)
    assert payload.data.isascii()
    assert max(map(len, raw)) <= 998
    head = raw[: raw.index(b"")]
    # The unsubscribe link stays one plain line, so mail clients read it as a URL.
    assert [h for h in head if len(h) > 78] == [
        h for h in head if h.startswith(b"List-Unsubscribe: <http")
    ]
    text = parse(payload).get_body(("plain",)).get_content()
    assert "Длинная строка " * 200 in text.replace("\r\n", "\n")


def test_a_template_message_carries_its_subject_text_and_escaped_html(channel):
    content = {"subject": "Ваш заказ", "text": "Доставка: завтра", "html": "<p>Доставка</p>"}
    got = parse(channel.render(message(locale="ru", content=content), {}))
    assert got["Subject"] == "Ваш заказ"
    assert "Доставка: завтра" in got.get_body(("plain",)).get_content()
    html = got.get_body(("html",)).get_content()
    assert "<p>Доставка</p>" in html and 'lang="ru"' in html


@pytest.mark.parametrize(
    "subject",
    [
        "A plain subject",
        "word " * 60,  # long: folded at spaces
        "x" * 1200,  # no space to fold at: encoded words
        "looks like =?utf-8?q?an_encoded_word?= but is not",
        "tab\tand\x07bell",
        "  leading and trailing  ",
        " " * 100 + "spaces",
        "Ё" * 300,
    ],
)
def test_any_subject_survives_the_round_trip_within_the_line_limits(channel, subject):
    payload = channel.render(message(title=subject), {})
    # Spaces around a plain value are not part of it (RFC 5322 unfolding); encoded, kept.
    assert parse(payload)["Subject"] == (subject.strip() if mime.plain(subject) else subject)
    assert max(map(len, lines(payload))) <= 998
    assert all(len(h) <= 78 or h.startswith(b"List-Unsubscribe:") for h in _head(payload))


def _head(payload) -> list[bytes]:
    raw = lines(payload)
    return raw[: raw.index(b"")]


@pytest.mark.parametrize(
    "name", ["Smith, John", 'Ada "the first" Lovelace', "Back\\slash", "Ольга", "Very " * 40]
)
def test_display_names_with_specials_or_not_ascii_read_back_exactly(channel, name):
    got = parse(channel.render(message(name=name), {}))
    [addr] = got["To"].addresses
    assert (addr.display_name, addr.addr_spec) == (name.strip(), "ada@example.com")


@pytest.mark.parametrize(
    "address", ["ada@example.com\r\nBcc: x@y", "a b@example.com", "a>b@example.com", "nope"]
)
def test_an_address_that_would_break_the_header_is_a_permanent_error(channel, address):
    with pytest.raises(PermanentChannelError, match="not a usable email address"):
        channel.render(message(address=address), {})


@pytest.mark.parametrize("address", ["ada@[192.0.2.1]", "o'neil@x.io"])
def test_unusual_but_valid_addresses_are_written_as_given(channel, address):
    payload = channel.render(message(address=address), {})
    assert payload.recipient == address
    assert parse(payload)["To"].addresses[0].addr_spec == address


def test_a_non_ascii_address_asks_the_relay_for_smtputf8(channel):
    payload = channel.render(message(address="иван@пример.рф"), {})
    assert payload.utf8 and payload.recipient == "иван@пример.рф"
    got = email.message_from_string(payload.data.decode(), policy=email.policy.SMTPUTF8)
    assert got["To"].addresses[0].addr_spec == "иван@пример.рф"


@pytest.mark.parametrize(
    "body",
    [
        "ascii only\nsecond line",
        "a line of 2000 characters " + "y" * 2000,
        "trailing spaces   \nand a tab\t\n.\n.dot\nFrom here",
        "contains the boundary --=_BOUNDARY and =_BOUNDARY",
        "Привет\r\nмир\rи всё",
        "nul \x00 and bell \x07",
    ],
)
def test_bodies_decode_to_what_was_rendered(body):
    head = [mime.header("Subject", "s")]
    data = mime.alternative(head, [("plain", body), ("html", body)], "=_BOUNDARY")
    got = email.message_from_bytes(data.encode(), policy=email.policy.default)
    want = body.replace("\r\n", "\n").replace("\r", "\n")
    assert [p.get_content().replace("\r\n", "\n") for p in got.iter_parts()] == [want + "\n"] * 2
    assert max(map(len, data.split("\r\n"))) <= 998 and data.isascii()
