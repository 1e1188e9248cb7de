"""What the API's HTTP server (uvicorn) is given beyond the app: a bound on request heads.

uvicorn's httptools protocol reads a request's line and headers with no size limit (llhttp
leaves that to the server), so 16 MB of headers were read into memory before the app was
called. This protocol counts the bytes of each request head as they arrive and answers
431 past :data:`MAX_HEAD_BYTES`, closing the connection, while keeping httptools' parser.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Request line and headers together; a user token is at most 8 KiB (core.auth).
MAX_HEAD_BYTES = 32 * 1024


def _response(status: bytes, slug: str, detail: str) -> bytes:
    body = json.dumps(
        {"type": f"urn:clarion:problem:{slug}", "title": status.decode(), "detail": detail}
    ).encode()
    head = (
        f"HTTP/1.1 {status.decode()}\r\n"
        "content-type: application/problem+json\r\n"
        "x-content-type-options: nosniff\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


HEAD_TOO_LARGE = _response(
    b"431 Request Header Fields Too Large",
    "headers-too-large",
    f"The request line and headers are limited to {MAX_HEAD_BYTES} bytes.",
)


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops parsing and reports a parser error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request heads bounded to MAX_HEAD_BYTES.

    Two counts, because either alone leaves a gap. The parsed request line and headers
    are counted exactly as httptools hands them over, so a head over the bound is refused
    even when it arrives in one read. And the raw bytes of each read while a head is still
    incomplete are counted too, because httptools accumulates a header it has not finished
    in memory before any callback sees it: one endless header is refused after at most
    one read (256 KiB) plus the bound, never after it is whole.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # parsed bytes of the current head
        self._raw_bytes = 0  # bytes read while the current head was incomplete
        self._in_head = False
        self._head_began = False
        self._refused = False

    def data_received(self, data: bytes) -> None:
        self._head_began = False
        super().data_received(data)
        if self._in_head and not self._head_began and not self._refused:
            self._raw_bytes += len(data)
            if self._raw_bytes > MAX_HEAD_BYTES:
                self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_began = True, True
        self._head_bytes = self._raw_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refused:  # the parser error was our _HeadTooLarge
            return
        super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse()
            raise _HeadTooLarge

    def _refuse(self) -> None:
        self._in_head, self._refused = False, True
        self.logger.warning("request head over %d bytes refused (431)", MAX_HEAD_BYTES)
        self.transport.write(HEAD_TOO_LARGE)
        self.transport.close()
