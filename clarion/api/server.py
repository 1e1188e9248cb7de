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


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request heads bounded to MAX_HEAD_BYTES.

    Bytes are counted per read while a head is incomplete. The read in which a head
    begins is not counted (it may end the previous request's body), so at most one read
    (256 KiB) plus the bound is ever held for a head.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = False
        self._head_began = False

    def data_received(self, data: bytes) -> None:
        self._head_began = False
        super().data_received(data)
        if self._in_head and not self._head_began:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._in_head = False
                self.logger.warning("request head over %d bytes refused (431)", MAX_HEAD_BYTES)
                self.transport.write(HEAD_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_began, self._head_bytes = True, True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
