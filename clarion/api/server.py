"""What the API's HTTP server (uvicorn) is given beyond the app: a bound on request heads,
a listen backlog for a herd, and a restart that never closes the listening socket
(socket activation, below).

uvicorn's httptools protocol reads a request's line and headers with no size limit (llhttp
leaves that to the server), so 16 MB of headers were read into memory before the app was
called. This protocol counts the bytes of each request head as they arrive and answers
431 past :data:`MAX_HEAD_BYTES`, closing the connection, while keeping httptools' parser.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

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


# --- a restart that never closes the listening socket -------------------------------------
#
# A service manager that holds the listening socket (systemd's socket activation) starts
# the new process with it before it stops the old one: clients told to reconnect (1012)
# are queued by the kernel and accepted by whichever process is serving, instead of being
# refused until a new process has imported everything and bound the port again
# (docs/benchmarks/stream.md, "Reconnect storm").

LISTEN_FDS_START = 3  # sd_listen_fds(3): the passed sockets are fds 3, 4, ...
# The listen backlog (uvicorn's default 2,048; the kernel caps it at net.core.somaxconn).
# A herd told to reconnect arrives within milliseconds, and a SYN that finds the accept
# queue full is dropped: that client waits for the kernel's SYN retransmit (1 s, then 3 s).
BACKLOG = 65_535


def inherited_sockets() -> list[socket.socket] | None:
    """The listening sockets passed by a service manager (``LISTEN_FDS``), or None.

    The variables are removed, so that processes started from this one do not take the
    sockets for theirs; ``LISTEN_PID``, when set, must be this process."""
    count = os.environ.pop("LISTEN_FDS", None)
    pid = os.environ.pop("LISTEN_PID", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if not count or (pid and int(pid) != os.getpid()):
        return None
    return [socket.socket(fileno=LISTEN_FDS_START + i) for i in range(int(count))]


def notify_ready() -> None:
    """Tell the service manager (``NOTIFY_SOCKET``, sd_notify(3)) that this process serves."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):  # an abstract socket address
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1", path)
    except OSError as exc:  # as sd_notify(3): a manager that is gone does not stop the API
        logging.getLogger(__name__).warning("READY=1 not sent to %s: %s", path, exc)


class NotifyingServer(uvicorn.Server):
    """uvicorn's server, which says READY=1 once it accepts connections."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            notify_ready()


def run(config: uvicorn.Config) -> None:
    """``uvicorn.run``, on the sockets a service manager passed when it passed some."""
    sockets = inherited_sockets()
    if config.workers > 1:
        Multiprocess(config, sockets=sockets or [config.bind_socket()]).run()
        return
    server = NotifyingServer(config)
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)
