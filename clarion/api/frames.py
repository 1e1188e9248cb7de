"""A live frame sent without waiting: written straight to uvicorn's WebSocket transport when
that is safe, else through ASGI's ``send`` run until it first suspends (:func:`send_now`).

The hub sends each live event to its connection at once (``clarion.api.live_hub``). Through
ASGI, that is a message dict, uvicorn's ``send`` coroutine with its ``Event.wait``, and
``websockets``' frame object serialized for the one frame: about half of the hub's
Python per frame (docs/benchmarks/stream.md). When the connection is uvicorn's
``websockets-sansio`` protocol (uvicorn's default) with no extension negotiated, a server
text frame is a 2-, 4- or 10-byte header and the UTF-8 payload (RFC 6455, section 5.2:
server frames are not masked), so it is written to the transport directly. Everything
else goes through ASGI as before: another server or protocol, a transport that paused
writing (a slow client), a connection closing, or compression negotiated (its deflate
context is the protocol's).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable, Coroutine, Generator
from functools import partial
from typing import Any, cast

from websockets.protocol import OPEN

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - uvicorn without websockets: ASGI only
    WebSocketsSansIOProtocol = None  # type: ignore[misc,assignment]

_FIN_TEXT = 0x81  # FIN bit and opcode 1 (text)
_MEDIUM = struct.Struct("!BBH")  # payload length 126..65535: 126, then 16 bits
_LONG = struct.Struct("!BBQ")  # longer: 127, then 64 bits


def protocol_of(send: Any) -> Any | None:
    """uvicorn's protocol object behind an ASGI ``send``, if frames may be written to it
    directly (see the module docstring); None: send through ASGI."""
    proto = getattr(send, "__self__", None)
    if WebSocketsSansIOProtocol is None or type(proto) is not WebSocketsSansIOProtocol:
        return None
    return proto


def write_text(proto: Any, text: str) -> bool:
    """Write ``text`` as one text frame now; False (nothing written) when it must go
    through ASGI instead: the transport paused, the connection closing or closed, or an
    extension negotiated."""
    if not _writable(proto):
        return False
    proto.transport.write(_frame(text.encode()))
    return True


def write_texts(proto: Any, texts: list[str]) -> bool:
    """:func:`write_text` of each of ``texts``, in one write (one ``send()``): a
    connection's first frames (its replay and unread count)."""
    if not _writable(proto):
        return False
    proto.transport.write(b"".join([_frame(text.encode()) for text in texts]))
    return True


def _writable(proto: Any) -> bool:
    conn = proto.conn
    return not (
        conn.state is not OPEN
        or conn.extensions
        or proto.close_sent
        or proto.disconnected
        or not proto.writable.is_set()
    )


def _frame(data: bytes) -> bytes:
    """A final, unmasked text frame of ``data`` (RFC 6455 §5.2)."""
    size = len(data)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + data
    if size < 65536:
        return _MEDIUM.pack(_FIN_TEXT, 126, size) + data
    return _LONG.pack(_FIN_TEXT, 127, size) + data


# --- through ASGI, without waiting -----------------------------------------------------------

Send = Callable[[dict[str, Any]], Awaitable[None]]
# Sends that did not finish at once, kept referenced until they do.
_unfinished: set[asyncio.Task] = set()


class Rest:
    """The rest of a ``send()`` coroutine that suspended the first time it was run."""

    __slots__ = ("coro", "future")

    def __init__(self, coro, future) -> None:
        self.coro, self.future = coro, future

    def __await__(self) -> Generator[Any, Any, None]:
        coro, future = self.coro, self.future
        while True:
            try:
                value = yield future
            except BaseException as exc:  # noqa: BLE001 - cancellation goes to the send
                step = partial(coro.throw, exc)
            else:
                step = partial(coro.send, value)
            try:
                future = step()
            except StopIteration:
                return


def send_now(send: Send, message: dict[str, Any]) -> Rest | None:
    """Run ``send(message)`` until it first suspends: None when it finished, else the rest.

    uvicorn's ``send`` only suspends when the transport paused writing (a slow client), so
    the hub can send in its own loop without waiting on anyone.
    """
    coro = cast(Coroutine[Any, Any, None], send(message))  # ASGI's send is a coroutine
    try:
        future = coro.send(None)
    except StopIteration:
        return None
    return Rest(coro, future)


def finish_later(rest: Rest) -> None:
    """Let the rest of a send finish on its own (a close to a slow client), errors ignored."""
    task = asyncio.get_running_loop().create_task(_finish(rest))
    _unfinished.add(task)
    task.add_done_callback(_unfinished.discard)


async def _finish(rest: Rest) -> None:
    with contextlib.suppress(Exception):
        await rest
