"""Web push's fast path: direct HTTP/1.1 POSTs on the standard library's ``http.client``.

Kept beside the one HTTP client (:mod:`clarion.channels.httpclient`) because an A/B in one
session measured it well beyond the run-to-run spread: a POST through httpx costs ~2.7 ×
the CPU, ~15 % of the push worker's CPU per push (docs/benchmarks/channels.md). It behaves
as that client does, and shares its parts:

* connections go only to the addresses :class:`OutboundPolicy` resolved and checked just
  now (the same ``resolve`` as :class:`~clarion.channels.httpclient.PinnedBackend`); the
  URL's name stays the ``Host``, the TLS SNI and the name the certificate is checked for,
  against the same CAs (certifi);
* separate connect and read timeouts, no redirect, no retry, no cookies, nothing from the
  environment; the answer is drained up to ``MAX_ANSWER_BYTES`` (a longer one drops the
  connection) and never handed back: :class:`~clarion.channels.httpclient.Answer`;
* with ``CLARION_OUTBOUND_PROXY`` set, every call goes through the one HTTP client instead,
  so the proxy is handled in one place.

Connections are kept alive, one per origin and thread (Celery's thread pool may share a
channel between threads).
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx

from clarion.channels.httpclient import (
    MAX_ANSWER_BYTES,
    TRANSPORT_ERRORS,
    USER_AGENT,
    Answer,
    OutboundHttp,
    UnusableURL,
)
from clarion.channels.outbound import OutboundPolicy

# What a failed exchange here raises, on top of the one client's errors.
FAST_ERRORS = (*TRANSPORT_ERRORS, http.client.HTTPException)


class FastPost:
    """``post`` and ``close`` as :class:`OutboundHttp`, on ``http.client`` when direct."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        connect_timeout: float,
        read_timeout: float,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.verify = verify
        self.proxied = (
            OutboundHttp(
                policy, connect_timeout=connect_timeout, read_timeout=read_timeout, verify=verify
            )
            if policy.proxy
            else None
        )
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """One POST; raises as :meth:`OutboundHttp.post` does, and ``FAST_ERRORS``."""
        if self.proxied is not None:
            return self.proxied.post(url, body, headers)
        try:
            parts = urlsplit(url)
            key = (parts.scheme, parts.hostname, parts.port)
        except ValueError as exc:
            raise UnusableURL(str(exc)) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UnusableURL(f"not an http(s) URL with a host: {parts.scheme}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = self._connection(key)
        try:
            conn.request("POST", path, body=body, headers={"User-Agent": USER_AGENT, **headers})
            response = conn.getresponse()
            response.read(MAX_ANSWER_BYTES + 1)  # drained, never kept
        except http.client.InvalidURL as exc:
            self._drop(key)
            raise UnusableURL(str(exc)) from None
        except FAST_ERRORS:
            self._drop(key)
            raise
        if response.will_close or not response.isclosed():  # closing, or too long to drain
            self._drop(key)
        return Answer(response.status, response.headers)

    def _connection(self, key: tuple) -> http.client.HTTPConnection:
        conns: dict = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(key)
        if conn is not None and _closed_by_peer(conn):
            self._drop(key)
            conn = None
        if conn is None:
            scheme, host, port = key
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    host, port, timeout=self.connect_timeout, context=self._context()
                )
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
            conn._create_connection = self._pinned  # the connect hook
            conn.connect()
            conn.sock.settimeout(self.read_timeout)  # connected: from now on, reads
            conns[key] = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _pinned(self, address: tuple[str, int], timeout: Any = None, *_: Any) -> socket.socket:
        """``socket.create_connection``, but only to the addresses the policy just checked
        (AddressNotAllowed when it refuses one)."""
        host, port = address
        error: OSError | None = None
        for info in self.policy.resolve(host, port):
            try:
                sock = socket.create_connection((str(info[4][0]), port), timeout)
            except OSError as exc:
                error = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise error or OSError(f"no address for {host}")

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = self.verify or httpx.create_ssl_context(trust_env=False)
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
        if self.proxied is not None:
            self.proxied.close()


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
