"""The bytes of Clarion's one email shape: multipart/alternative, plain text + HTML.

Why not ``email.message.EmailMessage``: building one and flattening it costs more CPU per
email than the SMTP exchange itself (every header parsed into objects, then refolded token
by token; figures in docs/benchmarks/code.md). The shape never varies, so it is written
directly here, and ``tests/unit/test_email_mime.py`` parses the output with the stdlib
parser to keep it honest. What it writes:

* 7-bit clean: headers that are not printable ASCII become RFC 2047 encoded words (utf-8,
  base64); a body that is ASCII with lines of at most 998 characters goes as ``7bit``,
  anything else as quoted-printable or base64, whichever is shorter. So no relay needs
  8BITMIME. (An address that is not ASCII is written as UTF-8 per RFC 6532; the send
  asks for SMTPUTF8.)
* Header lines folded at spaces to 78 characters where there are spaces, never past 998
  (RFC 5322 2.1.1); encoded words are at most 64 characters, under RFC 2047's 75.
* CRLF line endings throughout.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable

CRLF = "\r\n"
SOFT_LIMIT = 78  # RFC 5322: lines SHOULD be at most 78 characters
HARD_LIMIT = 998  # ... and MUST be at most 998
# utf-8 bytes per encoded word: "=?utf-8?b?" + 52 base64 characters + "?=" = 64 characters,
# so "Subject: " and one word fit in 78.
_WORD_BYTES = 39
# What may not appear in an address at all: it would end the header or the <addr-spec>,
# or split the SMTP envelope (quoted local parts and [domain literals] may pass).
_BAD_ADDRESS = re.compile(r"[\s<>\\,;()\x00-\x1f\x7f]")
_NEEDS_QUOTES = re.compile(r"[][\\()<>@,:;\".]")


class AddressError(ValueError):
    """An address that cannot be written into a header or an SMTP envelope."""


def plain(value: str) -> bool:
    """Printable ASCII that no reader would take for an encoded word: written as is."""
    return value.isascii() and value.isprintable() and "=?" not in value


def encoded_words(value: str) -> list[str]:
    """RFC 2047 "B" encoded words of ``value`` in utf-8, never splitting a character."""
    data = value.encode()
    words, start = [], 0
    while start < len(data):
        end = start + _WORD_BYTES
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte
            end -= 1
        chunk = binascii.b2a_base64(data[start:end], newline=False).decode("ascii")
        words.append(f"=?utf-8?b?{chunk}?=")
        start = end
    return words


def _fold(name: str, value: str) -> str | None:
    """The header line, folded before spaces to at most 78 characters per line where it
    can be; None if a piece without spaces would still be longer than 998."""
    line = f"{name}: {value}"
    if len(line) <= SOFT_LIMIT:
        return line + CRLF
    pieces, rest, low = [], line, len(name) + 2  # no fold inside the header name
    while len(rest) > SOFT_LIMIT:
        # Never fold into a line of only spaces: break after the first non-space.
        low = max(low, len(rest) - len(rest.lstrip(" ")) + 1)
        cut = rest.rfind(" ", low, SOFT_LIMIT + 1)
        if cut < 0:
            cut = rest.find(" ", max(low, SOFT_LIMIT + 1))
        if cut < 0:
            break
        pieces.append(rest[:cut])
        rest, low = rest[cut:], 1
    pieces.append(rest)
    if max(map(len, pieces)) > HARD_LIMIT:
        return None
    return CRLF.join(pieces) + CRLF


def header(name: str, value: str) -> str:
    """An unstructured header (Subject): as is and folded when it is plain, else encoded."""
    if plain(value):
        # A reader drops the spaces around an unstructured value anyway.
        folded = _fold(name, value.strip())
        if folded is not None:
            return folded
    return f"{name}: " + f"{CRLF} ".join(encoded_words(value)) + CRLF


def address(name: str, display: str | None, value: str) -> str:
    """An address header (From, To): ``display <value>``; the display name quoted when it
    has specials, encoded when it is not plain ASCII."""
    if not value or _BAD_ADDRESS.search(value) or value.count("@") != 1:
        raise AddressError(f"not a usable email address: {value!r}")
    if not display:
        return f"{name}: {value}{CRLF}"
    if plain(display):
        if _NEEDS_QUOTES.search(display):
            display = '"{}"'.format(display.replace("\\", "\\\\").replace('"', '\\"'))
        folded = _fold(name, f"{display} <{value}>")
        if folded is not None:
            return folded
    return f"{name}: " + f"{CRLF} ".join([*encoded_words(display), f"<{value}>"]) + CRLF


def _body(text: str, boundary: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding, the encoded body with CRLF line ends) of one part."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"  # as the stdlib writes a text part: its last line ends too
    lines = text.split("\n")
    if (
        text.isascii()
        and "\x00" not in text
        and max(map(len, lines)) <= HARD_LIMIT
        and boundary not in text  # quoted-printable and base64 cannot contain "=_"
    ):
        return "7bit", CRLF.join(lines)
    data = text.encode()
    qp = binascii.b2a_qp(data, istext=True)
    # base64's size without encoding it: 4 characters per 3 bytes, CRLF per 76 characters.
    b64_size = -(-len(data) // 3) * 4
    if len(qp) <= b64_size + b64_size // 76 * 2:
        return "quoted-printable", qp.decode("ascii").replace("\n", CRLF)
    data = CRLF.join(lines).encode()  # base64 carries the canonical CRLF line ends
    b64 = [binascii.b2a_base64(data[i : i + 57], newline=False) for i in range(0, len(data), 57)]
    return "base64", b"\r\n".join(b64).decode("ascii")


def alternative(head: Iterable[str], parts: Iterable[tuple[str, str]], boundary: str) -> str:
    """The whole message: the ``head`` lines (each ending CRLF), then one text part per
    (subtype, text) in ``parts``, least preferred first (RFC 2046 5.1.4). ``boundary``
    must start with ``=_`` so that no encoded body can contain it."""
    out = [
        *head,
        "MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n',
    ]
    for subtype, text in parts:
        encoding, body = _body(text, boundary)
        out.append(
            f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n{body}\r\n"
        )
    out.append(f"--{boundary}--\r\n")
    return "".join(out)
