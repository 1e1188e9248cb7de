"""A keep-alive HTTP/1.1 POST client on the standard library, for the web push channel.

Web push sends one small POST per message to a handful of push service origins, so the
client's own CPU per request shows in the channel's throughput: a POST through
``http.client`` costs a fraction of one through ``urllib3`` or ``requests``
(docs/benchmarks/code.md, docs/benchmarks/channels.md). This client keeps one connection per
origin and thread, follows no redirect, retries nothing (a POST that may have reached the
service is the deliver step's to retry, with backoff), and has separate connect and read
timeouts.

Every connection goes through an :class:`~clarion.channels.outbound.OutboundPolicy`: to
the checked addresses of the origin, or, with ``CLARION_OUTBOUND_PROXY``, to that proxy
(a CONNECT tunnel for https, an absolute URL for http) after the origin was checked. The
standard library reads no ``.netrc`` and no proxy from the environment.
"""

from __future__ import annotations

import base64
import http.client
import select
import ssl
import threading
from dataclasses import dataclass
from email.message import Message
from urllib.parse import unquote, urlsplit

from clarion.channels.outbound import OutboundPolicy

# What a failed exchange raises: the connection is dropped and the error passed on.
# (ssl.SSLError and TimeoutError are OSErrors; http.client.InvalidURL is a ValueError.)
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message  # case-insensitive get()
    body: bytes


class Http1Client:
    """POST to absolute http(s) URLs over kept-alive connections (one per origin and
    thread: Celery's thread pool may share a channel between threads)."""

    def __init__(
        self, *, connect_timeout: float, read_timeout: float, policy: OutboundPolicy
    ) -> None:
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.policy = policy
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        """One POST; raises one of TRANSPORT_ERRORS when no answer came back, and
        AddressNotAllowed when the policy refuses the origin."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname, parts.port)
        conn = self._connection(key)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if self.policy.proxy and parts.scheme == "http":
            path = f"http://{parts.netloc}{path}"  # absolute-form, to the proxy
            headers = {**headers, **_proxy_auth(self.policy.proxy)}
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except TRANSPORT_ERRORS:
            self._drop(key)
            raise
        if response.will_close:
            self._drop(key)
        return Response(response.status, response.headers, data)

    def _connection(self, key: tuple) -> http.client.HTTPConnection:
        conns: dict = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(key)
        if conn is not None and _closed_by_peer(conn):
            self._drop(key)
            conn = None
        if conn is None:
            conn = self._open(*key)
            conn.connect()
            conn.sock.settimeout(self.read_timeout)  # connect done: from now on, reads
            conns[key] = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _open(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        """A connection not yet connected: to the checked origin, or through the proxy."""
        https = scheme == "https"
        cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
        extra = {"context": self._context()} if https else {}
        proxy = self.policy.proxy
        if not proxy:
            conn = cls(host, port, timeout=self.connect_timeout, **extra)
            conn._create_connection = self.policy.create_connection  # the connect hook
            return conn
        # The proxy resolves and connects to the origin: check the origin here first.
        self.policy.resolve(host, port or (443 if https else 80))
        parts = urlsplit(proxy)
        conn = cls(parts.hostname, parts.port or 80, timeout=self.connect_timeout, **extra)
        if https:
            conn.set_tunnel(host, port, headers=_proxy_auth(proxy))
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _drop(self, key: tuple) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(key, None)
        if conn is not None:
            conn.close()
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)

    def close(self) -> None:
        """Close every connection of every thread."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def _proxy_auth(proxy: str) -> dict[str, str]:
    """Basic ``Proxy-Authorization`` from the proxy URL's user info, if it has any."""
    parts = urlsplit(proxy)
    if parts.username is None:
        return {}
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection the server has closed reads as ready (EOF): reconnect
    before sending rather than lose a POST to it."""
    if conn.sock is None:
        return True
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
