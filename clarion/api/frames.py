"""A live frame written straight to uvicorn's WebSocket transport, when that is safe.

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

import struct
from typing import Any

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
    conn = proto.conn
    if (
        conn.state is not OPEN
        or conn.extensions
        or proto.close_sent
        or proto.disconnected
        or not proto.writable.is_set()
    ):
        return False
    data = text.encode()
    size = len(data)
    if size < 126:
        head = bytes((_FIN_TEXT, size))
    elif size < 65536:
        head = _MEDIUM.pack(_FIN_TEXT, 126, size)
    else:
        head = _LONG.pack(_FIN_TEXT, 127, size)
    proto.transport.write(head + data)
    return True
